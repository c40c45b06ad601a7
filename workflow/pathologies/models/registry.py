"""Model registry: every classifier the workflow trains or evaluates, built by name.

``build_model(arch, num_classes, ...)`` returns a freshly initialised ``nn.Module`` that maps
normalised float images (B, C, H, W) to logits (B, num_classes). Initial weights draw from torch's
global generator, so seed it (``torch.manual_seed``) before building for reproducible weights.

Architectures (``ARCHITECTURES``):

- ``small_cnn``, ``mlp``: tiny models for the offline default (8x8 digits, small noise images).
- ``resnet20`` (He et al. 2016 CIFAR ResNet with parameter-free option-A shortcuts, as in
  akamaster/pytorch_resnet_cifar10), ``resnet18``, ``vgg16_bn``, ``densenet121`` (CIFAR variants
  as in kuangliu/pytorch-cifar). State-dict keys match those reference implementations, so their
  published checkpoints load. Global average pooling at the end lets them take small images too
  (16x16 benchmarks, 8x8 digits); on 32x32 they compute exactly what the references compute.
- ``tv_*``: torchvision's ImageNet architectures, built without pretrained weights (nothing is
  ever downloaded); pass a local file as ``weights`` to load trained ones (``tv_vit_b_16`` also takes
  pytorch_pretrained_vit's files, e.g. ``B_16_imagenet1k`` at 384 px).
- ``robustness_cifar_resnet50``, ``robustness_tv_resnet50``: the robust models of Madry's ``robustness``
  library with its input normalisation, loaded from its checkpoints
  (:mod:`pathologies.models.foreign_checkpoints`).

With ``input_dropout_keep < 1`` the classifier is wrapped as
``nn.Sequential(input_dropout=PixelDropout(keep), net=classifier)``. Weight files are matched
against the bare classifier, so a checkpoint saved with or without that wrapper (or from
``nn.DataParallel`` / ``torch.compile``) loads either way.
"""

from __future__ import annotations

import math
import numbers
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..errors import UserError
from .foreign_checkpoints import CifarResNet50, RobustnessModel, map_robustness, map_vit
from .weights import check_sha256, fetch_torchvision, normalise, torchvision_weights

# ---------------------------------------------------------------------------------------------
# Input dropout


class PixelDropout(nn.Module):
    """Input dropout over pixels: in training, set each pixel (all channels) to 0 with prob. 1 - keep.

    Expects normalised input (B, C, H, W), where 0 is the dataset mean colour: the same value SIS
    uses to mask pixels, so training with it teaches the model what a masked pixel looks like.
    Unlike ``nn.Dropout`` the kept pixels are NOT rescaled by 1/keep: scaling would shift the
    kept pixels away from their real colours instead of imitating SIS masking. Identity in eval
    mode unless ``at_eval`` (the public code of Carter et al. keeps it active at evaluation); in
    training the mask draws from torch's global generator, at evaluation from a generator of its own
    seeded with 0 when the module is built (or with :meth:`seed_eval`), so an evaluation or SIS job is
    reproducible and leaves the global stream alone.
    """

    def __init__(self, keep: float, at_eval: bool = False):
        super().__init__()
        self.keep = check_keep_probability(keep)
        self.at_eval = bool(at_eval)
        self._eval_seed = 0
        self._eval_generators: dict = {}

    def seed_eval(self, seed: int) -> None:
        """Restart the evaluation masks from ``seed`` (on every device)."""
        self._eval_seed = int(seed)
        self._eval_generators.clear()

    def _eval_generator(self, device: torch.device) -> torch.Generator:
        if str(device) not in self._eval_generators:
            self._eval_generators[str(device)] = torch.Generator(device=device).manual_seed(self._eval_seed)
        return self._eval_generators[str(device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training and not self.at_eval) or self.keep == 1.0:
            return x
        if x.dim() < 3:
            raise ValueError(f"PixelDropout expects (B, C, ...) input, got shape {tuple(x.shape)}")
        pixel_shape = (x.shape[0], 1, *x.shape[2:])
        generator = None if self.training else self._eval_generator(x.device)
        dropped = torch.rand(pixel_shape, device=x.device, generator=generator) >= self.keep
        return x.masked_fill(dropped, 0.0)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, at_eval={self.at_eval}"


def seed_eval_dropout(model: nn.Module, *key: int | str) -> None:
    """Seed the evaluation masks of every :class:`PixelDropout` in ``model`` from ``key`` alone (ints and
    strings, e.g. run seed, epoch, split), independent of what was drawn before."""
    words = [zlib.crc32(part.encode()) if isinstance(part, str) else int(part) for part in key]
    seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])
    for module in model.modules():
        if isinstance(module, PixelDropout):
            module.seed_eval(seed)


