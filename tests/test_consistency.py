"""Error-consistency engine: definitions, invariances, vectorisation, bootstrap and p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from pathologies.ddd.consistency import (
    COLUMNS,
    bootstrap_ci,
    bootstrap_kappa,
    consistency_table,
    error_consistency,
    image_subset,
    pair_stats,
    resample_weights,
    undefined_pairs,
)

FIELDS = ("c_obs", "c_exp", "kappa", "kappa_max", "kappa_min", "p_value")


def correlated_models(n_models: int, n_images: int, seed: int) -> np.ndarray:
    """(M, N) bool with shared image difficulty, so pairs have positive kappa."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(0.5, 0.3, n_images)
    return rng.random((n_models, n_images)) < difficulty


def test_hand_computed_cases():
    result = error_consistency([1, 1, 1, 0], [1, 1, 0, 0])
    # p1 = 0.75, p2 = 0.5, agree on 3 of 4; c_exp = 0.375 + 0.125
    assert result["c_obs"] == 0.75 and result["c_exp"] == 0.5
    assert result["kappa"] == pytest.approx(0.5)
    assert result["kappa_max"] == pytest.approx(0.5)  # c_obs_max = 1 - 0.25
    assert result["kappa_min"] == pytest.approx(-0.5)  # c_obs_min = |1.25 - 1|
    opposite = error_consistency([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1])
    assert opposite["c_obs"] == 0 and opposite["kappa"] == pytest.approx(-1.0)
    stacked = pair_stats(np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool))
    assert stacked.kappa[0, 1] == pytest.approx(0.5) and stacked.acc.tolist() == [0.75, 0.5]


def test_self_symmetry_and_sklearn():
    correct = correlated_models(6, 500, seed=1)
    result = pair_stats(correct)
    assert np.allclose(np.diag(result.kappa), 1.0)
    for field in FIELDS:
        values = getattr(result, field)
        assert np.array_equal(values, values.T, equal_nan=True), field
    for i in range(6):
        for j in range(6):
            expected = cohen_kappa_score(correct[i], correct[j])
            assert result.kappa[i, j] == pytest.approx(expected, abs=1e-12)


def test_invariant_to_permuting_images_and_flipping_both():
    correct = correlated_models(5, 400, seed=2)
    base = pair_stats(correct)
    permuted = pair_stats(correct[:, np.random.default_rng(0).permutation(400)])
    flipped = pair_stats(~correct)
    for field in FIELDS:
        assert np.array_equal(getattr(base, field), getattr(permuted, field), equal_nan=True)
        assert np.allclose(getattr(base, field), getattr(flipped, field), atol=1e-12), field


def test_perfect_observer_against_imperfect_gives_zero():
    rng = np.random.default_rng(3)
    imperfect = rng.random(300) < 0.7
    result = error_consistency(np.ones(300, dtype=bool), imperfect)
    assert result["kappa"] == pytest.approx(0.0, abs=1e-15)
    assert result["p_value"] == 1.0  # the table is fixed by the accuracies
    stacked = pair_stats(np.stack([np.ones(300, dtype=bool), imperfect]))
    assert stacked.kappa[0, 1] == 0.0 and stacked.p_value[0, 1] == 1.0


def test_undefined_kappa_is_nan_and_counted():
    all_right = np.ones(50, dtype=bool)
    all_wrong = np.zeros(50, dtype=bool)
    other = np.random.default_rng(4).random(50) < 0.5
    assert math.isnan(error_consistency(all_right, all_right)["kappa"])
    assert math.isnan(error_consistency(all_wrong, all_wrong)["kappa"])
    correct = np.stack([all_right, all_right, other, all_wrong, all_wrong])
    table = consistency_table(correct, list("abcde"))
    undefined = table[table["kappa"].isna()][["model_a", "model_b"]].values.tolist()
    assert undefined == [["a", "b"], ["d", "e"]]
    assert undefined_pairs(table) == 2
    assert table["p_value"].isna().sum() == 2 and table["kappa_max"].isna().sum() == 2


