"""SIS drawings, the one module of its kind: example images with their SIS and backward-selection confidence
curves, of an SIS run (this module's command) and of an overinterpretation experiment's source model
(per class, every curve or a seeded sample, an ensemble beside its members: ``pathologies.overinterp.figures``).
Classes are named (:mod:`pathologies.data.class_names`: torchvision's category names for ImageNet's WordNet ids).

    python -m pathologies.sis.figures --sis results/sis/<run>/<model>/seed<seed>/<dataset>/<split>.h5 ... \
        --examples-out results/figures/sis_examples_<run>.png --curves-out results/figures/sis_curves_<run>.png

Examples: the first ``--images`` images of the first file; per image the image, its SIS at
every threshold (pixels outside the SIS shown in the dataset's mean colour, which is what the
model saw) and the removal order (dark: removed first). Curves: f after each backward-selection
step against the fraction of pixels removed, one line per image and their mean, one panel per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.collections import LineCollection

from ..cliargs import CommandParser, positive_int
from ..data.class_names import class_label, class_labels, readable_names
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


def plot_examples(sis_path: str | Path, out: str | Path, images: int = 6) -> list[str]:
    """Up to ``images`` images of one SIS file: image, SIS per threshold, removal order. Returns each row's class
    label (ImageNet's category names for WordNet ids)."""
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
    labels = readable_names(info.class_names)
    pixels = load_rows(dataset_path, info, split, rows).images
    mean_colour = np.round(np.asarray(info.mean) * 255).astype(np.uint8)
    height, width = pixels.shape[1:3]
    columns = 2 + len(thresholds)
    figure, axes = plt.subplots(count, columns, figsize=(1.6 * columns, 1.6 * count), squeeze=False)
    for i in range(count):
        show(axes[i, 0], pixels[i])
        axes[i, 0].set_ylabel(f"{class_label(labels, classes[i])}\nf={f_full[i]:.3f}", fontsize=7)
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
    return [class_label(labels, cls) for cls in classes]


def plot_curves(sis_paths: Sequence[str | Path], out: str | Path) -> None:
    """f after each backward-selection step vs fraction of pixels removed, every image and their mean (black);
    one panel per file."""
    sns.set_theme(style="whitegrid", context="paper")
    columns = min(len(sis_paths), MAX_COLUMNS)
    rows = -(-len(sis_paths) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True)
    for axis in axes.flat[len(sis_paths):]:
        axis.set_visible(False)
    for axis, path in zip(axes.flat, map(Path, sis_paths), strict=False):
        with _open(path) as handle:
            count = handle["curve"].shape[0]
            if count:
                draw_curves(axis, handle, np.arange(count))
            thresholds = [float(t) for t in handle.attrs["thresholds"]]
            sizes = {t: handle[f"sis/{threshold_name(t)}/size"][()][~handle[f"sis/{threshold_name(t)}/none"][()]]
                     for t in thresholds}
            pixels = int(np.prod(handle.attrs["image_shape"][:2]))
        summary = []
        for k, threshold in enumerate(thresholds):
            axis.axhline(threshold, color=f"C{k + 1}", linestyle="--", linewidth=1,
                         label=f"tau={threshold_name(threshold)}")
            if len(sizes[threshold]):
                summary.append(f"{np.median(sizes[threshold]) / pixels:.0%}")
        axis.set_title(f"{file_label(path)} (n={count})\nmedian SIS size: {', '.join(summary) or '-'}",
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


def draw_mosaic(tiles: list[list[np.ndarray]], row_names: list[str], captions: list[tuple[int, int, str]],
                inch: float, title: str, out: str | Path) -> None:
    """Equally sized uint8 RGB tiles (rows of them, white gaps) as one image, each row named on the left and
    ``captions`` (row, column, text) under their tile; ``inch``: the size of a tile. One Axes for all tiles:
    Figure S1's 300 panels as Axes take seconds each to lay out and draw."""
    height, width = tiles[0][0].shape[:2]
    columns = max(len(line) for line in tiles)
    pad_x, pad_y = max(1, width // 10), max(2, height // 3)  # room for the captions below each row
    mosaic = np.full((len(tiles) * (height + pad_y), columns * (width + pad_x), 3), 255, dtype=np.uint8)
    for r, line in enumerate(tiles):
        for c, tile in enumerate(line):
            y, x = r * (height + pad_y), c * (width + pad_x)
            mosaic[y:y + height, x:x + width] = tile
    figure = plt.figure(figsize=(inch * columns * (1 + pad_x / width), inch * len(tiles) * (1 + pad_y / height)))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(mosaic, interpolation="nearest", aspect="equal")
    axis.set_axis_off()
    for r, text in enumerate(row_names):
        axis.text(-pad_x, r * (height + pad_y) + height / 2, text, ha="right", va="center", fontsize=7)
    for r, c, text in captions:
        axis.text(c * (width + pad_x) + width / 2, r * (height + pad_y) + height + pad_y * 0.1, text, ha="center",
                  va="top", fontsize=6)
    axis.set_title(title, fontsize=9)
    save(figure, out, tight=True)


STACK_FROM = 6  # from this many examples per class on, each class is two rows (images above their SIS)


def plot_examples_by_class(sis_path: str | Path, threshold: float, per_class: int, seed: int, out: str | Path,
                           max_classes: int = 10) -> list[str]:
    """Per explained class (a seeded sample of ``max_classes`` when there are more, e.g. ImageNet's
    1000), ``per_class`` seeded random images with an SIS: image and SIS side by side, or, from ``STACK_FROM``
    per class on (Figure S1's 15), the class's images in one row and their SIS in the row below.
    Returns the class labels of the rows (ImageNet's category names for WordNet ids)."""
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
        labels = class_labels(str(read_json_attr(handle, "dataset")))
        picked = np.unique(np.concatenate([c for _, c in chosen]))
        mask = dict(zip(picked.tolist(), handle[f"{name}/mask"][picked], strict=True))  # only the shown images
    stacked = per_class >= STACK_FROM
    names = [class_label(labels, cls) for cls, _ in chosen]
    rgb = images if images.shape[-1] == 3 else np.repeat(images[..., :1], 3, axis=-1)
    colour = np.broadcast_to(colour, (3,))  # one channel: grey
    tiles, captions, row_names, k = [], [], [], 0  # captions: (row, column, text) under an SIS tile
    for row, (_cls, picks) in enumerate(chosen):
        pairs = []
        for i in picks:
            pairs.append((rgb[k], np.where(mask[i][..., None], rgb[k], colour).astype(np.uint8), f"{mask[i].sum()} px"))
            k += 1
        if stacked:
            captions += [(len(tiles) + 1, j, text) for j, (_, _, text) in enumerate(pairs)]
            tiles += [[image for image, _, _ in pairs], [sis for _, sis, _ in pairs]]
            row_names += [names[row], "SIS"]
        else:
            captions += [(len(tiles), 2 * j + 1, text) for j, (_, _, text) in enumerate(pairs)]
            tiles.append([tile for image, sis, _ in pairs for tile in (image, sis)])
            row_names.append(names[row])
    layout = "images, their SIS below" if stacked else "image, SIS"
    draw_mosaic(tiles, row_names, captions, 0.9 if stacked else 1.2,
                f"SIS at tau={threshold_name(threshold)} ({layout})", out)
    return names


CURVE_CHUNK = 1000  # curves read (and drawn as one LineCollection) at a time: memory stays ~16 MB per chunk


def curves_count(text: str) -> int | None:
    """argparse ``type`` of ``--images``: a count of images, or ``all`` (None)."""
    return None if text == "all" else positive_int(text)


def curve_x(handle: h5py.File) -> np.ndarray:
    """Fraction of features removed at each point of a curve: 0 (the full image), then after each step."""
    steps = handle["curve"].shape[1]
    removed = handle["steps"][0] if "steps" in handle else np.arange(1, steps + 1)
    return np.concatenate([[0.0], np.asarray(removed, dtype=np.float64) / handle["order"].shape[1]])


def draw_curves(axis, handle: h5py.File, pick: np.ndarray, colour: str = "C0") -> np.ndarray:
    """Draw the curves of the file's images ``pick`` (ascending) with f on the full image first, and return their
    mean. They are read ``CURVE_CHUNK`` rows at a time and drawn as one rasterised LineCollection per chunk, so
    10,000 curves of 1,024 steps need a few hundred MB and no Python loop per line."""
    x = curve_x(handle)
    alpha = float(np.clip(12.0 / len(pick), 0.02, 0.35))  # many lines: their density shows, not one line
    total = np.zeros(len(x))
    for start in range(0, len(pick), CURVE_CHUNK):
        rows = pick[start:start + CURVE_CHUNK]
        whole = len(rows) == rows[-1] - rows[0] + 1  # a contiguous block reads as a slice
        at = slice(int(rows[0]), int(rows[-1]) + 1) if whole else rows
        values = np.concatenate([handle["f_full"][at][:, None], handle["curve"][at]], axis=1)
        total += values.sum(axis=0)
        segments = np.stack([np.broadcast_to(x, values.shape), values], axis=-1)
        axis.add_collection(LineCollection(segments, colors=colour, alpha=alpha, linewidths=0.6, rasterized=True))
    mean = total / len(pick)
    axis.plot(x, mean, color="black", linewidth=2, label=f"mean of {len(pick)}")
    return mean


def plot_curves_sample(sis_path: str | Path, images: int | None, seed: int, out: str | Path) -> np.ndarray:
    """f on the remaining pixels after each step for every image of the file (``images`` None, Figure S8) or a
    seeded sample of ``images`` (Figure S15), and their mean (black). Returns the mean curve."""
    sns.set_theme(style="whitegrid", context="paper")
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    with open_input(sis_path) as handle:
        count = handle["curve"].shape[0]
        if not count:
            raise UserError(f"SIS file {sis_path} holds no images; nothing to plot")
        if images is None or images >= count:
            pick = np.arange(count)
        else:
            pick = np.sort(np.random.default_rng(seed).choice(count, images, replace=False))
        mean = draw_curves(axis, handle, pick)
    axis.set_title(f"all {count} images" if len(pick) == count else f"{len(pick)} of {count} images (seeded)",
                   fontsize=8)
    axis.set_xlabel("fraction of features removed")
    axis.set_ylabel("confidence on remaining pixels")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7, loc="lower left")
    save(figure, out, tight=True)
    return mean


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
