"""Inputs of a DDD experiment beyond trained runs: label-error files of every published form, pretrained
models, published per-image results (pathologies.ddd.exclusion, grid, experiment)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathologies.data.layout import Split, write_dataset
from pathologies.ddd.exclusion import entry_format, needs_dataset, read_ids
from pathologies.ddd.experiment import read_per_image
from pathologies.ddd.grid import experiments
from pathologies.ddd.rules import DddRules
from pathologies.errors import UserError
from pathologies.experiments import validate

N = 12
SPLIT_IDS = np.arange(100, 100 + 2 * N, 2)  # ids differ from positions, so a mask read as ids would show


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.h5"
    images = np.zeros((N, 2, 2, 3), np.uint8)
    write_dataset(path, name="d", kind="gaussian", class_names=["a", "b"], mean=[0.5] * 3, std=[0.2] * 3,
                  splits={"test": Split(images, np.arange(N) % 2, SPLIT_IDS)})
    return path


MASK = np.zeros(N, dtype=bool)
MASK[[0, 1, 5]] = True  # positions 0 and 1: a 0/1 mask misread as ids {0, 1} would drop other images


@pytest.mark.parametrize("dtype", [bool, np.float64, np.float32, np.int64, np.uint8])
def test_a_mask_of_the_split_length_is_read_through_the_split_order(dataset, tmp_path, dtype):
    np.save(tmp_path / "mask.npy", MASK.astype(dtype))
    assert read_ids(tmp_path / "mask.npy", dataset, "test").tolist() == SPLIT_IDS[MASK].tolist()
    assert needs_dataset(tmp_path / "mask.npy")


def test_a_mask_in_a_csv_column_and_a_declared_mask(dataset, tmp_path):
    pd.DataFrame({"mask": MASK.astype(int)}).to_csv(tmp_path / "mask.csv", index=False)
    assert read_ids(tmp_path / "mask.csv", dataset, "test").tolist() == SPLIT_IDS[MASK].tolist()
    np.save(tmp_path / "mask.npy", MASK.astype(int))
    assert read_ids(tmp_path / "mask.npy", dataset, "test", "mask").tolist() == SPLIT_IDS[MASK].tolist()


def test_ids_and_names_keep_their_reading(dataset, tmp_path):
    np.save(tmp_path / "ids.npy", np.array([104, 100, 999]))
    assert read_ids(tmp_path / "ids.npy", dataset, "test").tolist() == [100, 104, 999]
    assert not needs_dataset(tmp_path / "ids.npy")
    (tmp_path / "few.txt").write_text("0\n1\n1\n")  # int 0/1 of another length than the split
    assert read_ids(tmp_path / "few.txt", dataset, "test", "ids").tolist() == [0, 1]
    (tmp_path / "names.txt").write_text("x.png\n")
    assert entry_format(np.array(["x.png"]), "auto", None, "f") == "names" and needs_dataset(tmp_path / "names.txt")


@pytest.mark.parametrize("values, declared, message", [
    (np.array([0, 1, 1]), "auto", r"integer array of only 0 and 1 with 3 values, but the split has 12 images: a mask "
                                  r"or the ids 0 and 1\? declare ddd.<experiment>.exclude_format: mask .* or ids"),
    (np.array([0.0, 1.0, 0.5]), "auto", r"neither integer image ids nor a 0/1 mask"),
    (MASK[:5].astype(float), "auto", r"0/1 mask of 5 values, but the split has 12 images"),
    (np.array([3, 7]), "mask", r"read as a 0/1 mask but holds other values \(e.g. 3\); declare .*: ids"),
    (np.array([3, 7]), "names", r"declared to list file names .* but holds int64 values"),
])
def test_ambiguous_or_contradictory_files_are_refused_in_one_line(dataset, tmp_path, values, declared, message):
    np.save(tmp_path / "x.npy", values)
    with pytest.raises(UserError, match=message) as err:
        read_ids(tmp_path / "x.npy", dataset, "test", declared)
    assert "\n" not in str(err.value) and "x.npy" in str(err.value)


def test_per_image_results_are_counts_of_k_over_m(tmp_path):
    counts = np.array([0, 11, 5, 3, 11])
    np.save(tmp_path / "r.npy", (counts / 11).reshape(-1, 1))
    assert read_per_image(tmp_path / "r.npy", 11, 5).tolist() == counts.tolist()
    with pytest.raises(UserError, match=r"has 5 values, but the split has 6 images"):
        read_per_image(tmp_path / "r.npy", 11, 6)
    with pytest.raises(UserError, match=r"values are not k / 10 for k = 0..10 \(e.g. 0.4545"):
        read_per_image(tmp_path / "r.npy", 10, 5)


def config(**experiment) -> dict:
    return {"datasets": {"toy": {"kind": "gaussian"}}, "recipes": {"r": {"epochs": 3}},
            "ddd": {"zoo": {"dataset": "toy", **experiment}}}


def test_pretrained_models_expand_into_zero_epoch_runs_with_their_weights():
    weights = {"file": "w.pt", "sha256": "ab" * 32}
    done = validate(config(pretrained={"one": {"arch": "tv_resnet18", "weights": {"torchvision": "IMAGENET1K_V1"}},
                                       "two": {"arch": "mlp", "weights": weights, "recipe": "r"}}))
    one, two = done["models"]["zoo.one"], done["models"]["zoo.two"]
    assert one["weights"] == {"torchvision": "IMAGENET1K_V1"} and one["recipe"] == "pretrained"
    assert done["recipes"]["pretrained"]["epochs"] == 0 and done["recipes"]["pretrained"]["batch_size"] == 128
    assert two["recipe"] == "r" and two["overrides"] == {"epochs": 0} and two["weights"] == weights
    experiment = experiments(done)["zoo"]
    members = [(m.label, m.model, m.epoch) for m in experiment.pretrained]
    assert members == [("one", "zoo.one", 0), ("two", "zoo.two", 0)]
    rules = DddRules(done, lambda m, s: f"{m}/{s}", lambda name: f"{name}.h5")
    assert rules.predictions("zoo") == ["zoo.one/0/predictions.h5", "zoo.two/0/predictions.h5"]
    names = {path.rsplit("/", 1)[1] for path in rules.analyses("zoo")}
    assert "fig05_kappa_heatmaps.png" in names and "fig03_conditions.png" not in names


def test_an_unknown_torchvision_weights_name_stops_validation():
    with pytest.raises(UserError, match=r"config key models.zoo.one.weights.torchvision: 'V7' is not a weights name"):
        validate(config(pretrained={"one": {"arch": "tv_resnet50", "weights": {"torchvision": "V7"}}}))


def test_per_image_results_stand_alone_and_drop_single_model_figures():
    done = validate(config(per_image_results={"file": "r.npy", "n_models": 11}))
    rules = DddRules(done, lambda m, s: f"{m}/{s}", lambda name: f"{name}.h5")
    assert rules.external("zoo") == ["r.npy", "toy.h5"]
    names = {path.rsplit("/", 1)[1] for path in rules.analyses("zoo")}
    assert "fig02_histogram.png" in names and not names & {"fig04_decisions.png", "fig05_kappa_heatmaps.png"}
    with pytest.raises(UserError, match=r"per_image_results: .* cannot be compared with predictions_csv"):
        validate(config(per_image_results={"file": "r.npy", "n_models": 11}, predictions_csv=["a.csv"]))
