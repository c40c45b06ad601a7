"""SIS jobs of a calibrated model (Table S5) and of ensembles (Figure S2), sharded like ``sis_extract``.

Each reuses the settings of a test-split SIS job of the experiment: the calibrated source run those of
its own (uncalibrated) SIS, an ensemble those of its first member's. A calibrated model costs what its
source costs, so it takes the source job's shards and per-shard runtime. An ensemble of m models scores
every candidate m times, so it is cut into m x the source's shards: each shard is as long as a source
shard and fits the same cluster time limit. Shard i of n of ``<file>.h5`` is ``<file>/shard<i>of<n>.h5``;
its resume state lies in ``results/resume/<file without results/>/shard<i>of<n>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..sis.jobs import SisJob
from .grid import OverinterpExperiment


@dataclass(frozen=True)
class DerivedSisJob:
    """The SIS of a calibrated run (``kind`` calibrated) or of an ensemble (``kind`` ensemble)."""

    kind: str
    path: str  # the merged file
    members: tuple[tuple[str, int], ...]  # (model, seed) scored: one, or the ensemble's
    source: SisJob  # the test SIS job whose settings it reuses
    shards: int

    @property
    def runtime(self) -> int:
        """Minutes of one shard job on its first attempt."""
        return self.source.runtime

    def shard_path(self, shard: int) -> str:
        return f"{self.path.removesuffix('.h5')}/shard{shard}of{self.shards}.h5"

    def shard_paths(self) -> list[str]:
        return [self.shard_path(i) for i in range(self.shards)]

    def state_dir(self, shard: int) -> str:
        return "results/resume/" + self.shard_path(shard).removeprefix("results/").removesuffix(".h5")

    def spec(self) -> str:
        """The settings as JSON for ``--spec`` (the source job's, with this job's shard count)."""
        return json.dumps({**self.source.as_dict(), "shards": self.shards}, sort_keys=True)


def derived_sis_jobs(experiment: OverinterpExperiment) -> dict[str, DerivedSisJob]:
    """Every calibrated and ensemble SIS job of an expanded experiment, by merged file."""
    jobs = {}
    for model, seed in experiment.calibrated_sis:
        source = experiment.sis[(model, seed, experiment.dataset, "test")]
        path = experiment.calibrated_sis_path(model, seed)
        jobs[path] = DerivedSisJob("calibrated", path, ((model, seed),), source, source.shards)
    for name, members in experiment.ensembles.items():
        source = experiment.sis[(*members[0], experiment.dataset, "test")]
        path = experiment.ensemble_sis[name]
        jobs[path] = DerivedSisJob("ensemble", path, tuple(members), source, source.shards * len(members))
    return jobs
