"""Pixel subsets of an ImageNet index (pathologies.overinterp.index_subsets): real PNG folder -> index -> trained
model -> SIS -> BS and random subsets -> streamed masked images, exact evaluation, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_imagenet_index, make_spec
from pathologies.overinterp import index_subsets
from pathologies.models.checkpoint import load_model
from pathologies.data.layout import dataset_info, mask_colour, to_model_input
from pathologies.overinterp.evaluate import evaluate
from pathologies.data.imagenet import ImageIndexDataset
from pathologies.io import h5py
from pathologies.sis.engine import Masking
from pathologies.sis.extract import run as extract
from pathologies.overinterp.subset_masks import (SubsetRequest, backward_selection_features, feature_masks,
                                                 random_features, subset_size)
from pathologies.overinterp.subsets import build_subset_datasets
from pathologies.training.train import train_run
from test_sis_extract import sis_spec

SIZE = 8
FRACTION = 0.25


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """An 8x8 index of dark vs bright noise PNGs, a model trained on it, SIS of both splits, subsets."""
    root = tmp_path_factory.mktemp("imagenet")
    index = make_imagenet_index(root, {"train": 16, "val": 6}, SIZE, noise=100, step=120)
    folder = root / "model"
    train_run(make_spec(epochs=3, batch_size=8), index, model_out=folder / "model.pt", log_out=folder / "log.csv",
              predictions_out=folder / "p.h5", state_dir=folder / "state", device="cpu", progress=False, workers=0)
    sis = {}
    for split in ("train", "test"):
        sis[split] = root / f"sis_{split}.h5"
        extract([folder / "model.pt"], index, sis_spec(split=split, thresholds=[0.9]), out=sis[split], device="cpu")
    requests = [SubsetRequest("bs", FRACTION, -1, "bs", str(root / "bs.h5")),
                SubsetRequest("random", FRACTION, 0, "r0", str(root / "r0.h5")),
                SubsetRequest("random", FRACTION, 1, "r1", str(root / "r1.h5"))]
    chunk = index_subsets.CHUNK
    index_subsets.CHUNK = 5  # several chunks per split: they must give what one pass gives
    try:
        build_subset_datasets(index, sis, requests, seed=3)
    finally:
        index_subsets.CHUNK = chunk
    return {"index": index, "model": folder / "model.pt", "sis": sis, "root": root}


def read(path: Path, split: str, key: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[split][key][()]


def test_subset_indexes_hold_exact_bs_and_random_masks(chain):
    root, size = chain["root"], subset_size(FRACTION, SIZE * SIZE)
    info = dataset_info(root / "bs.h5")
    assert (info.storage, info.kind, info.image_shape) == ("index", "pixel_subset", (SIZE, SIZE, 3))
    np.testing.assert_allclose(info.mean, mask_colour(dataset_info(chain["index"]).mean) / 255.0)
    for split in ("train", "test"):
        with h5py.File(chain["sis"][split]) as handle:
            rows, order = handle["index"][()], handle["order"][()]
        np.testing.assert_array_equal(read(root / "bs.h5", split, "rows"), rows)
        np.testing.assert_array_equal(read(root / "bs.h5", split, "paths"), read(chain["index"], split, "paths")[rows])
        bs = read(root / "bs.h5", split, "masks")
        assert bs.shape == (len(rows), SIZE, SIZE) and (bs.sum(axis=(1, 2)) == size).all()
        expected = feature_masks(backward_selection_features(order, size), Masking(), SIZE, SIZE)
        np.testing.assert_array_equal(bs, expected)
        for draw, name in ((0, "r0.h5"), (1, "r1.h5")):
            whole = feature_masks(random_features(len(rows), SIZE * SIZE, size, 3, draw, split), Masking(), SIZE, SIZE)
            np.testing.assert_array_equal(read(root / name, split, "masks"), whole)
        assert not np.array_equal(read(root / "r0.h5", split, "masks"), read(root / "r1.h5", split, "masks"))


def test_streamed_subset_images_keep_the_mask_and_fill_the_rest_with_the_mean_colour(chain):
    subset, source = ImageIndexDataset(chain["root"] / "bs.h5", "test", with_masks=True), \
        ImageIndexDataset(chain["index"], "test")
    colour = mask_colour(dataset_info(chain["index"]).mean)
    rows = read(chain["root"] / "bs.h5", "test", "rows")
    for i, row in enumerate(rows):
        image, label, mask = subset[i]
        original, original_label = source[int(row)]
        assert label == original_label
        np.testing.assert_array_equal(image.numpy()[mask.numpy()], original.numpy()[mask.numpy()])
        assert (image.numpy()[~mask.numpy()] == colour).all()


def test_evaluation_masks_exactly_like_array_subsets_also_through_workers(chain, tmp_path):
    results = evaluate(chain["model"], {"bs": chain["root"] / "bs.h5"}, tmp_path / "eval.h5", device="cpu",
                       workers=2)
    got = results[("bs", "test")]
    assert got.masked
    model, meta = load_model(chain["model"])
    source = ImageIndexDataset(chain["index"], "test")
    rows = read(chain["root"] / "bs.h5", "test", "rows")
    images = np.stack([source[int(r)][0].numpy() for r in rows])
    keep = torch.as_tensor(read(chain["root"] / "bs.h5", "test", "masks"))[:, None]
    x = to_model_input(images, meta["mean"], meta["std"]) * keep  # masked pixels exactly 0, the SIS masked value
    with torch.no_grad():
        np.testing.assert_allclose(got.logits, model(x).numpy(), rtol=0, atol=1e-5)


def test_models_train_on_a_subset_index(chain, tmp_path):
    spec = make_spec(epochs=1, batch_size=8)
    train_run(spec, chain["root"] / "r0.h5", model_out=tmp_path / "m.pt", log_out=tmp_path / "l.csv",
              predictions_out=tmp_path / "p.h5", state_dir=tmp_path / "s", device="cpu", progress=False, workers=0)
    assert read(tmp_path / "p.h5", "test", "pred").shape == (2, len(read(chain["root"] / "r0.h5", "test", "rows")))
