"""Small SIS files and models for the overinterpretation tests, in the layout of pathologies.sis.extract."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from pathologies.data.layout import dataset_info, load_split, to_model_input
from pathologies.io import create_dataset, h5py, write_attrs
from pathologies.models.checkpoint import save_model
from pathologies.models.registry import build_model
from pathologies.sis.engine import Masking, Scorer, backward_selection, find_sis


def save_untrained_model(path: Path, dataset: Path, arch: str = "small_cnn", seed: int = 0) -> Path:
    """A freshly initialised model checkpoint that fits ``dataset`` (weights from ``seed``)."""
    info = dataset_info(dataset)
    height, _, channels = info.image_shape
    torch.manual_seed(seed)
    model = build_model(arch, info.num_classes, in_channels=channels, image_size=height)
    save_model(path, model, arch=arch, num_classes=info.num_classes, in_channels=channels, image_size=height,
               mean=info.mean, std=info.std, run={"model": path.stem, "seed": seed})
    return path


def write_sis_file(path: Path, dataset: Path, split: str, rows: np.ndarray, order: np.ndarray, *,
                   curve: np.ndarray | None = None, classes: np.ndarray | None = None,
                   f_full: np.ndarray | None = None, thresholds=(0.9,), sizes: dict | None = None,
                   patch: int = 1) -> Path:
    """An SIS file whose orders (n, p) are given; SIS masks are the suffixes of ``sizes[tau]`` features."""
    info = dataset_info(dataset)
    with h5py.File(dataset, "r") as handle:  # labels and ids: of an array dataset and of an ImageNet index alike
        data = SimpleNamespace(labels=handle[f"{split}/labels"][()], ids=handle[f"{split}/ids"][()])
    height, width, _ = info.image_shape
    n, p = order.shape
    curve = np.zeros((n, p)) if curve is None else curve
    classes = data.labels[rows] if classes is None else classes
    f_full = np.ones(n) if f_full is None else f_full
    masking = Masking(patch=patch)
    with h5py.File(path, "w") as handle:
        write_attrs(handle, {"method": "exact", "thresholds": np.asarray(thresholds, dtype=np.float64), "block": 1,
                             "patch": patch, "tie_break": "index", "masked_value": 0.0, "model": "m.pt",
                             "model_run": "[{}]", "dataset": str(dataset), "split": split, "shard": 0,
                             "num_shards": 1, "image_shape": list(info.image_shape), "code_version": "test"})
        create_dataset(handle, "index", np.asarray(rows, dtype=np.int64))
        create_dataset(handle, "ids", data.ids[rows])
        create_dataset(handle, "label", data.labels[rows])
        create_dataset(handle, "class", np.asarray(classes, dtype=np.int64))
        create_dataset(handle, "f_full", np.asarray(f_full, dtype=np.float64))
        create_dataset(handle, "order", order.astype(np.int32))
        create_dataset(handle, "curve", curve.astype(np.float64))
        for tau in thresholds:
            size = (sizes or {}).get(tau, np.full(n, 3))
            masks = np.stack([masking.pixel_mask(order[i, p - size[i]:], height, width) for i in range(n)])
            group = handle.create_group(f"sis/{float(tau)!r}")
            create_dataset(group, "mask", masks)
            create_dataset(group, "size", masks.sum(axis=(1, 2)).astype(np.int32))
            create_dataset(group, "none", np.asarray(f_full) < tau)
    return path


def write_real_sis_file(path: Path, model_path: Path, dataset: Path, split: str, rows: np.ndarray,
                        threshold: float = 0.5) -> Path:
    """An SIS file from a real backward selection of ``model_path`` on ``rows`` of a split."""
    from pathologies.models.checkpoint import load_model

    model, meta = load_model(model_path)
    images = to_model_input(load_split(dataset, split).images[rows], meta["mean"], meta["std"])
    selections = backward_selection(Scorer(model), images, batch_size=512)
    order = np.stack([s.order for s in selections])
    sizes = np.array([len(find_sis(s, threshold)) if find_sis(s, threshold) is not None else 0 for s in selections])
    return write_sis_file(path, dataset, split, rows, order, curve=np.stack([s.values for s in selections]),
                          classes=np.array([s.class_index for s in selections]),
                          f_full=np.array([s.f_start for s in selections]), thresholds=(threshold,),
                          sizes={threshold: sizes})
