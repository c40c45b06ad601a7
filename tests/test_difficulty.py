"""Difficulty analysis: categories, histograms, A.9 difficulty models, A.7 KL, A.4 RSA."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.spatial.distance import pdist, squareform

from pathologies.ddd.measures import (
    CATEGORIES,
    class_accuracy,
    classify_images,
    correct_histogram,
    decision_changes,
    difficulty_fractions,
    difficulty_models,
    difficulty_profile,
    fit_beta_profile,
    gaussian_class_kl,
    histogram_distances,
    kl_accuracy_table,
    models_correct,
    profile_histogram,
    rdm,
    rsa_image_sample,
    rsa_table,
    sample_histogram,
    summary_text,
)


def planted_population(n_images: int, n_models: int, seed: int,
                       shares=(0.45, 0.15, 0.40)) -> np.ndarray:
    """(M, N) bool: trivial (p = 1), impossible (p = 0) and coin-flip (p = 0.5) images."""
    rng = np.random.default_rng(seed)
    p = rng.choice([1.0, 0.0, 0.5], size=n_images, p=list(shares))
    return rng.random((n_models, n_images)) < p


def test_categories_partition_and_disagreements_are_in_between():
    correct = planted_population(3000, 7, seed=0)
    n_correct = models_correct(correct)
    categories = classify_images(n_correct, 7)
    assert set(np.unique(categories)) <= set(CATEGORIES)
    assert sum(np.count_nonzero(categories == c) for c in CATEGORIES) == 3000
    for i in range(7):
        for j in range(i + 1, 7):
            disagree = correct[i] != correct[j]
            assert np.all(categories[disagree] == "in_between")
    assert np.all(categories[n_correct == 7] == "trivial")
    assert np.all(categories[n_correct == 0] == "impossible")


def test_loose_rule_and_invalid_exceptions():
    n_correct = np.array([0, 1, 2, 9, 10, 11])
    assert classify_images(n_correct, 11, max_exceptions=1).tolist() == [
        "impossible", "impossible", "in_between", "in_between", "trivial", "trivial"]
    with pytest.raises(ValueError, match="max_exceptions"):
        classify_images(n_correct, 11, max_exceptions=6)
    with pytest.raises(ValueError, match="0..5"):
        classify_images(n_correct, 5)


def test_planted_u_shaped_difficulty_gives_expected_fractions():
    m, n = 11, 40_000
    correct = planted_population(n, m, seed=1)
    table = difficulty_fractions(models_correct(correct), m, {"strict": 0, "loose": 1})
    table = table.set_index(["rule", "category"])
    coin_all = 0.5**m  # a coin-flip image is right (or wrong) for all 11 models
    coin_all_but_one = (1 + m) * 0.5**m
    expected = {("strict", "trivial"): 0.45 + 0.40 * coin_all,
                ("strict", "impossible"): 0.15 + 0.40 * coin_all,
                ("loose", "trivial"): 0.45 + 0.40 * coin_all_but_one,
                ("loose", "impossible"): 0.15 + 0.40 * coin_all_but_one}
    for key, share in expected.items():
        tolerance = 4 * np.sqrt(share * (1 - share) / n)
        assert table.loc[key, "fraction"] == pytest.approx(share, abs=tolerance), key
    for rule in ("strict", "loose"):
        assert table.loc[rule, "fraction"].sum() == pytest.approx(1.0)
        assert table.loc[rule, "n_images"].sum() == n


def test_histogram_binomial_has_observed_mean():
    correct = planted_population(5000, 9, seed=2)
    histogram = correct_histogram(models_correct(correct), 9)
    assert histogram["observed"].sum() == pytest.approx(1) and histogram["binomial"].sum() == pytest.approx(1)
    observed_mean = histogram["k"] @ histogram["observed"]
    assert observed_mean == pytest.approx(models_correct(correct).mean())
    assert histogram["k"] @ histogram["binomial"] == pytest.approx(observed_mean)
    assert histogram["observed"].iloc[-1] > 10 * histogram["binomial"].iloc[-1]  # the DDD spike


def test_models_correct_last_and_any_epoch():
    correct = np.zeros((2, 3, 4), dtype=bool)  # (M, E, N)
    correct[0, 0, 0] = True  # learned, then forgotten
    correct[0, 2, 1] = correct[1, 2, 1] = True
    correct[1, 1, 2] = True
    assert models_correct(correct, "last").tolist() == [0, 2, 0, 0]
    assert models_correct(correct, "any").tolist() == [1, 2, 1, 0]


def test_class_accuracy_and_decision_changes():
    correct = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=bool)
    table = class_accuracy(correct, np.array([0, 0, 1, 1]), ["a", "b"])
    assert table["accuracy"].tolist() == [0.5, 1.0, 0.0, 0.5]
    assert table["n_images"].tolist() == [2, 2, 2, 2] and table["class"].tolist() == [0, 1, 0, 1]
    predictions = np.array([[[0, 1, 2], [0, 2, 2], [1, 0, 0]],
                            [[3, 3, 3], [3, 3, 3], [3, 3, 1]]])  # (M=2, E=3, N=3)
    changes = decision_changes(predictions, ["a", "b"], [0, 1, 2])
    assert changes["changed"].tolist() == [1, 3, 0, 1]
    assert changes[["epoch", "next_epoch"]].values.tolist() == [[0, 1], [1, 2]] * 2
    assert changes["fraction"].iloc[1] == 1.0


@pytest.mark.parametrize("shape", ["exponential", "sigmoid"])
@pytest.mark.parametrize("mean", [0.689, 0.3, 0.5])
def test_difficulty_profiles_match_the_mean(shape, mean):
    profile = difficulty_profile(shape, mean)
    assert len(profile) == 100 and profile["weight"].sum() == pytest.approx(1)
    assert profile["p"] @ profile["weight"] == pytest.approx(mean, abs=1e-9)
    steps = np.diff(profile["weight"])
    assert np.all(steps >= -1e-15) if mean > 0.5 else np.all(steps <= 1e-15)
    expected = profile_histogram(profile, 13)
    assert expected.sum() == pytest.approx(1) and np.arange(14) @ expected == pytest.approx(13 * mean)


def test_unreachable_sigmoid_mean_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller sigmoid_width"):
        difficulty_profile("sigmoid", 0.95, sigmoid_width=0.1)
    with pytest.raises(ValueError, match="shape"):
        difficulty_profile("linear", 0.6)


def test_sampled_histogram_is_seeded_and_near_expected():
    profile = difficulty_profile("exponential", 0.7)
    first = sample_histogram(profile, 13, 20_000, seed=3)
    assert np.array_equal(first, sample_histogram(profile, 13, 20_000, seed=3))
    assert not np.array_equal(first, sample_histogram(profile, 13, 20_000, seed=4))
    assert first.sum() == pytest.approx(1)
    assert np.abs(first - profile_histogram(profile, 13)).max() < 0.02


def test_u_shaped_population_needs_u_shaped_profile():
    """A.9: exponential and sigmoid profiles miss the all/none spikes; a fitted beta is U-shaped."""
    rng = np.random.default_rng(5)
    p = rng.beta(0.25, 0.15, 20_000)
    n_correct = (rng.random((13, 20_000)) < p).sum(axis=0)
    _, (a, b) = fit_beta_profile(n_correct, 13)
    assert a < 1 and b < 1
    assert a == pytest.approx(0.25, rel=0.2) and b == pytest.approx(0.15, rel=0.2)
    profiles, histograms = difficulty_models(n_correct, 13, seed=0)
    assert set(profiles["model"]) == {"exponential", "sigmoid", "beta (fitted)"}
    expected = histograms[histograms["statistic"] == "expected"].set_index(["model", "k"])["fraction"]
    observed_all = np.mean(n_correct == 13)
    for model in ("uniform", "exponential", "sigmoid"):
        assert expected[model, 13] < 0.75 * observed_all, model
        assert expected[model, 0] < 0.5 * np.mean(n_correct == 0), model
    distances = histogram_distances(histograms).set_index(["model", "statistic"])["tv_distance"]
    assert distances["beta (fitted)", "expected"] < 0.04  # the 0.01 bins blur the spikes slightly
    assert distances["beta (fitted)", "expected"] < 0.5 * min(
        distances[model, "expected"] for model in ("uniform", "exponential", "sigmoid"))


def test_gaussian_kl_matches_numerical_integration():
    s1, s2 = 3.0, 4.0
    p, q = stats.norm(128, s1), stats.norm(128, s2)
    numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), 60, 196)
    assert gaussian_class_kl([s1, s2])[0] == pytest.approx(numeric, rel=1e-8)
    kl = gaussian_class_kl(np.arange(1, 101), n_values=32 * 32 * 3)
    assert kl[0] == pytest.approx(3072 * (np.log(2) + 1 / 8 - 0.5))
    assert np.all(np.diff(kl) < 0)  # neighbouring classes get harder to tell apart
    table = kl_accuracy_table([1, 2, 3], [1.0, 0.8, 0.7], n_values=2)
    assert np.isnan(table["kl_to_next"].iloc[-1])
    assert table["kl_to_next"].iloc[0] == pytest.approx(kl[0] / 3072)  # eq. 1: per value
    assert table["kl_to_next_image"].iloc[0] == pytest.approx(kl[0] * 2 / 3072)
    with pytest.raises(ValueError, match="positive"):
        gaussian_class_kl([0, 1, 2])


def test_rdm_and_rsa():
    rng = np.random.default_rng(6)
    activations = rng.normal(size=(12, 30))
    assert np.allclose(rdm(activations), squareform(pdist(activations, "correlation")), atol=1e-12)
    rescaled = activations * rng.uniform(0.5, 2, (12, 1)) + rng.normal(size=(12, 1))  # same RDM
    other = rng.normal(size=(12, 30))
    table = rsa_table({"a": activations, "b": rescaled, "c": other})
    assert table[["model_a", "model_b"]].values.tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert table["rsa"].iloc[0] == pytest.approx(1.0)
    upper = np.triu_indices(12, 1)
    reference = stats.pearsonr(rdm(activations)[upper], rdm(other)[upper])[0]
    assert table["rsa"].iloc[1] == pytest.approx(reference)
    ranked = rsa_table({"a": activations, "c": other}, method="spearman")["rsa"].iloc[0]
    assert ranked == pytest.approx(stats.spearmanr(rdm(activations)[upper], rdm(other)[upper])[0])
    constant = activations.copy()
    constant[3] = 1.0
    with pytest.raises(ValueError, match=r"images \[3\]"):
        rdm(constant)


def test_summary_text():
    correct = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 0, 0]], dtype=bool)
    text = summary_text(models_correct(correct), 3, max_exceptions=1)
    assert "4 images, 3 models, mean accuracy 58.3%" in text
    assert "strict (all / none): trivial 25.0% | in-between 50.0% | impossible 25.0%" in text
    assert "loose (all but at most 1): trivial 75.0% | in-between 0.0% | impossible 25.0%" in text


def test_rsa_image_sample_is_fixed_by_seed():
    sample = rsa_image_sample(1000, 50, seed=3)
    assert len(np.unique(sample)) == 50 and np.all(np.diff(sample) > 0) and sample.max() < 1000
    assert np.array_equal(sample, rsa_image_sample(1000, 50, seed=3))
    assert not np.array_equal(sample, rsa_image_sample(1000, 50, seed=4))
