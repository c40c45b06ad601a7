"""Dichotomous data difficulty (Meding et al. 2022): how many models get each image right.

Pure functions on correctness arrays (bool, models x images, or models x epochs x images as in
:class:`pathologies.training.predictions.Correctness`); tables come back as tidy DataFrames.

- Per image: the number of models correct; "trivial" / "in-between" / "impossible" under the strict
  rule (all / none right) or the loose rule (all but at most m right / wrong).
- The histogram of "models correct" against the exact binomial pmf of independent models with
  the mean accuracy (the paper's green bars, not a random draw).
- Appendix A.9: exponential and sigmoid image-difficulty profiles with the observed mean
  accuracy, their expected and sampled histograms, and a fitted beta (U-shaped) profile.
- Per-class accuracy, decisions that change between consecutive epochs (A.5, Figure 17), the
  closed-form KL divergence between neighbouring classes of the Gaussian dataset (A.7) and
  representational similarity analysis (A.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

CATEGORIES = ("trivial", "in_between", "impossible")


def models_correct(correct: np.ndarray, epoch_rule: str = "last") -> np.ndarray:
    """Number of models that get each image right: (M, N) or (M, E, N) bool -> (N,) int.

    For (M, E, N): ``epoch_rule="last"`` counts the last epoch column, ``"any"`` counts a model
    as right if it is right at any of the epochs.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim == 3:
        if epoch_rule == "last":
            correct = correct[:, -1]
        elif epoch_rule == "any":
            correct = correct.any(axis=1)
        else:
            raise ValueError(f"epoch_rule must be 'last' or 'any', got {epoch_rule!r}")
    if correct.ndim != 2:
        raise ValueError(f"expected (models, images) or (models, epochs, images), got {correct.shape}")
    return correct.sum(axis=0)


def classify_images(n_correct: np.ndarray, n_models: int, max_exceptions: int = 0) -> np.ndarray:
    """Category of each image: "trivial", "in_between" or "impossible" (array of str).

    Trivial: at least ``n_models - max_exceptions`` models right; impossible: at most
    ``max_exceptions`` right. ``max_exceptions=0`` is the strict rule (all / none), the paper's
    headline numbers use 1 for 11 models. Needs 2 * max_exceptions < n_models so no image is both.
    """
    if not 0 <= 2 * max_exceptions < n_models:
        raise ValueError(f"max_exceptions={max_exceptions} must be >= 0 and < n_models / 2 "
                         f"(n_models={n_models}), or an image could be both trivial and impossible")
    n_correct = np.asarray(n_correct)
    if n_correct.size and (n_correct.min() < 0 or n_correct.max() > n_models):
        raise ValueError(f"models-correct counts must lie in 0..{n_models}")
    categories = np.full(n_correct.shape, "in_between", dtype="<U10")
    categories[n_correct >= n_models - max_exceptions] = "trivial"
    categories[n_correct <= max_exceptions] = "impossible"
    return categories


