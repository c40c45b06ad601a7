"""The "(+)" augmentation of Carter et al.'s code: each train image cropped and flipped once, before masking.

The authors' ``BackselectSubsetsCIFARDataset`` / ``RandomSubsetsCIFARDataset`` read every train image once,
through the train transform (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``), and store it masked
with the mask of the *un-augmented* image (BS) or a random mask; every epoch sees that one stored image, and
test subsets are never augmented. Here the crops and flips are drawn from a seeded stream (the authors' are
not seeded: ``train.py --seed`` defaults to None) and applied to uint8 images as torchvision applies them to
the PIL image: black (0) padding, then a crop at a uniform offset in [0, 2 * padding] per axis, then a flip
with probability 1/2 (``retrain.augment_mode: reference``; :mod:`pathologies.overinterp.subsets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .subset_masks import random_stream


@dataclass(frozen=True)
class OnceAugmentation:
    """One crop and flip per image: ``offsets`` (n, 2) top and left of the crop in the padded image,
    ``flips`` (n,) bool, ``padding`` pixels of black on each side."""

    offsets: np.ndarray
    flips: np.ndarray
    padding: int

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (n, H, W, C) cropped from the black-padded image, then flipped where ``flips``."""
        n, height, width, _ = images.shape
        if len(self.offsets) != n:
            raise ValueError(f"{len(self.offsets)} augmentation draws for {n} images")
        pad = self.padding
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = self.offsets[:, 0, None] + np.arange(height)
        cols = self.offsets[:, 1, None] + np.arange(width)
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        out[self.flips] = out[self.flips][:, :, ::-1]
        return out


def draw_once_augmentation(n: int, padding: int, hflip: bool, seed: int, draw: int,
                           stream: str) -> OnceAugmentation:
    """The crops and flips of ``n`` images from the stream (``seed``, ``draw``, ``augment/<stream>``): top
    offsets, then left offsets, each uniform in [0, 2 * padding], then n uniforms (flip where < 1/2, and
    ``hflip``)."""
    if padding < 0:
        raise ValueError(f"crop padding {padding} is negative")
    rng = random_stream(seed, draw, f"augment/{stream}")
    top = rng.integers(0, 2 * padding + 1, size=n)
    left = rng.integers(0, 2 * padding + 1, size=n)
    flips = (rng.random(n) < 0.5) & bool(hflip)
    return OnceAugmentation(np.stack([top, left], axis=1).astype(np.int64), flips, int(padding))
