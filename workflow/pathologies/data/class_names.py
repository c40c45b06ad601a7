"""Readable class names: ImageNet's WordNet ids become torchvision's category names."""

from __future__ import annotations

import re

from .layout import dataset_info

WNID = re.compile(r"n\d{8}")


def readable_names(class_names) -> list[str]:
    """Readable class names: the 1,000 ImageNet WordNet ids (sorted, the class order of every ImageNet
    classifier) become torchvision's category names; other names stay as they are."""
    names = [str(name) for name in class_names]
    if len(names) == 1000 and names == sorted(names) and all(WNID.fullmatch(name) for name in names):
        from torchvision.models import ResNet18_Weights

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return names


def class_labels(dataset_path) -> list[str]:
    """Readable name of each class (by class index) of a prepared dataset: torchvision's category names for the
    1,000 ImageNet classes, the dataset's class names otherwise."""
    return readable_names(dataset_info(dataset_path).class_names)


def label_or_number(name, cls) -> str:
    """``name`` as the label of class index ``cls``, or ``class <cls>`` where the name is missing, empty or only
    the number (digits' "3")."""
    cls = int(cls)
    return name if isinstance(name, str) and name and name != str(cls) else f"class {cls}"


def class_label(labels, cls) -> str:
    """The label of class index ``cls`` in a figure: its name in ``labels``, or ``class <cls>`` where the name is
    only the number or the index is outside ``labels`` (a model with more outputs than the dataset has classes)."""
    cls = int(cls)
    return label_or_number(str(labels[cls]) if 0 <= cls < len(labels) else None, cls)
