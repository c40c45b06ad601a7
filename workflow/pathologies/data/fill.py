"""What the masked pixels of a pixel subset hold (shared by array subsets, written once, and ImageNet
subset indexes, filled as each image streams from disk): the mean colour, ROAD's noisy linear imputation,
or, for mask-only subsets, nothing of the image (kept pixels white).
"""

from __future__ import annotations

import zlib

import numpy as np

IMPUTATION_NOISE = 0.01  # ROAD's noise std on the [0, 1] pixel scale
# ROAD's neighbour weights: 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones
_NEIGHBOURS = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]


def apply_masks(images: np.ndarray, masks: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W, C) with every pixel where ``masks`` (n, H, W) is False set to ``colour``."""
    return np.where(masks[..., None], images, colour.reshape(1, 1, 1, -1)).astype(np.uint8)


def render_masks(masks: np.ndarray, colour: np.ndarray, channels: int) -> np.ndarray:
    """Mask-only images (n, H, W, C) uint8: kept pixels white (255), the others ``colour`` (the mean)."""
    white = np.full(channels, 255, dtype=np.uint8)
    return np.where(masks[..., None], white.reshape(1, 1, 1, -1), colour.reshape(1, 1, 1, -1)).astype(np.uint8)


def noisy_linear_impute(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                        colour: np.ndarray, noise: float = IMPUTATION_NOISE) -> np.ndarray:
    """ROAD's noisy linear imputation of every pixel outside ``masks`` (n, H, W), uint8 (n, H, W, C).

    Each masked pixel equals the weighted mean of its in-image neighbours (direct 1/6, diagonal 1/12,
    renormalised at the border), all masked pixels of an image solved as one sparse linear system; then
    Gaussian noise of std ``noise`` (on the [0, 1] scale) is added to them. Kept pixels are unchanged; an
    image with no kept pixel gets ``colour`` plus noise. Draws from ``rng`` image by image.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    n, height, width, channels = images.shape
    out = images.copy()
    for i in range(n):
        unknown = ~masks[i]
        m = int(unknown.sum())
        if m == 0:
            continue
        x = images[i].astype(np.float64) / 255.0
        if m == height * width:
            values = np.broadcast_to(np.asarray(colour, np.float64) / 255.0, (m, channels)).copy()
        else:
            index = np.full((height, width), -1, dtype=np.int64)
            index[unknown] = np.arange(m)
            rows, cols = np.nonzero(unknown)
            total = np.zeros(m)
            for dr, dc, w in _NEIGHBOURS:
                inside = (rows + dr >= 0) & (rows + dr < height) & (cols + dc >= 0) & (cols + dc < width)
                total += w * inside
            entries_r, entries_c, entries_v = [np.arange(m)], [np.arange(m)], [np.ones(m)]
            rhs = np.zeros((m, channels))
            for dr, dc, w in _NEIGHBOURS:
                inside = (rows + dr >= 0) & (rows + dr < height) & (cols + dc >= 0) & (cols + dc < width)
                k = np.nonzero(inside)[0]
                rr, cc = rows[k] + dr, cols[k] + dc
                weight = w / total[k]
                neighbour = index[rr, cc]
                free = neighbour >= 0
                entries_r.append(k[free])
                entries_c.append(neighbour[free])
                entries_v.append(-weight[free])
                np.add.at(rhs, k[~free], weight[~free, None] * x[rr[~free], cc[~free]])
            matrix = coo_matrix((np.concatenate(entries_v), (np.concatenate(entries_r), np.concatenate(entries_c))),
                                shape=(m, m)).tocsc()
            values = np.asarray(spsolve(matrix, rhs)).reshape(m, channels)
        values = values + noise * rng.standard_normal(values.shape)
        out[i][unknown] = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return out


def image_noise(seed: int, draw: int, stream: str, row: int) -> np.random.Generator:
    """The imputation noise of one image of an ImageNet subset index: seeded by (seed, draw, stream, source
    row), so every worker, epoch and rerun draws the same noise for that image (``draw`` -1 for BS)."""
    return np.random.default_rng([seed, draw + 1, zlib.crc32(stream.encode()), row])
