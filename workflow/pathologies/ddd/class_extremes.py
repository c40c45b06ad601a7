"""Table 1 of Meding et al. (2022): the classes the base model finds easiest and hardest.

    python -m pathologies.ddd.class_extremes --class-accuracy class_accuracy.csv --out class_extremes.csv [--n 10]

Rows: side (easiest / hardest), rank (1 = most extreme), class, class_name, label (a readable name: for the
1,000 ImageNet classes, named by WordNet ids in the prepared dataset, torchvision's category names, as the
paper's Table 1 lists 'earthstar' ... 'screen, CRT screen'; else the class name), accuracy (the base member
at E; without a base member, external models only, the mean over the models) and mean_accuracy (all models).
Easiest come in descending, hardest in ascending accuracy; ties keep the class order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..data.class_names import readable_names
from ..errors import UserError, cli
from ..io import atomic_output, read_csv


def class_extremes(class_accuracy: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` easiest and ``n`` hardest classes (fewer when there are fewer than 2 n classes)."""
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    wide = class_accuracy.pivot_table(index=["class", "class_name"], columns="member", values="accuracy")
    reference = wide["base"] if "base" in wide.columns else wide.mean(axis=1)
    table = pd.DataFrame({"accuracy": reference, "mean_accuracy": wide.mean(axis=1)}).reset_index()
    table["label"] = readable_names(table["class_name"]) if len(table) == 1000 else table["class_name"].astype(str)
    count = min(n, len(table) // 2) or 1
    easiest = table.iloc[np.argsort(-table["accuracy"].to_numpy(), kind="stable")[:count]]
    hardest = table.iloc[np.argsort(table["accuracy"].to_numpy(), kind="stable")[:count]]
    parts = [part.assign(side=side, rank=np.arange(1, len(part) + 1))
             for side, part in (("easiest", easiest), ("hardest", hardest))]
    columns = ["side", "rank", "class", "class_name", "label", "accuracy", "mean_accuracy"]
    return pd.concat(parts, ignore_index=True)[columns]


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--class-accuracy", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args(argv)
    table = read_csv(args.class_accuracy, "class accuracy table")
    with atomic_output(args.out) as tmp:
        class_extremes(table, args.n).to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
