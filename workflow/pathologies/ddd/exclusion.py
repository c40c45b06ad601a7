"""Images a DDD experiment leaves out, e.g. known label errors (Northcutt et al. 2021; Meding et al. 2022).

The experiment key ``exclude_ids`` names a file of image ids (the ``ids`` of the prepared split, as in the
prediction dumps): a ``.npy`` array of integers (read without pickle) or a ``.csv`` file with a column
``image_id`` (or a single column of integers). Ids that are not in the split are ignored and counted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..training.predictions import Correctness


def read_ids(path: str | Path) -> np.ndarray:
    """The distinct image ids listed in ``path`` (.npy or .csv), sorted int64; one-line errors otherwise."""
    path = Path(path)
    where = f"exclude_ids file {path}"
    if not path.exists():
        raise UserError(f"{where} does not exist; place it there or fix ddd.<experiment>.exclude_ids")
    if path.suffix == ".npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise UserError(f"{where} is not a plain .npy array ({err}); save it with np.save") from None
    elif path.suffix == ".csv":
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{where} is not a readable CSV file ({err})") from None
        if "image_id" not in table.columns and len(table.columns) != 1:
            raise UserError(f"{where} needs a column 'image_id' (has {list(table.columns)})")
        ids = (table["image_id"] if "image_id" in table.columns else table.iloc[:, 0]).to_numpy()
    else:
        raise UserError(f"{where}: give a .npy or .csv file, not {path.suffix or 'a file without suffix'!r}")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise UserError(f"{where} must hold a flat list of integer image ids (found {ids.dtype}, shape {ids.shape})")
    return np.unique(ids.astype(np.int64))


def excluded_ids(spec: dict) -> np.ndarray:
    """The ids an experiment excludes (empty when ``exclude_ids`` is not set)."""
    path = spec.get("exclude_ids")
    return read_ids(path) if path else np.zeros(0, dtype=np.int64)


def split_excluded(data: Correctness, excluded: np.ndarray) -> tuple[Correctness, Correctness]:
    """(kept, excluded) images of ``data``: the columns whose id is not / is in ``excluded``."""
    drop = np.isin(data.ids, excluded)

    def columns(mask: np.ndarray) -> Correctness:
        return replace(data, ids=data.ids[mask], targets=data.targets[mask], correct=data.correct[..., mask],
                       predictions=None if data.predictions is None else data.predictions[..., mask])

    return columns(~drop), columns(drop)
