"""CUDA paths of training and SIS extraction, run where a GPU is present (skipped elsewhere).

These run on a lent GPU machine (see docs/testing.md, "GPU checks"); CI has no GPU and skips them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_quadrant_dataset, make_spec
from pathologies.data.layout import load_split, to_model_input
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model
from pathologies.sis.engine import Scorer
from pathologies.sis.extract import run as extract
from pathologies.training.train import train_run
from test_sis_extract import keep_pixels, sis_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def train(dataset: Path, folder: Path, device: str, epochs: int = 3) -> Path:
    train_run(make_spec(epochs=epochs), dataset, model_out=folder / "model.pt", log_out=folder / "log.csv",
              predictions_out=folder / "predictions.h5", state_dir=folder / "state", device=device,
              progress=False, workers=0)
    return folder


def read_all(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                          else None)
    return arrays


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_quadrant_dataset(tmp_path_factory.mktemp("data") / "q.h5", n_train=1024, n_test=64, size=6)


def test_deterministic_cuda_training_repeats_bit_for_bit_and_learns(dataset, tmp_path):
    first, second = (train(dataset, tmp_path / name, "cuda") for name in ("a", "b"))
    a, b = read_all(first / "predictions.h5"), read_all(second / "predictions.h5")
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    model, _ = load_model(first / "model.pt")
    assert next(model.parameters()).device.type == "cpu", "checkpoints load on the CPU wherever trained"
    log = pd.read_csv(first / "log.csv")
    assert log["test_acc"].iloc[-1] > 0.8


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_sis_are_sufficient_and_fp32_agrees_with_the_cpu(dataset, tmp_path, precision):
    folder = train(dataset, tmp_path / "m", "cuda")
    spec = sis_spec(thresholds=[0.9], sample=16, precision=precision)
    extract([folder / "model.pt"], dataset, spec, out=tmp_path / "gpu.h5", device="cuda")
    gpu = read_all(tmp_path / "gpu.h5")
    model, meta = load_model(folder / "model.pt")
    images = to_model_input(load_split(dataset, "test").images, meta["mean"], meta["std"])[gpu["index"]]
    has = np.flatnonzero(~gpu["sis/0.9/none"])
    assert has.size
    scorer = Scorer(model.cuda(), amp_dtype=torch.bfloat16 if precision == "bf16" else None)
    f_sis = scorer(keep_pixels(images[has], gpu["sis/0.9/mask"][has]).cuda(),
                   torch.as_tensor(gpu["class"][has]).cuda())
    assert (f_sis.cpu().numpy() >= 0.9).all()
    if precision == "fp32":
        extract([folder / "model.pt"], dataset, spec, out=tmp_path / "cpu.h5", device="cpu")
        cpu = read_all(tmp_path / "cpu.h5")
        np.testing.assert_array_equal(gpu["class"], cpu["class"])
        np.testing.assert_allclose(gpu["f_full"], cpu["f_full"], rtol=0, atol=1e-5)
        same_order = (gpu["order"] == cpu["order"]).all(axis=1).mean()
        assert same_order >= 0.75, f"only {same_order:.0%} of removal orders agree between CUDA and CPU"