def difficulty_fractions(n_correct: np.ndarray, n_models: int,
                         rules: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Images per category for each rule: rows (rule, max_exceptions, category, n_images, fraction).

    ``rules`` maps a rule name to its ``max_exceptions``, e.g. {"strict": 0, "loose": 1}
    (default: strict only).
    """
    n_correct = np.asarray(n_correct)
    rows = []
    for rule, max_exceptions in (rules or {"strict": 0}).items():
        categories = classify_images(n_correct, n_models, max_exceptions)
        for category in CATEGORIES:
            count = int(np.count_nonzero(categories == category))
            rows.append({"rule": rule, "max_exceptions": max_exceptions, "category": category,
                         "n_images": count, "fraction": count / max(1, n_correct.size)})
    return pd.DataFrame(rows)


def correct_histogram(n_correct: np.ndarray, n_models: int) -> pd.DataFrame:
    """Fraction of images with k = 0..M models right: observed vs. exact binomial pmf.

    The binomial column is what independent models of equal accuracy on equally difficult images
    would give: Binomial(M, p) with p the mean accuracy, so both columns have the same mean.
    """
    n_correct = np.asarray(n_correct)
    k = np.arange(n_models + 1)
    observed = np.bincount(n_correct, minlength=n_models + 1) / n_correct.size
    mean_accuracy = n_correct.mean() / n_models
    return pd.DataFrame({"k": k, "observed": observed,
                         "binomial": stats.binom.pmf(k, n_models, mean_accuracy)})


def class_accuracy(correct: np.ndarray, targets: np.ndarray, models: Sequence[str]) -> pd.DataFrame:
    """Accuracy per model and class from (M, N) bool: rows (model, class, n_images, accuracy)."""
    correct = np.asarray(correct, dtype=bool)
    targets = np.asarray(targets)
    classes, inverse = np.unique(targets, return_inverse=True)
    sizes = np.bincount(inverse)
    rows = [pd.DataFrame({"model": name, "class": classes, "n_images": sizes,
                          "accuracy": np.bincount(inverse, weights=row) / sizes})
            for name, row in zip(models, correct, strict=True)]
    return pd.concat(rows, ignore_index=True)


def decision_changes(decisions: np.ndarray, models: Sequence[str], epochs: Sequence[int]) -> pd.DataFrame:
    """Decisions that change from one epoch to the next, per model (paper A.5, Figure 17).

    ``decisions``: (M, E, N) predicted labels (or correctness) at ``epochs``. Rows (model, epoch,
    next_epoch, changed, fraction): images whose decision differs between the two epochs.
    """
    decisions = np.asarray(decisions)
    m, e, n = decisions.shape
    if len(models) != m or len(epochs) != e:
        raise ValueError(f"decisions have shape {decisions.shape}; got {len(models)} models, "
                         f"{len(epochs)} epochs")
    changed = np.count_nonzero(decisions[:, 1:] != decisions[:, :-1], axis=2)  # (M, E-1)
    epochs = np.asarray(epochs)
    return pd.DataFrame({
        "model": np.repeat(np.asarray(models, dtype=object), e - 1),
        "epoch": np.tile(epochs[:-1], m),
        "next_epoch": np.tile(epochs[1:], m),
        "changed": changed.ravel(),
        "fraction": changed.ravel() / n,
    })


# --- Appendix A.9: models of image difficulty -------------------------------------------------


def difficulty_grid(n_bins: int = 100) -> np.ndarray:
    """Centres of ``n_bins`` equal difficulty bins on [0, 1] (A.9 uses bins of 0.01).

    "Difficulty" here is the probability p that a model classifies an image correctly.
    """
    return (np.arange(n_bins) + 0.5) / n_bins


def difficulty_profile(shape: str, mean_accuracy: float, *, n_bins: int = 100,
                       sigmoid_width: float = 0.1) -> pd.DataFrame:
    """Share of images per difficulty bin under an exponential or sigmoid profile (A.9).

    ``"exponential"``: weight proportional to exp(rate * p) -- many easy images, fewer and fewer
    harder ones; ``"sigmoid"``: a logistic step of width ``sigmoid_width`` in p. The free
    parameter (rate / centre) is solved so that the mean of p equals ``mean_accuracy``, as the
    paper matches the observed mean (0.689 for its ResNet-18 variants). Returns rows (p, weight),
    weights summing to 1.
    """
    p = difficulty_grid(n_bins)
    if not p[0] < mean_accuracy < p[-1]:
        raise ValueError(f"mean_accuracy {mean_accuracy} lies outside the bin centres "
                         f"{p[0]}..{p[-1]}; use more bins")
    if shape == "exponential":
        weights = _solve_mean(lambda rate: special.softmax(rate * p), p, mean_accuracy, (-1e4, 1e4))
    elif shape == "sigmoid":
        if sigmoid_width <= 0:
            raise ValueError(f"sigmoid_width must be positive, got {sigmoid_width}")
        # An increasing step reaches means from 0.5 (centre far left: flat) up to the mean of
        # exp(p / width) (centre far right); harder profiles are mirror images of easier ones.
        flip = mean_accuracy < 0.5
        target = 1 - mean_accuracy if flip else mean_accuracy
        reachable = float(p @ special.softmax(p / sigmoid_width))
        if target >= reachable:
            raise ValueError(f"a sigmoid of width {sigmoid_width} cannot reach mean accuracy "
                             f"{mean_accuracy}; use a smaller sigmoid_width")
        if target == 0.5:
            weights = np.full(n_bins, 1 / n_bins)
        else:
            def step(centre: float) -> np.ndarray:
                return special.softmax(special.log_expit((p - centre) / sigmoid_width))

            weights = _solve_mean(step, p, target, (-60 * sigmoid_width, 1 + 60 * sigmoid_width))
        weights = weights[::-1] if flip else weights
    else:
        raise ValueError(f"shape must be 'exponential' or 'sigmoid', got {shape!r}")
    return pd.DataFrame({"p": p, "weight": weights})


def _solve_mean(weights_of, p: np.ndarray, target: float, bracket: tuple[float, float]) -> np.ndarray:
    """Weights from the one-parameter family ``weights_of`` whose mean of p equals ``target``."""
    parameter = optimize.brentq(lambda t: p @ weights_of(t) - target, *bracket, xtol=1e-12)
    return weights_of(parameter)


def fit_beta_profile(n_correct: np.ndarray, n_models: int, *,
                     n_bins: int = 100) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Beta difficulty profile fitted to the observed counts by maximum likelihood (beta-binomial).

    Both beta parameters below 1 means a U-shaped (bimodal) profile, which A.9 argues is needed
    to reproduce the observed histogram. Returns rows (p, weight) on the A.9 bins (beta mass per
    bin) and the fitted (a, b).
    """
    histogram = np.bincount(np.asarray(n_correct), minlength=n_models + 1)
    k = np.arange(n_models + 1)

    def negative_log_likelihood(log_ab: np.ndarray) -> float:
        a, b = np.exp(log_ab)
        return -float(histogram @ stats.betabinom.logpmf(k, n_models, a, b))

    fit = optimize.minimize(negative_log_likelihood, x0=np.zeros(2), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    a, b = np.exp(fit.x)
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"p": difficulty_grid(n_bins),
                         "weight": np.diff(stats.beta.cdf(edges, a, b))}), (float(a), float(b))


