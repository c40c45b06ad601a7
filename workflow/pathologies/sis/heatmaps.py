"""Where SIS and backward-selection pixel subsets lie, the one heatmap module of both stages.

    python -m pathologies.sis.heatmaps --sis <label>=<sis file> ... --fraction 0.05 --out sis_heatmaps_<run>.png

Per SIS run (this command, :func:`plot`): one column per label (files with the same label, e.g. the
random tie-breaking repeats or seeds of one model, are pooled image by image); rows: the share of
images whose k% BS subset (the last ``round(k p)`` features removed) covers each pixel, then the share
whose SIS covers it at each threshold (images without an SIS left out).

Per overinterpretation experiment (:func:`plot_heatmaps`, drawn by ``pathologies.overinterp.figures
heatmaps``): the paper's Figures 3 and S14 for the source model (Figures S7 and S9a compare SIS runs:
the per-run layout), from its pixel-subset datasets
and test SIS, with each pixel's mean removal rank.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import h5py, read_h5
from ..plots import save
from .engine import Masking
from .extract import threshold_name
from .figures import open_input, sis_group
from .orders import read_orders, row_chunks


def bs_subset_size(fraction: float, features: int) -> int:
    """Features in a ``fraction`` BS subset (half rounds up, at least one)."""
    return max(1, math.floor(fraction * features + 0.5))


def _bs_counts(order: np.ndarray, size: int) -> np.ndarray:
    p = order.shape[1]
    return np.bincount(np.asarray(order[:, p - size:], dtype=np.int64).ravel(), minlength=p)


def read_heatmaps(paths: Sequence[str | Path], fraction: float) -> dict:
    """Pooled heatmaps of files of one label: {"bs": (H, W), "sis": {tau: (H, W)}, "images": n, "with_sis": {tau: n}}.

    Orders and masks are read :data:`pathologies.sis.orders.CHUNK` rows at a time.
    """
    bs_sum, sis_sum, with_sis, images, taus = None, {}, {}, 0, None
    for path in paths:
        path = Path(path)
        with read_h5(path, "SIS file") as handle:
            if "order" not in handle or "sis" not in handle:
                raise UserError(f"{path} is not an SIS file (no /order or /sis); rebuild it with `snakemake {path}`")
            count, p = handle["order"].shape
            patch = int(handle.attrs["patch"])
            file_taus = sorted(handle["sis"].keys(), key=float)
            if taus is None:
                taus = file_taus
            elif taus != file_taus:
                raise UserError(f"{path} has thresholds {file_taus}, the other files of its label {taus}; "
                                "pool only files of one SIS run")
            height, width = handle[f"sis/{taus[0]}/mask"].shape[1:]
            size, counts = bs_subset_size(fraction, p), np.zeros(p, dtype=np.int64)
            file_sis = {tau: np.zeros((height, width), dtype=np.int64) for tau in taus}
            for rows in row_chunks(count):
                counts += _bs_counts(read_orders(handle, rows, path), size)
                for tau in taus:
                    mask, none = handle[f"sis/{tau}/mask"][rows], handle[f"sis/{tau}/none"][rows]
                    file_sis[tau] += mask[~none].sum(axis=0)
                    with_sis[tau] = with_sis.get(tau, 0) + int((~none).sum())
            bs = Masking(patch=patch).feature_map(counts / max(count, 1), height, width) * count
            bs_sum = bs if bs_sum is None else bs_sum + bs
            for tau in taus:
                sis_sum[tau] = sis_sum.get(tau, 0) + file_sis[tau]
            images += count
    if not images:
        raise UserError(f"SIS files {', '.join(map(str, paths))} hold no images; extract a larger sample")
    return {"bs": bs_sum / images, "images": images, "with_sis": with_sis,
            "sis": {tau: sis_sum[tau] / max(with_sis[tau], 1) for tau in taus}}


def plot(labelled: dict[str, list[str]], fraction: float, out: str | Path) -> dict[str, dict]:
    """Draw the heatmaps of every label into ``out``; returns what was drawn (per label, as read_heatmaps)."""
    maps = {label: read_heatmaps(paths, fraction) for label, paths in labelled.items()}
    taus = sorted({tau for m in maps.values() for tau in m["sis"]}, key=float)
    rows = 1 + len(taus)
    figure, axes = plt.subplots(rows, len(maps), figsize=(2.8 * len(maps), 2.6 * rows), squeeze=False)
    for col, (label, m) in enumerate(maps.items()):
        panels = [(f"{label}\n{fraction * 100:g}% BS subsets (n={m['images']})", m["bs"])]
        panels += [(f"SIS, tau={threshold_name(float(tau))} (n={m['with_sis'].get(tau, 0)})",
                    m["sis"].get(tau, np.zeros_like(m["bs"]))) for tau in taus]
        for row, (title, values) in enumerate(panels):
            axis = axes[row][col]
            shown = axis.imshow(values, cmap="magma", interpolation="nearest", vmin=0)
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
            axis.set_title(title, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    save(figure, out, tight=True)
    return maps


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
        with open_input(path) as handle:
            fraction = float(handle.attrs["fraction"])
            panels.append((f"{fraction * 100:g}% BS subsets", _mean_mask(handle["test/masks"])[0]))
    with open_input(sis_path) as handle:
        name = sis_group(handle, threshold, sis_path)
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
    save(figure, out, tight=True)


def _labelled(value: str) -> tuple[str, str]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{value!r} is not LABEL=FILE")
    return label, path


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--sis", type=_labelled, action="append", required=True, metavar="LABEL=FILE")
    parser.add_argument("--fraction", type=float, default=0.05, help="BS-subset size (fraction of features)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction <= 1.0:
        raise UserError(f"--fraction {args.fraction} is not in (0, 1]; use e.g. 0.05 for 5%")
    labelled: dict[str, list[str]] = {}
    for label, path in args.sis:
        labelled.setdefault(label, []).append(path)
    plot(labelled, args.fraction, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
