"""File helpers shared by every stage: atomic outputs, HDF5 conventions, provenance."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import DISK_FULL_ERRNOS, UserError, is_disk_full

# Cluster file systems (NFS, Lustre) often do not support HDF5's file locking; every file
# here has exactly one writer (the Snakemake job that owns it), so locking buys nothing.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # after the environment variable above, which HDF5 reads when it loads

COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    An interrupted or failing writer therefore never leaves a file that looks finished. The data
    reach the disk (fsync) before the rename, so a crash cannot leave a renamed but empty file.
    Temporary files of an earlier writer of ``path`` that was killed (``.<name>.tmp<pid>``) are
    removed first: every output has exactly one writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as err:
        if not is_disk_full(err) or err.filename == str(path):
            raise
        # name the output, not its temporary, and drop HDF5's multi-line detail
        code = err.errno if err.errno in DISK_FULL_ERRNOS else errno.ENOSPC
        raise OSError(code, os.strerror(code), str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def write_h5(path: str | os.PathLike, mode: str = "w") -> Iterator[h5py.File]:
    """Open an HDF5 file for writing (the temporary of an :func:`atomic_output`) and close it at the end.

    The file has no chunk cache: HDF5 then writes each chunk inside the call that writes it, so a full
    disk raises an OSError there. With a cache, chunks reach the disk when a dataset object is freed,
    where the error can only be printed, and closing the file afterwards crashes the interpreter.
    A failure while closing (the last metadata) is an OSError naming ``path``.
    """
    handle = h5py.File(path, mode, rdcc_nbytes=0)
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the writer is the one to report
            handle.close()
        raise
    try:
        handle.close()
    except (OSError, RuntimeError) as err:
        code = write_errno(err)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically; a write that fails (a full disk) is an OSError naming
    ``path`` (torch reports it as a RuntimeError such as "unexpected pos 576 vs 534")."""
    import torch

    with atomic_output(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            text = str(err)
            if not any(sign in text for sign in ("unexpected pos", "failed writing", "file write failed")):
                raise
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (torch.save: {text.strip().splitlines()[0]})",
                          str(path)) from None


def write_errno(err: BaseException) -> int | None:
    """The errno of a failed write that ``err`` reports (h5py puts it in the message: ``errno = 28``), when
    it is one of a full disk, quota or file-size limit; else None."""
    code = getattr(err, "errno", None)
    if code not in DISK_FULL_ERRNOS:
        found = re.search(r"errno = (\d+)", str(err))
        code = int(found.group(1)) if found else None
    return code if code in DISK_FULL_ERRNOS else None


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete ``.<name>.tmp<pid>`` files that a killed writer of ``path`` left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        if stale.name != f".{path.name}.tmp{os.getpid()}" and stale.name[len(path.name) + 5:].isdigit():
            stale.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk; a no-op where the platform refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unreadable(path: Path, err: BaseException, kind: str = "HDF5") -> str:
    """The one-line message for an input file that cannot be read: names it, says delete and rebuild."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"{path} is not a readable {kind} file ({detail}): it is damaged or incomplete; "
            f"delete it and rebuild it (snakemake {path})")


@contextlib.contextmanager
def read_h5(path: str | os.PathLike, what: str = "input file") -> Iterator[h5py.File]:
    """Open an HDF5 input for reading; a missing, truncated or corrupt file (also a corrupt chunk
    or missing dataset met while reading inside the ``with`` block) becomes one UserError line
    that names the file and says to delete and rebuild it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist; build it with `snakemake {path}`")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise UserError(unreadable(path, err)) from None
    try:
        with handle:
            yield handle
    except OSError as err:
        if is_disk_full(err):  # an output written inside the block: not this input's fault
            raise
        raise UserError(unreadable(path, err)) from None
    except KeyError as err:
        # h5py reports a missing object as KeyError("Unable to ... open object ..."); other
        # KeyErrors are programming errors and keep their traceback.
        if "object" not in str(err):
            raise
        raise UserError(unreadable(path, err)) from None


