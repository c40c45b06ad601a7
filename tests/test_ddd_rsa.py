"""Penultimate activations from checkpoints and the DDD RSA table (appendix A.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathologies.data.layout import dataset_info, load_split, to_model_input
from pathologies.ddd.measures import rsa_table
from pathologies.ddd.rsa import build_table, sample_rows
from pathologies.errors import UserError
from pathologies.models.activations import checkpoint_activations, last_linear, penultimate, split_images
from pathologies.models.checkpoint import save_model
from pathologies.models.registry import build_model


@pytest.mark.parametrize("arch", ["small_cnn", "mlp", "resnet20", "vgg16_bn"])
def test_penultimate_is_the_input_of_the_classifier(arch):
    torch.manual_seed(0)
    model = build_model(arch, 4, in_channels=1, image_size=8).eval()
    x = torch.randn(5, 1, 8, 8)
    head = last_linear(model)
    features = penultimate(model, x, batch_size=2)
    assert features.shape == (5, head.in_features)
    with torch.no_grad():
        logits = head(torch.from_numpy(features))
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_input_dropout_wrapper_and_modes():
    torch.manual_seed(0)
    model = build_model("mlp", 3, in_channels=1, image_size=4, input_dropout_keep=0.5)
    model.train()
    x = torch.randn(6, 1, 4, 4)
    first, second = penultimate(model, x), penultimate(model, x)
    assert np.array_equal(first, second)  # evaluated in eval mode: no dropout
    assert model.training  # and the mode is restored
    assert last_linear(model) is model.net[-1]
    with pytest.raises(UserError, match="no nn.Linear"):
        last_linear(torch.nn.Conv2d(1, 1, 1))


def save_random_model(path, arch: str, seed: int, info, epoch: int, snapshots=None) -> None:
    torch.manual_seed(seed)
    height, _, channels = info.image_shape
    model = build_model(arch, info.num_classes, in_channels=channels, image_size=height)
    save_model(path, model, arch=arch, num_classes=info.num_classes, in_channels=channels, image_size=height,
               mean=info.mean, std=info.std, epoch=epoch, snapshots=snapshots)


def test_rsa_table_from_checkpoints(quadrant_dataset, tmp_path):
    info = dataset_info(quadrant_dataset)
    members = []
    for label, condition, seed, epoch in [("plus2ep", "plus2ep", 0, 5), ("init.s1", "init", 1, 3),
                                          ("twin", "twin", 0, 3)]:
        path = tmp_path / f"{label}.pt"
        save_random_model(path, "small_cnn", seed, info, epoch)
        members.append({"label": label, "condition": condition, "epoch": epoch, "checkpoint": str(path)})
    spec = {"name": "toy", "split": "test", "members": members, "rsa_members": [m["label"] for m in members],
            "rsa_images": 20, "analysis_seed": 3}
    table = build_table(spec, str(quadrant_dataset))
    assert table[["model_a", "model_b"]].values.tolist() == [["plus2ep", "init.s1"], ["plus2ep", "twin"],
                                                             ["init.s1", "twin"]]
    assert table["epoch_a"].tolist() == [5, 5, 3] and table["condition_b"].tolist() == ["init", "twin", "twin"]
    assert table.loc[1, "rsa"] == pytest.approx(1.0)  # same initialisation: identical representations
    assert set(table["n_images"]) == {20}

    rows = sample_rows(64, spec)
    images = load_split(quadrant_dataset, "test").images[rows]
    expected = rsa_table({m["label"]: checkpoint_activations(m["checkpoint"], images)["penultimate"] for m in members})
    assert table["rsa"].tolist() == pytest.approx(expected["rsa"].tolist())
    assert set(table["layer"]) == {"penultimate"}
    two = build_table({**spec, "rsa_layers": ["penultimate", "logits"]}, str(quadrant_dataset))
    logits = rsa_table({m["label"]: checkpoint_activations(m["checkpoint"], images, layers=["logits"])["logits"]
                        for m in members})
    assert two.loc[two["layer"] == "logits", "rsa"].tolist() == pytest.approx(logits["rsa"].tolist())
    assert two.loc[two["layer"] == "penultimate", "rsa"].tolist() == pytest.approx(expected["rsa"].tolist())
    # The sample is fixed by the seed and capped at the split size.
    assert sample_rows(64, spec) == rows and len(sample_rows(64, {**spec, "rsa_images": 500})) == 64

    # Images of exclude_ids never enter the sample: it is drawn among the others.
    split = load_split(quadrant_dataset, "test")
    np.save(tmp_path / "errors.npy", split.ids[:40])
    kept = build_table({**spec, "exclude_ids": str(tmp_path / "errors.npy")}, str(quadrant_dataset))
    allowed = np.arange(40, 64)[sample_rows(24, spec)]
    subset = rsa_table({m["label"]: checkpoint_activations(m["checkpoint"], split.images[allowed])["penultimate"]
                        for m in members})
    assert kept["rsa"].tolist() == pytest.approx(subset["rsa"].tolist())

    with pytest.raises(UserError, match="at least two trained conditions"):
        build_table({**spec, "rsa_members": ["twin"]}, str(quadrant_dataset))


def test_checkpoint_activations_normalise_like_training(quadrant_dataset, tmp_path):
    info = dataset_info(quadrant_dataset)
    save_random_model(tmp_path / "m.pt", "mlp", 0, info, epoch=3)
    images, ids = split_images(quadrant_dataset, "test", [3, 1])
    split = load_split(quadrant_dataset, "test")
    assert ids.tolist() == split.ids[[3, 1]].tolist()
    from pathologies.models.checkpoint import load_model

    model, meta = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        expected = model[:-1](to_model_input(images, meta["mean"], meta["std"]))
    assert np.allclose(checkpoint_activations(tmp_path / "m.pt", images)["penultimate"], expected.numpy(), atol=1e-6)
    with torch.no_grad():
        logits = model(to_model_input(images, meta["mean"], meta["std"]))
    both = checkpoint_activations(tmp_path / "m.pt", images, layers=("penultimate", "logits"))
    assert np.allclose(both["logits"], logits.numpy(), atol=1e-6)  # the last fully connected layer's output