def check_keep_probability(keep: float) -> float:
    """Return ``keep`` as a float, or raise UserError unless it is a number in (0, 1]."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or not 0.0 < keep <= 1.0:
        raise UserError(
            f"input_dropout_keep={keep!r} is not a keep probability; use a number in (0, 1] "
            "(1 turns input dropout off)"
        )
    return float(keep)


# ---------------------------------------------------------------------------------------------
# Small models for the offline default


class SmallCNN(nn.Module):
    """Three 3x3 conv layers (16, 32, 32 channels) with BN, one 2x2 max-pool, global average pool."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16),
            *_conv_bn_relu(16, 32),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn_relu(32, 32),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: int = 128) -> nn.Sequential:
    """Flatten -> Linear(C*H*W, hidden) -> ReLU -> Linear(hidden, num_classes)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet-20 (He et al. 2016, section 4.2), option-A shortcuts


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class CifarBasicBlock(nn.Module):
    """Basic residual block: two 3x3 convs; option-A shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ZeroPadShortcut(planes - in_planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): 16-32-64 filters, n basic blocks per stage (n=3: ResNet-20)."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes = 16
        stages = []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(CifarBasicBlock(planes, width, stride if index == 0 else 1))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():  # the reference implementation's initialisation
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet-18 (kuangliu/pytorch-cifar): 3x3 stem, stride 1, no max-pool


