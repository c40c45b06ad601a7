"""Learning curves (loss, train and test accuracy per epoch) of trained models.

    python -m pathologies.training.learning_curves --logs results/models/*/seed*/train_log.csv --out curves.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_csv


def read_logs(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate training logs, naming each run ``<model>/seed<seed>`` from its folder."""
    frames = []
    for path in map(Path, paths):
        frame = read_csv(path, "training log", columns=("epoch", "train_loss", "train_acc"))
        if frame.empty:
            raise UserError(f"{path}: the training log has no rows; delete it and rebuild it (snakemake {path})")
        frame["model"] = path.parent.parent.name
        frame["run"] = f"{path.parent.parent.name}/{path.parent.name}"
        frames.append(frame)
    if not frames:
        raise UserError("no training logs given")
    return pd.concat(frames, ignore_index=True)


METRICS = ("train_loss", "train_acc", "test_acc")


def model_family(model: str) -> str:
    """The experiment prefix of a model name (``digits.small_cnn.bs5`` -> ``digits``): one figure row each."""
    return model.split(".", 1)[0]


def plot_learning_curves(logs: pd.DataFrame, out: str | Path) -> None:
    """Training loss, training accuracy and test accuracy against epoch: one row per model family
    (experiment prefix), one colour per model, one line per run (seed), a legend per row."""
    sns.set_theme(style="whitegrid", context="paper")
    families = sorted(logs["model"].map(model_family).unique())
    # test_acc exists only where a model dumps the test split
    metrics = [metric for metric in METRICS if metric in logs.columns]
    fig, axes = plt.subplots(len(families), len(metrics), figsize=(3.2 * len(metrics) + 3, 2.4 * len(families)),
                             squeeze=False, sharex="row")
    for row, family in zip(axes, families, strict=True):
        mine = logs[logs["model"].map(model_family) == family]
        for axis, metric in zip(row, metrics, strict=True):
            sns.lineplot(data=mine.dropna(subset=[metric]), x="epoch", y=metric, hue="model", units="run",
                         estimator=None, ax=axis, legend=axis is row[-1], linewidth=1)
            axis.set_title(f"{family}: {metric}", fontsize=8)
            axis.set_ylabel("")
        if row[-1].get_legend() is not None:
            row[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=6, frameon=False)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."))
    plt.close("all")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--logs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    plot_learning_curves(read_logs(args.logs), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
