"""Benchmark error consistency for all pairs of models against a per-pair loop, in the same run.

    python -m pathologies.bench consistency [--models 100] [--images 50000] [--epochs 100]
                                            [--loop-pairs 500] [--boot 100] [--seed 0]
                                            [--blas-threads N]

Synthetic correctness (per-image difficulty from a U-shaped beta, fresh draws every epoch) is
generated a few epochs at a time, so memory stays modest, and generation is not timed. Timed:
:func:`pathologies.ddd.consistency.pair_stats` plus the tidy table for all pairs; the baseline is
:func:`pathologies.ddd.consistency.error_consistency` called pair by pair on the first epoch, on
``--loop-pairs`` pairs, extrapolated to all pairs and epochs (said so in the output). The last
line is ``consistency_seconds=<seconds for all pairs at all epochs>``.

Multi-threaded OpenBLAS slows down sharply when the cores are shared with other busy processes;
``--blas-threads 1`` shows the single-threaded figure (about as fast on 2 idle cores).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..ddd.consistency import bootstrap_ci, error_consistency, pair_stats

EPOCHS_PER_CHUNK = 10


def synthetic_correctness(rng: np.random.Generator, difficulty: np.ndarray, n_models: int,
                          n_epochs: int) -> np.ndarray:
    """(epochs, models, images) bool: each model right on image i with probability difficulty[i]."""
    draws = rng.random((n_epochs, n_models, len(difficulty)), dtype=np.float32)
    return draws < difficulty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathologies.bench consistency",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--loop-pairs", type=int, default=500,
                        help="pairs timed with the per-pair loop (extrapolated to all pairs)")
    parser.add_argument("--boot", type=int, default=100, help="bootstrap replicates timed on one epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit BLAS threads (threadpoolctl); default: leave as configured")
    args = parser.parse_args(argv)
    if args.blas_threads is None:
        return run(args)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.blas_threads, user_api="blas"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; prints the report."""

    rng = np.random.default_rng(args.seed)
    difficulty = rng.beta(0.3, 0.15, size=args.images).astype(np.float32)
    models = [f"m{i:03d}" for i in range(args.models)]
    n_pairs = args.models * (args.models - 1) // 2
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = "" if args.blas_threads is None else f", {args.blas_threads} BLAS thread(s)"
    print(f"error consistency: {args.models} models x {args.images} images = {n_pairs} pairs per epoch, "
          f"{threads} CPU cores{blas}, numpy {np.__version__}")

    first = synthetic_correctness(rng, difficulty, args.models, 1)[0]
    one_epoch = min(_timed(lambda: pair_stats(first).to_frame(models))[0] for _ in range(3))

    a, b = np.triu_indices(args.models, 1)
    timed_pairs = min(args.loop_pairs, n_pairs)
    stats = pair_stats(first)
    start = time.perf_counter()
    loop_kappa = [error_consistency(first[i], first[j])["kappa"]
                  for i, j in zip(a[:timed_pairs], b[:timed_pairs], strict=True)]
    loop_pair_seconds = (time.perf_counter() - start) / timed_pairs
    difference = np.nanmax(np.abs(np.asarray(loop_kappa) - stats.kappa[a[:timed_pairs], b[:timed_pairs]]))
    loop_epoch = loop_pair_seconds * n_pairs
    how = "timed on all pairs" if timed_pairs == n_pairs else f"timed on {timed_pairs} pairs, extrapolated"
    print(f"1 epoch:    vectorised {one_epoch:.3f} s | per-pair loop {loop_epoch:.2f} s ({how}) | "
          f"speed-up {loop_epoch / one_epoch:.0f}x | max |kappa difference| {difference:.1e}")

    engine = table = 0.0
    rows = 0
    for start_epoch in range(0, args.epochs, EPOCHS_PER_CHUNK):
        chunk = synthetic_correctness(rng, difficulty, args.models,
                                      min(EPOCHS_PER_CHUNK, args.epochs - start_epoch))
        seconds, stats = _timed(pair_stats, chunk)
        engine += seconds
        seconds, frame = _timed(stats.to_frame, models, range(start_epoch, start_epoch + len(chunk)))
        table += seconds
        rows += len(frame)
    total = engine + table
    loop_total = loop_epoch * args.epochs
    print(f"{args.epochs} epochs: vectorised {total:.3f} s (pair statistics {engine:.3f} s + tidy table "
          f"{table:.3f} s, {rows} rows) | per-pair loop {loop_total:.1f} s (extrapolated from epoch 0) | "
          f"speed-up {loop_total / total:.0f}x")

    if args.boot > 0:
        seconds, _ = _timed(lambda: bootstrap_ci(first, n_boot=args.boot, seed=args.seed))
        print(f"bootstrap CI, 1 epoch, B={args.boot}: {seconds:.2f} s")
    print(f"consistency_seconds={total:.3f}")
    return 0


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result
