"""Input dropout at evaluation, both ways (Carter et al. Table S4 "Input Dropout (Full)"): off by default
(the model is deterministic at evaluation), on with recipe ``dropout_at_eval``, and the evaluation and the
SIS extraction of the model follow the checkpoint's choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_quadrant_dataset, make_spec
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model
from pathologies.overinterp.evaluate import evaluate
from pathologies.sis.extract import run as extract
from pathologies.training.train import train_run
from test_faults import assert_same_outputs, train
from test_sis_extract import sis_spec


@pytest.fixture(scope="module")
def dropout_models(tmp_path_factory):
    """(dataset, {at_eval: checkpoint}) of two small CNNs trained alike with input dropout (keep 0.5)."""
    folder = tmp_path_factory.mktemp("dropout")
    dataset = make_quadrant_dataset(folder / "quadrants.h5", n_train=128, n_test=24, size=6)
    models = {}
    for at_eval in (False, True):
        out = folder / str(at_eval)
        train_run(make_spec(epochs=2, input_dropout_keep=0.5, dropout_at_eval=at_eval), dataset,
                  model_out=out / "model.pt", log_out=out / "log.csv", predictions_out=out / "predictions.h5",
                  state_dir=out / "state", device="cpu", progress=False)
        models[at_eval] = out / "model.pt"
    return dataset, models


def test_training_is_the_same_and_only_evaluation_differs(dropout_models):
    dataset, models = dropout_models
    off, meta_off = load_model(models[False])
    on, meta_on = load_model(models[True])
    assert (meta_off["dropout_at_eval"], meta_on["dropout_at_eval"]) == (False, True)
    for a, b in zip(off.state_dict().values(), on.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the flag changes nothing in training
    x = torch.randn(16, 1, 6, 6)
    assert torch.equal(off(x), off.net(x))  # off: identity in front of the classifier
    first = on(x)
    assert not torch.equal(first, on.net(x))  # on: pixels dropped at evaluation too
    again, _ = load_model(models[True])
    assert torch.equal(first, again(x))  # reproducible: its own generator, seeded when the model is built


def test_evaluation_and_sis_follow_the_checkpoint(dropout_models, tmp_path):
    dataset, models = dropout_models
    logits = {}
    for at_eval, path in models.items():
        results = evaluate(path, {"q": dataset}, tmp_path / f"eval_{at_eval}.h5", device="cpu")
        logits[at_eval] = results[("q", "test")].logits
    assert not np.array_equal(logits[False], logits[True])
    repeat = evaluate(models[False], {"q": dataset}, tmp_path / "again.h5", device="cpu")
    assert np.array_equal(repeat[("q", "test")].logits, logits[False])
    orders = {}
    for at_eval, path in models.items():
        out = tmp_path / f"sis_{at_eval}.h5"
        extract([path], dataset, sis_spec(thresholds=[0.5], sample=4, method="gradient", block=6), out=out,
                device="cpu")
        with h5py.File(out) as handle:
            orders[at_eval] = handle["order"][()]
            assert handle["order"].shape == (4, 36)
    assert not np.array_equal(orders[False], orders[True])  # the SIS sees the dropout choice of the model


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resumed_training_dumps_the_same_evaluation_dropout(stop_after, tmp_path):
    """With dropout_at_eval the per-epoch dumps draw their masks from (order_seed, epoch, split) alone, so a
    run stopped after epoch k and resumed writes every dump bit-identical to an uninterrupted run."""
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=96, n_test=24, size=6)
    spec = make_spec(epochs=3, input_dropout_keep=0.5, dropout_at_eval=True)
    spec["dump_splits"] = ["test", "train"]
    reference = train(spec, dataset, tmp_path / "reference")
    train(spec, dataset, tmp_path / "resumed", stop_after=stop_after)
    assert (tmp_path / "resumed" / "state" / "state.pt").exists()
    assert_same_outputs(reference, train(spec, dataset, tmp_path / "resumed"))
    with h5py.File(reference["predictions_out"]) as handle:  # the masks differ by epoch and split
        conf = handle["test/conf"][()]
        assert not np.array_equal(conf[1], conf[2]) and handle["train/conf"].shape == (4, 96)
