"""KL divergence between neighbouring classes vs class accuracy on the Gaussian dataset (DDD A.7, Figure 9).

    python -m pathologies.ddd.kl --class-accuracy class_accuracy.csv --dataset results/data/gaussian.h5 \\
        --out kl_accuracy.csv

Rows per class: std (nominal, 0-255 scale), kl_to_next (closed form per pixel value, the paper's
eq. 1; NaN for the last class), kl_to_next_image (the same over all H x W x C values of an image),
accuracy (the base member at epoch E) and mean_accuracy (all members).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..data.layout import dataset_info
from ..data.prepare import gaussian_class_std
from ..errors import UserError, cli
from ..io import atomic_output, read_csv, read_h5, read_json_attr
from .measures import kl_accuracy_table


def kl_table(class_accuracy: pd.DataFrame, stds: np.ndarray, n_values: int) -> pd.DataFrame:
    """Figure 9's data from a ``class_accuracy.csv`` table (rows member, class, accuracy, ...)."""
    accuracy = class_accuracy.pivot_table(index="class", columns="member", values="accuracy")
    accuracy = accuracy.reindex(np.arange(len(stds)))
    if "base" not in accuracy.columns:
        raise UserError("class accuracy table has no member 'base'; rebuild it with pathologies.ddd.difficulty")
    table = kl_accuracy_table(stds, accuracy["base"].to_numpy(), n_values)
    table["mean_accuracy"] = accuracy.mean(axis=1).to_numpy()
    return table


def gaussian_stds(dataset: str) -> tuple[np.ndarray, int]:
    """(class stds, values per image) of a prepared gaussian dataset, from its recorded spec."""
    info = dataset_info(dataset)
    if info.kind != "gaussian":
        raise UserError(f"{dataset} is a {info.kind!r} dataset; the KL analysis needs kind 'gaussian'")
    with read_h5(dataset) as handle:
        spec = read_json_attr(handle, "spec")
    return gaussian_class_std(spec), int(np.prod(info.image_shape))


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--class-accuracy", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    stds, n_values = gaussian_stds(args.dataset)
    table = kl_table(read_csv(args.class_accuracy, "class accuracy table"), stds, n_values)
    with atomic_output(args.out) as tmp:
        table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
