"""Pixel subsets of an ImageNet index (pathologies.overinterp.index_subsets): real PNG folder -> index -> trained
model -> SIS -> BS, random, mask-only and noisy-linear subsets -> streamed masked images, exact evaluation,
training, and a damaged mask file met in a DataLoader worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, make_imagenet_index, make_spec
from pathologies.data.fill import image_noise, noisy_linear_impute
from pathologies.data.imagenet import ImageIndexDataset
from pathologies.data.layout import dataset_info, mask_colour, to_model_input
from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model
from pathologies.overinterp import index_subsets
from pathologies.overinterp.evaluate import evaluate
from pathologies.overinterp.subset_masks import (
    SubsetRequest,
    backward_selection_features,
    feature_masks,
    random_features,
    subset_size,
)
from pathologies.overinterp.subsets import build_subset_datasets
from pathologies.sis.engine import Masking
from pathologies.sis.extract import run as extract
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
        build_subset_datasets(index, sis, requests + [SubsetRequest("mask", FRACTION, -1, "m", str(root / "mask.h5"))],
                              seed=3)
        build_subset_datasets(index, sis, [SubsetRequest("bs", FRACTION, -1, "nbs", str(root / "nl_bs.h5")),
                                           SubsetRequest("random", FRACTION, 1, "nr1", str(root / "nl_r1.h5"))],
                              seed=3, masking="noisy_linear")
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


def test_mask_only_index_streams_the_bs_keep_mask_alone_without_reading_the_images(chain, tmp_path):
    """The leakage control: white where the BS subset keeps a pixel, the mean colour elsewhere, no pixel value."""
    root = chain["root"]
    with h5py.File(root / "mask.h5") as handle:
        assert (handle.attrs["subset_kind"], handle.attrs["masking"]) == ("mask", "mean")
    colour = mask_colour(dataset_info(chain["index"]).mean)
    labels = read(chain["index"], "test", "labels")[read(root / "bs.h5", "test", "rows")]
    for split in ("train", "test"):
        bs = read(root / "bs.h5", split, "masks")
        np.testing.assert_array_equal(read(root / "mask.h5", split, "masks"), bs)
        nowhere = ImageIndexDataset(root / "mask.h5", split, image_root=tmp_path / "no_images", with_masks=True)
        images = np.stack([nowhere[i][0].numpy() for i in range(len(nowhere))])
        assert images.shape == (len(bs), SIZE, SIZE, 3)
        assert (images[bs] == 255).all() and (images[~bs] == colour).all()
    assert [ImageIndexDataset(root / "mask.h5", "test")[i][1] for i in range(len(labels))] == labels.tolist()
    results = evaluate(chain["model"], {"m": root / "mask.h5"}, tmp_path / "eval.h5", device="cpu", workers=2)
    model, meta = load_model(chain["model"])
    keep = torch.as_tensor(read(root / "mask.h5", "test", "masks"))[:, None]
    x = to_model_input(np.where(keep[:, 0, ..., None].numpy(), 255, colour).astype(np.uint8), meta["mean"],
                       meta["std"]) * keep
    with torch.no_grad():
        np.testing.assert_allclose(results[("m", "test")].logits, model(x).numpy(), rtol=0, atol=1e-5)


def stream(path: Path, split: str, workers: int = 0) -> np.ndarray:
    loader = torch.utils.data.DataLoader(ImageIndexDataset(path, split), batch_size=4, num_workers=workers)
    return torch.cat([images for images, _ in loader]).numpy()


def test_noisy_linear_index_imputes_each_image_with_its_own_seeded_noise(chain, tmp_path):
    """ROAD at load time: kept pixels as the image, masked ones imputed from their neighbours plus noise seeded by
    (seed, draw, stream, source row), so workers, epochs and reruns see the very same images."""
    root, colour = chain["root"], mask_colour(dataset_info(chain["index"]).mean)
    for name, kind, draw in (("nl_bs.h5", "bs", -1), ("nl_r1.h5", "random", 1)):
        with h5py.File(root / name) as handle:
            assert (handle.attrs["masking"], int(handle.attrs["draw"])) == ("noisy_linear", draw)
        for split in ("train", "test"):
            rows, masks = read(root / name, split, "rows"), read(root / name, split, "masks")
            source = ImageIndexDataset(chain["index"], split)
            originals = np.stack([source[int(r)][0].numpy() for r in rows])
            images = stream(root / name, split)
            np.testing.assert_array_equal(images[masks], originals[masks])
            assert (images[~masks] != colour).any(axis=-1).mean() > 0.5  # not the mean fill
            for i, row in enumerate(rows):
                noise = image_noise(3, draw, f"impute/{kind}/{split}", int(row))
                expected = noisy_linear_impute(originals[i:i + 1], masks[i:i + 1], noise, colour)[0]
                np.testing.assert_array_equal(images[i], expected)
            np.testing.assert_array_equal(stream(root / name, split, workers=2), images)
    assert not np.array_equal(stream(root / "nl_bs.h5", "test"), stream(root / "bs.h5", "test"))
    results = evaluate(chain["model"], {"n": root / "nl_bs.h5"}, tmp_path / "eval.h5", device="cpu")
    assert not results[("n", "test")].masked  # the imputed pixels are the input, not zeroed
    model, meta = load_model(chain["model"])
    with torch.no_grad():
        expected = model(to_model_input(stream(root / "nl_bs.h5", "test"), meta["mean"], meta["std"])).numpy()
    np.testing.assert_allclose(results[("n", "test")].logits, expected, rtol=0, atol=1e-5)


def test_models_train_on_mask_only_and_imputed_subset_indexes(chain, tmp_path):
    for name in ("mask.h5", "nl_r1.h5"):
        out = tmp_path / name
        train_run(make_spec(epochs=1, batch_size=8), chain["root"] / name, model_out=out / "m.pt",
                  log_out=out / "l.csv", predictions_out=out / "p.h5", state_dir=out / "s", device="cpu",
                  progress=False, workers=0)
        assert read(out / "p.h5", "test", "pred").shape == (2, len(read(chain["root"] / name, "test", "rows")))


def test_damaged_mask_file_met_in_a_worker_is_one_line_naming_it(chain, tmp_path):
    from test_faults import corrupt_first_chunk

    path = tmp_path / "bs.h5"
    path.write_bytes((chain["root"] / "bs.h5").read_bytes())
    corrupt_first_chunk(path, "test/masks")
    dataset = ImageIndexDataset(path, "test")  # the header and the small datasets are intact
    with pytest.raises(UserError) as caught:
        dataset[0]
    assert str(caught.value).startswith(f"{path} is not a readable HDF5 file") and "\n" not in str(caught.value)
    assert "delete it and rebuild it" in str(caught.value)
    done = subprocess.run([sys.executable, "-m", "pathologies.overinterp.evaluate", "--model", str(chain["model"]),
                           "--dataset", f"bs={path}", "--out", str(tmp_path / "eval.h5"), "--device", "cpu",
                           "--threads", "2"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "workflow")})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: {caught.value}"  # not the worker's traceback
    assert "Traceback" not in done.stderr and "Caught" not in done.stderr
    assert not (tmp_path / "eval.h5").exists()
