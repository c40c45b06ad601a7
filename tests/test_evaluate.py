"""Evaluation files: logits of the model's own normalisation, exact masking of pixel subsets, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from conftest import make_quadrant_dataset
from overinterp_fixtures import save_untrained_model, write_real_sis_file, write_sis_file
from pathologies.data.layout import load_split, to_model_input
from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model
from pathologies.overinterp.evaluate import evaluate, evaluation_splits, main, read_evaluation
from pathologies.overinterp.subsets import build_subset_dataset, read_masks


def test_logits_are_the_models_on_its_own_normalisation(tmp_path, quadrant_dataset):
    model_path = save_untrained_model(tmp_path / "m.pt", quadrant_dataset)
    results = evaluate(model_path, {"quad": quadrant_dataset}, tmp_path / "eval.h5", device="cpu", batch_size=10)
    assert list(results) == [("quad", "test")]  # train is skipped by default
    model, meta = load_model(model_path)
    data = load_split(quadrant_dataset, "test")
    with torch.no_grad():
        expected = model(to_model_input(data.images, meta["mean"], meta["std"])).numpy()
    stored = read_evaluation(tmp_path / "eval.h5", "quad", "test")
    assert np.allclose(stored.logits, expected, atol=1e-5)
    assert np.array_equal(stored.labels, data.labels) and np.array_equal(stored.ids, data.ids)
    assert not stored.masked
    with h5py.File(tmp_path / "eval.h5") as handle:
        assert handle["quad/test"].attrs["accuracy"] == pytest.approx(np.mean(expected.argmax(1) == data.labels))
        assert np.array_equal(handle["quad/test/pred"][()], stored.logits.argmax(1))


def test_pixel_subsets_are_masked_to_exactly_zero_for_a_model_of_other_statistics(tmp_path, quadrant_dataset):
    # a model normalising with other statistics than the subset file records
    other = make_quadrant_dataset(tmp_path / "other.h5", seed=5)
    model_path = save_untrained_model(tmp_path / "m.pt", other)
    rows = np.array([3, 0, 7])
    sis = write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", rows,
                         np.stack([np.random.default_rng(i).permutation(64) for i in range(3)]))
    build_subset_dataset(tmp_path / "bs.h5", quadrant_dataset, {"test": sis}, kind="bs", fraction=0.2)
    evaluate(model_path, {"bs": tmp_path / "bs.h5"}, tmp_path / "eval.h5", device="cpu")
    model, meta = load_model(model_path)
    masks = torch.as_tensor(read_masks(tmp_path / "bs.h5", "test"))[:, None]
    full = to_model_input(load_split(quadrant_dataset, "test").images[rows], meta["mean"], meta["std"])
    with torch.no_grad():
        expected = model(torch.where(masks, full, torch.zeros(()))).numpy()
    stored = read_evaluation(tmp_path / "eval.h5", "bs", "test")
    assert stored.masked and np.allclose(stored.logits, expected, atol=1e-5)


def test_evaluating_the_source_on_its_bs_subset_reproduces_the_backward_selection_curve(tmp_path, quadrant_dataset):
    model_path = save_untrained_model(tmp_path / "m.pt", quadrant_dataset, seed=3)
    rows = np.array([0, 4, 9])
    sis = write_real_sis_file(tmp_path / "sis.h5", model_path, quadrant_dataset, "test", rows)
    build_subset_dataset(tmp_path / "bs.h5", quadrant_dataset, {"test": sis}, kind="bs", fraction=0.1)
    evaluate(model_path, {"bs": tmp_path / "bs.h5"}, tmp_path / "eval.h5", device="cpu")
    probs = softmax(read_evaluation(tmp_path / "eval.h5", "bs", "test").logits.astype(np.float64), axis=1)
    with h5py.File(sis) as handle:
        classes, curve = handle["class"][()], handle["curve"][()]
    kept = 6  # round(0.1 * 64): f after removing all but the last 6 features
    assert np.allclose(probs[np.arange(3), classes], curve[:, -kept - 1], rtol=0, atol=1e-6)


def test_several_datasets_land_in_one_file(tmp_path, quadrant_dataset):
    model_path = save_untrained_model(tmp_path / "m.pt", quadrant_dataset)
    evaluate(model_path, {"a": quadrant_dataset, "b": quadrant_dataset}, tmp_path / "e.h5", splits=["train", "test"],
             device="cpu")
    assert evaluation_splits(tmp_path / "e.h5", "b") == ["test", "train"]
    a, b = (read_evaluation(tmp_path / "e.h5", name, "train") for name in "ab")
    assert np.array_equal(a.logits, b.logits)


def test_wrong_shapes_and_missing_groups_are_clear_errors(tmp_path, quadrant_dataset):
    small = make_quadrant_dataset(tmp_path / "small.h5", size=4)
    model_path = save_untrained_model(tmp_path / "m.pt", quadrant_dataset)
    with pytest.raises(UserError, match="evaluate it on a matching dataset"):
        evaluate(model_path, {"small": small}, tmp_path / "e.h5", device="cpu")
    assert not (tmp_path / "e.h5").exists()
    evaluate(model_path, {"quad": quadrant_dataset}, tmp_path / "e.h5", device="cpu")
    with pytest.raises(UserError, match="has no quad/train"):
        read_evaluation(tmp_path / "e.h5", "quad", "train")
    with pytest.raises(UserError, match="does not exist"):
        read_evaluation(tmp_path / "missing.h5", "quad", "test")


def test_cli_rejects_a_malformed_dataset_argument(tmp_path, quadrant_dataset, capsys):
    model_path = save_untrained_model(tmp_path / "m.pt", quadrant_dataset)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model_path), "--dataset", str(quadrant_dataset), "--out", str(tmp_path / "e.h5")])
    assert exit_info.value.code == 2 and "is not <name>=<file>" in capsys.readouterr().err
    assert main(["--model", str(model_path), "--dataset", f"q={quadrant_dataset}", "--out", str(tmp_path / "e.h5"),
                 "--device", "cpu"]) == 0
