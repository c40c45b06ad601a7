"""SIS extraction jobs: ``sis.runs`` of the config expanded into one job per (run, model, seed, dataset, split).

Every job writes its own file, ``results/sis/<run>/<model>/seed<seed>/<dataset>/<split>.h5`` (:func:`sis_file`),
so several runs on the same model and split coexist (random tie-breaking repeats beside index ties, Batched
Gradient k = 1 beside exact). A run with ``repeats: r`` > 1 expands into runs ``<run>.r0`` .. ``<run>.r<r-1>``
whose random tie-breaking seeds are ``tie_break_seed + i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import RunSpec
from ..errors import UserError

SIS_ROOT = "results/sis"


def sis_file(run: str, model: str, seed: int, dataset: str, split: str) -> str:
    """The merged SIS file of one run's extraction of a model (or ensemble) on one dataset split."""
    return f"{SIS_ROOT}/{run}/{model}/seed{seed}/{dataset}/{split}.h5"


def shard_file(run: str, model: str, seed: int, dataset: str, split: str, shard: int, shards: int) -> str:
    """Shard ``shard`` of ``shards`` of :func:`sis_file` (one extraction job)."""
    return f"{SIS_ROOT}/{run}/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.h5"


@dataclass(frozen=True)
class SisJob:
    """SIS extraction of one trained model (model, seed) on one dataset split, cut into ``shards`` jobs.

    ``run``: the folder name of the run (``<run>.r<i>`` for repeat i of a run with ``repeats``);
    ``group``: the ``sis.runs`` entry it comes from (figures pool a group's repeats).
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
    group: str = ""

    @property
    def key(self) -> tuple[str, str, int, str, str]:
        return (self.run, self.model, self.seed, self.dataset, self.split)

    @property
    def path(self) -> str:
        return sis_file(*self.key)

    def as_dict(self) -> dict:
        return {"run": self.run, "model": self.model, "seed": self.seed, "dataset": self.dataset,
                "split": self.split, "shards": self.shards, **self.settings}


SIS_JOB_KEYS = ("models", "seeds", "dataset", "split", "shards", "runtime", "repeats", "heatmap_fraction")


def run_names(name: str, entry: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(folder name, tie_break_seed) of each repeat of ``sis.runs.<name>``."""
    repeats = entry.get("repeats", 1)
    if repeats == 1:
        return [(name, entry["tie_break_seed"])]
    return [(f"{name}.r{i}", entry["tie_break_seed"] + i) for i in range(repeats)]


def sis_jobs(config: Mapping[str, Any], trainings: Mapping[tuple[str, int], RunSpec]) -> dict[tuple, SisJob]:
    """Expand ``sis.runs`` into one :class:`SisJob` per (run, model, seed, dataset, split) (the dict key).

    ``trainings``: the training runs (model, seed) (:func:`run_specs`). Raises UserError naming the key.
    """
    seeds_of: dict[str, list[int]] = {}
    for model, seed in trainings:
        seeds_of.setdefault(model, []).append(seed)
    jobs: dict[tuple, SisJob] = {}
    declared = set(config["sis"]["runs"])
    for name, entry in config["sis"]["runs"].items():
        where = f"config key sis.runs.{name}"
        if entry["method"] == "exact" and entry["block"] != 1:
            raise UserError(f"{where}.block: {entry['block']} applies to method gradient only; exact "
                            "backward selection removes one feature per step (set block: 1 or method: gradient)")
        if entry["dataset"] is not None and entry["dataset"] not in config["datasets"]:
            raise UserError(f"{where}.dataset: {entry['dataset']!r} is not a dataset; define it under "
                            f"`datasets` (have: {', '.join(sorted(config['datasets']))})")
        if entry.get("repeats", 1) > 1 and entry["tie_break"] != "random":
            raise UserError(f"{where}.repeats: {entry['repeats']} repeats of index tie-breaking give the same "
                            "file each time; set tie_break: random (S4.8) or repeats: 1")
        settings = {key: value for key, value in entry.items() if key not in SIS_JOB_KEYS}
        for folder, tie_seed in run_names(name, entry):
            if folder != name and folder in declared:
                raise UserError(f"{where}.repeats: repeat folder {folder!r} is also a run name; rename one")
            for model in entry["models"]:
                if model not in seeds_of:
                    raise UserError(f"{where}.models: {model!r} is not a model; define it under `models` "
                                    f"(have: {', '.join(sorted(seeds_of)) or 'none'})")
                seeds = seeds_of[model] if entry["seeds"] is None else entry["seeds"]
                for seed in seeds:
                    if seed not in seeds_of[model]:
                        raise UserError(f"{where}.seeds: model {model!r} has no seed {seed} "
                                        f"(its seeds: {sorted(seeds_of[model])})")
                    dataset = entry["dataset"] or trainings[(model, seed)].dataset
                    job = SisJob(folder, model, seed, dataset, entry["split"], entry["shards"], entry["runtime"],
                                 {**settings, "tie_break_seed": tie_seed}, group=name)
                    jobs[job.key] = job
    return jobs

