"""Figures of an overinterpretation experiment (Carter et al. 2021), one subcommand each.

The SIS drawings (examples, curves, ensemble) live in :mod:`pathologies.sis.figures` and the heatmaps in
:mod:`pathologies.sis.heatmaps`, the one module of each kind; this module draws the table figures and
dispatches every subcommand.

    python -m pathologies.overinterp.figures heatmaps --sis <source test SIS> --subsets <bs subsets...> \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures examples --sis <SIS file> --threshold 0.99 --per-class 3 --seed 0 \
        --out f.png
    python -m pathologies.overinterp.figures curves --sis <SIS file> --images 32|all --seed 0 --out f.png
    python -m pathologies.overinterp.figures sizes --correctness c.csv --increase i.csv --by-class k.csv \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures accuracy --accuracy accuracy.csv --dataset digits --out f.png
    python -m pathologies.overinterp.figures ensemble --ensemble-sis e.h5 --member-sis m0.h5 m1.h5 \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures shifted --by-split accuracy_by_split.csv --out f.png

- heatmaps (Figures 3, S14): how often each pixel belongs to the k% BS subsets and to the
  SIS at the threshold, and each pixel's mean removal rank (0 = removed first).
- examples (Figure S1): per explained class, images with an SIS, shown with only the SIS kept.
- curves (Figures S8, S15): f on the remaining pixels after each backward-selection step, for every image
  (``--images all``, Figure S8) or a seeded sample (S15's 32), and their mean (black).
- sizes (Figures 5, S3, S4, S16): mean SIS size of correct vs wrong images per threshold (95% CI),
  the % increase, and mean SIS size by explained class at the threshold.
- accuracy (Table 1 at a glance): accuracy of every row of accuracy.csv on the experiment's test set.
- ensemble (Figure S2): image, ensemble SIS and each member's SIS on the same images.
- shifted (Figure S5): accuracy of the models trained on full images on their own test set and on every
  split of the shifted test sets (e.g. each CIFAR-10-C corruption and severity), mean ± std over seeds.

Pixels outside an SIS are drawn in the dataset's mean colour, which is what the model saw.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..cliargs import CommandParser
from ..data.class_names import label_or_number
from ..errors import UserError, cli
from ..io import read_csv
from ..plots import save
from ..sis.extract import threshold_name
from ..sis.figures import curves_count, plot_curves_sample, plot_ensemble, plot_examples_by_class
from ..sis.heatmaps import plot_heatmaps

MAX_CLASS_TICKS = 30  # more classes: the by-class panel names only the 5 smallest and largest


def by_class_labels(by_class: pd.DataFrame) -> list[str]:
    """The class labels of by_class.csv rows: ``class_name`` (ImageNet's category names), ``class <i>`` where the
    name is only the number or missing."""
    names = by_class["class_name"] if "class_name" in by_class else [None] * len(by_class)
    return [label_or_number(name, cls) for cls, name in zip(by_class["class"], names, strict=True)]


def plot_sizes(correctness: pd.DataFrame, increase: pd.DataFrame, by_class: pd.DataFrame, threshold: float,
               out: str | Path) -> None:
    """Mean SIS size (correct vs wrong, % increase) per threshold and by class, original SIS files only."""
    sns.set_theme(style="whitegrid", context="paper")

    def label(f):
        return f["model"].astype(str) + "/s" + f["seed"].astype(str) + " " + f["dataset"] + "/" + f["split"]

    frames = [f[f["variant"] == "original"].assign(file=label) for f in (correctness, increase, by_class)]
    correctness, increase, by_class = frames
    if correctness.empty:
        raise UserError("no SIS file of the experiment to plot sizes of")
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for (file, group), colour in zip(correctness.groupby("file", sort=False), sns.color_palette(), strict=False):
        for name, style in (("correct", "-"), ("wrong", "--")):
            part = group[group["group"] == name]
            axes[0].plot(part["threshold"], part["mean_size_pct"], style, color=colour, label=f"{file} {name}")
            axes[0].fill_between(part["threshold"], part["ci_low"], part["ci_high"], color=colour, alpha=0.15)
    axes[0].set_xlabel("SIS threshold")
    axes[0].set_ylabel("mean SIS size (% of image)")
    axes[0].legend(fontsize=6)
    for (file, group), colour in zip(increase.groupby("file", sort=False), sns.color_palette(), strict=False):
        axes[1].errorbar(group["threshold"], group["increase_pct"],
                         yerr=[group["increase_pct"] - group["ci_low"], group["ci_high"] - group["increase_pct"]],
                         fmt="o-", color=colour, capsize=2, label=file)
    axes[1].axhline(0, color="grey", linewidth=0.8)
    axes[1].set_xlabel("SIS threshold")
    axes[1].set_ylabel("% increase, correct vs wrong")
    at = by_class[np.isclose(by_class["threshold"], threshold)]
    extremes = []
    for (file, group), colour in zip(at.groupby("file", sort=False), sns.color_palette(), strict=False):
        group = group.sort_values("mean_size_pct", kind="stable")
        names = by_class_labels(group)
        many = len(group) > MAX_CLASS_TICKS  # ImageNet: positions by rank, the extremes named (as Figure S16)
        axes[2].errorbar(np.arange(len(group)) if many else names, group["mean_size_pct"],
                         yerr=[group["mean_size_pct"] - group["ci_low"], group["ci_high"] - group["mean_size_pct"]],
                         fmt="o", color=colour, capsize=2, markersize=2 if many else 4, label=file)
        if many and not extremes:
            extremes = [f"smallest: {', '.join(names[:5])}", f"largest: {', '.join(names[-5:][::-1])}"]
    if extremes:
        axes[2].set_xticks([])
        axes[2].set_title("\n".join(extremes), fontsize=6)
    else:
        axes[2].tick_params(axis="x", rotation=90, labelsize=6)
    axes[2].set_xlabel(f"explained class (sorted), tau={threshold_name(threshold)}")
    axes[2].set_ylabel("mean SIS size (% of image)")
    figure.tight_layout()
    save(figure, out, tight=True)


def plot_accuracy(accuracy: pd.DataFrame, dataset: str, out: str | Path) -> None:
    """Accuracy (mean ± std over runs) of every table row on the experiment's own test set."""
    rows = accuracy[(accuracy["test_set"] == dataset) & (accuracy.get("topk", 1) == 1)].copy()
    if rows.empty:
        raise UserError(f"accuracy table has no row on test set {dataset!r}")

    def describe(on, fraction, augment=False):
        text = "full" if on == "full" else f"{on} {fraction * 100:g}%"
        return text + (" (+)" if augment else "")

    rows["label"] = [f"{c} | train {describe(t, tf, a)} | eval {describe(e, ef)}" for c, t, tf, a, e, ef in zip(
        rows["condition"], rows["train_on"], rows["train_fraction"], rows["augment"], rows["eval_on"],
        rows["eval_fraction"], strict=True)]
    sns.set_theme(style="whitegrid", context="paper")
    figure, axis = plt.subplots(figsize=(7, 0.28 * len(rows) + 1))
    colours = [sns.color_palette()[0] if r == "pretrained" else sns.color_palette()[1] for r in rows["role"]]
    axis.barh(rows["label"], rows["accuracy_mean"], xerr=rows["accuracy_std"].fillna(0), color=colours, capsize=2)
    axis.invert_yaxis()
    axis.set_xlabel(f"accuracy on {dataset} (%)  (blue: trained on full images, orange: on pixel subsets)")
    axis.set_xlim(0, 100)
    axis.tick_params(axis="y", labelsize=6)
    save(figure, out, tight=True)


def plot_shifted(by_split: pd.DataFrame, out: str | Path) -> None:
    """Accuracy per split of every shifted test set for the pretrained models (mean ± std over seeds)."""
    rows = by_split[(by_split["role"] == "pretrained") & (by_split["eval_on"] == "full")
                    & (by_split.get("topk", 1) == 1)]
    if rows.empty:
        raise UserError("no evaluation of a pretrained model on full images to plot")
    rows = rows.assign(split=rows["eval_dataset"] + "/" + rows["eval_split"])
    sns.set_theme(style="whitegrid", context="paper")
    splits = list(dict.fromkeys(rows["split"]))
    figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(splits) * rows["condition"].nunique()), 3.5))
    sns.barplot(rows, x="split", y="accuracy", hue="condition", errorbar="sd", capsize=0.1, ax=axis, order=splits)
    axis.set_xlabel("")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.tick_params(axis="x", rotation=90, labelsize=6)
    save(figure, out, tight=True)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    heat = commands.add_parser("heatmaps")
    heat.add_argument("--sis", required=True)
    heat.add_argument("--subsets", nargs="*", default=[])
    heat.add_argument("--threshold", type=float, required=True)
    examples = commands.add_parser("examples")
    examples.add_argument("--sis", required=True)
    examples.add_argument("--threshold", type=float, required=True)
    examples.add_argument("--per-class", type=int, default=3)
    examples.add_argument("--seed", type=int, default=0)
    examples.add_argument("--max-classes", type=int, default=10)
    curves = commands.add_parser("curves")
    curves.add_argument("--sis", required=True)
    curves.add_argument("--images", type=curves_count, default=32, help="images to draw, or all")
    curves.add_argument("--seed", type=int, default=0)
    sizes = commands.add_parser("sizes")
    for name in ("correctness", "increase", "by-class"):
        sizes.add_argument(f"--{name}", required=True)
    sizes.add_argument("--threshold", type=float, required=True)
    acc = commands.add_parser("accuracy")
    acc.add_argument("--accuracy", required=True)
    acc.add_argument("--dataset", required=True)
    ens = commands.add_parser("ensemble")
    ens.add_argument("--ensemble-sis", required=True)
    ens.add_argument("--member-sis", nargs="*", default=[])
    ens.add_argument("--threshold", type=float, required=True)
    ens.add_argument("--images", type=int, default=8)
    shifted = commands.add_parser("shifted")
    shifted.add_argument("--by-split", required=True)
    for sub in (heat, examples, curves, sizes, acc, ens, shifted):
        sub.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "heatmaps":
        plot_heatmaps(args.sis, args.subsets, args.threshold, args.out)
    elif args.command == "examples":
        plot_examples_by_class(args.sis, args.threshold, args.per_class, args.seed, args.out, args.max_classes)
    elif args.command == "curves":
        plot_curves_sample(args.sis, args.images, args.seed, args.out)
    elif args.command == "sizes":
        by_class = read_csv(args.by_class, "SIS sizes by class", text_columns=("class_name",))
        plot_sizes(read_csv(args.correctness), read_csv(args.increase), by_class,
                   args.threshold, args.out)
    elif args.command == "accuracy":
        plot_accuracy(read_csv(args.accuracy), args.dataset, args.out)
    elif args.command == "ensemble":
        plot_ensemble(args.ensemble_sis, args.member_sis, args.threshold, args.images, args.out)
    else:
        plot_shifted(read_csv(args.by_split), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
