"""ECE on hand-made cases, temperature scaling that lowers the NLL, seeded halves."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from scipy.special import softmax

from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.overinterp.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    halves,
    main,
    negative_log_likelihood,
    read_temperature,
)


def two_class(confidences, predicted):
    """Probabilities (n, 2) whose largest entry is ``confidences[i]`` on class ``predicted[i]``."""
    conf = np.asarray(confidences, dtype=np.float64)
    probs = np.stack([1 - conf, conf], axis=1)
    return np.where(np.asarray(predicted)[:, None] == 1, probs, probs[:, ::-1])


def test_ece_of_hand_made_cases():
    # bins of width 1/15: 0.9 and 0.6 fall in different bins
    probs = two_class([0.9, 0.9, 0.6, 0.6], [1, 1, 0, 0])
    labels = np.array([1, 0, 0, 0])  # bin 0.9: accuracy 0.5; bin 0.6: accuracy 1
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    # perfectly confident and right: 0
    assert expected_calibration_error(two_class([1.0, 1.0], [0, 1]), np.array([0, 1])) == 0.0
    # one bin: |mean accuracy - mean confidence|
    probs = two_class([0.7, 0.8, 0.9], [1, 1, 1])
    assert expected_calibration_error(probs, np.array([1, 1, 0]), bins=1) == pytest.approx(abs(2 / 3 - 0.8))


def test_ece_bins_are_closed_on_the_right():
    # bins=2: (0, 0.5] and (0.5, 1]; a confidence of exactly 0.5 belongs to the first
    probs = two_class([0.5, 0.75], [1, 1])
    assert expected_calibration_error(probs, np.array([1, 0]), bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.75)


def test_ece_matches_the_reference_loop_on_random_data():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(500, 10)) * 3, axis=1)
    labels = rng.integers(0, 10, 500)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    expected = sum(np.mean(inside) * abs(correct[inside].mean() - conf[inside].mean())
                   for lo, hi in pairwise(edges) if (inside := (conf > lo) & (conf <= hi)).any())
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_fit_temperature_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4000, 5)) * 2
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])  # calibrated at T = 1
    assert fit_temperature(logits * 3, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_temperature_scaling_lowers_the_nll_on_the_fitting_half():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(600, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits, axis=1)])
    result = calibrate(logits * 4, labels, seed=0)  # overconfident
    assert result["temperature"] > 1
    assert result["nll_fit_after"] < result["nll_fit_before"]
    fit = halves(600, 0)[0]
    for t in (0.5, 1.0, 2.0, 3.0, 4.0, 6.0):  # the fitted temperature minimises the fitting half's NLL
        assert result["nll_fit_after"] <= negative_log_likelihood((logits * 4)[fit], labels[fit], t) + 1e-9
    assert result["ece_after"] < result["ece_before"]
    assert result["n_fit"] + result["n_held"] == 600


def test_halves_are_disjoint_complete_and_seeded():
    fit, held = halves(11, seed=4)
    assert len(fit) == 5 and len(held) == 6 and sorted([*fit, *held]) == list(range(11))
    assert np.array_equal(fit, halves(11, seed=4)[0]) and not np.array_equal(fit, halves(11, seed=5)[0])


def test_too_few_images_is_a_clear_error():
    with pytest.raises(UserError, match="at least 2 images"):
        calibrate(np.zeros((1, 3)), np.array([0]))


def test_cli_writes_the_json_the_calibrated_sis_reads(tmp_path):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(50, 3)) * 5).astype(np.float32)
    with h5py.File(tmp_path / "e.h5", "w") as handle:
        group = handle.create_group("d/test")
        group["logits"], group["labels"], group["ids"] = logits, rng.integers(0, 3, 50), np.arange(50)
        group.attrs["masked"] = False
    assert main(["--evaluation", str(tmp_path / "e.h5"), "--dataset", "d", "--out", str(tmp_path / "c.json")]) == 0
    summary = json.loads((tmp_path / "c.json").read_text())
    assert read_temperature(tmp_path / "c.json") == summary["temperature"] > 0
    assert summary["dataset"] == "d" and summary["split"] == "test" and summary["bins"] == 15
    with pytest.raises(UserError, match="does not exist"):
        read_temperature(tmp_path / "missing.json")