class BasicBlock(nn.Module):
    """Basic residual block with a 1x1-conv + BN projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: 64-128-256-512 filters, two basic blocks per stage."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes = 64
        stages = []
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ---------------------------------------------------------------------------------------------
# CIFAR VGG-16 with batch norm (kuangliu/pytorch-cifar)

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG for small images: 3x3 conv + BN + ReLU stacks, 2x2 max-pools, one linear layer.

    Max-pools round up (``ceil_mode``), which changes nothing for 32x32 inputs but lets smaller
    inputs (8x8, 16x16) pass all five pools (a 1x1 map stays 1x1).
    """

    def __init__(self, layers: tuple, num_classes: int, in_channels: int = 3):
        super().__init__()
        modules: list[nn.Module] = []
        channels = in_channels
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                modules += [nn.Conv2d(channels, layer, 3, padding=1), nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
                channels = layer
        modules.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------
# CIFAR DenseNet-121 (kuangliu/pytorch-cifar): growth 32, compression 0.5, 3x3 stem


class DenseBottleneck(nn.Module):
    """BN-ReLU-1x1 conv (4*growth) -> BN-ReLU-3x3 conv (growth); output = [new, input]."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class DenseTransition(nn.Module):
    """BN-ReLU-1x1 conv, then 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC for small images: four dense blocks joined by halving transitions."""

    def __init__(self, blocks: tuple[int, ...], growth_rate: int, num_classes: int, in_channels: int = 3,
                 reduction: float = 0.5):
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for index, num_layers in enumerate(blocks, start=1):
            layers = [DenseBottleneck(planes + i * growth_rate, growth_rate) for i in range(num_layers)]
            self.add_module(f"dense{index}", nn.Sequential(*layers))
            planes += num_layers * growth_rate
            if index < len(blocks):
                out_planes = int(math.floor(planes * reduction))
                self.add_module(f"trans{index}", DenseTransition(planes, out_planes))
                planes = out_planes
        self.num_blocks = len(blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for index in range(1, self.num_blocks + 1):
            out = getattr(self, f"dense{index}")(out)
            if index < self.num_blocks:
                out = getattr(self, f"trans{index}")(out)
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(torch.flatten(out, 1))


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Architecture:
    """A registry entry: ``entry(num_classes, in_channels, image_size)`` builds the network.

    ``min_image_size`` is the smallest square input the network can process; ``rgb_only``
    marks torchvision ImageNet models, whose stems are fixed to 3 input channels. Weight-file keys
    under ``unused_weight_prefixes`` belong to parts the network is built without (Inception's
    auxiliary classifier) and are dropped when loading.
    """

    build: Callable[[int, int, int], nn.Module]
    min_image_size: int
    rgb_only: bool = False
    patch_size: int = 1  # the image size must be a multiple of this (ViT patches)
    unused_weight_prefixes: tuple[str, ...] = ()
    # (state, path, network) -> the network's state dict, for weight files in another library's layout
    map_weights: Callable[[dict, Path, nn.Module], dict] | None = None

    def __call__(self, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return self.build(num_classes, in_channels, image_size)


def _torchvision(constructor: Callable[..., nn.Module], min_image_size: int, patch_size: int = 1,
                 unused_weight_prefixes: tuple[str, ...] = (), map_weights=None, **options) -> Architecture:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        kwargs = dict(options)
        if patch_size > 1:
            kwargs["image_size"] = image_size
        return constructor(weights=None, num_classes=num_classes, **kwargs)

    return Architecture(build, min_image_size=min_image_size, rgb_only=True, patch_size=patch_size,
                        unused_weight_prefixes=unused_weight_prefixes, map_weights=map_weights)


def _resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18 with a 3x3, stride-1, padding-1 first convolution and the max-pool kept: the
    CIFAR-100 network of Meding et al. (their ``ResNet18CIFAR``: torchvision's net, ``conv1`` replaced)."""
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    return net


def _densenet121_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision DenseNet-121 with a 3x3, stride-1, padding-1 ``features.conv0`` (pool0 kept) and a new
    linear classifier (default init, as the authors' ``DenseNet121CIFAR`` replaces it after construction)."""
    net = torchvision.models.densenet121(weights=None)
    net.features.conv0 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.classifier = nn.Linear(net.classifier.in_features, num_classes)
    return net


def _resnext101_32x16d(weights=None, num_classes: int = 1000, **options) -> nn.Module:
    """ResNeXt-101 32x16d (the SWSL model of Yalniz et al. 2019; torchvision has no weights of it)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=16, num_classes=num_classes, **options)


ARCHITECTURES: dict[str, Architecture] = {
    # Minimum image sizes are the smallest inputs each network accepts (checked in the tests).
    "small_cnn": Architecture(lambda n, c, s: SmallCNN(n, c), min_image_size=1),
    "mlp": Architecture(lambda n, c, s: mlp(n, c, s), min_image_size=1),
    "resnet20": Architecture(lambda n, c, s: CifarResNet(3, n, c), min_image_size=1),
    "resnet18": Architecture(lambda n, c, s: ResNet18(n, c), min_image_size=1),
    "vgg16_bn": Architecture(lambda n, c, s: VGG(VGG16_LAYERS, n, c), min_image_size=1),
    # three un-padded 2x2 average pools need 8x8
    "densenet121": Architecture(lambda n, c, s: DenseNet((6, 12, 24, 16), 32, n, c), min_image_size=8),
    "tv_resnet18": _torchvision(torchvision.models.resnet18, min_image_size=1),
    "tv_resnet50": _torchvision(torchvision.models.resnet50, min_image_size=1),
    "tv_densenet121": _torchvision(torchvision.models.densenet121, min_image_size=29),
    # transform_input: torchvision's pretrained Inception expects it (ImageNet-normalised input
    # rescaled to [-1, 1]), as torchvision sets it when loading those weights
    "tv_inception_v3": _torchvision(torchvision.models.inception_v3, min_image_size=75,
                                    unused_weight_prefixes=("AuxLogits.",), aux_logits=False,
                                    init_weights=False, transform_input=True),
    "tv_vgg11": _torchvision(torchvision.models.vgg11, min_image_size=32),
    "tv_alexnet": _torchvision(torchvision.models.alexnet, min_image_size=63),
    # weights: torchvision's, or pytorch_pretrained_vit's (B_16_imagenet1k at image_size 384, Carter et al. S6.4)
    "tv_vit_b_16": _torchvision(torchvision.models.vit_b_16, min_image_size=16, patch_size=16, map_weights=map_vit),
    # adversarially robust models of Madry's `robustness` library, loaded from its checkpoints
    # (pathologies.models.foreign_checkpoints): its CIFAR ResNet-50, and its ImageNet (torchvision) ResNet-50
    "robustness_cifar_resnet50": Architecture(lambda n, c, s: RobustnessModel(CifarResNet50(n, c), c),
                                              min_image_size=1, map_weights=map_robustness),
    "robustness_tv_resnet50": Architecture(
        lambda n, c, s: RobustnessModel(torchvision.models.resnet50(weights=None, num_classes=n)),
        min_image_size=1, rgb_only=True, map_weights=map_robustness),
    "tv_resnet152": _torchvision(torchvision.models.resnet152, min_image_size=1),
    "tv_squeezenet1_1": _torchvision(torchvision.models.squeezenet1_1, min_image_size=17),
    "tv_resnext101_32x16d": _torchvision(_resnext101_32x16d, min_image_size=1),
    # Meding et al.'s CIFAR-100 networks: torchvision's, with a CIFAR stem (rgb_only: the stem takes 3 channels)
    "tv_resnet18_cifar": Architecture(_resnet18_cifar, min_image_size=1, rgb_only=True),
    "tv_densenet121_cifar": Architecture(_densenet121_cifar, min_image_size=15, rgb_only=True),
}

# Registry architectures built exactly as a torchvision model, so that torchvision's own weights of that
# model load into them (``weights: {torchvision: <name>}``, :mod:`pathologies.models.weights`).
TORCHVISION_WEIGHTS = {arch: arch[3:] for arch in ARCHITECTURES
                       if arch.startswith("tv_") and arch[3:] in torchvision.models.list_models()}


def build_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                input_dropout_keep: float = 1.0, weights: str | Path | None = None,
                dropout_at_eval: bool = False) -> nn.Module:
    """Build a classifier by registry name for square ``image_size`` inputs with ``in_channels``.

    ``weights``: optional local file with a state dict (raw, or under key 'state_dict'/'model'), or a
    weights declaration of :mod:`pathologies.models.weights` (``{file, sha256}``: the digest is checked first;
    ``{torchvision: name}``: torchvision's weights of a ``tv_*`` architecture). ``input_dropout_keep < 1``
    puts a :class:`PixelDropout` in front (``model.input_dropout``; the classifier is then ``model.net``),
    active at evaluation too with ``dropout_at_eval``. Raises UserError for an unknown ``arch``, impossible
    sizes, a bad keep probability or unusable weights.
    """
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown model architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    _check_int_at_least("num_classes", num_classes, minimum=2)
    _check_int_at_least("in_channels", in_channels, minimum=1)
    _check_int_at_least("image_size", image_size, minimum=1)
    keep = check_keep_probability(input_dropout_keep)
    if spec.rgb_only and in_channels != 3:
        raise UserError(
            f"architecture {arch!r} takes 3-channel (RGB) images, not in_channels={in_channels}; "
            "pick a CIFAR-style architecture (e.g. resnet18) for other channel counts"
        )
    if image_size < spec.min_image_size or image_size % spec.patch_size:
        multiple = f" and a multiple of {spec.patch_size}" if spec.patch_size > 1 else ""
        raise UserError(
            f"architecture {arch!r} needs images of at least {spec.min_image_size}x{spec.min_image_size}"
            f"{multiple}, got image_size={image_size}; resize the dataset or pick another architecture"
        )
    net = spec(num_classes, in_channels, image_size)
    source = normalise(weights, "weights")
    if source is not None and "torchvision" in source:
        member = torchvision_weights(arch, TORCHVISION_WEIGHTS.get(arch), source["torchvision"])
        load_state(net, fetch_torchvision(member, arch), f"torchvision weights {member}", arch)
    elif source is not None:
        check_sha256(source["file"], source["sha256"])
        load_weights(net, source["file"], arch=arch)
    if keep < 1.0:
        return nn.Sequential(OrderedDict(input_dropout=PixelDropout(keep, at_eval=dropout_at_eval), net=net))
    return net


def _check_int_at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{name}={value!r} is invalid; use an integer >= {minimum}")


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Weights

# Key prefixes that wrappers add around a classifier: our input-dropout wrapper,
# nn.DataParallel / DistributedDataParallel, and torch.compile.
WRAPPER_PREFIXES = ("net.", "module.", "_orig_mod.")


def load_weights(net: nn.Module, path: str | Path, arch: str = "model") -> None:
    """Load a state dict from the local file ``path`` into ``net`` (strictly: every key, every shape).

    The file may hold the state dict itself or a dict with it under 'state_dict' or 'model';
    wrapper prefixes (``WRAPPER_PREFIXES``) are removed. If ``net`` is an input-dropout wrapper
    the weights go into ``net.net``. Raises UserError naming the file for anything unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; train the model first or fix the path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, runtime) for bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"weights file {path} is not a readable PyTorch state dict ({reason}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    load_state(net, _extract_state_dict(checkpoint, f"weights file {path}"), f"weights file {path}", arch)


def load_state(net: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str = "model") -> None:
    """Load ``state`` (wrapper prefixes removed) into ``net`` strictly; UserError naming ``source`` (e.g.
    ``weights file <path>``) if it does not fit."""
    state = _extract_state_dict(state, source)
    if arch in ARCHITECTURES:
        unused = ARCHITECTURES[arch].unused_weight_prefixes
        state = {key: value for key, value in state.items() if not key.startswith(unused)}
    target = net.net if isinstance(getattr(net, "input_dropout", None), PixelDropout) else net
    if arch in ARCHITECTURES and ARCHITECTURES[arch].map_weights is not None:
        state = ARCHITECTURES[arch].map_weights(state, str(source).removeprefix("weights file "), target)
    _check_fits(target, state, source, arch)
    check_finite_weights(state, str(source))
    target.load_state_dict(state)


def check_finite_weights(state: Mapping[str, torch.Tensor], what: str) -> None:
    """UserError naming ``what`` when a floating-point tensor of ``state`` holds inf or nan."""
    bad = [key for key, value in state.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise UserError(f"{what} holds non-finite values (inf or nan) in {len(bad)} tensor(s) (e.g. "
                        f"{', '.join(bad[:3])}): the model it comes from diverged; retrain it (e.g. with a lower "
                        "`lr`) or use other weights")


def _extract_state_dict(checkpoint: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in checkpoint.items()
    ):
        raise UserError(
            f"{source} holds no state dict (expected a dict of tensors, or one under "
            "'state_dict' or 'model'); save it with torch.save(model.state_dict(), path)"
        )
    state = dict(checkpoint)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                stripped = True
    return state


def _check_fits(net: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches (file vs model)", wrong_shape)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
    if problems:
        raise UserError(
            f"{source} does not fit architecture {arch!r}: {'; '.join(problems)}; "
            "check arch, num_classes, in_channels and image_size against the training config"
        )
