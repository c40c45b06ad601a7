"""S6.4 / Figure S17: Batched Gradient SIS of a ViT-B/16 whose features are its own 16 x 16 patches, from
local weights (random here: no download), as config/imagenet_overinterpretation.yaml's run vit_val."""

from __future__ import annotations

import torch

from pathologies.data.layout import dataset_info
from pathologies.data.prepare import prepare_dataset
from pathologies.io import h5py
from pathologies.models.checkpoint import save_model
from pathologies.models.registry import build_model
from pathologies.sis.extract import run as extract
from pathologies.sis.figures import main as figures_main
from test_sis_extract import sis_spec


def test_vit_patch_features_gradient_sis(tmp_path):
    dataset = tmp_path / "noise.h5"
    prepare_dataset("noise", {"kind": "gaussian", "num_classes": 3, "image_size": 32, "train_per_class": 2,
                              "test_per_class": 2}, tmp_path, dataset)
    info = dataset_info(dataset)
    torch.manual_seed(0)
    weights = tmp_path / "vit_b_16_local.pth"
    torch.save(build_model("tv_vit_b_16", 3, image_size=32).state_dict(), weights)
    model = build_model("tv_vit_b_16", 3, image_size=32, weights=weights)  # the config's `weights:` path
    checkpoint = tmp_path / "model.pt"
    save_model(checkpoint, model, arch="tv_vit_b_16", num_classes=3, in_channels=3, image_size=32,
               mean=info.mean, std=info.std, run={"model": "vit", "seed": 0})
    out = tmp_path / "sis.h5"
    extract([checkpoint], dataset, sis_spec(method="gradient", patch=16, block=1, thresholds=[0.3], sample=2),
            out=out, device="cpu")
    with h5py.File(out) as handle:
        assert handle.attrs["patch"] == 16 and handle["order"].shape == (2, 4)  # 2 x 2 patches of 16 x 16
        masks, none = handle["sis/0.3/mask"][()], handle["sis/0.3/none"][()]
        assert (~none).all()  # f_full >= 1/3 > tau for 3 classes
        for mask in masks[~none]:
            blocks = mask.reshape(2, 16, 2, 16).transpose(0, 2, 1, 3).reshape(4, 256)
            assert all(block.all() or not block.any() for block in blocks)  # whole patches only
    assert figures_main(["--sis", str(out), "--examples-out", str(tmp_path / "ex.png"),
                         "--curves-out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "ex.png").stat().st_size > 1000
