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
        if value is not None:
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


# ---------------------------------------------------------------------------------------------
# issue 22, "Tests that catch the bugs that matter": each test fails when its one-line bug is put in


def test_bootstrap_interval_is_the_central_quantiles_of_the_replicates():
    """A 95 % interval is the 2.5 % and 97.5 % quantiles of the replicates (a tail of 1 - level would
    silently make it a 90 % interval)."""
    from pathologies.ddd.consistency import bootstrap_ci, bootstrap_kappa

    rng = np.random.default_rng(7)
    truth = rng.random(60) < 0.6
    correct = np.stack([truth ^ (rng.random(60) < 0.2), truth ^ (rng.random(60) < 0.3), rng.random(60) < 0.5])
    replicates = bootstrap_kappa(correct, n_boot=400, seed=3)
    for level in (0.95, 0.8):
        low, high = bootstrap_ci(correct, n_boot=400, level=level, seed=3)
        np.testing.assert_allclose(low, np.quantile(replicates, (1 - level) / 2, axis=0))
        np.testing.assert_allclose(high, np.quantile(replicates, 1 - (1 - level) / 2, axis=0))
        assert (high[0, 1] - low[0, 1]) > 0


def test_bootstrap_draws_every_image_equally_often_on_average():
    """Resampling draws each of the n images, the last one included, about B times over B replicates."""
    from pathologies.ddd.consistency import resample_weights

    n, replicates = 4, 2000
    drawn = np.sum([resample_weights(n, seed=0, replicate=b) for b in range(replicates)], axis=0)
    assert drawn.sum() == n * replicates
    np.testing.assert_allclose(drawn / replicates, 1.0, atol=0.1)  # binomial sd of the mean: ~0.02


def test_screen_logits_are_temperature_scaled_like_the_strict_ones():
    """A calibrated model's screen divides by T as the fp32 scorer does (else it is off by a factor T)."""
    import torch

    from pathologies.models.registry import build_model
    from pathologies.sis.engine import Scorer
    from pathologies.sis.screen import Screen

    torch.manual_seed(0)
    models = [build_model("small_cnn", 4, in_channels=1, image_size=8) for _ in range(2)]
    x = torch.randn(5, 1, 8, 8)
    for temperature in (1.0, 2.5):
        scorer = Scorer(models, temperature=temperature)
        screen = Screen("channels_last", scorer, torch.device("cpu"))
        with torch.inference_mode():
            strict = scorer.logits(x)
        torch.testing.assert_close(screen.logits(x), strict, rtol=1e-4, atol=1e-5)


def test_an_image_with_f_exactly_at_tau_gets_an_sis():
    """Only images with f >= tau get an SIS: f == tau gets one (all features, here), f just below does not."""
    import torch

    from pathologies.sis.engine import FunctionScorer, backward_selection, find_sis

    x = torch.tensor([[[[0.125, 0.0625], [0.25, 0.03125]]]])  # dyadic: the sums are exact
    (selection,) = backward_selection(FunctionScorer(lambda v: v.sum(dim=(1, 2, 3))), x)
    assert selection.f_start == 0.46875
    assert find_sis(selection, 0.46875).tolist() == [3, 1, 0, 2]
    assert find_sis(selection, np.nextafter(0.46875, 1.0)) is None


def test_ece_bins_are_closed_on_the_right():
    """Bins are (b/B, (b+1)/B]: with 4 bins, confidence 0.5 lies in (0.25, 0.5], apart from 0.625 in
    (0.5, 0.75]. By hand: 0.5 * |1 - 0.5| + 0.5 * |0 - 0.625| = 0.5625 (one shared bin would give 0.0625)."""
    probs = np.array([[0.5, 0.25, 0.25], [0.625, 0.1875, 0.1875]])
    labels = np.array([0, 1])  # the first right, the second wrong
    assert expected_calibration_error(probs, labels, bins=4) == pytest.approx(0.5625)


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets: "15, [1, 2]" -> ["15", "[1, 2]"]."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def _documented_value(text: str):
    """A default cell as a value ("15" -> 15, "[1..5]" -> [1, ..., 5]); prose stays text."""
    text = text.strip().strip("`")
    span = re.fullmatch(r"\[(\d+)\.\.(\d+)\]", text)
    if span:
        return list(range(int(span.group(1)), int(span.group(2)) + 1))
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    try:
        return float(parsed) if isinstance(parsed, str) else parsed  # YAML 1.1 reads 5e-4 as text
    except ValueError:
        return parsed


def _row_defaults(cells: list[str], section: str) -> list[tuple[str, object]]:
    """(key, default) of one row `key` | default | meaning (or `a`, `b` | 1, 2 | ...)."""
    for i, cell in enumerate(cells[:-1]):
        keys = re.findall(r"`([\w.]+)`", cell)
        if keys and re.fullmatch(r"(`[\w.]+`(, )?)+", cell):
            defaults = _split_top(cells[i + 1]) if len(keys) > 1 else [cells[i + 1]]
            if len(defaults) != len(keys):
                return []
            return [(key if section == "Top level" else f"*.{key}", _documented_value(default))
                    for key, default in zip(keys, defaults, strict=True)]
    return []


