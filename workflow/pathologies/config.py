"""Load and validate the workflow config: JSON schema with defaults, then cross-references.

Every problem becomes one :class:`~pathologies.errors.UserError` line that names the key, e.g.
``config key models.digits_cnn.recipe: 'fast' is not a recipe; define it under `recipes` (have: default)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from .errors import UserError
from .ddd.grid import add_experiment_models
from .overinterp.grid import add_overinterp_models

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    """A validator class that fills in ``default`` values of ``properties`` while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line for the most specific error, naming the key and what is allowed."""
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = _key_path(error)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config key {where}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "required":
        return f"config key {_key_path(error)}: {error.message}; add it (see config/README.md)"
    if error.validator == "propertyNames":
        return (f"config key {_key_path(error)}: name {error.instance!r} must start with a letter or digit "
                "and contain only letters, digits, '_' and '.'")
    message = error.message.replace("\n", " ")
    if len(message) > 200:
        message = message[:200] + "..."
    return f"config key {_key_path(error)}: {message}"


def validate(config: Mapping[str, Any], schema: dict | None = None) -> dict:
    """Return a validated deep copy of ``config`` with schema defaults filled in.

    Raises UserError with one line naming the first offending key.
    """
    config = copy.deepcopy(dict(config))
    schema = load_schema() if schema is None else schema
    errors = list(_Validator(schema).iter_errors(config))
    if errors:
        # best_match picks the most relevant error (deepest, inside oneOf/allOf branches).
        raise UserError(_describe(jsonschema.exceptions.best_match(errors)))
    add_experiment_models(config, schema)  # the DDD variant grid becomes ordinary `models` entries
    if not config.setdefault("models", {}):
        raise UserError("config key models: no models to train; declare `models` or a `ddd` experiment "
                        "(see config/README.md)")
    _check_references(config, schema)
    add_overinterp_models(config, schema)  # pixel-subset datasets and the models trained on them
    return config


def _check_references(config: dict, schema: dict) -> None:
    datasets, recipes = config["datasets"], config["recipes"]
    for name, model in config["models"].items():
        if model["dataset"] not in datasets:
            raise UserError(f"config key models.{name}.dataset: {model['dataset']!r} is not a dataset; "
                            f"define it under `datasets` (have: {', '.join(sorted(datasets))})")
        if model["recipe"] not in recipes:
            raise UserError(f"config key models.{name}.recipe: {model['recipe']!r} is not a recipe; "
                            f"define it under `recipes` (have: {', '.join(sorted(recipes))})")
        resolved = {**recipes[model["recipe"]], **model["overrides"]}
        for error in _Validator(schema["$defs"]["recipe"] | {"$defs": schema["$defs"]}).iter_errors(resolved):
            key = ".".join(str(p) for p in error.absolute_path)
            raise UserError(f"config key models.{name}.overrides.{key}: {error.message}")
        if resolved["data_part"] >= round(1 / resolved["data_fraction"]):
            raise UserError(f"config key models.{name}.overrides.data_part: {resolved['data_part']} is out of "
                            f"range for data_fraction {resolved['data_fraction']} "
                            f"(parts 0..{round(1 / resolved['data_fraction']) - 1})")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a model family entry at one seed, with its fully resolved recipe."""

    model: str
    seed: int
    dataset: str
    arch: str
    recipe: dict
    dump_splits: tuple[str, ...]
    weights: str | None = None

    def as_dict(self) -> dict:
        return {"model": self.model, "seed": self.seed, "dataset": self.dataset, "arch": self.arch,
                "recipe": self.recipe, "dump_splits": list(self.dump_splits), "weights": self.weights}


def run_specs(config: Mapping[str, Any]) -> dict[tuple[str, int], RunSpec]:
    """Expand the validated config into one :class:`RunSpec` per (model, seed)."""
    runs = {}
    for name, model in config["models"].items():
        for seed in model["seeds"]:
            recipe = {**config["recipes"][model["recipe"]], **model["overrides"]}
            recipe["init_seed"] = seed if recipe.get("init_seed") is None else recipe["init_seed"]
            recipe["order_seed"] = seed if recipe.get("order_seed") is None else recipe["order_seed"]
            late = [e for e in recipe.get("snapshot_epochs", []) if e > recipe["epochs"]]
            if late:
                raise UserError(f"config key models.{name}: snapshot_epochs {late} lie beyond its {recipe['epochs']} "
                                "epochs; list epochs up to the number trained")
            runs[(name, seed)] = RunSpec(name, seed, model["dataset"], model["arch"], recipe,
                                         tuple(model["dump_splits"]), model.get("weights"))
    return runs


def load(path: str | Path) -> dict:
    """Read a YAML config file and validate it (used by tests and tools outside Snakemake)."""
    path = Path(path)
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    try:
        return validate(raw)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


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