def read_csv(path: str | os.PathLike, what: str = "table", columns: tuple[str, ...] = (),
             text_columns: tuple[str, ...] = ()):
    """Read a CSV input with pandas; a missing, empty or garbled file, or one lacking ``columns``,
    is one UserError line naming the file. ``text_columns`` are kept as written (strings: "007"
    stays "007", "NA" stays "NA"), where pandas would otherwise guess numbers or missing values."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist; build it with `snakemake {path}`")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise UserError(unreadable(path, err, "CSV")) from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing} (has {list(table.columns)}): it is damaged or "
                        f"from another version; delete it and rebuild it (snakemake {path})")
    text = [column for column in text_columns if column in table.columns]
    if text:
        table[text] = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False)[text]
    return table


EXPERIMENT_FILE = "experiment.json"  # a stage's expanded experiment: results/<stage>/<experiment>/experiment.json


def check_experiment(experiment: object, source: str, required: tuple[str, ...] = ("name",)) -> dict:
    """``experiment`` if it is a JSON object holding the keys ``required``, else a UserError naming ``source``."""
    if not isinstance(experiment, dict):
        raise UserError(f"{source} is not an experiment description (not a JSON object); rebuild it with snakemake")
    missing = set(required) - set(experiment)
    if missing:
        raise UserError(f"{source} is not an experiment description (lacks {sorted(missing)}); "
                        "rebuild it with snakemake")
    return experiment


def read_experiment(path: str | os.PathLike, required: tuple[str, ...] = ("name",)) -> dict:
    """The expanded experiment in ``path`` (``experiment.json`` of DDD or overinterpretation), with one
    clear error line for a missing, broken or foreign file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"experiment description {path} does not exist; build it with `snakemake {path}`") from None
    try:
        return check_experiment(json.loads(text), str(path), required)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and rebuild it") from None

def h5_fingerprint(path: str | os.PathLike, chunk_bytes: int = 1 << 26) -> str:
    """sha256 of an HDF5 file's content: every dataset's name, dtype, shape and values and every
    attribute, in sorted order. Independent of how the file was laid out on disk; reads each
    dataset in row blocks of about ``chunk_bytes`` so memory stays bounded."""
    digest = hashlib.sha256()
    with read_h5(path) as handle:
        items: list[tuple[str, h5py.HLObject]] = [("/", handle)]
        handle.visititems(lambda name, obj: items.append((name, obj)) and None)
        for name, obj in sorted(items, key=lambda item: item[0]):
            digest.update(f"{name}\0".encode())
            for key in sorted(obj.attrs):
                digest.update(f"@{key}={obj.attrs[key]!r}\0".encode())
            if isinstance(obj, h5py.Dataset):
                digest.update(f"{obj.dtype.str}{obj.shape}\0".encode())
                if not obj.shape:
                    digest.update(np.asarray(obj[()]).tobytes())
                    continue
                row_bytes = max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:], dtype=np.int64)))
                step = max(1, chunk_bytes // row_bytes)
                for start in range(0, obj.shape[0], step):
                    block = obj[start : start + step]
                    digest.update(block.tobytes() if block.dtype.kind != "O" else repr(block.tolist()).encode())
    return digest.hexdigest()


def fingerprint(path: str | os.PathLike, chunk_bytes: int = 1 << 26) -> str:
    """sha256 of a file's content: :func:`h5_fingerprint` for an HDF5 file, else of its bytes
    (e.g. a ``model.pt``), read in blocks of ``chunk_bytes``. What resume states are keyed on."""
    path = Path(path)
    if h5py.is_hdf5(path):
        return h5_fingerprint(path, chunk_bytes)
    digest = hashlib.sha256(b"bytes\0")
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def content_checksum(value: Any) -> str:
    """sha256 of nested plain data: dicts (in sorted key order), lists, tuples, NumPy arrays, torch
    tensors (dtype, shape, bytes), numbers, strings and None. Stored with a resume state so that an
    edited or damaged state is noticed on loading; anything else is a TypeError."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, dict):
        digest.update(f"{{{len(value)}\0".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}\0".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(value)
        digest.update(f"A{array.dtype.str}{array.shape}\0".encode())
        digest.update(array.tobytes() if array.dtype.kind != "O" else repr(array.tolist()).encode())
    elif (torch := sys.modules.get("torch")) is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        digest.update(f"{type(value).__name__}:{value!r}\0".encode())
    else:
        raise TypeError(f"content_checksum: cannot hash a {type(value).__name__}")


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
