"""Error consistency: Cohen's kappa on right/wrong decisions, for every pair of models at once.

For two models with accuracies p1 and p2 on the same n images (Geirhos et al. 2020)::

    c_obs = fraction of images where both are right or both are wrong
    c_exp = p1 p2 + (1 - p1)(1 - p2)        agreement expected from independent observers
    kappa = (c_obs - c_exp) / (1 - c_exp)

kappa is undefined where c_exp = 1 (both models right on every image, or both wrong on every
image). This module returns NaN there -- not 1.0, which one public library returns -- and
:func:`undefined_pairs` counts such pairs. kappa_max / kappa_min are the largest / smallest kappa
that two models with these accuracies can reach (c_obs between |p1 + p2 - 1| and 1 - |p1 - p2|;
Klein et al. 2025).

Every pair comes from one matrix product: with C the (models x images) 0/1 matrix, C @ C.T holds
the both-right counts and its diagonal the right counts; a stack of epochs (E, M, N) is one batched
product. The products are exact (float32 sums of 0/1 are exact below 2**24 images, float64 is used
beyond), and all ratios are formed from integer counts, so kappa_min <= kappa <= kappa_max holds
exactly and equal inputs give bit-identical results.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import erfc

from .measures import classify_images

_CHUNK_BYTES = 256 * 2**20  # largest float temporary a product may allocate
_FLOAT32_EXACT = 2**24  # float32 represents every integer below this exactly

COLUMNS = ["epoch", "model_a", "model_b", "c_obs", "c_exp", "kappa", "kappa_max", "kappa_min",
           "ci_low", "ci_high", "p_value", "n_images", "acc_a", "acc_b"]


@dataclass(frozen=True)
class PairStats:
    """Pairwise statistics of a correctness stack (..., M, N); pair arrays have shape (..., M, M).

    ``p_value`` tests kappa = 0, i.e. the two models' errors being independent given their
    accuracies (see :func:`stats_from_counts`).
    """

    n_images: int
    acc: np.ndarray
    c_obs: np.ndarray
    c_exp: np.ndarray
    kappa: np.ndarray
    kappa_max: np.ndarray
    kappa_min: np.ndarray
    p_value: np.ndarray

    def to_frame(self, models: Sequence[str], epochs: Sequence[int] | None = None, *,
                 ci: tuple[np.ndarray, np.ndarray] | None = None, pairs: str = "upper") -> pd.DataFrame:
        """Tidy table, one row per (epoch, model_a, model_b); columns as in :data:`COLUMNS`.

        ``pairs="upper"`` gives each unordered pair once (a before b in ``models``); ``"all"``
        gives every ordered pair including a model with itself. ``ci`` = (low, high) arrays shaped
        like ``kappa``; without it ci_low/ci_high are NaN.
        """
        kappa = self.kappa if self.kappa.ndim == 3 else self.kappa.reshape(1, *self.kappa.shape[-2:])
        n_epochs, m = kappa.shape[0], kappa.shape[-1]
        if len(models) != m:
            raise ValueError(f"got {len(models)} model names for {m} models")
        epochs = list(range(n_epochs)) if epochs is None else list(epochs)
        if len(epochs) != n_epochs:
            raise ValueError(f"got {len(epochs)} epoch labels for {n_epochs} epochs")
        if pairs == "upper":
            a, b = np.triu_indices(m, 1)
        elif pairs == "all":
            a, b = (idx.ravel() for idx in np.indices((m, m)))
        else:
            raise ValueError(f"pairs must be 'upper' or 'all', got {pairs!r}")

        def column(values: np.ndarray) -> np.ndarray:
            return values.reshape(n_epochs, m, m)[:, a, b].ravel()

        acc = self.acc.reshape(n_epochs, m)
        low, high = ci if ci is not None else (np.full_like(kappa, np.nan),) * 2
        names = np.asarray(models, dtype=object)
        return pd.DataFrame({
            "epoch": np.repeat(np.asarray(epochs), len(a)),
            "model_a": np.tile(names[a], n_epochs),
            "model_b": np.tile(names[b], n_epochs),
            "c_obs": column(self.c_obs),
            "c_exp": column(self.c_exp),
            "kappa": column(kappa),
            "kappa_max": column(self.kappa_max),
            "kappa_min": column(self.kappa_min),
            "ci_low": column(low),
            "ci_high": column(high),
            "p_value": column(self.p_value),
            "n_images": self.n_images,
            "acc_a": acc[:, a].ravel(),
            "acc_b": acc[:, b].ravel(),
        })


def error_consistency(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Error consistency of two boolean correctness vectors, computed pair by pair.

    The plain reference definition (and the baseline of the benchmark); use
    :func:`pair_stats` for many models. Returns c_obs, c_exp, kappa, kappa_max, kappa_min and
    p_value; kappa, kappa_max, kappa_min and p_value are NaN where c_exp = 1.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty vectors of equal length, got shapes {a.shape} and {b.shape}")
    n = a.size
    p1, p2 = np.count_nonzero(a) / n, np.count_nonzero(b) / n
    c_obs = np.count_nonzero(a == b) / n
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    if c_exp == 1:
        nan = math.nan
        return {"c_obs": c_obs, "c_exp": c_exp, "kappa": nan, "kappa_max": nan, "kappa_min": nan,
                "p_value": nan}
    both_right = np.count_nonzero(a & b)
    variance = n * p1 * (1 - p1) * p2 * (1 - p2) * n / (n - 1) if n > 1 else 0.0
    z = (both_right - n * p1 * p2) / math.sqrt(variance) if variance > 0 else 0.0
    return {
        "c_obs": c_obs,
        "c_exp": c_exp,
        "kappa": (c_obs - c_exp) / (1 - c_exp),
        "kappa_max": (1 - abs(p1 - p2) - c_exp) / (1 - c_exp),
        "kappa_min": (abs(p1 + p2 - 1) - c_exp) / (1 - c_exp),
        "p_value": math.erfc(abs(z) / math.sqrt(2)),
    }


def pair_counts(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right counts (..., M) and both-right counts (..., M, M) of a boolean stack (..., M, N).

    Leading axes (e.g. epochs) are batched; the float copy is made a few matrices at a time so
    memory stays near 256 MB whatever the stack size.
    """
    correct = _as_bool(correct)
    *lead, m, n = correct.shape
    flat = correct.reshape(-1, m, n)
    dtype = np.float32 if n < _FLOAT32_EXACT else np.float64
    step = max(1, _CHUNK_BYTES // max(1, m * n * np.dtype(dtype).itemsize))
    both_right = np.empty((len(flat), m, m), dtype=np.int64)
    for start in range(0, len(flat), step):
        block = flat[start:start + step].astype(dtype)
        both_right[start:start + step] = np.rint(block @ block.transpose(0, 2, 1))
    right = np.diagonal(both_right, axis1=1, axis2=2).copy()
    return right.reshape(*lead, m), both_right.reshape(*lead, m, m)


def stats_from_counts(n: int, right: np.ndarray, both_right: np.ndarray) -> PairStats:
    """All pairwise statistics from integer counts on ``n`` images.

    p_value: two-sided test of independent errors given the two observed accuracies. Under
    independence the both-right count is hypergeometric (the permutation distribution of the
    2x2 table), so its mean r_a r_b / n and variance r_a r_b (n - r_a)(n - r_b) / (n^2 (n - 1)) are
    exact; the p-value is the normal approximation with that exact variance (Fisher's exact test
    in the large-n limit; the same null variance of kappa as Fleiss, Cohen & Everitt 1969).
    We do not use a binomial test of c_obs * n against Bernoulli(c_exp): c_exp is estimated from
    the same images, and that test overstates the null variance by c_exp (1 - c_exp) /
    (4 p1 q1 p2 q2) -- 4.5x at 90 % accuracy -- so it almost never rejects. p_value is 1 where the
    table is fixed by the accuracies (one model always right or always wrong) and NaN where
    kappa is undefined.
    """
    if n <= 0:
        raise ValueError("no images selected: error consistency needs at least one image")
    right = np.asarray(right, dtype=np.int64)
    both_right = np.asarray(both_right, dtype=np.int64)
    r_a, r_b = right[..., :, None], right[..., None, :]
    agree = n - r_a - r_b + 2 * both_right
    expected = r_a * r_b + (n - r_a) * (n - r_b)  # n**2 * c_exp
    spread = n * n - expected  # n**2 * (1 - c_exp); 0 exactly where kappa is undefined
    defined = spread > 0

    def kappa_of(agreements: np.ndarray) -> np.ndarray:
        out = np.full(np.broadcast_shapes(agreements.shape, spread.shape), np.nan)
        return np.divide(n * agreements - expected, spread, out=out, where=defined)

    rf_a, rf_b = r_a.astype(np.float64), r_b.astype(np.float64)
    variance = np.zeros(spread.shape)
    if n > 1:
        variance = rf_a * rf_b * (n - rf_a) * (n - rf_b) / (float(n) ** 2 * (n - 1))
    deviation = np.abs(both_right - rf_a * rf_b / n)
    z = np.divide(deviation, np.sqrt(variance), out=np.zeros(spread.shape), where=variance > 0)
    p_value = np.where(defined, erfc(z / math.sqrt(2)), np.nan)

    return PairStats(
        n_images=int(n),
        acc=right / n,
        c_obs=agree / n,
        c_exp=expected / float(n) ** 2,
        kappa=kappa_of(agree),
        kappa_max=kappa_of(n - np.abs(r_a - r_b)),
        kappa_min=kappa_of(np.abs(r_a + r_b - n)),
        p_value=p_value,
    )


def pair_stats(correct: np.ndarray) -> PairStats:
    """Pairwise error-consistency statistics of a boolean stack (..., M, N), e.g. (E, M, N)."""
    correct = _as_bool(correct)
    right, both_right = pair_counts(correct)
    return stats_from_counts(correct.shape[-1], right, both_right)


def bootstrap_kappa(correct: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """kappa of every pair on ``n_boot`` resamples of the images: (M, N) bool -> (n_boot, M, M).

    Resample b draws N image indices with replacement from ``np.random.default_rng([seed, b])``,
    so a replicate does not depend on how many others are drawn, and every call with the same
    seed and image count resamples the same images (use one seed for all epochs to get joint
    replicates). The counts are weighted matrix products, B x M^2 x N multiply-adds in all.
    """
    correct = _as_bool(correct)
    if correct.ndim != 2:
        raise ValueError(f"expected a (models, images) matrix, got shape {correct.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    m, n = correct.shape
    dtype = np.float32 if n < _FLOAT32_EXACT else np.float64
    matrix = correct.astype(dtype)
    step = max(1, _CHUNK_BYTES // max(1, m * n * np.dtype(dtype).itemsize))
    kappas = np.empty((n_boot, m, m))
    for start in range(0, n_boot, step):
        replicates = range(start, min(start + step, n_boot))
        weights = np.stack([resample_weights(n, seed, b) for b in replicates]).astype(dtype)
        both_right = np.rint((matrix[None] * weights[:, None, :]) @ matrix.T).astype(np.int64)
        right = np.diagonal(both_right, axis1=1, axis2=2)
        kappas[start:start + len(replicates)] = stats_from_counts(n, right, both_right).kappa
    return kappas


def resample_weights(n: int, seed: int, replicate: int) -> np.ndarray:
    """How often each of ``n`` images is drawn in bootstrap replicate ``replicate`` (sums to n)."""
    rng = np.random.default_rng([seed, replicate])
    return np.bincount(rng.integers(0, n, size=n), minlength=n)


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of kappa for a stack (..., M, N): (low, high), each (..., M, M).

    Images are resampled (see :func:`bootstrap_kappa`); every matrix of the stack uses the same
    resamples. Replicates where a pair's kappa is undefined are left out of that pair's
    quantiles; a pair undefined in every replicate gets NaN.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    correct = _as_bool(correct)
    *lead, m, n = correct.shape
    flat = correct.reshape(-1, m, n)
    low = np.empty((len(flat), m, m))
    high = np.empty((len(flat), m, m))
    tail = (1 - level) / 2
    for i, matrix in enumerate(flat):
        replicates = bootstrap_kappa(matrix, n_boot, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs -> NaN, as documented
            low[i], high[i] = np.nanquantile(replicates, [tail, 1 - tail], axis=0)
    return low.reshape(*lead, m, m), high.reshape(*lead, m, m)


def image_subset(correct: np.ndarray, subset: str = "all", *, max_exceptions: int = 0,
                 ids: np.ndarray | None = None, exclude_ids: Sequence[int] | None = None) -> np.ndarray:
    """Boolean mask (N,) of the images to analyse, from a (models, images) correctness matrix.

    ``subset="all"`` keeps every image; ``"in_between"`` keeps the images that are neither
    trivial nor impossible for this set of models (strict rule with ``max_exceptions=0``, see
    :func:`pathologies.ddd.measures.classify_images`). ``exclude_ids`` (e.g. known label errors)
    removes images by source id (``ids``, aligned with the columns); ids not present are ignored.
    """
    correct = _as_bool(correct)
    if correct.ndim != 2:
        raise ValueError(f"expected a (models, images) matrix, got shape {correct.shape}")
    m, n = correct.shape
    if subset == "all":
        mask = np.ones(n, dtype=bool)
    elif subset == "in_between":
        categories = classify_images(correct.sum(axis=0), m, max_exceptions=max_exceptions)
        mask = categories == "in_between"
    else:
        raise ValueError(f"subset must be 'all' or 'in_between', got {subset!r}")
    if exclude_ids is not None and len(exclude_ids):
        if ids is None or len(ids) != n:
            raise ValueError("exclude_ids needs the image ids of the columns (ids of length N)")
        mask &= ~np.isin(ids, np.asarray(exclude_ids))
    return mask


def consistency_table(correct: np.ndarray, models: Sequence[str], epochs: Sequence[int] | None = None,
                      *, image_mask: np.ndarray | None = None, n_boot: int = 0, level: float = 0.95,
                      seed: int = 0, pairs: str = "upper") -> pd.DataFrame:
    """Error consistency of every pair of models at every epoch, as a tidy table.

    ``correct``: bool (models, epochs, images) -- the layout of
    :class:`pathologies.training.predictions.Correctness` -- or (models, images). ``image_mask`` selects
    images (see :func:`image_subset`). With ``n_boot > 0`` ci_low/ci_high are percentile bootstrap
    intervals at ``level`` (seeded, see :func:`bootstrap_ci`); otherwise NaN. kappa is NaN where
    c_exp = 1; count those rows with :func:`undefined_pairs`.
    """
    correct = _as_bool(correct)
    if correct.ndim == 2:
        correct = correct[:, None, :]
    if correct.ndim != 3:
        raise ValueError(f"expected (models, epochs, images), got shape {correct.shape}")
    stack = np.moveaxis(correct, 1, 0)  # (E, M, N): one matrix product per epoch
    if image_mask is not None:
        image_mask = np.asarray(image_mask, dtype=bool)
        if image_mask.shape != (stack.shape[-1],):
            raise ValueError(f"image_mask has shape {image_mask.shape}, expected ({stack.shape[-1]},)")
        stack = stack[..., image_mask]
    stats = pair_stats(stack)
    ci = bootstrap_ci(stack, n_boot, level, seed) if n_boot > 0 else None
    return stats.to_frame(models, epochs, ci=ci, pairs=pairs)


def undefined_pairs(table: pd.DataFrame) -> int:
    """Number of rows of a :func:`consistency_table` whose kappa is undefined (c_exp = 1)."""
    return int(table["kappa"].isna().sum())


def _as_bool(correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct)
    if correct.dtype != bool:
        raise TypeError(f"correctness must be a boolean array, got dtype {correct.dtype}")
    if correct.ndim < 2:
        raise ValueError(f"expected at least (models, images), got shape {correct.shape}")
    return correct
