"""Readable class names: ImageNet's WordNet ids become torchvision's category names."""

from __future__ import annotations

import re

WNID = re.compile(r"n\d{8}")


def readable_names(class_names) -> list[str]:
    """Readable class names: the 1,000 ImageNet WordNet ids (sorted, the class order of every ImageNet
    classifier) become torchvision's category names; other names stay as they are."""
    names = [str(name) for name in class_names]
    if len(names) == 1000 and names == sorted(names) and all(WNID.fullmatch(name) for name in names):
        from torchvision.models import ResNet18_Weights

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return names