def _readme_defaults() -> list[tuple[str, object]]:
    """(key, default) of every row of config/README.md's key tables whose default parses as a value. Keys of
    the top-level table are full paths; dataset options are ``datasets.<kind>.<option>``; others are
    suffixes (``*.calibration.bins``). A mapping default ({pairs: 149, ...}) gives one pair per entry."""
    rows, section, kinds = [], "", []
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        section = line[3:] if line.startswith("## ") else section
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if section.startswith("`datasets.") and len(cells) == 4:  # kind | option | default | meaning
            kinds = re.findall(r"`([\w.]+)`", cells[0]) or kinds
            option = re.fullmatch(r"`(\w+)`", cells[1])
            if option:
                rows += [(f"datasets.<{kind}>.{option.group(1)}", _documented_value(cells[2])) for kind in kinds]
        else:
            rows += _row_defaults(cells, section)
    expanded = []
    while rows:
        key, default = rows.pop()
        expanded.append((key, default))
        if isinstance(default, dict):
            rows += [(f"{key}.{name}", item) for name, item in default.items()]
    return expanded


def _filled_by_defaults(raw, full, path: tuple = ()) -> list[tuple[str, object]]:
    """(dotted path, value) of every leaf the schema's defaults added to ``raw``."""
    found = []
    for key, value in full.items():
        if isinstance(raw, dict) and key in raw:
            if isinstance(value, dict):
                found += _filled_by_defaults(raw[key], value, (*path, key))
        elif isinstance(value, dict) and value:
            found += _filled_by_defaults({}, value, (*path, key))
        else:
            found.append((".".join(map(str, (*path, key))), value))
    return found


def test_every_schema_default_the_shipped_configs_rely_on_is_the_documented_one():
    """Each config in config/ (the paper configs and the default) takes many values from the schema's
    defaults (e.g. overinterpretation.<name>.calibration.bins: 15, the ECE bins of Guo et al. and the
    authors' code). Every such value must be the default config/README.md states for that key, so a
    default changed in the schema alone (bins 15 -> 10) changes no paper run silently."""
    from pathologies.config import validate_schema

    documented = _readme_defaults()
    checked, wrong, filled = set(), [], {}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        full = validate_schema(raw)
        for key, value in _filled_by_defaults(raw, full):
            filled[key] = value
            if key.startswith("datasets."):  # documented per kind: datasets.<kind>.<option>
                name = next(name for name in full["datasets"] if key.startswith(f"datasets.{name}."))
                key = f"datasets.<{full['datasets'][name]['kind']}>.{key[len(f'datasets.{name}.'):]}"
            stated = [default for name, default in documented if key == name
                      or (name.startswith("*.") and key.endswith(name[1:]))]
            values = [default for default in stated if not isinstance(default, str) or default == value]
            if values:  # prose defaults ("the model's seed") are not compared
                checked.add(key)
                if value not in values:
                    wrong.append(f"{path.name}: {key} = {value!r}, config/README.md says {values}")
    assert not wrong, "\n".join(wrong)
    # config/README.md's tables are generated from the schema, so pin the paper's value independently too:
    # 15 equal-width bins, as gpleiss/temperature_scaling's ECE (the binning calibration.py follows)
    assert filled["overinterpretation.resnet20.calibration.bins"] == 15
    assert len(checked) > 300
    assert {"overinterpretation.resnet20.calibration.bins", "ddd.resnet18_variants.ci_level",
            "recipes.paper.nesterov", "datasets.<gaussian>.mean"} <= checked


def test_an_mnist_sample_as_large_as_its_split_is_the_whole_split(tmp_path, monkeypatch):
    from pathologies.data import mnist
    from test_mnist import fake_arrays, place

    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    arrays = fake_arrays(n_train=30, n_test=12)
    place(tmp_path / "mnist" / "MNIST" / "raw", arrays)
    splits, _ = mnist.load_mnist("m", {"kind": "mnist", "train_sample": 30, "test_sample": 12, "seed": 0,
                                       "download": False}, tmp_path)
    np.testing.assert_array_equal(splits["test"].ids, np.arange(12))
    np.testing.assert_array_equal(splits["train"].ids, np.arange(30))
    with pytest.raises(UserError, match=r"option 'test_sample' must lie in 1..12, got 13"):
        mnist.load_mnist("m", {"kind": "mnist", "train_sample": None, "test_sample": 13, "seed": 0,
                               "download": False}, tmp_path)


def test_an_sis_sample_as_large_as_its_split_selects_every_image():
    from pathologies.sis.extract import shard_rows

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["sis"]["runs"]["digits_exact"]["sample"] = 450  # digits/test holds 450 images
    validate(config)
    np.testing.assert_array_equal(shard_rows(450, 450, seed=0, shard=0, num_shards=1), np.arange(450))
    np.testing.assert_array_equal(np.concatenate([shard_rows(450, 450, 0, shard, 3) for shard in range(3)]),
                                  np.arange(450))
    config["sis"]["runs"]["digits_exact"]["sample"] = 451
    with pytest.raises(UserError, match="451 images exceed the 450 images of digits/test"):
        validate(config)


def test_a_snapshot_at_the_final_epoch_is_allowed():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    epochs = run_specs(validate(config))[("digits_cnn", 0)].recipe["epochs"]
    config["models"]["digits_cnn"]["overrides"] = {"snapshot_epochs": [0, epochs]}
    assert run_specs(validate(config))[("digits_cnn", 0)].recipe["snapshot_epochs"] == [0, epochs]
    config["models"]["digits_cnn"]["overrides"] = {"snapshot_epochs": [epochs + 1]}
    with pytest.raises(UserError, match=rf"snapshot_epochs \[{epochs + 1}\] lie beyond its {epochs} epochs"):
        validate(config)
