"""Inputs, parameters and targets of the SIS rules (workflow/rules/sis.smk).

Kept out of the rule file so that it holds rules only and this logic is testable without Snakemake.
Methods take wildcard values (sis_run: the `sis.runs` entry or its repeat folder, model, seed, dataset, split,
shards) as strings or numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..analysis import Analysis, Stage, outputs
from ..config import RunSpec
from ..errors import UserError
from .jobs import SisJob, shard_file, sis_file, sis_jobs

STAGE = Stage("sis", "results/figures", "results/logs", "run", "Sufficient input subsets", r"[A-Za-z0-9][A-Za-z0-9_.]*")
# The figures of every `sis.runs` entry (workflow/rules/analyses.smk makes one rule each, sis_<name>).
ANALYSES = (
    Analysis("figures", "sis.figures", {"examples": "sis_examples_{run}.png", "curves": "sis_curves_{run}.png"},
             {"examples": "sis_examples.rst", "curves": "sis_curves.rst"}, {"sis": "@run_files"},
             paper="Figures S1, S8", log="sis_figures/{run}.log", mem_mb=2000),
    Analysis("heatmaps", "sis.heatmaps", {"out": "sis_heatmaps_{run}.png"}, "sis_heatmaps.rst",
             deps={"sis": "@run_files"}, args="heatmap_args", paper="Figures S7, S9a (3a as published)",
             log="sis_heatmaps/{run}.log", mem_mb=2000),
)

__all__ = ["SisRules", "sis_file", "shard_file", "ANALYSES", "STAGE"]


class SisRules:
    """The SIS jobs of a validated config, with the paths and parameters their rules need.

    ``trainings``: the training runs (model, seed) (:func:`pathologies.config.run_specs`); ``model_dir(model, seed)``
    is the workflow's folder of a trained model.
    """

    def __init__(self, config: Mapping[str, Any], trainings: Mapping[tuple[str, int], RunSpec],
                 model_dir: Callable[[str, int], str]):
        self.jobs = sis_jobs(config, trainings)
        self.model_dir = model_dir
        self.entries = config["sis"]["runs"]
        self.heatmap_fraction = {name: entry.get("heatmap_fraction", 0.05) for name, entry in self.entries.items()}

    def job(self, sis_run: str, model: str, seed: int | str, dataset: str, split: str,
            shards: int | str | None = None) -> SisJob:
        """The job writing results/sis/<run>/<model>/seed<seed>/<dataset>/<split>; UserError for one not
        configured (or asked for with another shard count)."""
        key = (sis_run, model, int(seed), dataset, split)
        if key not in self.jobs:
            raise UserError(f"{sis_file(*key)} is not extracted by any run under `sis.runs` of the config")
        job = self.jobs[key]
        if shards is not None and int(shards) != job.shards:
            raise UserError(f"sis run {job.run!r} cuts {dataset}/{split} of {model} seed {seed} into "
                            f"{job.shards} shards, not {shards}")
        return job

    def checkpoints(self, sis_run: str, model: str, seed: int | str, dataset: str, split: str) -> list[str]:
        """model.pt file(s) an extraction scores (the place to map an ensemble name to its members)."""
        job = self.job(sis_run, model, seed, dataset, split)
        return [f"{self.model_dir(job.model, job.seed)}/model.pt"]

    def spec(self, sis_run: str, model: str, seed: int | str, dataset: str, split: str, shards: int | str) -> str:
        """The job as JSON for ``python -m pathologies.sis.extract --spec``."""
        return json.dumps(self.job(sis_run, model, seed, dataset, split, shards).as_dict(), sort_keys=True)

    def runtime(self, sis_run: str, model: str, seed: int | str, dataset: str, split: str) -> int:
        """Minutes of one shard job on its first attempt."""
        return self.job(sis_run, model, seed, dataset, split).runtime

    def shards(self, sis_run: str, model: str, seed: int | str, dataset: str, split: str) -> list[str]:
        """Every shard file of one extraction, in shard order."""
        job = self.job(sis_run, model, seed, dataset, split)
        return [shard_file(*job.key, i, job.shards) for i in range(job.shards)]

    def options(self, sis_run: str) -> Mapping[str, Any]:
        """The ``sis.runs`` entry (the ``switch`` keys of the declared figures)."""
        return self.entries[sis_run]

    def groups(self) -> list[str]:
        """The ``sis.runs`` entries that have jobs, in config order (one set of figures each)."""
        return list(dict.fromkeys(job.group for job in self.jobs.values()))

    def run_files(self, sis_run: str) -> list[str]:
        """Merged SIS files of one ``sis.runs`` entry (every repeat), in config order."""
        files = [j.path for j in self.jobs.values() if j.group == sis_run]
        if not files:
            raise UserError(f"{sis_run!r} is not a run under `sis.runs` with any model "
                            f"(have: {', '.join(self.groups()) or 'none'})")
        return files

    def heatmap_args(self, sis_run: str) -> list[str]:
        """Command-line arguments (argv tokens) of :mod:`pathologies.sis.heatmaps` for one ``sis.runs`` entry:
        each file labelled with its model (repeats and seeds of one model are pooled)."""
        files = [token for j in self.jobs.values() if j.group == sis_run for token in ("--sis", f"{j.model}={j.path}")]
        if not files:
            self.run_files(sis_run)
        return [*files, "--fraction", repr(self.heatmap_fraction[sis_run])]

    def targets(self) -> list[str]:
        """Every merged SIS file and the figures of every run."""
        return [*[job.path for job in self.jobs.values()],
                *[path for run in self.groups() for path in outputs(STAGE, ANALYSES, self, run)]]
