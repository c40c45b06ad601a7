"""SIS drawings, the one module of its kind: example images with their SIS and backward-selection confidence
curves, of an SIS run (this module's command) and of an overinterpretation experiment's source model
(per class, a seeded sample of curves, an ensemble beside its members: ``pathologies.overinterp.figures``).

    python -m pathologies.sis.figures --sis results/sis/<run>/<model>/seed<seed>/<dataset>/<split>.h5 ... \
        --examples-out results/figures/sis_examples_<run>.png --curves-out results/figures/sis_curves_<run>.png

Examples: the first ``--images`` images of the first file; per image the image, its SIS at
every threshold (pixels outside the SIS shown in the dataset's mean colour, which is what the
model saw) and the removal order (dark: removed first). Curves: f after each backward-selection
step against the fraction of pixels removed, one line per image, one panel per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..cliargs import CommandParser
from ..data.layout import dataset_info, mask_colour
from ..errors import UserError, cli
from ..io import h5py, read_h5, read_json_attr
from ..plots import save, show
from .engine import Masking
from .extract import load_rows, threshold_name
from .orders import read_orders

MAX_COLUMNS = 4


def _open(path: str | Path):
    return read_h5(path, "SIS file")


def open_input(path: str | Path):
    """A subset dataset or SIS file given to an overinterpretation figure."""
    return read_h5(path, "input file")


def file_label(path: str | Path) -> str:
    """``<model>/seed<seed>`` of ``results/sis/<run>/<model>/seed<seed>/<dataset>/<split>.h5``."""
    parts = Path(path).parts
    return "/".join(parts[-4:-2]) if len(parts) >= 4 else Path(path).stem


def removal_step_map(order: np.ndarray, patch: int, block: int, height: int, width: int) -> np.ndarray:
    """(H, W) backward-selection step at which each pixel's feature was removed (0 = first).

    Exact selection removes one feature per step; Batched Gradient removes ``block``.
    """
    step = np.empty(len(order), dtype=np.int64)
    step[order] = np.arange(len(order)) // block
    return Masking(patch=patch).feature_map(step, height, width)


def plot_examples(sis_path: str | Path, out: str | Path, images: int = 6) -> None:
    """Up to ``images`` images of one SIS file: image, SIS per threshold, removal order."""
    sis_path = Path(sis_path)
    with _open(sis_path) as handle:
        thresholds = [float(t) for t in handle.attrs["thresholds"]]
        count = min(images, len(handle["index"]))
        if count == 0:
            raise UserError(f"SIS file {sis_path} holds no images; nothing to plot")
        rows = handle["index"][:count]
        classes, f_full = handle["class"][:count], handle["f_full"][:count]
        order = read_orders(handle, slice(0, count), sis_path)
        masks = {t: handle[f"sis/{threshold_name(t)}/mask"][:count] for t in thresholds}
        dataset_path, split = str(read_json_attr(handle, "dataset")), str(read_json_attr(handle, "split"))
        patch, block = int(handle.attrs["patch"]), int(handle.attrs["block"])
    info = dataset_info(dataset_path)
    pixels = load_rows(dataset_path, info, split, rows).images
    mean_colour = np.round(np.asarray(info.mean) * 255).astype(np.uint8)
    height, width = pixels.shape[1:3]
    columns = 2 + len(thresholds)
    figure, axes = plt.subplots(count, columns, figsize=(1.6 * columns, 1.6 * count), squeeze=False)
    for i in range(count):
        show(axes[i, 0], pixels[i])
        axes[i, 0].set_ylabel(f"class {classes[i]}\nf={f_full[i]:.3f}", fontsize=7)
        for j, threshold in enumerate(thresholds, start=1):
            mask = masks[threshold][i]
            show(axes[i, j], np.where(mask[..., None], pixels[i], mean_colour))
            kept = f"{mask.sum()} px" if f_full[i] >= threshold else "no SIS"
            axes[i, j].set_xlabel(kept, fontsize=7)
        axes[i, -1].imshow(removal_step_map(order[i], patch, block, height, width), cmap="viridis",
                           interpolation="nearest")
        axes[i, -1].set_xticks([])
        axes[i, -1].set_yticks([])
    for j, threshold in enumerate(thresholds, start=1):
        axes[0, j].set_title(f"SIS, tau={threshold_name(threshold)}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, -1].set_title("removal order", fontsize=8)
    figure.suptitle(file_label(sis_path), fontsize=9)
    figure.tight_layout()
    save(figure, out)


def plot_curves(sis_paths: Sequence[str | Path], out: str | Path) -> None:
    """f after each backward-selection step vs fraction of pixels removed; one panel per file."""
    sns.set_theme(style="whitegrid", context="paper")
    columns = min(len(sis_paths), MAX_COLUMNS)
    rows = -(-len(sis_paths) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True)
    for axis in axes.flat[len(sis_paths):]:
        axis.set_visible(False)
    for axis, path in zip(axes.flat, map(Path, sis_paths), strict=False):
        with _open(path) as handle:
            curve, f_full = handle["curve"][()], handle["f_full"][()]
            features = handle["order"].shape[1]
            removed = handle["steps"][()] if "steps" in handle else np.broadcast_to(
                np.arange(1, curve.shape[1] + 1), curve.shape)
            thresholds = [float(t) for t in handle.attrs["thresholds"]]
            sizes = {t: handle[f"sis/{threshold_name(t)}/size"][()][~handle[f"sis/{threshold_name(t)}/none"][()]]
                     for t in thresholds}
            pixels = int(np.prod(handle.attrs["image_shape"][:2]))
        fraction = np.asarray(removed) / features
        for row in range(len(curve)):
            axis.plot(np.concatenate([[0.0], fraction[row]]), np.concatenate([[f_full[row]], curve[row]]),
                      color="C0", alpha=0.25, linewidth=0.8)
        summary = []
        for k, threshold in enumerate(thresholds):
            axis.axhline(threshold, color=f"C{k + 1}", linestyle="--", linewidth=1,
                         label=f"tau={threshold_name(threshold)}")
            if len(sizes[threshold]):
                summary.append(f"{np.median(sizes[threshold]) / pixels:.0%}")
        axis.set_title(f"{file_label(path)} (n={len(curve)})\nmedian SIS size: {', '.join(summary) or '-'}",
                       fontsize=8)
        axis.set_xlabel("fraction of features removed")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
    for axis in axes[:, 0]:
        axis.set_ylabel("f (explained class)")
    axes.flat[len(sis_paths) - 1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    save(figure, out)


def sis_group(handle: h5py.File, threshold: float, path) -> str:
    name = f"sis/{threshold_name(threshold)}"
    if name not in handle:
        raise UserError(f"SIS file {path} has no threshold {threshold}; it has {sorted(handle['sis'].keys())}")
    return name


def _sis_of_rows(handle: h5py.File, threshold: float, path, wanted: np.ndarray) -> dict:
    """{dataset row: (mask, none)} of the file's images of the ``wanted`` rows, reading only their masks."""
    name = sis_group(handle, threshold, path)
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


