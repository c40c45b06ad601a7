"""Load and validate the workflow config: JSON schema with defaults, then cross-references.

Every problem becomes one :class:`~pathologies.errors.UserError` line that names the key, e.g.
``config key models.digits_cnn.recipe: 'fast' is not a recipe; define it under `recipes` (have: default)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """The config schema as a dict (libyaml's safe loader where installed: the schema is read on every run)."""
    with open(path) as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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
    if error.validator == "propertyNames" or "propertyNames" in error.absolute_schema_path:
        return (f"config key {_key_path(error)}: name {error.instance!r} must start with a letter or digit "
                "and contain only letters, digits, '_' and '.'")
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"config key {_key_path(error)}: {error.instance!r} is not one of {allowed}"
    message = error.message.replace("\n", " ")
    if len(message) > 200:
        message = message[:200] + "..."
    return f"config key {_key_path(error)}: {message}"


def validate_schema(config: Mapping[str, Any], schema: dict | None = None) -> dict:
    """Return a deep copy of ``config`` checked against the JSON schema, with schema defaults filled in.

    Experiments are not expanded here (see :func:`pathologies.experiments.validate`). Raises UserError
    with one line naming the first offending key.
    """
    config = copy.deepcopy(dict(config))
    schema = load_schema() if schema is None else schema
    errors = list(_Validator(schema).iter_errors(config))
    if errors:
        # best_match picks the most relevant error (deepest, inside oneOf/allOf branches).
        raise UserError(_describe(jsonschema.exceptions.best_match(errors)))
    return config


def check_models(config: dict, schema: dict) -> None:
    """Check that ``models`` is not empty and that every model's dataset, recipe and overrides are valid."""
    if not config.setdefault("models", {}) and not config.get("ddd"):
        raise UserError("config key models: no models to train; declare `models` or a `ddd` experiment "
                        "(see config/README.md)")
    _check_references(config, schema)


def _check_references(config: dict, schema: dict) -> None:
    datasets, recipes = config["datasets"], config["recipes"]
    for name, model in config["models"].items():
        if model["dataset"] not in datasets:
            raise UserError(f"config key models.{name}.dataset: {model['dataset']!r} is not a dataset; "
                            f"define it under `datasets` (have: {', '.join(sorted(datasets))})")
        if model["recipe"] not in recipes:
            raise UserError(f"config key models.{name}.recipe: {model['recipe']!r} is not a recipe; "
                            f"define it under `recipes` (have: {', '.join(sorted(recipes))})")
        check_recipe({**recipes[model["recipe"]], **model["overrides"]}, f"models.{name}.overrides", schema)


def recipe_defaults(recipe: dict, schema: dict) -> dict:
    """``recipe`` with every key the schema defaults filled in (a recipe the workflow adds itself)."""
    recipe = copy.deepcopy(recipe)
    _Validator(schema["$defs"]["recipe"] | {"$defs": schema["$defs"]}).validate(recipe)
    return recipe


def check_recipe(recipe: dict, where: str, schema: dict) -> None:
    """Validate a resolved recipe (e.g. a base recipe with overrides); errors name ``<where>.<recipe key>``."""
    validator = jsonschema.Draft202012Validator(schema["$defs"]["recipe"] | {"$defs": schema["$defs"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(recipe))
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        raise UserError(f"config key {where}.{path}: {error.message}")
    per_step = recipe["gpus"] * recipe["grad_accumulation"] * (2 if recipe["split_batch"] else 1)
    if per_step > recipe["batch_size"]:
        raise UserError(f"config key {where}.batch_size: {recipe['batch_size']} images cannot be split over "
                        f"{recipe['gpus']} GPU(s) x {recipe['grad_accumulation']} accumulated micro-batches"
                        + (" x 2 halves (split_batch)" if recipe["split_batch"] else "")
                        + f"; use a batch_size of at least {per_step} or fewer gpus / grad_accumulation")
    parts = round(1 / recipe["data_fraction"])
    if recipe["data_part"] >= parts:
        raise UserError(f"config key {where}.data_part: {recipe['data_part']} is out of range for data_fraction "
                        f"{recipe['data_fraction']} (parts 0..{parts - 1})")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a model family entry at one seed, with its fully resolved recipe."""

    model: str
    seed: int
    dataset: str
    arch: str
    recipe: dict
    dump_splits: tuple[str, ...]
    weights: str | dict | None = None  # as declared: a file path, {file, sha256} or {torchvision: name}

    def as_dict(self) -> dict:
        return {"model": self.model, "seed": self.seed, "dataset": self.dataset, "arch": self.arch,
                "recipe": self.recipe, "dump_splits": list(self.dump_splits), "weights": self.weights}


def model_input_size(recipe: Mapping[str, Any], storage: str, stored_size: int) -> int:
    """The side of the images a recipe's model sees: an array dataset's random resized crops are resized to
    ``crop_size``; index datasets (ImageNet) crop to the stored ``image_size``; otherwise the stored size."""
    if storage != "index" and recipe.get("random_resized_crop") and recipe.get("crop_size"):
        return recipe["crop_size"]
    return stored_size


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
