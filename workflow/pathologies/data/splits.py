"""The splits each dataset kind prepares, and their sizes where the config alone fixes them.

Used to check a config before any job runs (:func:`pathologies.experiments.check_inputs`): an SIS
run on a split the dataset will not have, an SIS sample larger than the split or a training part
(``data_fraction``/``data_part``) without images is then one line naming the key, not a failed job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DIGITS_IMAGES = 1797  # scikit-learn's load_digits
CIFAR_SIZES = {"train": 50_000, "test": 10_000}
CIFAR10C_IMAGES = 10_000  # per corruption and severity
# Hendrycks & Dietterich (2019): the 15 benchmark corruptions, then the 4 extra ones.
CIFAR10C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
CIFAR10C_EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CIFAR10C_SEVERITIES = (1, 2, 3, 4, 5)
MIXED_SPLIT = "mixed"  # CIFAR-10-C's `mixed_sample`: a seeded sample across all corruptions and severities


def expected_splits(spec: Mapping[str, Any]) -> dict[str, int | None] | None:
    """Split name -> number of images (None where only the files tell) of a validated dataset entry;
    None for a kind whose splits only the prepared file tells (e.g. pixel-subset datasets)."""
    kind = spec.get("kind")
    if kind == "digits":
        # scikit-learn's train_test_split: n_test = ceil(test_fraction * n)
        n_test = math.ceil(spec["test_fraction"] * DIGITS_IMAGES)
        return {"train": DIGITS_IMAGES - n_test, "test": n_test}
    if kind == "gaussian":
        return {"train": spec["train_per_class"] * spec["num_classes"],
                "test": spec["test_per_class"] * spec["num_classes"]}
    if kind in ("cifar10", "cifar100"):
        return dict(CIFAR_SIZES)
    if kind == "cifar10c":  # unlisted corruptions and severities: prepare's defaults
        size = spec.get("sample") or CIFAR10C_IMAGES
        corruptions = spec.get("corruptions") or CIFAR10C_CORRUPTIONS
        sizes = {f"{corruption}_s{severity}": size for corruption in corruptions
                 for severity in spec.get("severities") or CIFAR10C_SEVERITIES}
        if spec.get("mixed_sample"):
            sizes[MIXED_SPLIT] = spec["mixed_sample"]
        return sizes
    if kind == "cifar10.1":
        return {"test": None}
    if kind == "imagenet":
        return {"train": None, "test": None}
    return None
