"""Prepared-dataset files: the one HDF5 layout every stage reads.

Layout of ``results/data/<dataset>.h5`` (written once by the ``prepare_dataset`` rule)::

    /                 attrs: name, kind, num_classes, image_shape [H, W, C],
                             class_names (JSON list), mean [C], std [C] (per channel, on the
                             0-1 scale, computed on the ``train`` split), storage
                             ("array" or "index"), code_version, spec (JSON)
    /<split>/images   uint8 (N, H, W, C), chunked + gzip     (storage == "array")
    /<split>/paths    str (N,) image file paths              (storage == "index", ImageNet)
    /<split>/labels   int64 (N,)
    /<split>/ids      int64 (N,) index of the image in its original source

Split names are ``train`` and ``test`` and, for shifted test sets, e.g. ``fog_s3``
(CIFAR-10-C corruption ``fog`` at severity 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_output, create_dataset, h5py, provenance, read_h5, read_json_attr, write_attrs, write_h5


@dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 images (N, H, W, C), int64 labels and source ids."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    storage: str
    splits: tuple[str, ...]


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, H, W, C) on the 0-1 scale, in float64."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
    return block_channel_stats(images[start : start + chunk] for start in range(0, len(images), chunk))


def block_channel_stats(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`channel_stats` over uint8 blocks (n, H, W, C) that arrive one at a time (bounded memory)."""
    total = total_sq = None
    count = 0
    for block in blocks:
        pixels = block.reshape(-1, block.shape[-1]).astype(np.float64) / 255.0
        total = pixels.sum(axis=0) if total is None else total + pixels.sum(axis=0)
        total_sq = np.square(pixels).sum(axis=0) if total_sq is None else total_sq + np.square(pixels).sum(axis=0)
        count += len(pixels)
    if not count:
        raise ValueError("no pixels to compute channel statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, np.maximum(std, 1e-6)


def write_root_attrs(handle: h5py.File, *, name: str, kind: str, class_names: Sequence[str],
                     image_shape: Sequence[int], mean: Sequence[float], std: Sequence[float], storage: str,
                     spec: Mapping | None = None, **extra) -> None:
    """The root attributes of every prepared dataset (layout above); ``extra`` items (e.g. those of an
    index) go between ``storage`` and the provenance."""
    write_attrs(handle, {
        "name": name,
        "kind": kind,
        "num_classes": len(class_names),
        "image_shape": list(image_shape),
        "class_names": list(class_names),
        "mean": np.asarray(mean, dtype=np.float64),
        "std": np.asarray(std, dtype=np.float64),
        "storage": storage,
        **extra,
        **provenance(spec=dict(spec or {})),
    })


def write_dataset(
    out_path: str | Path,
    *,
    name: str,
    kind: str,
    splits: Mapping[str, Split],
    class_names: Sequence[str],
    spec: Mapping | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> None:
    """Write in-memory splits to the prepared-dataset layout, atomically.

    ``mean``/``std`` default to the statistics of the ``train`` split.
    """
    if "train" not in splits and (mean is None or std is None):
        raise ValueError("a dataset without a 'train' split needs explicit mean and std")
    shapes = {split.images.shape[1:] for split in splits.values()}
    if len(shapes) != 1:
        raise ValueError(f"all splits must share one image shape, got {sorted(shapes)}")
    if mean is None or std is None:
        mean, std = channel_stats(splits["train"].images)
    with atomic_output(out_path) as tmp, write_h5(tmp) as handle:
        write_root_attrs(handle, name=name, kind=kind, class_names=class_names, image_shape=shapes.pop(),
                         mean=mean, std=std, storage="array", spec=spec)
        for split_name, split in splits.items():
            group = handle.create_group(split_name)
            chunk_rows = max(1, min(len(split), 2**20 // max(1, int(np.prod(split.images.shape[1:])))))
            create_dataset(group, "images", np.asarray(split.images, dtype=np.uint8),
                           chunks=(chunk_rows, *split.images.shape[1:]) if len(split) else None)
            create_dataset(group, "labels", split.labels.astype(np.int64))
            create_dataset(group, "ids", split.ids.astype(np.int64))


def _open(path: str | Path):
    return read_h5(path, "prepared dataset")


def dataset_info(path: str | Path) -> DatasetInfo:
    """Read the metadata of a prepared dataset."""
    with _open(path) as handle:
        attrs = handle.attrs
        return DatasetInfo(
            name=str(read_json_attr(handle, "name")),
            kind=str(read_json_attr(handle, "kind")),
            num_classes=int(attrs["num_classes"]),
            image_shape=tuple(int(v) for v in attrs["image_shape"]),
            class_names=list(read_json_attr(handle, "class_names")),
            mean=tuple(float(v) for v in attrs["mean"]),
            std=tuple(float(v) for v in attrs["std"]),
            storage=str(read_json_attr(handle, "storage")),
            splits=tuple(sorted(handle.keys())),
        )


def load_split(path: str | Path, split: str) -> Split:
    """Load one split of an ``array``-storage dataset into memory."""
    with _open(path) as handle:
        if split not in handle:
            raise UserError(f"{path} has no split {split!r}; it has {sorted(handle.keys())}")
        group = handle[split]
        if "images" not in group:
            raise UserError(
                f"{path} split {split!r} stores image paths only (ImageNet index); "
                "use pathologies.data.imagenet to stream it"
            )
        return Split(images=group["images"][()], labels=group["labels"][()], ids=group["ids"][()])


def load_labels(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) int64 of one split of a prepared dataset, in stored order (array or index storage)."""
    with _open(path) as handle:
        if split not in handle:
            raise UserError(f"{path} has no split {split!r}; it has {sorted(handle.keys())}")
        return handle[split]["ids"][()].astype(np.int64), handle[split]["labels"][()].astype(np.int64)


def mask_colour(mean: Sequence[float]) -> np.ndarray:
    """The uint8 colour (C,) nearest to the per-channel ``mean`` (0-1 scale)."""
    return np.clip(np.floor(np.asarray(mean, dtype=np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def to_model_input(images: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, H, W, C) -> normalised float32 (N, C, H, W) on ``device``.

    After this normalisation the value 0 is the dataset's mean colour: the default masked value
    of SIS and of input dropout.
    """
    images = torch.as_tensor(images).to(device)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)
