"""MNIST and Fashion-MNIST from their four IDX files (dataset kinds ``mnist``, ``fashion_mnist``).

Sources, first complete one wins (a raw folder is complete when it has all four files, each either plain
``<name>`` or gzipped ``<name>.gz``):

1. torchvision's raw layout under ``resources/<kind>/``: ``resources/mnist/MNIST/raw/`` and
   ``resources/fashion_mnist/FashionMNIST/raw/`` (``root/<Class>/raw`` of ``torchvision.datasets.MNIST``
   and ``FashionMNIST``; ``download: true`` lets torchvision fetch the files there);
2. torchvision's legacy processed layout beside it, ``<Class>/processed/{training,test}.pt`` (tuples of an
   image and a label tensor), read with ``torch.load(weights_only=True)``, which executes no code;
3. Fashion-MNIST only: the Debian package ``dataset-fashion-mnist`` (:data:`DEBIAN_FASHION_MNIST`).

The files are parsed here, not by torchvision, so that a truncated or foreign file is a one-line
:class:`UserError` naming it. Images are uint8 (N, 28, 28, 1); ids are the index in the IDX file.
``train_sample`` / ``test_sample`` keep a seeded random subset of a split (ids ascending).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .layout import Split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned byte data, 3 or 1 dimensions


def _source_class(kind: str) -> type:
    from torchvision.datasets import MNIST, FashionMNIST

    return {"mnist": MNIST, "fashion_mnist": FashionMNIST}[kind]


def raw_folder(kind: str, resources: Path) -> Path:
    """torchvision's raw folder of ``kind`` under ``resources``: ``resources/<kind>/<Class>/raw``."""
    return Path(resources) / kind / _source_class(kind).__name__ / "raw"


def processed_folder(kind: str, resources: Path) -> Path:
    """torchvision's legacy processed folder of ``kind``: ``resources/<kind>/<Class>/processed``."""
    return raw_folder(kind, resources).parent / "processed"


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _how(kind: str, resources: Path) -> str:
    names = ", ".join(f"{name}[.gz]" for pair in FILES.values() for name in pair)
    how = f"place {names} under {raw_folder(kind, resources)}/ (or set download: true)"
    if kind == "fashion_mnist":
        how += f", or install the Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}/)"
    return how


def find_files(kind: str, resources: Path) -> dict[str, Path]:
    """The four IDX files of ``kind`` (keys: file names without .gz) from the first complete source."""
    folders = [raw_folder(kind, resources)]
    if kind == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    names = [name for pair in FILES.values() for name in pair]
    for folder in folders:
        found = {name: _find(folder, name) for name in names}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if any(found.values()):  # a half-placed folder is a mistake worth naming
            missing = [name for name, path in found.items() if path is None]
            raise UserError(f"{folder}/ lacks {', '.join(missing)} (plain or .gz): {_how(kind, resources)}")
    raise UserError(f"no {kind} files found: {_how(kind, resources)}")


def _download(kind: str, resources: Path) -> None:
    source = _source_class(kind)
    root = Path(resources) / kind
    try:
        source(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError
        raise UserError(
            f"could not download {kind} into {raw_folder(kind, resources)}/ ({str(err).splitlines()[0]}); "
            f"{_how(kind, resources).replace(' (or set download: true)', '')}"
        ) from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (plain or gzipped) as a uint8 array of the shape its header gives."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path} cannot be read ({err}): replace it with a fresh copy") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() if len(raw) >= 4 else "a file shorter than 4 bytes"
        raise UserError(f"{path} is not an IDX file of uint8 with {ndim} dimension(s) "
                        f"(magic {magic:08x} expected, found {found}): replace it with a fresh copy")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)  # Python integers: numpy's int64 product wraps around for a garbled header
    if len(raw) != header + size:
        raise UserError(f"{path} holds {len(raw) - header} data bytes but its header announces shape {shape} "
                        f"({size} bytes): the file is truncated or corrupt; replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _sample(name: str, split: str, size: int | None, available: int, rng: np.random.Generator) -> np.ndarray:
    if size is None:
        return np.arange(available, dtype=np.int64)
    if not 1 <= size <= available:
        raise UserError(f"dataset {name!r}: option '{split}_sample' must lie in 1..{available}, got {size}")
    return np.sort(rng.choice(available, size=size, replace=False)).astype(np.int64)


def _read_processed(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a legacy torchvision ``.pt`` file; anything but two tensors is a UserError."""
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path} is not a tensor file torch.load can read safely "
                        f"({str(err).splitlines()[0]}): replace it or place the raw IDX files") from None
    valid = (isinstance(loaded, (tuple, list)) and len(loaded) == 2 and all(isinstance(t, torch.Tensor) for t in loaded)
             and loaded[0].dtype == torch.uint8 and loaded[0].ndim == 3 and loaded[1].ndim == 1)
    if not valid:
        raise UserError(f"{path} must hold (uint8 images (N, H, W), labels (N,)) as torchvision's MNIST wrote them")
    return loaded[0].numpy(), loaded[1].numpy()


def _read_splits(kind: str, resources: Path) -> dict[str, tuple[np.ndarray, np.ndarray, str, str]]:
    """split -> (images, labels, where the images came from, where the labels came from)."""
    processed = processed_folder(kind, resources)
    legacy = {"train": processed / "training.pt", "test": processed / "test.pt"}
    if not _find(raw_folder(kind, resources), FILES["train"][0]) and all(p.is_file() for p in legacy.values()):
        return {split: (*_read_processed(path), str(path), str(path)) for split, path in legacy.items()}
    files = find_files(kind, resources)
    return {split: (read_idx(files[images], IMAGES_MAGIC), read_idx(files[labels], LABELS_MAGIC),
                    str(files[images]), str(files[labels])) for split, (images, labels) in FILES.items()}


def load_mnist(name: str, spec: Mapping[str, Any], resources: Path) -> tuple[dict[str, Split], list[str]]:
    """The ``train`` and ``test`` splits of an ``mnist`` / ``fashion_mnist`` spec, and the class names."""
    kind, resources = spec["kind"], Path(resources)
    if spec["download"]:
        _download(kind, resources)
    # One stream per split: the test sample does not change when train_sample does.
    streams = np.random.SeedSequence(spec["seed"]).spawn(len(FILES))
    rngs = dict(zip(FILES, (np.random.default_rng(s) for s in streams), strict=True))
    splits, shapes = {}, set()
    for split, (images, labels, images_from, labels_from) in _read_splits(kind, resources).items():
        if len(images) != len(labels):
            raise UserError(f"{images_from} holds {len(images)} images but {labels_from} "
                            f"holds {len(labels)} labels: the two do not belong together")
        if len(labels) == 0:
            raise UserError(f"{images_from} holds no images: replace it with a fresh copy")
        if labels.min() < 0 or labels.max() > 9:
            raise UserError(f"{labels_from} holds label {labels.max() if labels.max() > 9 else labels.min()}; "
                            f"{kind} labels lie in 0..9")
        shapes.add(images.shape[1:])
        ids = _sample(name, split, spec[f"{split}_sample"], len(labels), rngs[split])
        splits[split] = Split(images=images[ids][..., np.newaxis], labels=labels[ids].astype(np.int64), ids=ids)
    if len(shapes) != 1:
        raise UserError(f"{kind} train and test images differ in size ({sorted(shapes)}) in "
                        f"{Path(images_from).parent}/: the files do not belong together")
    return splits, list(_source_class(kind).classes)
