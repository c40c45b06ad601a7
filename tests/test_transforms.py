"""Recipe transforms (pathologies.training.transforms) and the authors' recipes in the paper configs."""

from __future__ import annotations

import math

import numpy as np
import torch

from conftest import ROOT, make_quadrant_dataset, make_spec
from pathologies.config import run_specs
from pathologies.data.layout import DatasetInfo
from pathologies.experiments import load
from pathologies.models.checkpoint import read_checkpoint
from pathologies.training.train import augment_batch, train_run
from pathologies.training.transforms import crop_boxes, eval_generator, input_stats, random_resized_crop

INFO = DatasetInfo("d", "gaussian", 2, (8, 8, 3), ["a", "b"], (0.4, 0.5, 0.6), (0.1, 0.2, 0.3), "array", ("test",))


def test_input_stats_follow_the_recipe():
    assert input_stats(INFO, {"normalization": "dataset"}) is INFO
    imagenet = input_stats(INFO, {"normalization": "imagenet"})
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    none = input_stats(INFO, {"normalization": "none"})
    assert none.mean == (0.0, 0.0, 0.0) and none.std == (1.0, 1.0, 1.0)


def test_random_resized_crops_are_torchvisions_boxes_resized_and_seeded():
    x = torch.rand(6, 3, 32, 32)
    state = torch.get_rng_state()
    boxes = crop_boxes(32, 32, 6, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    for top, left, h, w in boxes:
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w
        # scale 0.08-1 before each side is rounded
        assert 0.08 * 1024 - (h + w) - 1 <= h * w <= 1024
    crops = random_resized_crop(x, 224, torch.Generator().manual_seed(1))
    assert crops.shape == (6, 3, 224, 224)
    for image, crop, (top, left, h, w) in zip(x, crops, boxes, strict=True):
        # the same as cropping and resizing with torch's own bilinear interpolation
        expected = torch.nn.functional.interpolate(image[None, :, top:top + h, left:left + w], size=(224, 224),
                                                   mode="bilinear", align_corners=False, antialias=True)[0]
        torch.testing.assert_close(crop, expected)
    again = random_resized_crop(x, 224, torch.Generator().manual_seed(1))
    assert torch.equal(crops, again)
    assert not torch.equal(crops, random_resized_crop(x, 224, torch.Generator().manual_seed(2)))
    assert sum(1 for box in boxes if box[2] * box[3] < 1024) >= 3  # most crops are real crops


def test_eval_crops_draw_from_seed_epoch_and_split_alone():
    def draw(*key):
        return torch.randint(2**30, (4,), generator=eval_generator(*key)).tolist()

    assert draw(0, 1, "test") == draw(0, 1, "test")
    assert len({tuple(draw(*key)) for key in [(0, 1, "test"), (0, 2, "test"), (1, 1, "test"), (0, 1, "train")]}) == 4


def test_black_crop_fill_pads_with_normalised_black():
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    black = -mean / std
    x = torch.randn(64, 3, 4, 4)
    (out,) = augment_batch(torch.Generator().manual_seed(0), 2, False, x, fill=black)
    (plain,) = augment_batch(torch.Generator().manual_seed(0), 2, False, x)
    padded = plain == 0  # with the default fill every padded value is 0 (x has no exact zeros)
    assert padded.any()
    expected = torch.where(padded, black.view(1, 3, 1, 1).expand_as(x), plain)
    torch.testing.assert_close(out, expected)


def test_a_gaussian_style_recipe_trains_and_dumps_on_seeded_crops(tmp_path):
    """random_resized_crop on an array dataset with crop_size, evaluation on crops, no normalisation: the model
    sees crop_size inputs, model.pt keeps mean 0 / std 1, and a rerun dumps the same predictions."""
    data = make_quadrant_dataset(tmp_path / "q.h5", n_train=32, n_test=16, size=8, channels=3)
    spec = make_spec(epochs=1, arch="tv_resnet18", batch_size=16, hflip=True, random_resized_crop=True,
                     crop_size=32, eval_random_resized_crop=True, normalization="none")
    dumps = []
    for run in ("a", "b"):
        paths = {"model_out": tmp_path / f"{run}.pt", "log_out": tmp_path / f"{run}.csv",
                 "predictions_out": tmp_path / f"{run}.h5"}
        train_run(spec, data, **paths, state_dir=tmp_path / f"s{run}", device="cpu", progress=False, workers=1)
        from pathologies.io import h5py

        with h5py.File(paths["predictions_out"]) as handle:
            dumps.append(handle["test/conf"][()])
    np.testing.assert_array_equal(dumps[0], dumps[1])
    checkpoint = read_checkpoint(tmp_path / "a.pt")
    assert checkpoint["image_size"] == 32
    assert list(checkpoint["mean"]) == [0.0, 0.0, 0.0] and list(checkpoint["std"]) == [1.0, 1.0, 1.0]
    no_crop = make_spec(epochs=1, arch="tv_resnet18", batch_size=16, hflip=True, random_resized_crop=True,
                        crop_size=32, normalization="none")
    paths = {"model_out": tmp_path / "c.pt", "log_out": tmp_path / "c.csv", "predictions_out": tmp_path / "c.h5"}
    train_run(no_crop, data, **paths, state_dir=tmp_path / "sc", device="cpu", progress=False, workers=1)
    with h5py.File(paths["predictions_out"]) as handle:
        assert not np.array_equal(handle["test/conf"][0], dumps[0][0])  # epoch 0: 8x8 images vs 32x32 crops


def paper_runs(name: str) -> dict:
    config = load(ROOT / "config" / name)
    return {key: spec for key, spec in run_specs(config).items()}


def test_cifar100_paper_config_follows_the_authors_recipe():
    runs = paper_runs("ddd_cifar100.yaml")
    base = runs[("cifar100_variants.base", 0)]
    assert base.arch == "tv_resnet18_cifar"
    recipe = base.recipe
    assert (recipe["normalization"], recipe["crop_padding"], recipe["hflip"], recipe["crop_fill"]) == (
        "imagenet", 4, True, "black")
    assert not recipe["random_resized_crop"] and not recipe["eval_random_resized_crop"]
    assert runs[("cifar100_variants.architecture", 0)].arch == "tv_densenet121_cifar"


def test_gaussian_paper_config_follows_the_authors_recipe():
    runs = paper_runs("ddd_gaussian.yaml")
    base = runs[("gaussian_variants.base", 0)]
    assert base.arch == "tv_resnet18"
    recipe = base.recipe
    assert (recipe["random_resized_crop"], recipe["crop_size"], recipe["eval_random_resized_crop"], recipe["hflip"],
            recipe["normalization"], recipe["crop_padding"]) == (True, 224, True, True, "none", 0)
    architecture = runs[("gaussian_variants.architecture", 0)]
    assert architecture.arch == "tv_resnet50" and architecture.recipe["batch_size"] == 64  # their ResNet50fc100
    lrs = sorted(spec.recipe["lr"] for key, spec in runs.items() if key[0].startswith("gaussian_variants.lr."))
    assert np.allclose(lrs, [0.1 - 0.00003 + 0.00001 * num for num in range(1, 6)])  # their helpers.py, NUM 1..5
    assert math.isclose(base.recipe["lr"], 0.1)
