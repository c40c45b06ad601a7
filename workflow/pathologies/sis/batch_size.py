"""The scoring batch size of SIS extraction: measured per model and device, cached, never changing results.

A model's forward throughput depends on the batch size, and not monotonically: on a small CPU,
batches whose activations fit the caches run faster than large ones, on a GPU large batches fill
the device. :func:`tuned_batch_size` times the strict scoring path at the batch sizes
``BATCH_SIZES`` up to the declared one on candidate images of the job, keeps the fastest, and
caches the choice per model and device in a small JSON file, so that the other jobs of a run
(and later runs) reuse it.

The choice may never change a stored result: the probe also checks that every candidate scored at
every size gets the same bits as at the declared size (true on CPUs for batches of two or more, see
:class:`pathologies.sis.engine.Scorer`; cuDNN may pick other kernels for other shapes). Where they
differ, the declared batch size is kept and the job log says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import UserError
from .engine import FeatureLayout

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ROUNDS = 3  # interleaved timing rounds; each size keeps its best


def add_cache_option(parser) -> None:
    """``--batch-size-cache PATH`` of the extraction commands."""
    parser.add_argument("--batch-size-cache", default=None,
                        help="score at the fastest batch size up to the spec's batch_size, measured once per "
                             "model and device and cached in this JSON file (results unchanged)")


def device_name(device: torch.device) -> str:
    """The hardware the timings belong to: GPU model, or CPU model and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} threads"


def cache_key(models, image_shape, precision: str, device: torch.device) -> str:
    """Models (class and parameter count), image shape (C, H, W), precision, device and torch version."""
    nets = "+".join(f"{type(m).__name__}({sum(p.numel() for p in m.parameters())})" for m in models)
    shape = "x".join(str(int(v)) for v in image_shape)
    return f"{nets} | {shape} | {precision} | {device_name(device)} | torch {torch.__version__}"


def measure(score: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, declared: int,
            sizes=BATCH_SIZES) -> tuple[int, dict[int, float], bool]:
    """Time ``score`` (logits of a batch) at each size <= ``declared``; return (best, images/s per size, invariant).

    ``sample``: candidate images, at least ``declared`` of them. Sizes are timed in ``ROUNDS``
    interleaved rounds and each keeps its best round, so a burst of load from other processes does
    not decide. ``invariant`` is False when some size gave a candidate other bits than the declared
    size did; best is then ``declared``.
    """
    tried = sorted({s for s in sizes if s < declared} | {declared}, reverse=True)  # declared first: the reference
    sample = sample[:declared]
    count = len(sample)

    def run(size: int) -> torch.Tensor:
        return torch.cat([score(sample[b:b + size]) for b in range(0, count, size)])

    rates: dict[int, float] = {}
    with torch.inference_mode():
        reference = run(declared)
        invariant = all(torch.equal(run(size), reference) for size in tried[1:])  # also the warm-up
        for _ in range(ROUNDS):
            for size in tried:
                begin = time.perf_counter()
                run(size)
                if sample.device.type == "cuda":
                    torch.cuda.synchronize(sample.device)
                rates[size] = max(rates.get(size, 0.0), count / (time.perf_counter() - begin))
    best = max(rates, key=rates.get) if invariant else declared
    return best, rates, invariant


def tuned_batch_size(score: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, declared: int,
                     cache: str | os.PathLike | None, key: str, log: Callable[[str], object] = print) -> int:
    """The batch size to score with: cached under ``key`` in ``cache`` (JSON), or measured and cached.

    Never above ``declared`` (the memory the job was sized for). ``cache`` None measures without caching.
    """
    entry = read_cache(cache).get(key) if cache else None
    if entry and entry.get("declared") == declared:
        log(f"SIS batch size {entry['batch_size']} (declared {declared}; cached in {cache}, "
            f"measured {entry['measured']})")
        return int(entry["batch_size"])
    best, rates, invariant = measure(score, sample, declared)
    figures = ", ".join(f"{size}: {rate:,.0f}" for size, rate in sorted(rates.items()))
    if invariant:
        log(f"SIS batch size {best} (declared {declared}); candidates/s by batch size: {figures}")
    else:
        log(f"SIS batch size {declared} kept: on this device scores change with the batch size, so another "
            f"size would change results (candidates/s: {figures})")
    if cache:
        write_cache(cache, key, {"batch_size": best, "declared": declared, "invariant": invariant,
                                 "candidates_per_s": {str(s): round(r, 1) for s, r in rates.items()},
                                 "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return best


def read_cache(path: str | os.PathLike) -> dict:
    """The cache's entries ({} when absent); a damaged cache is named in one line."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
        for key, entry in entries.items():
            check_entry(key, entry)
        return entries
    except (ValueError, OSError) as err:
        raise UserError(f"batch-size cache {path} is damaged ({err}); delete it and it is measured again") from err


def check_entry(key: str, entry) -> None:
    """A ValueError naming ``key`` unless ``entry`` holds a batch size in 1..declared and when it was measured."""
    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not isinstance(entry, dict):
        raise ValueError(f"entry {key!r} is not a JSON object")
    if not count(entry.get("declared")):
        raise ValueError(f"entry {key!r} has declared {entry.get('declared')!r}, not an integer >= 1")
    if not count(entry.get("batch_size")) or entry["batch_size"] > entry["declared"]:
        raise ValueError(f"entry {key!r} has batch_size {entry.get('batch_size')!r}, not an integer in "
                         f"1..{entry['declared']} (its declared size)")
    if not isinstance(entry.get("measured"), str):
        raise ValueError(f"entry {key!r} lacks the time it was measured")


def write_cache(path: str | os.PathLike, key: str, entry: dict) -> None:
    """Add ``entry`` under ``key``: locked read-modify-write, replaced atomically (jobs share the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read_cache(path)
        entries[key] = entry
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def candidate_sample(images: torch.Tensor, masking, count: int) -> torch.Tensor:
    """``count`` first-step candidates of ``images`` (N, C, H, W): image i mod N with feature i mod p masked."""
    layout = FeatureLayout(masking, images)
    rows = torch.arange(count, device=images.device)
    batch = images[rows % len(images)].clone()
    layout.mask_features(batch, rows, rows % layout.count)
    return batch
