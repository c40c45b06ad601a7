"""Which features a pixel subset keeps (Carter et al. 2021, Section 4.2): pure functions shared by the
in-memory subset datasets (:mod:`pathologies.overinterp.subsets`) and ImageNet subset indexes
(:mod:`pathologies.overinterp.index_subsets`).

A k% backward-selection (BS) subset keeps the last ``subset_size(k, p)`` features of the removal
order; a k% random subset keeps as many features drawn uniformly per image, reproducible from
(seed, draw, stream). A k% *mask-only* subset (``mask``) has the BS subset's keep-mask and no pixel values:
kept pixels white, the rest the mean colour, the leakage floor of retraining on BS subsets (what the
positions alone tell a new model; Rong et al. 2022, "ROAD").

Masked pixels hold the mean colour (``mean``, the paper's) or, with ``noisy_linear``, ROAD's noisy linear
imputation: each masked pixel the weighted mean of its 8 neighbours, solved jointly, plus a little noise,
so that the masked area no longer draws the mask's outline. What masked pixels hold is filled by
:mod:`pathologies.data.fill` (the ImageNet loader fills them too, as images stream from disk).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..sis.engine import Masking

KINDS = ("bs", "random", "mask")
MASKINGS = ("mean", "noisy_linear")
ROUNDINGS = ("half_up", "ceil")
RANDOM_DRAWS = ("project", "reference")
# Carter et al.'s RandomSubsetsCIFARDataset: one seed per split, the same for every model and run
REFERENCE_RANDOM_SEEDS = {"train": 1234, "test": 5678}


def subset_size(fraction: float, feature_count: int, rounding: str = "half_up") -> int:
    """Features a ``fraction`` subset of ``feature_count`` features keeps, at least 1: ``half_up`` rounds
    half up (5 % of 1,024: 51), ``ceil`` as the authors' code, ``int(np.ceil(1024 * fraction))`` (52)."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"pixel-subset fraction {fraction!r} is not in (0, 1]; use e.g. 0.05 for 5%")
    if rounding not in ROUNDINGS:
        raise UserError(f"pixel-subset rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    if rounding == "ceil":  # the same float product as the reference's, so its artefacts too
        return max(1, math.ceil(feature_count * fraction))
    return max(1, math.floor(fraction * feature_count + 0.5))


def reference_random_features(total: int, feature_count: int, size: int, split: str) -> np.ndarray:
    """Random subsets of the ``total`` images of ``split`` drawn as the authors' code, (total, size) int64,
    ascending per image: ``np.random.seed(1234)`` for ``train``, 5678 for any other split, then per image in
    split order ``np.random.choice(feature_count, size, replace=False)`` over the flat (row-major) pixels.
    The draw ignores model, seed and draw number, so every model trains and is evaluated on the same subsets."""
    if not 1 <= size <= feature_count:
        raise ValueError(f"subset size {size} is out of range for {feature_count} features")
    rng = np.random.RandomState(REFERENCE_RANDOM_SEEDS.get(split, REFERENCE_RANDOM_SEEDS["test"]))
    features = np.empty((total, size), dtype=np.int64)
    for row in range(total):
        features[row] = rng.choice(feature_count, replace=False, size=size)
    return np.sort(features, axis=1)


def backward_selection_features(order: np.ndarray, size: int) -> np.ndarray:
    """The last ``size`` features of each removal order (n, p) -> (n, size), last removed last.

    With Batched Gradient SIS the order holds blocks of k features, each block sorted by decreasing
    gradient (the first removed first). When ``size`` cuts through a block, the subset keeps the features
    of that block that come last in the order, i.e. those with the *lowest* gradient in the block, not the
    whole block: the cut is a cut of the stored order, as for exact backward selection.
    """
    if not 1 <= size <= order.shape[1]:
        raise ValueError(f"subset size {size} is out of range for {order.shape[1]} features")
    return np.asarray(order[:, order.shape[1] - size:], dtype=np.int64)


def random_features(n: int, feature_count: int, size: int, seed: int, draw: int, stream: str) -> np.ndarray:
    """``size`` distinct features per image drawn uniformly, (n, size) int64, ascending per image.

    Reproducible from (``seed``, ``draw``, ``stream``); ``stream`` (e.g. the split name) keeps the
    draws of different splits independent. Different draws give independent subsets.
    """
    if not 1 <= size <= feature_count:
        raise ValueError(f"subset size {size} is out of range for {feature_count} features")
    return uniform_features(random_stream(seed, draw, stream), n, feature_count, size)


def stream_key(stream: str, split: str) -> str:
    """The random-subset stream of ``split``: the split name, prefixed by ``stream`` when given (the
    shifted test set a subset is cut from), so that two datasets' same-named splits draw independently."""
    return f"{stream}/{split}" if stream else split


def random_stream(seed: int, draw: int, stream: str) -> np.random.Generator:
    """The generator of random subsets (``seed``, ``draw``, ``stream``) (see :func:`random_features`)."""
    return np.random.default_rng([seed, draw, zlib.crc32(stream.encode())])


def uniform_features(rng: np.random.Generator, n: int, feature_count: int, size: int) -> np.ndarray:
    """The next ``n`` images' random subsets from ``rng``: drawing the rows in consecutive chunks
    gives the same subsets as drawing them at once."""
    # the `size` smallest of p iid uniforms per row: a uniformly random size-subset of the features
    keys = rng.random((n, feature_count))
    return np.sort(np.argpartition(keys, size - 1, axis=1)[:, :size], axis=1).astype(np.int64)


def feature_masks(features: np.ndarray, masking: Masking, height: int, width: int) -> np.ndarray:
    """Boolean pixel masks (n, H, W), True where a pixel belongs to one of the image's ``features``."""
    chosen = np.zeros((len(features), masking.feature_count(height, width)), dtype=bool)
    np.put_along_axis(chosen, np.asarray(features, dtype=np.int64), True, axis=1)
    return chosen[:, masking.feature_of_pixel(height, width)]


@dataclass(frozen=True)
class SubsetRequest:
    """One subset dataset to write: ``kind`` (bs|random|mask), ``fraction``, random ``draw``, dataset ``name``,
    file; ``augment``: its train split is cropped and flipped once before masking (augmentation draw ``draw``,
    :mod:`pathologies.overinterp.augment_once`)."""

    kind: str
    fraction: float
    draw: int
    name: str
    out: str
    augment: bool = False
