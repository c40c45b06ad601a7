"""Figures of an SIS run: example images with their SIS, and backward-selection confidence curves.

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
from ..data.layout import dataset_info
from ..errors import UserError, cli
from ..io import atomic_output, read_h5, read_json_attr
from .engine import Masking
from .extract import load_rows, threshold_name
from .orders import read_orders

MAX_COLUMNS = 4


def _open(path: str | Path):
    return read_h5(path, "SIS file")


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


def _show(axis, image: np.ndarray) -> None:
    axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


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
        _show(axes[i, 0], pixels[i])
        axes[i, 0].set_ylabel(f"class {classes[i]}\nf={f_full[i]:.3f}", fontsize=7)
        for j, threshold in enumerate(thresholds, start=1):
            mask = masks[threshold][i]
            _show(axes[i, j], np.where(mask[..., None], pixels[i], mean_colour))
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
    _save(figure, out)


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
    _save(figure, out)


def _save(figure, out: str | Path) -> None:
    with atomic_output(out) as tmp:
        figure.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."))
    plt.close(figure)


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
