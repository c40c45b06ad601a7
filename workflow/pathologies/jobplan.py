"""Resources of the training jobs a config generates: runtime per job, time budget and attempts, from the bill.

The ``train`` rule reads :func:`plan`: with ``train_jobs.time_limit`` every job may run that long (or,
with ``bill_device``, what the bill expects of it, when that is shorter) and trains until
``save_margin`` minutes before, then saves its state and exits to be resubmitted; ``attempts``
(or, with ``bill_device``, what the longest job needs plus one spare; else 2) becomes the rule's retries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import UserError

DEFAULT_RUNTIME = 480  # minutes per attempt without a time limit or a bill (the profile's former 8 h)
HEADROOM = 1.25  # a job's runtime asks for the bill's estimate times this


@dataclass(frozen=True)
class JobPlan:
    runtime: int  # minutes asked per attempt (without a time limit: multiplied by the attempt number)
    budget_s: float | None  # seconds a job trains before it saves and exits; None = no limit
    scales_with_attempt: bool


def plan(config: Mapping) -> tuple[dict[tuple[str, int], JobPlan], int | None]:
    """({(model, seed): JobPlan}, attempts per job) of every training run of the validated ``config``;
    attempts None (neither ``attempts`` nor ``time_limit`` set) leaves retries to the profile or ``--retries``."""
    from .config import run_specs

    settings = config["train_jobs"]
    limit, margin, device = settings["time_limit"], settings["save_margin"], settings["bill_device"]
    runs = run_specs(config)
    minutes: dict[str, float] = {}
    if device is not None:
        from .cost import attempts_needed, train_jobs
        from .sis.throughput import read_throughput
        from .training.throughput import read_train_throughput

        jobs = train_jobs(config, read_throughput(), device, read_train_throughput())
        minutes = {job["model"]: job["wall_hours"] * 60 for job in jobs}
    plans = {}
    for (model, seed) in runs:
        expected = minutes.get(model)
        if limit is not None:
            span = limit if expected is None else min(limit, expected * HEADROOM + margin)
            plans[(model, seed)] = JobPlan(math.ceil(span), (span - margin) * 60, False)
        else:
            runtime = DEFAULT_RUNTIME if expected is None else math.ceil(expected * HEADROOM) + 1
            plans[(model, seed)] = JobPlan(runtime, None, True)
    attempts = settings["attempts"]
    if attempts is None and limit is not None:
        attempts = 2
        if device is not None:
            needed = [attempts_needed(job, limit - margin) for job in jobs]
            if None in needed:
                slow = jobs[needed.index(None)]
                raise UserError(f"config key train_jobs.time_limit: one epoch of {slow['model']} takes "
                                f"{slow['epoch_minutes']:,.0f} min on {device} by the bill, longer than the "
                                f"{limit - margin:g} min a job may train; use more gpus, bf16 or a longer time_limit")
            attempts = max(needed, default=1) + 1
    return plans, attempts
