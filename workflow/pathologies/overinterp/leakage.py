"""Pixels or pattern? BS-subset retraining beside its leakage floor (Rong et al. 2022, "ROAD").

Which pixels a BS subset keeps depends on the source model's prediction, so a model retrained on BS
subsets may learn the source's *prediction* from the positions of the kept pixels alone. Two measures tell
leaked labels from sufficient features, both computed by :mod:`pathologies.overinterp.tables`:

- the **mask-only control**: the same retraining on the BS keep-masks alone (no pixel values); its
  accuracy is the leakage floor of the BS row (with ``retrain.augment_mode: reference`` the "(+)" BS images
  keep the un-augmented positions, so the floor of BS (+) is the control trained without augmentation);
- **agreement with the source's predicted class** (on the same images, full), on all test images and on
  those the source got wrong: a model that learned the source's decisions agrees even where the source is
  wrong; one that learned the class from the pixels does not.

``leakage.csv`` (one row per architecture, augmentation, fraction and test set)::

    arch, augment, fraction, test_set, n_runs_bs, n_runs_mask,
    bs_accuracy_mean, bs_accuracy_std, mask_accuracy_mean, mask_accuracy_std, random_accuracy_mean,
    bs_agree_mean, bs_agree_wrong_mean, mask_agree_mean, mask_agree_wrong_mean          (all in %)

Figure (``python -m pathologies.overinterp.leakage --leakage leakage.csv --out leakage.png``): one panel
per test set, bars per architecture: random-subset, mask-only and BS accuracy, and the BS models'
agreement with the source on all images and on those the source got wrong.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_csv

COLUMNS = ["arch", "augment", "fraction", "test_set", "n_runs_bs", "n_runs_mask", "bs_accuracy_mean",
           "bs_accuracy_std", "mask_accuracy_mean", "mask_accuracy_std", "random_accuracy_mean", "bs_agree_mean",
           "bs_agree_wrong_mean", "mask_agree_mean", "mask_agree_wrong_mean"]


def leakage_table(accuracy: pd.DataFrame, augment_mode: str = "aligned") -> pd.DataFrame:
    """BS-subset retraining rows beside their mask-only control, random subsets and agreement with the source.

    ``accuracy``: :func:`pathologies.overinterp.tables.accuracy_table` (with the agreement columns).
    ``augment_mode``: the experiment's ``retrain.augment_mode``; ``reference`` pairs every BS row with the
    mask-only control trained without augmentation (the only one it trains).
    """
    if accuracy.empty or "train_on" not in accuracy:
        return pd.DataFrame(columns=COLUMNS)
    own = accuracy[(accuracy["role"] == "retrained") & (accuracy["train_on"] == accuracy["eval_on"])]
    if "topk" in own:
        own = own[own["topk"] == 1]
    rows = []
    keys = ["arch", "augment", "train_fraction", "test_set"]
    if "split_set" in own:  # subset rows of CIFAR-10-C are all of its `mixed` sample
        pairs = zip(own["test_set"], own["split_set"], strict=True)
        own = own.assign(test_set=[t if s == "all" else f"{t} ({s})" for t, s in pairs])
    for values, group in own[own["train_on"] == "bs"].groupby(keys, sort=False, dropna=False):
        arch, augment, fraction, test_set = values
        augments = {"random": augment, "mask": False if augment_mode == "reference" else augment}
        pick = {kind: own[(own["train_on"] == kind) & (own["arch"] == arch) & (own["augment"] == augments[kind])
                          & np.isclose(own["train_fraction"], fraction) & (own["test_set"] == test_set)]
                for kind in ("mask", "random")}
        bs, mask, rnd = group.iloc[0], pick["mask"], pick["random"]

        def first(frame, column):
            return float(frame.iloc[0][column]) if len(frame) else float("nan")

        rows.append({"arch": arch, "augment": augment, "fraction": fraction, "test_set": test_set,
                     "n_runs_bs": int(bs["n_runs"]), "n_runs_mask": int(first(mask, "n_runs")) if len(mask) else 0,
                     "bs_accuracy_mean": bs["accuracy_mean"], "bs_accuracy_std": bs["accuracy_std"],
                     "mask_accuracy_mean": first(mask, "accuracy_mean"),
                     "mask_accuracy_std": first(mask, "accuracy_std"),
                     "random_accuracy_mean": first(rnd, "accuracy_mean"),
                     "bs_agree_mean": bs["agree_source_mean"], "bs_agree_wrong_mean": bs["agree_source_wrong_mean"],
                     "mask_agree_mean": first(mask, "agree_source_mean"),
                     "mask_agree_wrong_mean": first(mask, "agree_source_wrong_mean")})
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_leakage(table: pd.DataFrame, out: str | Path) -> None:
    """Bars of :func:`leakage_table`, one panel per test set (see the module docstring)."""
    if table.empty:
        raise UserError("the leakage table has no BS-subset retraining rows; retrain on `bs` subsets "
                        "(overinterpretation.<exp>.retrain.subsets) to draw this figure")
    measures = [("random_accuracy_mean", "random subsets: accuracy"), ("mask_accuracy_mean", "mask only: accuracy"),
                ("bs_accuracy_mean", "BS subsets: accuracy"), ("bs_agree_mean", "BS: agrees with source"),
                ("bs_agree_wrong_mean", "BS: agrees where source wrong")]
    test_sets = list(dict.fromkeys(table["test_set"]))
    figure, axes = plt.subplots(1, len(test_sets), figsize=(1.2 + 2.2 * len(table) / len(test_sets) * 1.5,
                                                             3.2), squeeze=False)
    for axis, test_set in zip(axes[0], test_sets, strict=True):
        rows = table[table["test_set"] == test_set].reset_index(drop=True)
        labels = [f"{a}{' (+)' if g else ''}\n{f * 100:g}%" for a, g, f in
                  zip(rows["arch"], rows["augment"], rows["fraction"], strict=True)]
        width = 0.8 / len(measures)
        for j, (column, name) in enumerate(measures):
            axis.bar(np.arange(len(rows)) + (j - (len(measures) - 1) / 2) * width, rows[column].astype(float),
                     width, label=name)
        axis.set_xticks(np.arange(len(rows)), labels, fontsize=7)
        axis.set_ylim(0, 100)
        axis.set_ylabel("%")
        axis.set_title(test_set, fontsize=9)
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    with atomic_output(out) as tmp:
        figure.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."), bbox_inches="tight")
    plt.close(figure)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--leakage", required=True, help="tables/leakage.csv of an experiment")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    plot_leakage(read_csv(args.leakage, "leakage table"), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
