"""File helpers shared by every stage: atomic outputs, HDF5 conventions, provenance."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__

# Cluster file systems (NFS, Lustre) often do not support HDF5's file locking; every file
# here has exactly one writer (the Snakemake job that owns it), so locking buys nothing.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402  (must come after the environment variable above)

COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    An interrupted or failing writer therefore never leaves a file that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def code_version() -> str:
    """The package version plus the git commit of the checkout when there is one."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def provenance(**extra: Any) -> dict[str, str]:
    """HDF5-attribute-ready provenance: code version plus JSON-encoded extra items."""
    attrs = {"code_version": code_version()}
    for key, value in extra.items():
        attrs[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return attrs


def write_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    """Write attributes, JSON-encoding anything HDF5 cannot store natively."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) and not _is_numeric_sequence(value):
            value = json.dumps(value, sort_keys=True)
        obj.attrs[key] = value


def _is_numeric_sequence(value: Any) -> bool:
    if isinstance(value, dict):
        return False
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (ValueError, TypeError):
        return False


def create_dataset(group: h5py.Group, name: str, data: np.ndarray, **kwargs) -> h5py.Dataset:
    """Create a chunked, compressed dataset (compression skipped for empty or scalar data)."""
    data = np.asarray(data)
    opts = dict(COMPRESSION) if data.size and data.ndim else {}
    opts.update(kwargs)
    return group.create_dataset(name, data=data, **opts)


def read_json_attr(obj: h5py.HLObject, key: str) -> Any:
    """Read an attribute written by :func:`write_attrs`/:func:`provenance` as a Python value."""
    value = obj.attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
