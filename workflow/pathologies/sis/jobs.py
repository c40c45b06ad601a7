"""SIS extraction jobs: ``sis.runs`` of the config expanded into one job per (model, seed, dataset, split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import RunSpec
from ..errors import UserError


@dataclass(frozen=True)
class SisJob:
    """SIS extraction of one trained model (model, seed) on one dataset split, cut into ``shards`` jobs.

    ``settings``: the run's extraction settings (method, block, patch, thresholds, tie_break,
    tie_break_seed, masked_value, softmax_dtype, sample, seed, batch_size, lockstep_images,
    collection), as read by :mod:`pathologies.sis.extract`.
    """

    run: str
    model: str
    seed: int
    dataset: str
    split: str
    shards: int
    runtime: int
    settings: dict

    def as_dict(self) -> dict:
        return {"run": self.run, "model": self.model, "seed": self.seed, "dataset": self.dataset,
                "split": self.split, "shards": self.shards, **self.settings}


SIS_JOB_KEYS = ("models", "seeds", "dataset", "split", "shards", "runtime")


def sis_jobs(config: Mapping[str, Any], runs: Mapping[tuple[str, int], RunSpec]) -> dict[tuple, SisJob]:
    """Expand ``sis.runs`` into one :class:`SisJob` per (model, seed, dataset, split).

    ``runs``: the training runs (:func:`run_specs`). Each output file belongs to one run, so two
    runs may not claim the same (model, seed, dataset, split). Raises UserError naming the key.
    """
    seeds_of: dict[str, list[int]] = {}
    for model, seed in runs:
        seeds_of.setdefault(model, []).append(seed)
    jobs: dict[tuple, SisJob] = {}
    for name, entry in config["sis"]["runs"].items():
        where = f"config key sis.runs.{name}"
        if entry["method"] == "exact" and entry["block"] != 1:
            raise UserError(f"{where}.block: {entry['block']} applies to method gradient only; exact "
                            "backward selection removes one feature per step (set block: 1 or method: gradient)")
        if entry["dataset"] is not None and entry["dataset"] not in config["datasets"]:
            raise UserError(f"{where}.dataset: {entry['dataset']!r} is not a dataset; define it under "
                            f"`datasets` (have: {', '.join(sorted(config['datasets']))})")
        settings = {key: value for key, value in entry.items() if key not in SIS_JOB_KEYS}
        for model in entry["models"]:
            if model not in seeds_of:
                raise UserError(f"{where}.models: {model!r} is not a model; define it under `models` "
                                f"(have: {', '.join(sorted(seeds_of)) or 'none'})")
            seeds = seeds_of[model] if entry["seeds"] is None else entry["seeds"]
            for seed in seeds:
                if seed not in seeds_of[model]:
                    raise UserError(f"{where}.seeds: model {model!r} has no seed {seed} "
                                    f"(its seeds: {sorted(seeds_of[model])})")
                dataset = entry["dataset"] or runs[(model, seed)].dataset
                key = (model, seed, dataset, entry["split"])
                if key in jobs:
                    raise UserError(f"{where}: {model} seed {seed} on {dataset}/{entry['split']} is already "
                                    f"extracted by run {jobs[key].run!r} (one file per model, seed, dataset "
                                    "and split); remove it from one of the two runs")
                jobs[key] = SisJob(name, model, seed, dataset, entry["split"], entry["shards"],
                                   entry["runtime"], settings)
    return jobs
