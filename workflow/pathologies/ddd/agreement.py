"""Agreement between human raters: Krippendorff's alpha (Krippendorff 2004; Meding et al. 2022, A.11).

``ratings`` is a (raters, units) float array with NaN where a rater gave no value. Units with fewer than
two values are not pairable and are ignored. The metric sets the squared difference between values:
``nominal`` (0 / 1), ``ordinal`` (ranks through the marginal frequencies) or ``interval`` ((c - k)^2).
alpha = 1 - D_o / D_e from the coincidence matrix; NaN when there is no variation at all (D_e = 0).
"""

from __future__ import annotations

import itertools

import numpy as np

METRICS = ("nominal", "ordinal", "interval")


def coincidences(ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, coincidence matrix o_ck) of a (raters, units) array with NaN for missing values."""
    ratings = np.asarray(ratings, dtype=np.float64)
    if ratings.ndim != 2:
        raise ValueError(f"ratings must be (raters, units), got shape {ratings.shape}")
    values = np.unique(ratings[~np.isnan(ratings)])
    index = {value: i for i, value in enumerate(values)}
    matrix = np.zeros((len(values), len(values)))
    for unit in ratings.T:
        present = unit[~np.isnan(unit)]
        if len(present) < 2:
            continue
        counts = np.bincount([index[v] for v in present], minlength=len(values)).astype(np.float64)
        # ordered pairs of different raters: n_c n_k, minus the pairs of a value with itself
        matrix += (np.outer(counts, counts) - np.diag(counts)) / (len(present) - 1)
    return values, matrix


def krippendorff_alpha(ratings: np.ndarray, metric: str = "ordinal") -> float:
    """Krippendorff's alpha of a (raters, units) array with NaN for missing values."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    values, o = coincidences(ratings)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    if metric == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif metric == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:
        cumulative = np.cumsum(n_c)
        c, k = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        low, high = np.minimum(c, k), np.maximum(c, k)
        between = cumulative[high] - np.where(low > 0, cumulative[np.maximum(low - 1, 0)], 0)
        delta = (between - (n_c[c] + n_c[k]) / 2) ** 2
    expected = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    if expected == 0:
        return float("nan")
    return float(1 - (o * delta).sum() / expected)


def pairwise_alpha(ratings: np.ndarray, metric: str = "ordinal") -> np.ndarray:
    """alpha of every pair of raters (upper triangle order), as the paper's mean [min, max]."""
    ratings = np.asarray(ratings, dtype=np.float64)
    return np.array([krippendorff_alpha(ratings[[a, b]], metric)
                     for a, b in itertools.combinations(range(len(ratings)), 2)])
