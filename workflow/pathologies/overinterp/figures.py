"""Figures of an overinterpretation experiment (Carter et al. 2021), one subcommand each.

    python -m pathologies.overinterp.figures heatmaps --sis <source test SIS> --subsets <bs subsets...> \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures examples --sis <SIS file> --threshold 0.99 --per-class 3 --seed 0 \
        --out f.png
    python -m pathologies.overinterp.figures curves --sis <SIS file> --images 32 --seed 0 --out f.png
    python -m pathologies.overinterp.figures sizes --correctness c.csv --increase i.csv --by-class k.csv \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures accuracy --accuracy accuracy.csv --dataset digits --out f.png
    python -m pathologies.overinterp.figures ensemble --ensemble-sis e.h5 --member-sis m0.h5 m1.h5 \
        --threshold 0.99 --out f.png
    python -m pathologies.overinterp.figures shifted --by-split accuracy_by_split.csv --out f.png

- heatmaps (Figure 3, S7, S9a, S14): how often each pixel belongs to the k% BS subsets and to the
  SIS at the threshold, and each pixel's mean removal rank (0 = removed first).
- examples (Figure S1): per explained class, images with an SIS, shown with only the SIS kept.
- curves (Figures S8, S15): f on the remaining pixels after each backward-selection step, for a seeded
  sample of images, and their mean (black).
- sizes (Figures 5, S3, S4, S16): mean SIS size of correct vs wrong images per threshold (95% CI),
  the % increase, and mean SIS size by explained class at the threshold.
- accuracy (Table 1 at a glance): accuracy of every row of accuracy.csv on the experiment's test set.
- ensemble (Figure S2): image, ensemble SIS and each member's SIS on the same images.
- shifted (Figure S5): accuracy of the models trained on full images on their own test set and on every
  split of the shifted test sets (e.g. each CIFAR-10-C corruption and severity), mean ± std over seeds.

Pixels outside an SIS are drawn in the dataset's mean colour, which is what the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..cliargs import CommandParser
from ..data.layout import dataset_info, mask_colour
from ..errors import UserError, cli
from ..io import atomic_output, h5py, read_csv, read_h5, read_json_attr
from ..sis.engine import Masking
from ..sis.extract import load_rows, threshold_name
from ..sis.orders import read_orders, row_chunks


def _open(path: str | Path):
    return read_h5(path, "input file")


def _save(figure, out: str | Path) -> None:
    with atomic_output(out) as tmp:
        figure.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."), bbox_inches="tight")
    plt.close(figure)


def _show(axis, image: np.ndarray) -> None:
    axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def _sis_group(handle: h5py.File, threshold: float, path) -> str:
    name = f"sis/{threshold_name(threshold)}"
    if name not in handle:
        raise UserError(f"SIS file {path} has no threshold {threshold}; it has {sorted(handle['sis'].keys())}")
    return name


def _sis_of_rows(handle: h5py.File, threshold: float, path, wanted: np.ndarray) -> dict:
    """{dataset row: (mask, none)} of the file's images of the ``wanted`` rows, reading only their masks."""
    name = _sis_group(handle, threshold, path)
    index, none = handle["index"][()], handle[f"{name}/none"][()]
    at = np.flatnonzero(np.isin(index, wanted))
    masks = handle[f"{name}/mask"][at] if len(at) else []
    return {index[i]: (mask, none[i]) for i, mask in zip(at, masks, strict=True)}


