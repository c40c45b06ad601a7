"""Tests that catch the one-line bugs which got through the other tests (issue 13, "Tests that let
bugs through"): each case fails when its bug is put back."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from conftest import ROOT
from pathologies.config import load_schema, run_specs
from pathologies.ddd.experiment import in_between_mask
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.io import h5py
from pathologies.overinterp.calibration import expected_calibration_error
from pathologies.overinterp.subset_masks import subset_size
from pathologies.training.predictions import load_correctness


def test_loose_in_between_rule_lets_one_exception_count_as_trivial_or_impossible():
    # 5 models x 5 images: right by 5, 4, 3, 1, 0 models
    correct = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    spec = {"name": "x", "loose_max_exceptions": 1}
    strict = in_between_mask(correct, {**spec, "in_between_rule": "strict"})
    loose = in_between_mask(correct, {**spec, "in_between_rule": "loose"})
    np.testing.assert_array_equal(strict, [False, True, True, True, False])
    np.testing.assert_array_equal(loose, [False, False, True, False, False])


@pytest.mark.parametrize("fraction, count, expected", [
    (0.05, 50, 3),   # 2.5 rounds up (Python's round gives 2)
    (0.5, 9, 5),     # 4.5 -> 5 (round: 4)
    (0.1, 25, 3),    # 2.5 -> 3
    (0.05, 1024, 51),  # 51.2 -> 51: the paper's 5% of 32x32
    (0.001, 64, 1),  # at least one feature
])
def test_subset_size_rounds_half_up(fraction, count, expected):
    assert subset_size(fraction, count) == expected


def test_ece_uses_every_bin_with_over_and_under_confident_bins():
    """4 bins: (0.25, 0.5] under-confident, (0.5, 0.75] and (0.75, 1] over-confident. By hand:
    0.4 * |0.75 - 0.4| + 0.2 * |0 - 0.6| + 0.4 * |0.5 - 0.9| = 0.42 (3 bins would give 0.18)."""
    def row(confidence: float) -> list[float]:
        return [confidence] + [(1 - confidence) / 4] * 4
    probs = np.array([row(0.4)] * 4 + [row(0.6)] * 2 + [row(0.9)] * 4)
    labels = np.array([0, 0, 0, 1] + [1, 1] + [0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, bins=4) == pytest.approx(0.42)
    assert expected_calibration_error(probs, labels, bins=3) == pytest.approx(0.18)


def _dump(path, ids, targets, pred):
    with h5py.File(path, "w") as handle:
        handle.attrs["epochs"] = 0
        group = handle.create_group("test")
        group["ids"], group["targets"] = np.asarray(ids, np.int64), np.asarray(targets, np.int64)
        group["pred"] = np.asarray([pred], np.int32)
    return path


def test_dumps_with_the_same_ids_in_another_order_are_not_merged_as_aligned(tmp_path):
    a = _dump(tmp_path / "a.h5", [0, 1, 2], [0, 1, 2], [0, 1, 2])
    b = _dump(tmp_path / "b.h5", [2, 1, 0], [2, 1, 0], [2, 1, 0])
    with pytest.raises(UserError, match=r"b.h5: image ids differ from those in .*a.h5"):
        load_correctness({"a": a, "b": b})


def test_data_part_range_is_checked_for_plain_models():
    config = {"datasets": {"d": {"kind": "digits"}},
              "models": {"m": {"dataset": "d", "arch": "small_cnn",
                               "overrides": {"data_fraction": 0.5, "data_part": 2}}}}
    with pytest.raises(UserError, match=r"config key models.m.overrides.data_part: 2 is out of range for "
                                        r"data_fraction 0.5 \(parts 0..1\)"):
        validate(config)


def test_condition_overrides_win_over_the_base_run_overrides():
    config = validate({
        "datasets": {"d": {"kind": "digits"}},
        "recipes": {"r": {"epochs": 2, "lr": 0.1}},
        "ddd": {"x": {"dataset": "d", "base": {"arch": "small_cnn", "recipe": "r",
                                              "overrides": {"lr": 0.05, "batch_size": 16}},
                      "extra_epochs": [1],
                      "conditions": {"lr": {"overrides": {"lr": 0.07}}}}},
    })
    runs = run_specs(config)
    base = next(spec for (model, _), spec in runs.items() if model == "x.base")
    condition = next(spec for (model, _), spec in runs.items() if model == "x.lr")
    assert base.recipe["lr"] == 0.05 and condition.recipe["lr"] == 0.07
    assert condition.recipe["batch_size"] == 16, "base overrides the condition leaves alone still apply"


def documented_recipe_defaults() -> dict:
    """The defaults column of config/README.md's recipe table (rows whose default is a value, not null)."""
    text = (ROOT / "config" / "README.md").read_text()
    table = text.split("## `recipes.<name>`", 1)[1].split("\n## ", 1)[0]
    defaults = {}
    for key, default in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, flags=re.M):
        value = yaml.safe_load(default.strip().strip("`"))
        try:
            value = float(value) if isinstance(value, str) else value  # YAML 1.1 reads 5e-4 as a string
        except ValueError:
            pass
        if value is not None and (not isinstance(value, str) or key == "optimizer"):
            defaults[key] = value
    return defaults


def test_schema_recipe_defaults_are_the_documented_ones():
    schema_defaults = {key: spec["default"] for key, spec in load_schema()["$defs"]["recipe"]["properties"].items()
                       if spec.get("default") is not None}
    documented = documented_recipe_defaults()
    assert {"lr", "momentum", "weight_decay", "batch_size", "epochs", "lr_gamma"} <= set(documented)
    assert documented == schema_defaults
    # the CIFAR recipe of Carter et al. (DESIGN.md): batch 128, Nesterov-free momentum 0.9, wd 5e-4
    assert (documented["weight_decay"], documented["momentum"], documented["batch_size"]) == (5e-4, 0.9, 128)
