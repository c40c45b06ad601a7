"""Join the shard files of one SIS extraction into one file, as an unsharded run would write it.

Usage (what the ``sis_merge`` rule runs)::

    python -m pathologies.sis.merge --shards .../test/shard0of2.h5 .../test/shard1of2.h5 --out .../test.h5

Every dataset is concatenated along its first axis in shard order, which is the order of the
selected rows (shards are contiguous parts of the selection). The shards must be shards 0..n-1
of the same n and agree on every attribute except ``shard`` (and ``code_version``, which is kept
when all agree and otherwise lists every version). The merged file says ``shard`` 0 of
``num_shards`` 1 (it holds the whole selection) and ``merged_shards`` n. The layout is documented
in :mod:`pathologies.sis.extract`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import COMPRESSION, atomic_output, h5py, read_h5, unreadable, write_h5

VARYING_ATTRS = ("shard", "code_version")
# verified precision: what each shard's screen did (summed over the shards in the merged file)
VERIFIED_ATTRS = ("screen", "candidates", "rescored", "rescored_fraction", "fallback_steps")


def _datasets(handle: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset of the file by path (``visititems`` stops at a callback returning non-None)."""
    found: dict[str, h5py.Dataset] = {}

    def collect(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    handle.visititems(collect)
    return found


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def check_shards(handles: Sequence[h5py.File], paths: Sequence[Path]) -> list[int]:
    """Shard order of ``handles`` (positions sorted by their ``shard`` attribute), after checking
    they are shards 0..n-1 of one extraction with matching attributes and datasets."""
    if not handles:
        raise UserError("no SIS shard files given; pass --shards shard0of<n>.h5 ... shard<n-1>of<n>.h5")
    first, first_path = handles[0], paths[0]
    shard_numbers = [int(handle.attrs["shard"]) for handle in handles]
    expected = int(first.attrs["num_shards"])
    if sorted(shard_numbers) != list(range(expected)):  # a count check alone lets shard 0 stand in for shard 1
        twice = sorted({n for n in shard_numbers if shard_numbers.count(n) > 1})
        missing = sorted(set(range(expected)) - set(shard_numbers))
        problems = ([f"shard(s) {twice} given more than once"] if twice else []) + \
                   ([f"shard(s) {missing} missing"] if missing else [])
        raise UserError(f"SIS shards {sorted(shard_numbers)} given, but {first_path} is one of {expected} shards "
                        f"(0..{expected - 1}): {', '.join(problems) or 'shard numbers out of range'}; "
                        "pass each shard exactly once")
    layout = {name: (ds.dtype, ds.shape[1:]) for name, ds in _datasets(first).items()}
    for handle, path in zip(handles[1:], paths[1:], strict=True):
        for key in set(first.attrs) | set(handle.attrs):
            if key in VARYING_ATTRS or key in VERIFIED_ATTRS:
                continue
            if key not in first.attrs or key not in handle.attrs or not _same(first.attrs[key], handle.attrs[key]):
                raise UserError(f"SIS shards {first_path} and {path} differ in attribute {key!r}; they come from "
                                "different extractions: rebuild the stale shard")
        other = {name: (ds.dtype, ds.shape[1:]) for name, ds in _datasets(handle).items()}
        if other != layout:
            raise UserError(f"SIS shards {first_path} and {path} hold different datasets or shapes; "
                            "rebuild the stale shard")
    return sorted(range(len(handles)), key=shard_numbers.__getitem__)


def _merged_verified(handles: Sequence[h5py.File]) -> dict:
    """Screens used (comma-joined), candidate counts and fallbacks summed over the shards."""
    sums = {key: sum(int(handle.attrs[key]) for handle in handles)
            for key in ("candidates", "rescored", "fallback_steps")}
    fraction = sums["rescored"] / sums["candidates"] if sums["candidates"] else 0.0
    screens = ", ".join(sorted({str(handle.attrs["screen"]) for handle in handles}))
    return {**sums, "screen": screens, "rescored_fraction": fraction}


def merge_shards(shard_paths: Sequence[str | Path], out: str | Path) -> None:
    """Concatenate the shards into ``out`` (atomically), checking they belong together."""
    paths = [Path(path) for path in shard_paths]
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(read_h5(path, "SIS shard")) for path in paths]
        positions = check_shards(handles, paths)
        order = [handles[i] for i in positions]
        with atomic_output(out) as tmp, write_h5(tmp) as merged:
            for key, value in order[0].attrs.items():
                merged.attrs[key] = value
            versions = sorted({str(handle.attrs["code_version"]) for handle in order})
            merged.attrs.update({"shard": 0, "num_shards": 1, "merged_shards": len(order),
                                 "code_version": ", ".join(versions)})
            if "screen" in order[0].attrs:
                merged.attrs.update(_merged_verified(order))
            for name, first in _datasets(order[0]).items():
                parts = [handle[name] for handle in order]
                total = sum(len(part) for part in parts)
                options = dict(COMPRESSION) if total and first.ndim else {}
                target = merged.create_dataset(name, shape=(total, *first.shape[1:]), dtype=first.dtype, **options)
                for key, value in first.attrs.items():
                    target.attrs[key] = value
                start = 0
                for position, part in zip(positions, parts, strict=True):
                    if len(part):
                        try:
                            values = part[()]
                        except OSError as err:  # a corrupt chunk: name the shard it is in
                            raise UserError(unreadable(paths[position], err)) from None
                        target[start:start + len(part)] = values
                    start += len(part)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="+", required=True, help="shard files of one extraction")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    merge_shards(args.shards, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