def profile_histogram(profile: pd.DataFrame, n_models: int) -> np.ndarray:
    """Expected fraction of images with k = 0..M models right under a difficulty profile.

    Each image in bin p is classified right by each model independently with probability p.
    """
    k = np.arange(n_models + 1)
    pmf = stats.binom.pmf(k[None, :], n_models, profile["p"].to_numpy()[:, None])  # (bins, M + 1)
    return profile["weight"].to_numpy() @ pmf


def sample_histogram(profile: pd.DataFrame, n_models: int, n_images: int, seed: int) -> np.ndarray:
    """A.9's simulation: images per bin from the profile, models-correct drawn per image.

    Each bin gets its expected share of ``n_images`` (rounded by largest remainder so the total
    is exact) and every image draws k ~ Binomial(M, p). Returns fractions for k = 0..M.
    """
    weights = profile["weight"].to_numpy()
    expected = weights * n_images
    counts = np.floor(expected).astype(np.int64)
    short = n_images - counts.sum()
    counts[np.argsort(counts - expected, kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    k = rng.binomial(n_models, np.repeat(profile["p"].to_numpy(), counts))
    return np.bincount(k, minlength=n_models + 1) / n_images


def difficulty_models(n_correct: np.ndarray, n_models: int, *, seed: int = 0, n_bins: int = 100,
                      sigmoid_width: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Appendix A.9 comparison: observed histogram vs. models of image difficulty.

    Models: "uniform" (every image has the mean accuracy: the binomial), "exponential" and
    "sigmoid" (profiles with the observed mean accuracy) and "beta (fitted)". Returns
    ``profiles`` (model, p, weight) and ``histograms`` (model, statistic, k, fraction) with
    statistic "observed", "expected" (exact) or "sampled" (seeded simulation as in the paper).
    """
    n_correct = np.asarray(n_correct)
    mean_accuracy = float(n_correct.mean() / n_models)
    grid = difficulty_grid(n_bins)
    profiles = {
        "exponential": difficulty_profile("exponential", mean_accuracy, n_bins=n_bins),
        "sigmoid": difficulty_profile("sigmoid", mean_accuracy, n_bins=n_bins, sigmoid_width=sigmoid_width),
        "beta (fitted)": fit_beta_profile(n_correct, n_models, n_bins=n_bins)[0],
    }
    k = np.arange(n_models + 1)
    histograms = [pd.DataFrame({"model": "observed", "statistic": "observed", "k": k,
                                "fraction": np.bincount(n_correct, minlength=n_models + 1) / n_correct.size})]
    histograms.append(pd.DataFrame({"model": "uniform", "statistic": "expected", "k": k,
                                    "fraction": stats.binom.pmf(k, n_models, mean_accuracy)}))
    for offset, (name, profile) in enumerate(profiles.items()):
        histograms.append(pd.DataFrame({"model": name, "statistic": "expected", "k": k,
                                        "fraction": profile_histogram(profile, n_models)}))
        sampled = sample_histogram(profile, n_models, n_correct.size, seed + offset)
        histograms.append(pd.DataFrame({"model": name, "statistic": "sampled", "k": k, "fraction": sampled}))
    profile_rows = [pd.DataFrame({"model": name, "p": grid, "weight": profile["weight"].to_numpy()})
                    for name, profile in profiles.items()]
    return pd.concat(profile_rows, ignore_index=True), pd.concat(histograms, ignore_index=True)


def histogram_distances(histograms: pd.DataFrame) -> pd.DataFrame:
    """Total-variation distance of every model histogram from the observed one.

    Input: the ``histograms`` table of :func:`difficulty_models`; rows (model, statistic, tv_distance).
    """
    observed = histograms[histograms["statistic"] == "observed"].set_index("k")["fraction"]
    others = histograms[histograms["statistic"] != "observed"]
    rows = [{"model": model, "statistic": statistic,
             "tv_distance": 0.5 * float(np.abs(group.set_index("k")["fraction"] - observed).sum())}
            for (model, statistic), group in others.groupby(["model", "statistic"], sort=False)]
    return pd.DataFrame(rows)


# --- Appendix A.7: KL divergence between Gaussian-noise classes -------------------------------


def gaussian_class_kl(stds: Sequence[float], n_values: int = 1) -> np.ndarray:
    """KL(class i || class i+1) for classes of i.i.d. N(mu, s_i^2) pixel values (A.7, eq. 1).

    Per value log(s_{i+1} / s_i) + s_i^2 / (2 s_{i+1}^2) - 1/2; values are independent, so the
    image-level divergence is that times ``n_values`` (height x width x channels). Returns
    (K - 1,) divergences; ``pathologies.data.prepare.gaussian_class_std`` gives a spec's stds.
    The closed form ignores the rounding to uint8 and the clipping at 0 / 255 of the stored
    images, which matter for standard deviations beyond about 40.
    """
    stds = np.asarray(stds, dtype=np.float64)
    if stds.ndim != 1 or len(stds) < 2 or np.any(stds <= 0):
        raise ValueError(f"need at least two positive standard deviations, got {stds}")
    ratio = stds[:-1] / stds[1:]
    return n_values * (-np.log(ratio) + ratio**2 / 2 - 0.5)


def kl_accuracy_table(stds: Sequence[float], accuracy: Sequence[float], n_values: int) -> pd.DataFrame:
    """Per class: std, KL divergence to the next class (NaN for the last) and accuracy (Figure 9).

    ``kl_to_next`` is per pixel value, the paper's eq. 1; ``kl_to_next_image`` is the divergence of
    whole images (``n_values`` independent values, so ``n_values`` times larger).
    """
    stds = np.asarray(stds, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.shape != stds.shape:
        raise ValueError(f"got {len(accuracy)} class accuracies for {len(stds)} classes")
    kl = np.append(gaussian_class_kl(stds), np.nan)
    return pd.DataFrame({"class": np.arange(len(stds)), "std": stds, "kl_to_next": kl,
                         "kl_to_next_image": n_values * kl, "accuracy": accuracy})


# --- Appendix A.4: representational similarity analysis ---------------------------------------


def rsa_image_sample(n_images: int, size: int, seed: int) -> np.ndarray:
    """The fixed, seeded sample of image indices (sorted) on which RDMs are compared."""
    if not 2 <= size <= n_images:
        raise ValueError(f"RSA sample size must lie in 2..{n_images}, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n_images, size=size, replace=False))


def rdm(activations: np.ndarray) -> np.ndarray:
    """Representational dissimilarity matrix: 1 - Pearson correlation between images' activations.

    ``activations``: (images, features), e.g. the penultimate layer. Returns (images, images).
    """
    activations = np.asarray(activations, dtype=np.float64)
    if activations.ndim != 2 or len(activations) < 2:
        raise ValueError(f"expected (images >= 2, features) activations, got shape {activations.shape}")
    centred = activations - activations.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"images {np.flatnonzero(norms == 0).tolist()} have constant activations; "
                         "their correlation distance is undefined")
    unit = centred / norms[:, None]
    return 1 - np.clip(unit @ unit.T, -1, 1)


def rsa_table(activations: Mapping[str, np.ndarray], method: str = "pearson") -> pd.DataFrame:
    """RSA between every pair of models: correlation of the upper triangles of their RDMs.

    All models must see the same images in the same order. ``method="pearson"`` is the default
    of thingsvision's ``correlate_rdms``, the toolkit the paper used; ``"spearman"`` correlates
    ranks. Rows (model_a, model_b, rsa), each unordered pair once.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    names = list(activations)
    sizes = {len(np.asarray(x)) for x in activations.values()}
    if len(sizes) != 1:
        raise ValueError(f"all models need activations for the same images, got counts {sorted(sizes)}")
    upper = np.triu_indices(sizes.pop(), k=1)
    triangles = np.stack([rdm(activations[name])[upper] for name in names])
    if method == "spearman":
        triangles = stats.rankdata(triangles, axis=1)
    similarity = np.corrcoef(triangles)
    a, b = np.triu_indices(len(names), k=1)
    return pd.DataFrame({"model_a": np.asarray(names, dtype=object)[a],
                         "model_b": np.asarray(names, dtype=object)[b],
                         "rsa": similarity[a, b]})


# --- Text summary ------------------------------------------------------------------------------


def summary_text(n_correct: np.ndarray, n_models: int, *, max_exceptions: int = 1,
                 kappa_table: pd.DataFrame | None = None) -> str:
    """A few human-readable lines: accuracy, difficulty fractions under both rules, and kappa.

    ``kappa_table``: rows of :func:`pathologies.ddd.consistency.consistency_table` to summarise (e.g.
    the last epoch only).
    """
    n_correct = np.asarray(n_correct)
    fractions = difficulty_fractions(n_correct, n_models, {"strict": 0, "loose": max_exceptions})
    histogram = correct_histogram(n_correct, n_models)
    lines = [f"{n_correct.size} images, {n_models} models, mean accuracy "
             f"{100 * n_correct.mean() / n_models:.1f}%"]
    for rule, label in (("strict", "strict (all / none)"),
                        ("loose", f"loose (all but at most {max_exceptions})")):
        shares = fractions[fractions["rule"] == rule].set_index("category")["fraction"]
        lines.append(f"{label}: trivial {100 * shares['trivial']:.1f}% | in-between "
                     f"{100 * shares['in_between']:.1f}% | impossible {100 * shares['impossible']:.1f}%")
    observed, binomial = 100 * histogram["observed"], 100 * histogram["binomial"]
    lines.append(f"right for all models: {observed.iloc[-1]:.1f}% observed vs {binomial.iloc[-1]:.1f}% "
                 f"for independent models (binomial); none: {observed.iloc[0]:.1f}% vs "
                 f"{binomial.iloc[0]:.1f}%")
    if kappa_table is not None and len(kappa_table):
        kappa = kappa_table["kappa"]
        undefined = int(kappa.isna().sum())
        defined = kappa.dropna()
        if len(defined):
            lines.append(f"error consistency over {len(kappa)} pairs: mean kappa {defined.mean():.3f} "
                         f"(range {defined.min():.3f} to {defined.max():.3f}); "
                         f"{undefined} undefined (c_exp = 1)")
        else:
            lines.append(f"error consistency: all {undefined} pairs undefined (c_exp = 1)")
    return "\n".join(lines)