def test_independent_observers_give_kappa_near_zero():
    rng = np.random.default_rng(5)
    n = 20_000
    correct = rng.random((6, n)) < np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95])[:, None]
    kappa = pair_stats(correct).kappa[np.triu_indices(6, 1)]
    assert np.all(np.abs(kappa) < 5 / math.sqrt(n))


def test_kappa_within_bounds_and_bounds_attained():
    rng = np.random.default_rng(6)
    for seed in range(20):
        correct = correlated_models(8, int(rng.integers(5, 200)), seed)
        result = pair_stats(correct)
        defined = ~np.isnan(result.kappa)
        assert np.all(result.kappa_min[defined] <= result.kappa[defined])
        assert np.all(result.kappa[defined] <= result.kappa_max[defined])
    a = np.arange(100) < 70  # right on the first 70 images
    overlapping = np.arange(100) < 40  # errors nested in a's: the largest possible overlap
    disjoint = np.arange(100) >= 60  # right exactly where a is wrong, as far as possible
    most = error_consistency(a, overlapping)
    least = error_consistency(a, disjoint)
    assert most["kappa"] == pytest.approx(most["kappa_max"])
    assert least["kappa"] == pytest.approx(least["kappa_min"])


def test_vectorised_equals_per_pair_loop_over_epochs():
    rng = np.random.default_rng(7)
    stack = np.stack([correlated_models(7, 333, seed) for seed in range(4)])  # (E, M, N)
    stack[:, 4:6] = rng.random((4, 2, 333)) < 0.6  # independent models: moderate p-values
    stack[1, 2] = True  # a perfect model
    stack[2, 3] = False  # an always-wrong model
    result = pair_stats(stack)
    assert result.kappa.shape == (4, 7, 7)
    for e in range(4):
        for i in range(7):
            for j in range(7):
                reference = error_consistency(stack[e, i], stack[e, j])
                for field in FIELDS:
                    got = getattr(result, field)[e, i, j]
                    assert got == pytest.approx(reference[field], abs=1e-12, nan_ok=True), (field, e, i, j)


def test_p_value_uses_exact_hypergeometric_moments():
    rng = np.random.default_rng(8)
    n = 40  # small, so the finite-population factor n / (n - 1) matters
    correct = rng.random((6, n)) < 0.6
    result = pair_stats(correct)
    moderate = 0
    for i, j in zip(*np.triu_indices(6, 1), strict=True):
        null = stats.hypergeom(n, int(correct[i].sum()), int(correct[j].sum()))
        both_right = np.count_nonzero(correct[i] & correct[j])
        expected = 2 * stats.norm.sf(abs(both_right - null.mean()) / null.std())
        assert result.p_value[i, j] == pytest.approx(expected, rel=1e-9)
        assert error_consistency(correct[i], correct[j])["p_value"] == pytest.approx(expected, rel=1e-9)
        moderate += 0.01 < expected < 0.99
    assert moderate >= 5


def test_p_value_is_close_to_fishers_exact_test():
    rng = np.random.default_rng(9)
    for strength in (0.0, 0.03, 0.06):
        a = rng.random(4000) < 0.7
        b = np.where(rng.random(4000) < strength, a, rng.random(4000) < 0.7)
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        fisher = stats.fisher_exact(table).pvalue
        assert error_consistency(a, b)["p_value"] == pytest.approx(fisher, abs=0.03)


def test_p_values_are_calibrated_for_independent_observers():
    rng = np.random.default_rng(10)
    correct = rng.random((40, 2000)) < rng.uniform(0.6, 0.95, (40, 1))
    p = pair_stats(correct).p_value[np.triu_indices(40, 1)]
    assert 0.02 < np.mean(p < 0.05) < 0.09
    dependent = pair_stats(correlated_models(2, 2000, seed=11)).p_value[0, 1]
    assert dependent < 1e-10


