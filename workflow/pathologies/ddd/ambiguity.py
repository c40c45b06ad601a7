"""Label ambiguity of trivial / in-between / impossible images (Meding et al. 2022, A.13).

    python -m pathologies.ddd.ambiguity --experiment experiment.json --difficulty difficulty.csv \\
        --out label_ambiguity.csv

The experiment key ``label_ambiguity`` names a CSV file the user places (e.g. from the MTurk data of
Northcutt et al. 2021): a column ``image_id`` and a column ``ambiguous`` (0/1: the raters disagreed on
the label). Images the file does not list count as unrated. Rows per category (trivial, in_between,
impossible under ``in_between_rule``) and ``all``: n_images, n_rated, n_ambiguous, fraction_ambiguous
(of all images of the category, as the paper's 1,945 / 21,248) and fraction_of_rated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_csv, read_experiment
from .experiment import KEYS
from .measures import CATEGORIES


def read_ambiguity(path: str) -> pd.Series:
    """image_id -> ambiguous (bool) from the user's CSV, with one-line errors."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"label ambiguity file {path} does not exist; place it there or fix "
                        "ddd.<experiment>.label_ambiguity") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"label ambiguity file {path} is not a readable CSV file ({err})") from None
    if not {"image_id", "ambiguous"} <= set(table.columns):
        raise UserError(f"label ambiguity file {path} needs columns image_id and ambiguous (has {list(table.columns)})")
    if not table["ambiguous"].isin([0, 1]).all() or not pd.api.types.is_integer_dtype(table["image_id"]):
        raise UserError(f"label ambiguity file {path}: image_id must be integers and ambiguous 0 or 1")
    if table["image_id"].duplicated().any():
        twice = table["image_id"][table["image_id"].duplicated()].iloc[0]
        raise UserError(f"label ambiguity file {path}: image {twice} is listed twice")
    return table.set_index("image_id")["ambiguous"].astype(bool)


def ambiguity_table(difficulty: pd.DataFrame, ambiguous: pd.Series, rule: str) -> pd.DataFrame:
    """Rated and ambiguous images per difficulty category (and ``all``)."""
    rated = difficulty["image_id"].isin(ambiguous.index).to_numpy()
    flag = difficulty["image_id"].map(ambiguous).fillna(False).to_numpy(dtype=bool)
    rows = []
    for category in (*CATEGORIES, "all"):
        mask = np.ones(len(difficulty), bool) if category == "all" else (difficulty[rule] == category).to_numpy()
        n, n_rated, n_ambiguous = int(mask.sum()), int(rated[mask].sum()), int(flag[mask].sum())
        rows.append({"category": category, "n_images": n, "n_rated": n_rated, "n_ambiguous": n_ambiguous,
                     "fraction_ambiguous": n_ambiguous / n if n else np.nan,
                     "fraction_of_rated": n_ambiguous / n_rated if n_rated else np.nan})
    return pd.DataFrame(rows)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--difficulty", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    spec = read_experiment(args.experiment, KEYS)
    if not spec.get("label_ambiguity"):
        raise UserError(f"experiment {spec['name']!r} sets no label_ambiguity file")
    table = ambiguity_table(read_csv(args.difficulty, "difficulty table"), read_ambiguity(spec["label_ambiguity"]),
                            spec["in_between_rule"])
    with atomic_output(args.out) as tmp:
        table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
