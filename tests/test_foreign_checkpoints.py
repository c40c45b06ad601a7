"""Checkpoints in other libraries' layouts: Madry's `robustness` (the robust models of Carter et al. S2) and
pytorch_pretrained_vit (B_16_imagenet1k at 384 px, S6.4). Each generated file loads into the registry's
network and gives the logits computed here, independently, from the file's own tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import make_quadrant_dataset, make_spec
from pathologies.errors import UserError
from pathologies.models.checkpoint import load_model
from pathologies.models.foreign_checkpoints import CifarResNet50, set_data_normalisation
from pathologies.models.registry import build_model
from pathologies.training.train import train_run

ROBUST_MEAN, ROBUST_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # the library's CIFAR statistics


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``net`` in eval mode with random BatchNorm statistics (the defaults would hide a mix-up)."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return net.eval()


def _robustness_file(path, net, *, attacker_only=False):
    """A checkpoint as the robustness library saves it: {'model': ..., 'optimizer': ..., 'epoch': ...}."""
    mean = torch.tensor(ROBUST_MEAN).reshape(3, 1, 1)
    std = torch.tensor(ROBUST_STD).reshape(3, 1, 1)
    state = {"module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std}
    state.update({f"module.attacker.model.{k}": v for k, v in net.state_dict().items()})
    if not attacker_only:
        state.update({"module.normalizer.new_mean": mean, "module.normalizer.new_std": std})
        state.update({f"module.model.{k}": v.clone() for k, v in net.state_dict().items()})
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                "epoch": 150}, path)
    return path


def _robustness_logits(net, x, data_mean, data_std):
    """What the library computes on images normalised with the dataset's mean/std: back to [0, 1], its
    InputNormalize (clamp, then its own mean/std), the network."""
    images = x * torch.tensor(data_std).reshape(1, -1, 1, 1) + torch.tensor(data_mean).reshape(1, -1, 1, 1)
    images = images.clamp(0, 1)
    return net((images - torch.tensor(ROBUST_MEAN).reshape(1, 3, 1, 1)) / torch.tensor(ROBUST_STD).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("attacker_only", [False, True])
def test_robustness_cifar_checkpoint_gives_the_librarys_logits(tmp_path, attacker_only):
    torch.manual_seed(0)
    net = _randomised(CifarResNet50(10), 1)
    path = _robustness_file(tmp_path / "cifar_l2_0_5.pt", net, attacker_only=attacker_only)
    model = build_model("robustness_cifar_resnet50", 10, image_size=16, weights=path).eval()
    data_mean, data_std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    set_data_normalisation(model, data_mean, data_std)
    x = torch.randn(2, 3, 16, 16) * 2  # some pixels leave [0, 1]: the clamp matters
    with torch.no_grad():
        torch.testing.assert_close(model(x), _robustness_logits(net, x, data_mean, data_std), rtol=1e-5, atol=1e-5)


def test_robustness_imagenet_checkpoint_loads_into_torchvisions_resnet50(tmp_path):
    torch.manual_seed(0)
    net = _randomised(torchvision.models.resnet50(weights=None, num_classes=7), 2)
    path = _robustness_file(tmp_path / "imagenet_l2_3_0.pt", net)
    model = build_model("robustness_tv_resnet50", 7, image_size=32, weights=path).eval()
    set_data_normalisation(model, ROBUST_MEAN, ROBUST_STD)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _robustness_logits(net, x, ROBUST_MEAN, ROBUST_STD), rtol=1e-5, atol=1e-5)


def test_a_pretrained_robust_model_keeps_the_datasets_normalisation_in_its_checkpoint(tmp_path):
    """Through the trainer (epochs 0, as the paper configs' pretrained models) and load_model: the evaluated
    model converts the dataset's normalisation, read from the prepared file, into the library's."""
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=8, n_test=4, size=8, channels=3)
    torch.manual_seed(0)
    net = _randomised(CifarResNet50(4), 3)
    spec = make_spec(epochs=0, arch="robustness_cifar_resnet50")
    spec["weights"] = str(_robustness_file(tmp_path / "robust.pt", net))
    train_run(spec, dataset, model_out=tmp_path / "m" / "model.pt", log_out=tmp_path / "m" / "log.csv",
              predictions_out=tmp_path / "m" / "predictions.h5", state_dir=tmp_path / "m" / "state", device="cpu",
              progress=False)
    model, meta = load_model(tmp_path / "m" / "model.pt")
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _robustness_logits(net, x, meta["mean"], meta["std"]), rtol=1e-5,
                                   atol=1e-5)


def test_other_layouts_are_refused_in_one_line(tmp_path):
    torch.save(CifarResNet50(10).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(UserError, match=r"plain.pt is not a robustness-library checkpoint \(expected keys "
                                        r"module.model.\* or module.attacker.model.\*") as err:
        build_model("robustness_cifar_resnet50", 10, weights=tmp_path / "plain.pt")
    assert "\n" not in str(err.value)
    torch.save({"fc.weight": torch.zeros(3, 768)}, tmp_path / "other_vit.pt")
    with pytest.raises(UserError, match="neither a torchvision VisionTransformer state dict nor a "
                                        "pytorch_pretrained_vit one"):
        build_model("tv_vit_b_16", 10, image_size=32, weights=tmp_path / "other_vit.pt")


# ------------------------------------------------------------------------------------------ ViT


def _pretrained_vit_state(dim, layers, ff, classes, seq, gen):
    """Random tensors under pytorch_pretrained_vit's names (patch 16, 3 channels, no representation layer)."""
    def r(*shape):
        return torch.randn(*shape, generator=gen) * 0.2

    state = {"class_token": r(1, 1, dim), "patch_embedding.weight": r(dim, 3, 16, 16), "patch_embedding.bias": r(dim),
             "positional_embedding.pos_embedding": r(1, seq, dim), "norm.weight": 1 + r(dim), "norm.bias": r(dim),
             "fc.weight": r(classes, dim), "fc.bias": r(classes)}
    for i in range(layers):
        block = f"transformer.blocks.{i}."
        for name in ("attn.proj_q", "attn.proj_k", "attn.proj_v", "proj"):
            state[f"{block}{name}.weight"], state[f"{block}{name}.bias"] = r(dim, dim), r(dim)
        for name in ("norm1", "norm2"):
            state[f"{block}{name}.weight"], state[f"{block}{name}.bias"] = 1 + r(dim), r(dim)
        state[f"{block}pwff.fc1.weight"], state[f"{block}pwff.fc1.bias"] = r(ff, dim), r(ff)
        state[f"{block}pwff.fc2.weight"], state[f"{block}pwff.fc2.bias"] = r(dim, ff), r(dim)
    return state


def _pretrained_vit_forward(state, x, heads, layers):
    """pytorch_pretrained_vit's ViT.forward written out from its source, on the file's tensors."""
    def linear(h, name):
        return F.linear(h, state[f"{name}.weight"], state[f"{name}.bias"])

    def norm(h, name):
        return F.layer_norm(h, h.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    h = F.conv2d(x, state["patch_embedding.weight"], state["patch_embedding.bias"], stride=16)
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([state["class_token"].expand(len(x), -1, -1), h], dim=1) + state["positional_embedding.pos_embedding"]
    b, s, d = h.shape
    for i in range(layers):
        block = f"transformer.blocks.{i}."
        y = norm(h, f"{block}norm1")
        q, k, v = (linear(y, f"{block}attn.proj_{p}").view(b, s, heads, -1).transpose(1, 2) for p in "qkv")
        scores = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.size(-1)), dim=-1)
        y = (scores @ v).transpose(1, 2).reshape(b, s, d)
        h = h + linear(y, f"{block}proj")
        h = h + linear(F.gelu(linear(norm(h, f"{block}norm2"), f"{block}pwff.fc1")), f"{block}pwff.fc2")
    return linear(norm(h, "norm")[:, 0], "fc")