def plot_examples_by_class(sis_path: str | Path, threshold: float, per_class: int, seed: int, out: str | Path,
                  max_classes: int = 10) -> None:
    """Per explained class (a seeded sample of ``max_classes`` when there are more, e.g. ImageNet's
    1000), ``per_class`` seeded random images with an SIS: image and SIS side by side."""
    with open_input(sis_path) as handle:
        name = sis_group(handle, threshold, sis_path)
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
            show(axes[row, 2 * j], images[k])
            show(axes[row, 2 * j + 1], np.where(mask[i][..., None], images[k], colour))
            axes[row, 2 * j].set_axis_on()
            axes[row, 2 * j + 1].set_axis_on()
            axes[row, 2 * j + 1].set_xlabel(f"{mask[i].sum()} px", fontsize=6)
            k += 1
        axes[row, 0].set_ylabel(f"class {cls}", fontsize=7)
    figure.suptitle(f"SIS at tau={threshold_name(threshold)} (image, SIS)", fontsize=9)
    figure.tight_layout()
    save(figure, out, tight=True)


def plot_curves_sample(sis_path: str | Path, images: int, seed: int, out: str | Path) -> None:
    """f on the remaining pixels after each step for a seeded sample of images, and their mean."""
    with open_input(sis_path) as handle:
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
    save(figure, out, tight=True)


def plot_ensemble(ensemble_path: str | Path, member_paths: Sequence[str | Path], threshold: float, images: int,
                  out: str | Path) -> None:
    """Image, ensemble SIS and member SIS on the first ``images`` images where the ensemble has an SIS."""
    with open_input(ensemble_path) as handle:
        none = handle[f"{sis_group(handle, threshold, ensemble_path)}/none"][()]
        rows = handle["index"][()]
        pick = np.flatnonzero(~none)[:images]
        if not len(pick):
            raise UserError(f"the ensemble has no SIS at threshold {threshold} in {ensemble_path}; nothing to show")
        pixels, colour = _images(handle, rows[pick])
        columns = [("ensemble", _sis_of_rows(handle, threshold, ensemble_path, rows[pick]))]
    for i, path in enumerate(member_paths):
        with open_input(path) as handle:
            columns.append((f"member {i + 1}", _sis_of_rows(handle, threshold, path, rows[pick])))
    figure, axes = plt.subplots(len(pick), 1 + len(columns), figsize=(1.3 * (1 + len(columns)), 1.3 * len(pick)),
                                squeeze=False)
    for row, i in enumerate(pick):
        show(axes[row, 0], pixels[row])
        for col, (_title, by_row) in enumerate(columns, start=1):
            found = by_row.get(rows[i])
            if found is None or found[1]:
                axes[row, col].set_axis_off()
                continue
            show(axes[row, col], np.where(found[0][..., None], pixels[row], colour))
            axes[row, col].set_xlabel(f"{found[0].sum()} px", fontsize=6)
    for col, title in enumerate(["image"] + [t for t, _ in columns]):
        axes[0, col].set_title(title, fontsize=8)
    save(figure, out, tight=True)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--sis", nargs="+", required=True, help="merged SIS files of one run")
    parser.add_argument("--examples-out", required=True)
    parser.add_argument("--curves-out", required=True)
    parser.add_argument("--images", type=int, default=6, help="example images (from the first file)")
    args = parser.parse_args(argv)
    plot_examples(args.sis[0], args.examples_out, images=args.images)
    plot_curves(args.sis, args.curves_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
