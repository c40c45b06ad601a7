"""Inputs, parameters and targets of the SIS rules (workflow/rules/sis.smk).

Kept out of the rule file so that it holds rules only and this logic is testable without Snakemake.
Methods take wildcard values (model, seed, dataset, split, shards, run) as strings or numbers.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from ..config import RunSpec
from ..errors import UserError
from .jobs import SisJob, sis_jobs

FIGURE_KINDS = ("examples", "curves")


def sis_file(model: str, seed: int, dataset: str, split: str) -> str:
    """The merged SIS file of a model (or ensemble) on one dataset split."""
    return f"results/sis/{model}/seed{seed}/{dataset}/{split}.h5"


def shard_file(model: str, seed: int, dataset: str, split: str, shard: int, shards: int) -> str:
    """Shard ``shard`` of ``shards`` of :func:`sis_file` (one extraction job)."""
    return f"results/sis/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.h5"


class SisRules:
    """The SIS jobs of a validated config, with the paths and parameters their rules need.

    ``runs``: the training runs (:func:`pathologies.config.run_specs`); ``run_dir(model, seed)``
    is the workflow's folder of a trained model.
    """

    def __init__(self, config: Mapping[str, Any], runs: Mapping[tuple[str, int], RunSpec],
                 run_dir: Callable[[str, int], str]):
        self.jobs = sis_jobs(config, runs)
        self.run_dir = run_dir

    def job(self, model: str, seed: int | str, dataset: str, split: str, shards: int | str | None = None) -> SisJob:
        """The job writing results/sis/<model>/seed<seed>/<dataset>/<split>; UserError for one not configured
        (or asked for with another shard count)."""
        key = (model, int(seed), dataset, split)
        if key not in self.jobs:
            raise UserError(f"{sis_file(*key)} is not extracted by any run under `sis.runs` of the config")
        job = self.jobs[key]
        if shards is not None and int(shards) != job.shards:
            raise UserError(f"sis run {job.run!r} cuts {dataset}/{split} of {model} seed {seed} into "
                            f"{job.shards} shards, not {shards}")
        return job

    def checkpoints(self, model: str, seed: int | str, dataset: str, split: str) -> list[str]:
        """model.pt file(s) an extraction scores (the place to map an ensemble name to its members)."""
        job = self.job(model, seed, dataset, split)
        return [f"{self.run_dir(job.model, job.seed)}/model.pt"]

    def spec(self, model: str, seed: int | str, dataset: str, split: str, shards: int | str) -> str:
        """The job as JSON for ``python -m pathologies.sis.extract --spec``."""
        return json.dumps(self.job(model, seed, dataset, split, shards).as_dict(), sort_keys=True)

    def runtime(self, model: str, seed: int | str, dataset: str, split: str) -> int:
        """Minutes of one shard job on its first attempt."""
        return self.job(model, seed, dataset, split).runtime

    def shards(self, model: str, seed: int | str, dataset: str, split: str) -> list[str]:
        """Every shard file of one extraction, in shard order."""
        job = self.job(model, seed, dataset, split)
        return [shard_file(job.model, job.seed, job.dataset, job.split, i, job.shards) for i in range(job.shards)]

    def run_files(self, run: str) -> list[str]:
        """Merged SIS files of one run, in config order."""
        files = [sis_file(j.model, j.seed, j.dataset, j.split) for j in self.jobs.values() if j.run == run]
        if not files:
            raise UserError(f"{run!r} is not a run under `sis.runs` with any model "
                            f"(have: {', '.join(dict.fromkeys(j.run for j in self.jobs.values())) or 'none'})")
        return files

    def targets(self) -> list[str]:
        """Every merged SIS file and the figures of every run."""
        runs = dict.fromkeys(job.run for job in self.jobs.values())
        return [*[sis_file(j.model, j.seed, j.dataset, j.split) for j in self.jobs.values()],
                *[f"results/figures/sis_{kind}_{run}.png" for run in runs for kind in FIGURE_KINDS]]