def _images(handle: h5py.File, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images of ``rows`` of the SIS file's split and the dataset's mean colour."""
    dataset_path, split = str(read_json_attr(handle, "dataset")), str(read_json_attr(handle, "split"))
    info = dataset_info(dataset_path)
    images = load_rows(dataset_path, info, split, np.asarray(rows, dtype=np.int64)).images
    return images, mask_colour(info.mean)


def removal_rank(order: np.ndarray, patch: int, height: int, width: int) -> np.ndarray:
    """Mean over images of each pixel's position in the removal order, scaled to [0, 1] (0 = first)."""
    return _rank_map(_rank_sums(order), len(order), patch, height, width)


def _rank_sums(order: np.ndarray) -> np.ndarray:
    """Sum over images of each feature's position in the order (int64, exact)."""
    ranks = np.empty(order.shape, dtype=np.int64)
    np.put_along_axis(ranks, order.astype(np.int64), np.arange(order.shape[1], dtype=np.int64)[None], axis=1)
    return ranks.sum(axis=0)


def _rank_map(sums: np.ndarray, images: int, patch: int, height: int, width: int) -> np.ndarray:
    mean = sums / images if images else np.full(len(sums), np.nan)
    return Masking(patch=patch).feature_map(mean / max(len(sums) - 1, 1), height, width)


def _mean_mask(dataset: h5py.Dataset, keep=None) -> tuple[np.ndarray, int]:
    """(share of the kept rows covering each pixel, kept rows) of a (n, H, W) bool dataset, in chunks."""
    total, kept = np.zeros(dataset.shape[1:], dtype=np.int64), 0
    for rows in row_chunks(len(dataset)):
        masks = dataset[rows] if keep is None else dataset[rows][keep[rows]]
        total += masks.sum(axis=0)
        kept += len(masks)
    return (total / kept if kept else np.full(dataset.shape[1:], np.nan)), kept


def heatmap_panels(sis_path: str | Path, subset_paths: Sequence[str | Path],
                   threshold: float) -> list[tuple[str, np.ndarray]]:
    """(title, (H, W) map) of every heatmap panel; SIS files and subsets are read in chunks of rows."""
    panels = []
    for path in subset_paths:
        with _open(path) as handle:
            fraction = float(handle.attrs["fraction"])
            panels.append((f"{fraction * 100:g}% BS subsets", _mean_mask(handle["test/masks"])[0]))
    with _open(sis_path) as handle:
        name = _sis_group(handle, threshold, sis_path)
        height, width = handle[f"{name}/mask"].shape[1:]
        shares, kept = _mean_mask(handle[f"{name}/mask"], ~handle[f"{name}/none"][()])
        count, patch = len(handle["order"]), int(handle.attrs["patch"])
        sums = sum((_rank_sums(read_orders(handle, rows, sis_path)) for rows in row_chunks(count)),
                   np.zeros(handle["order"].shape[1], dtype=np.int64))
    panels.append((f"SIS, tau={threshold_name(threshold)} (n={kept})",
                   shares if kept else np.zeros((height, width))))
    panels.append(("mean removal rank (0 = first)", _rank_map(sums, count, patch, height, width)))
    return panels


def plot_heatmaps(sis_path: str | Path, subset_paths: Sequence[str | Path], threshold: float, out: str | Path) -> None:
    """BS-subset and SIS pixel frequencies and the mean removal rank of the source's test images."""
    panels = heatmap_panels(sis_path, subset_paths, threshold)
    figure, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8), squeeze=False)
    for axis, (title, values) in zip(axes[0], panels, strict=True):
        shown = axis.imshow(values, cmap="magma", interpolation="nearest")
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(title, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    _save(figure, out)


def plot_examples(sis_path: str | Path, threshold: float, per_class: int, seed: int, out: str | Path,
                  max_classes: int = 10) -> None:
    """Per explained class (a seeded sample of ``max_classes`` when there are more, e.g. ImageNet's
    1000), ``per_class`` seeded random images with an SIS: image and SIS side by side."""
    with _open(sis_path) as handle:
        name = _sis_group(handle, threshold, sis_path)
        none, classes, rows = handle[f"{name}/none"][()], handle["class"][()], handle["index"][()]
        chosen = []
        rng = np.random.default_rng(seed)
        shown = np.unique(classes[~none])
        if len(shown) > max_classes:
            shown = np.sort(rng.choice(shown, max_classes, replace=False))
        for cls in shown:  # every shown class has an image with an SIS
            candidates = np.flatnonzero((classes == cls) & ~none)
            chosen.append((cls, np.sort(rng.choice(candidates, min(per_class, len(candidates)), replace=False))))
        if not chosen:
            raise UserError(f"no image of {sis_path} has an SIS at threshold {threshold}; nothing to show")
        images, colour = _images(handle, rows[np.concatenate([c for _, c in chosen])])
        picked = np.unique(np.concatenate([c for _, c in chosen]))
        mask = dict(zip(picked.tolist(), handle[f"{name}/mask"][picked], strict=True))  # only the shown images
    figure, axes = plt.subplots(len(chosen), 2 * per_class, figsize=(1.2 * 2 * per_class, 1.3 * len(chosen)),
                                squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    k = 0
    for row, (cls, picks) in enumerate(chosen):
        for j, i in enumerate(picks):
            _show(axes[row, 2 * j], images[k])
            _show(axes[row, 2 * j + 1], np.where(mask[i][..., None], images[k], colour))
            axes[row, 2 * j].set_axis_on()
            axes[row, 2 * j + 1].set_axis_on()
            axes[row, 2 * j + 1].set_xlabel(f"{mask[i].sum()} px", fontsize=6)
            k += 1
        axes[row, 0].set_ylabel(f"class {cls}", fontsize=7)
    figure.suptitle(f"SIS at tau={threshold_name(threshold)} (image, SIS)", fontsize=9)
    figure.tight_layout()
    _save(figure, out)


def plot_curves(sis_path: str | Path, images: int, seed: int, out: str | Path) -> None:
    """f on the remaining pixels after each step for a seeded sample of images, and their mean."""
    with _open(sis_path) as handle:
        count, steps = handle["curve"].shape
        if not count:
            raise UserError(f"SIS file {sis_path} holds no images; nothing to plot")
        pick = np.sort(np.random.default_rng(seed).choice(count, min(images, count), replace=False))
        curve, f_full = handle["curve"][pick], handle["f_full"][pick]  # only the plotted images
        features = handle["order"].shape[1]
        removed = handle["steps"][0] if "steps" in handle else np.arange(1, steps + 1)
    x = np.concatenate([[0.0], np.asarray(removed, dtype=np.float64) / features])
    values = np.concatenate([f_full[:, None], curve], axis=1)
    sns.set_theme(style="whitegrid", context="paper")
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    for row in values:
        axis.plot(x, row, color="C0", alpha=0.35, linewidth=0.8)
    axis.plot(x, values.mean(axis=0), color="black", linewidth=2, label=f"mean of {len(pick)}")
    axis.set_xlabel("fraction of features removed")
    axis.set_ylabel("confidence on remaining pixels")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7, loc="lower left")
    _save(figure, out)


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
    for (file, group), colour in zip(at.groupby("file", sort=False), sns.color_palette(), strict=False):
        group = group.sort_values("mean_size_pct")
        axes[2].errorbar(group["class"].astype(str), group["mean_size_pct"],
                         yerr=[group["mean_size_pct"] - group["ci_low"], group["ci_high"] - group["mean_size_pct"]],
                         fmt="o", color=colour, capsize=2, label=file)
    axes[2].set_xlabel(f"explained class (sorted), tau={threshold_name(threshold)}")
    axes[2].set_ylabel("mean SIS size (% of image)")
    figure.tight_layout()
    _save(figure, out)


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
    _save(figure, out)


def plot_ensemble(ensemble_path: str | Path, member_paths: Sequence[str | Path], threshold: float, images: int,
                  out: str | Path) -> None:
    """Image, ensemble SIS and member SIS on the first ``images`` images where the ensemble has an SIS."""
    with _open(ensemble_path) as handle:
        none = handle[f"{_sis_group(handle, threshold, ensemble_path)}/none"][()]
        rows = handle["index"][()]
        pick = np.flatnonzero(~none)[:images]
        if not len(pick):
            raise UserError(f"the ensemble has no SIS at threshold {threshold} in {ensemble_path}; nothing to show")
        pixels, colour = _images(handle, rows[pick])
        columns = [("ensemble", _sis_of_rows(handle, threshold, ensemble_path, rows[pick]))]
    for i, path in enumerate(member_paths):
        with _open(path) as handle:
            columns.append((f"member {i + 1}", _sis_of_rows(handle, threshold, path, rows[pick])))
    figure, axes = plt.subplots(len(pick), 1 + len(columns), figsize=(1.3 * (1 + len(columns)), 1.3 * len(pick)),
                                squeeze=False)
    for row, i in enumerate(pick):
        _show(axes[row, 0], pixels[row])
        for col, (_title, by_row) in enumerate(columns, start=1):
            found = by_row.get(rows[i])
            if found is None or found[1]:
                axes[row, col].set_axis_off()
                continue
            _show(axes[row, col], np.where(found[0][..., None], pixels[row], colour))
            axes[row, col].set_xlabel(f"{found[0].sum()} px", fontsize=6)
    for col, title in enumerate(["image"] + [t for t, _ in columns]):
        axes[0, col].set_title(title, fontsize=8)
    _save(figure, out)


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
    _save(figure, out)


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
    curves.add_argument("--images", type=int, default=32)
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
        plot_examples(args.sis, args.threshold, args.per_class, args.seed, args.out, args.max_classes)
    elif args.command == "curves":
        plot_curves(args.sis, args.images, args.seed, args.out)
    elif args.command == "sizes":
        plot_sizes(read_csv(args.correctness), read_csv(args.increase), read_csv(args.by_class),
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
