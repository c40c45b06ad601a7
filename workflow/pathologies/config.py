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
    _check_references(config, schema)
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
