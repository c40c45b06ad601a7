"""Checkpoints published in other libraries' layouts, mapped onto the registry's networks.

- **robustness** (Madry lab's ``robustness`` library, the adversarially robust models): the file holds
  ``{"model": state_dict, "optimizer": ..., "epoch": ...}`` (or the state dict under ``state_dict``); its
  keys are ``module.normalizer.new_mean``/``new_std`` (the library's own input normalisation, (C, 1, 1)),
  ``module.model.<network>`` and a copy for the attacker, ``module.attacker.normalize.*`` and
  ``module.attacker.model.<network>``. :class:`RobustnessModel` holds the network and that normalisation:
  it turns the workflow's normalised input back into [0, 1] images with the dataset's mean/std
  (:func:`set_data_normalisation`, called by the trainer), clamps them as the library's ``InputNormalize``
  does and normalises them with the checkpoint's mean/std. So a masked pixel (0 after the dataset's
  normalisation) is the dataset mean colour for these models too.
- **pytorch_pretrained_vit** (lukemelas/PyTorch-Pretrained-ViT, e.g. ``B_16_imagenet1k.pth`` at 384 px, the
  ViT of Carter et al. S6.4): ``patch_embedding``, ``class_token``, ``positional_embedding.pos_embedding``,
  ``transformer.blocks.<i>.{norm1, attn.proj_q/k/v, proj, norm2, pwff.fc1/fc2}``, ``norm``, ``fc``; mapped
  onto torchvision's ``VisionTransformer`` (query, key and value projections concatenated into
  ``in_proj``). The two compute the same function (pre-norm blocks, exact GELU, LayerNorm eps 1e-6).

Files are read by :func:`pathologies.models.registry.load_weights` with ``weights_only`` (no code runs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class _Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (4x planes) residual block, 1x1-conv + BN shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(4 * planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet50(nn.Module):
    """The CIFAR ResNet-50 of the ``robustness`` library (kuangliu/pytorch-cifar's layout and key names): 3x3
    stem, stride 1, no max-pool, 3-4-6-3 bottleneck blocks of 64-128-256-512 (x4) filters, ``linear`` head.
    Global average pooling: the library's ``avg_pool2d(out, 4)`` on 32x32 inputs, and smaller inputs pass."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, stages = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(_Bottleneck(planes, width, block_stride))
                planes = 4 * width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class RobustnessModel(nn.Module):
    """A network behind the ``robustness`` library's input normalisation (see the module docstring)."""

    def __init__(self, model: nn.Module, channels: int = 3):
        super().__init__()
        self.model = model
        for name, value in (("data_mean", 0.0), ("data_std", 1.0), ("model_mean", 0.0), ("model_std", 1.0)):
            self.register_buffer(name, torch.full((channels, 1, 1), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = (x * self.data_std + self.data_mean).clamp(0.0, 1.0)
        return self.model((images - self.model_mean) / self.model_std)


def set_data_normalisation(model: nn.Module, mean, std) -> None:
    """Tell every :class:`RobustnessModel` in ``model`` the mean/std (0-1 scale) its input was normalised
    with; a no-op for other models."""
    for module in model.modules():
        if isinstance(module, RobustnessModel):
            module.data_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1))
            module.data_std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1))


def map_robustness(state: Mapping[str, torch.Tensor], path: Path, target: nn.Module) -> dict[str, torch.Tensor]:
    """A ``robustness``-library state dict (``module.`` already stripped) -> :class:`RobustnessModel`'s;
    UserError in one line for any other layout."""
    for prefix, normaliser in (("model.", "normalizer."), ("attacker.model.", "attacker.normalize.")):
        network = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        mean, std = state.get(f"{normaliser}new_mean"), state.get(f"{normaliser}new_std")
        if network and mean is not None and std is not None:
            break
    else:
        raise UserError(
            f"weights file {path} is not a robustness-library checkpoint (expected keys module.model.* or "
            f"module.attacker.model.* and module.normalizer.new_mean/new_std; it has e.g. "
            f"{', '.join(list(state)[:3])}); place the checkpoint the library saved, or use a tv_* architecture "
            "for a torchvision state dict")
    own = target.state_dict()
    mapped = {f"model.{key}": value for key, value in network.items()}
    mapped.update(model_mean=mean.reshape(-1, 1, 1), model_std=std.reshape(-1, 1, 1),
                  data_mean=own["data_mean"], data_std=own["data_std"])
    return mapped


_VIT_BLOCK = re.compile(r"transformer\.blocks\.(\d+)\.(.+)")
_VIT_BLOCK_PARTS = {"norm1": "ln_1", "proj": "self_attention.out_proj", "norm2": "ln_2", "pwff.fc1": "mlp.0",
                    "pwff.fc2": "mlp.3"}
_VIT_TOP = {"patch_embedding.weight": "conv_proj.weight", "patch_embedding.bias": "conv_proj.bias",
            "class_token": "class_token", "positional_embedding.pos_embedding": "encoder.pos_embedding",
            "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias", "fc.weight": "heads.head.weight",
            "fc.bias": "heads.head.bias"}


def map_vit(state: Mapping[str, torch.Tensor], path: Path, target: nn.Module) -> dict[str, torch.Tensor]:
    """A ``pytorch_pretrained_vit`` state dict -> torchvision ``VisionTransformer``'s; a torchvision state dict
    passes unchanged. UserError in one line for a file in neither layout (or with a representation layer)."""
    if "conv_proj.weight" in state:
        return dict(state)
    if "patch_embedding.weight" not in state or "pre_logits.weight" in state:
        raise UserError(
            f"weights file {path} is neither a torchvision VisionTransformer state dict nor a pytorch_pretrained_vit "
            f"one without representation layer (e.g. B_16_imagenet1k.pth; it has e.g. {', '.join(list(state)[:3])})")
    mapped: dict[str, torch.Tensor] = {}
    attention: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        block = _VIT_BLOCK.fullmatch(key)
        if block is None:
            if key not in _VIT_TOP:
                raise UserError(f"weights file {path}: key {key!r} is not part of a pytorch_pretrained_vit ViT")
            mapped[_VIT_TOP[key]] = value
            continue
        index, rest = block.groups()
        layer = f"encoder.layers.encoder_layer_{index}"
        part, _, leaf = rest.rpartition(".")
        if part in ("attn.proj_q", "attn.proj_k", "attn.proj_v"):
            attention.setdefault((layer, leaf), {})[part[-1]] = value
        elif part in _VIT_BLOCK_PARTS:
            mapped[f"{layer}.{_VIT_BLOCK_PARTS[part]}.{leaf}"] = value
        else:
            raise UserError(f"weights file {path}: key {key!r} is not part of a pytorch_pretrained_vit ViT")
    for (layer, leaf), parts in attention.items():
        if set(parts) != {"q", "k", "v"}:
            raise UserError(f"weights file {path}: {layer} lacks attention projection(s) "
                            f"{sorted({'q', 'k', 'v'} - set(parts))}")
        mapped[f"{layer}.self_attention.in_proj_{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return mapped
