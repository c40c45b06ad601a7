"""The /order dataset of SIS files in its two layouts, read whole or in chunks of rows.

The root attribute ``order_format`` names the layout (files without it are "full"):

- ``full`` (exact SIS, and every file written before the attribute existed): int32 (n, p).
- ``block`` (Batched Gradient SIS): the same feature ids in removal order, stored in the narrowest
  unsigned type that holds p - 1 (uint8 for p <= 256, uint16 for p <= 65536, else int32). Step j
  is entries ``[j k, (j + 1) k)`` (k = the ``block`` attribute); ``/steps`` and ``/curve`` are
  already one value per step.

Why not fewer entries per image: Batched Gradient picks each block per image, and readers cut
inside a block (a k% BS subset keeps the lowest-gradient part of its boundary block; the mean
removal rank uses every position), so the file must hold a full permutation of the p features.
That costs at least log2(p!) bits per image (about 1.77 bytes per feature at p = 50176), so no
exact layout is k times smaller; the fixed width ceil(log2 p) bits is the smallest one that
keeps rows directly sliceable.

Readers call :func:`read_orders` (int64, either layout) and :func:`row_chunks` to stream rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import h5py

FORMATS = ("full", "block")
# rows per read when a reader streams a file (tests lower it to check chunked = whole)
CHUNK = 1024


def order_dtype(features: int) -> np.dtype:
    """The narrowest type of the ``block`` layout for ``features`` ids (0 .. features - 1)."""
    for dtype in (np.uint8, np.uint16):
        if features <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def encode(order: np.ndarray, order_format: str) -> np.ndarray:
    """``order`` (n, p) as stored in ``order_format``."""
    if order_format not in FORMATS:
        raise ValueError(f"order_format {order_format!r} is not one of {FORMATS}")
    order = np.asarray(order)
    return order.astype(np.int32 if order_format == "full" else order_dtype(order.shape[1]))


def order_format(handle: h5py.File, path: str | Path = "") -> str:
    """The layout of the file's /order; UserError for one this code does not know."""
    value = handle.attrs.get("order_format", "full")
    value = value.decode() if isinstance(value, bytes) else str(value)
    if value not in FORMATS:
        raise UserError(f"SIS file {path or handle.filename} has order_format {value!r}, not one of "
                        f"{', '.join(FORMATS)}; it was written by newer code: update this checkout or rebuild it")
    return value


def read_orders(handle: h5py.File, rows: slice = slice(None), path: str | Path = "") -> np.ndarray:
    """Removal orders (int64, (n, p)) of ``rows`` of an SIS file in either layout."""
    order_format(handle, path)
    return handle["order"][rows].astype(np.int64)


def row_chunks(count: int, size: int | None = None) -> Iterator[slice]:
    """Slices of at most ``size`` (default :data:`CHUNK`) rows covering ``range(count)``."""
    size = CHUNK if size is None else size
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