def test_pytorch_pretrained_vit_file_gives_its_logits_in_torchvisions_vit(tmp_path):
    """A small ViT (2 layers, width 24) in pytorch_pretrained_vit's layout, mapped into torchvision's
    VisionTransformer, computes what that library's forward computes."""
    from pathologies.models.foreign_checkpoints import map_vit

    gen = torch.Generator().manual_seed(0)
    state = _pretrained_vit_state(dim=24, layers=2, ff=48, classes=5, seq=(48 // 16) ** 2 + 1, gen=gen)
    vit = torchvision.models.VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=2, hidden_dim=24,
                                               mlp_dim=48, num_classes=5)
    vit.load_state_dict(map_vit(state, tmp_path / "small.pth", vit))
    x = torch.randn(2, 3, 48, 48, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval()(x), _pretrained_vit_forward(state, x, heads=2, layers=2),
                                   rtol=1e-4, atol=1e-4)


def test_b_16_imagenet1k_layout_fits_tv_vit_b_16_at_384(tmp_path):
    """The published B_16_imagenet1k names and shapes (12 layers, width 768, 24 x 24 patches + class token)
    map onto exactly the parameters of the registry's tv_vit_b_16 built for 384 px (on the meta device)."""
    from pathologies.models.foreign_checkpoints import map_vit

    with torch.device("meta"):
        state = _pretrained_vit_state(dim=768, layers=12, ff=3072, classes=1000, seq=24 * 24 + 1, gen=None)
        model = build_model("tv_vit_b_16", 1000, image_size=384)
    mapped = map_vit(state, tmp_path / "B_16_imagenet1k.pth", model)
    expected = model.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[key].shape == value.shape for key, value in expected.items())
    assert np.prod(expected["encoder.pos_embedding"].shape) == 577 * 768
