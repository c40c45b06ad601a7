"""The workflow config with every experiment expanded: what the Snakefile and the tools read.

Validation runs in one place, in this order: the JSON schema with defaults (:mod:`pathologies.config`),
the DDD variant grids become ordinary ``models`` entries (:mod:`pathologies.ddd.grid`), every model's
references are checked, then overinterpretation experiments add their pixel-subset datasets and the
models trained on them (:mod:`pathologies.overinterp.grid`, which reads the SIS jobs of
:mod:`pathologies.sis.jobs`). Every problem becomes one :class:`~pathologies.errors.UserError` line
that names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import check_models, load_schema, run_specs, validate_schema
from .data.splits import expected_splits
from .ddd.grid import add_experiment_models
from .errors import UserError
from .overinterp.grid import add_overinterp_models
from .sis.jobs import sis_jobs


def validate(config: Mapping[str, Any], schema: dict | None = None) -> dict:
    """Return a validated deep copy of ``config``: schema defaults filled in, experiments expanded.

    Raises UserError with one line naming the first offending key.
    """
    schema = load_schema() if schema is None else schema
    config = validate_schema(config, schema)
    add_experiment_models(config, schema)  # the DDD variant grid becomes ordinary `models` entries
    check_models(config, schema)
    for name, model in config["models"].items():
        check_weights(model, f"models.{name}")
    add_overinterp_models(config, schema)  # pixel-subset datasets and the models trained on them
    check_inputs(config)
    return config


def check_weights(model: Mapping[str, Any], where: str) -> None:
    """A model's ``weights`` declaration is well formed; a torchvision weights name exists for its arch."""
    from .models.weights import normalise

    source = normalise(model.get("weights"), f"{where}.weights")
    if source is not None and "torchvision" in source:  # imports torch: only when torchvision weights are declared
        from .models.registry import TORCHVISION_WEIGHTS
        from .models.weights import torchvision_weights

        torchvision_weights(model["arch"], TORCHVISION_WEIGHTS.get(model["arch"]), source["torchvision"],
                            f"{where}.weights")


def check_inputs(config: dict) -> None:
    """Checks that need the expanded config, so that a bad value fails before any job runs: every
    run spec resolves, every training part has images, and every SIS run names a split its dataset
    has, with a sample that fits in it. (A missing ``weights`` file is a missing input of rule
    ``train``: Snakemake names it before any job runs.)"""
    runs = run_specs(config)
    limit, margin = config["train_jobs"]["time_limit"], config["train_jobs"]["save_margin"]
    if limit is not None and margin >= limit:
        raise UserError(f"config key train_jobs.save_margin: {margin:g} min leaves nothing of the time_limit of "
                        f"{limit:g} min to train; use a save_margin below time_limit")
    for (name, _seed), spec in runs.items():
        sizes = expected_splits(config["datasets"][spec.dataset])
        n_train = (sizes or {}).get("train")
        parts = round(1 / spec.recipe["data_fraction"])
        if spec.recipe["precision"] == "fp16" and config["device"] == "cpu":
            raise UserError(f"config key models.{name}: recipe precision fp16 needs a CUDA GPU but config key "
                            "device is cpu; use bf16 or fp32, or device cuda/auto")
        if n_train is not None and parts > n_train:
            raise UserError(f"config key models.{name}: data_fraction {spec.recipe['data_fraction']} cuts the "
                            f"{n_train} training images of {spec.dataset!r} into {parts} parts, some of them "
                            "empty; use a larger data_fraction")
    for job in sis_jobs(config, runs).values():
        where = f"config key sis.runs.{job.run}"
        sizes = expected_splits(config["datasets"][job.dataset])
        if sizes is None:
            continue
        if job.split not in sizes:
            raise UserError(f"{where}.split: dataset {job.dataset!r} has no split {job.split!r} "
                            f"(it has {', '.join(sorted(sizes))})")
        sample, size = job.settings.get("sample"), sizes[job.split]
        if sample is not None and size is not None and sample > size:
            raise UserError(f"{where}.sample: {sample} images exceed the {size} images of "
                            f"{job.dataset}/{job.split}; use at most {size} or null (all)")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that appears twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise UserError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in one mapping "
                                f"(also on line {seen[key]}); YAML would silently keep the last, so keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_config_file(path: str | Path) -> dict:
    """A YAML config file as a dict; a missing file, invalid YAML or a duplicated key is a UserError."""
    path = Path(path)
    try:
        with open(path) as handle:
            raw = yaml.load(handle, Loader=_StrictLoader) or {}
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UserError as err:
        raise UserError(f"config file {path}, {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a mapping of config keys, not a {type(raw).__name__}")
    return raw


def check_configfiles(paths) -> None:
    """Re-read the ``--configfile`` files Snakemake has loaded, with the strict loader: Snakemake's own
    loader silently keeps the last of two equal keys (a model defined twice, ``lr`` twice)."""
    for path in paths:
        if Path(path).is_file():
            read_config_file(path)


def load(path: str | Path) -> dict:
    """Read a YAML config file and validate it (used by tests and tools outside Snakemake)."""
    path = Path(path)
    raw = read_config_file(path)
    try:
        return validate(raw)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
