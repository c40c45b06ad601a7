"""Input statistics and device-side random resized crops of a training recipe (array-storage datasets).

Recipe keys (config/README.md): ``normalization`` (``dataset``: the train split's per-channel mean/std,
``imagenet``: torchvision's ImageNet mean/std, ``none``: pixels / 255 as torchvision's ``ToTensor`` gives
them), ``random_resized_crop`` with ``crop_size`` (RandomResizedCrop(crop_size) of every training batch;
Meding et al.'s Gaussian recipe) and ``eval_random_resized_crop`` (the same at evaluation, as their Gaussian
test loader does; the crops of a dump draw from (seed, epoch, split) alone, so a resumed run dumps the same).
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_stats(info, recipe: dict):
    """``info`` (a DatasetInfo) with the mean/std the recipe normalises with; one channel count as the data."""
    mode = recipe.get("normalization", "dataset")
    channels = len(info.mean)
    if mode == "dataset":
        return info
    if mode == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif mode == "none":
        mean, std = (0.0,) * 3, (1.0,) * 3
    else:
        raise ValueError(f"normalization must be dataset, imagenet or none, got {mode!r}")
    if channels != 3:
        mean, std = mean[:1] * channels, std[:1] * channels
    return dataclasses.replace(info, mean=tuple(mean), std=tuple(std))


def crop_boxes(height: int, width: int, count: int, generator: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``count`` boxes (top, left, h, w) drawn by torchvision's RandomResizedCrop.get_params (scale 0.08-1,
    aspect 3/4-4/3) from a stream seeded by ``generator`` (torch's global stream is left as it was)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    image = torch.empty(1, height, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [tuple(RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))) for _ in range(count)]


def random_resized_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(size) of every image of ``x`` (B, C, H, W): a box per image, resized bilinearly
    (antialiased) to ``size`` x ``size`` as torchvision does on tensors."""
    boxes = crop_boxes(x.shape[2], x.shape[3], len(x), generator)
    return torch.stack([TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
                        for image, (top, left, h, w) in zip(x, boxes, strict=True)])


def eval_generator(seed: int, epoch: int, split: str) -> torch.Generator:
    """The generator of the evaluation crops of one dump: from (seed, epoch, split) alone."""
    words = [int(seed), int(epoch), zlib.crc32(split.encode())]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1))