def test_bootstrap_replicate_equals_statistics_on_resampled_images():
    correct = correlated_models(4, 250, seed=12)
    replicates = bootstrap_kappa(correct, n_boot=3, seed=5)
    for b in range(3):
        weights = resample_weights(250, seed=5, replicate=b)
        assert weights.sum() == 250
        resampled = correct[:, np.repeat(np.arange(250), weights)]
        assert np.allclose(replicates[b], pair_stats(resampled).kappa, equal_nan=True)
    assert np.array_equal(bootstrap_kappa(correct, 5, seed=5)[:3], replicates)


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    correct = correlated_models(5, 600, seed=13)
    low, high = bootstrap_ci(correct, n_boot=200, seed=1)
    kappa = pair_stats(correct).kappa
    off_diagonal = ~np.eye(5, dtype=bool)
    assert np.all(low[off_diagonal] <= kappa[off_diagonal])
    assert np.all(kappa[off_diagonal] <= high[off_diagonal])
    assert np.all(high[off_diagonal] - low[off_diagonal] > 0.01)
    again = bootstrap_ci(correct, n_boot=200, seed=1)
    other = bootstrap_ci(correct, n_boot=200, seed=2)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    assert not np.array_equal(low, other[0])


def test_image_subset_in_between_and_excluded_ids():
    correct = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 1], [1, 1, 0, 0, 1]], dtype=bool)
    assert image_subset(correct, "all").tolist() == [True] * 5
    assert image_subset(correct, "in_between").tolist() == [False, True, False, True, True]
    ids = np.array([10, 11, 12, 13, 14])
    mask = image_subset(correct, "in_between", ids=ids, exclude_ids=[13, 99])
    assert mask.tolist() == [False, True, False, False, True]
    with pytest.raises(ValueError, match="subset"):
        image_subset(correct, "trivial")


def test_in_between_images_reveal_independent_models():
    """Planted dichotomous difficulty: high kappa on all images, about zero on the in-between ones."""
    rng = np.random.default_rng(14)
    n, m = 30_000, 8
    kind = rng.choice(3, size=n, p=[0.5, 0.2, 0.3])  # trivial, impossible, in-between
    correct = np.where(kind == 0, True, np.where(kind == 1, False, rng.random((m, n)) < 0.5))
    all_images = consistency_table(correct, [f"m{i}" for i in range(m)])
    mask = image_subset(correct, "in_between")
    between = consistency_table(correct, [f"m{i}" for i in range(m)], image_mask=mask)
    # p = 0.5 + 0.3 / 2, c_obs = 0.7 + 0.3 / 2, c_exp = p^2 + (1 - p)^2
    accuracy, agreement = 0.65, 0.85
    chance = accuracy**2 + (1 - accuracy) ** 2
    assert np.allclose(all_images["kappa"], (agreement - chance) / (1 - chance), atol=0.03)
    assert between["kappa"].abs().max() < 0.05
    assert (between["n_images"] == mask.sum()).all()


def test_consistency_table_layout():
    correct = np.stack([correlated_models(4, 100, seed) for seed in range(3)], axis=1)  # (M, E, N)
    table = consistency_table(correct, ["a", "b", "c", "d"], epochs=[0, 5, 10], n_boot=20, seed=3)
    assert list(table.columns) == COLUMNS
    assert len(table) == 3 * 6
    assert table["epoch"].tolist() == [0] * 6 + [5] * 6 + [10] * 6
    assert table[["model_a", "model_b"]].iloc[:3].values.tolist() == [["a", "b"], ["a", "c"], ["a", "d"]]
    row = table.iloc[7]  # epoch 5, pair (a, c)
    reference = error_consistency(correct[0, 1], correct[2, 1])
    assert row["kappa"] == pytest.approx(reference["kappa"])
    assert row["acc_a"] == correct[0, 1].mean() and row["n_images"] == 100
    assert table["ci_low"].notna().all() and (table["ci_low"] <= table["ci_high"]).all()
    full = consistency_table(correct, ["a", "b", "c", "d"], pairs="all")
    assert len(full) == 3 * 16 and full["ci_low"].isna().all()
    with pytest.raises(ValueError, match="model names"):
        consistency_table(correct, ["a", "b"])
    with pytest.raises(TypeError, match="boolean"):
        consistency_table(correct.astype(int), list("abcd"))
