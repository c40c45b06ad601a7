"""Learning curves (loss, train and test accuracy per epoch) of trained models.

    python -m pathologies.plot_training --logs results/models/*/seed*/train_log.csv --out curves.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .errors import UserError, cli  # noqa: E402
from .io import atomic_output  # noqa: E402


def read_logs(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate training logs, naming each run ``<model>/seed<seed>`` from its folder."""
    frames = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"training log {path} does not exist")
        frame = pd.read_csv(path)
        frame["model"] = path.parent.parent.name
        frame["run"] = f"{path.parent.parent.name}/{path.parent.name}"
        frames.append(frame)
    if not frames:
        raise UserError("no training logs given")
    return pd.concat(frames, ignore_index=True)


def plot_learning_curves(logs: pd.DataFrame, out: str | Path) -> None:
    """One panel each for training loss, training accuracy and test accuracy against epoch."""
    long = logs.melt(id_vars=["epoch", "model", "run"], value_vars=["train_loss", "train_acc", "test_acc"],
                     var_name="metric").dropna()
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(data=long, x="epoch", y="value", hue="model", units="run", estimator=None,
                       col="metric", kind="line", facet_kws={"sharey": False}, height=2.8, aspect=1.1)
    grid.set_titles("{col_name}")
    with atomic_output(out) as tmp:
        grid.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."))
    plt.close("all")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    plot_learning_curves(read_logs(args.logs), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
