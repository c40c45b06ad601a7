"""The DDD model-variant grid (Meding et al. 2022, appendix A.1): ``ddd`` experiments -> ``models``.

An experiment declares a base run and conditions that override its recipe::

    ddd:
      resnet_variants:
        dataset: imagenet
        base: {arch: tv_resnet18, recipe: paper, seed: 0}
        extra_epochs: [1, 10]
        conditions:
          optimizer: {overrides: {nesterov: true}}                     # one model
          init: {overrides: {order_seed: 0}, seeds: [1, 2, 3, 4, 5]}   # one model per seed
          lr: {variants: [{lr: 0.148}, {lr: 0.152}]}                   # one model per variant
          different_data: {compare: within, variants: [{data_fraction: 0.5, data_part: 0},
                                                       {data_fraction: 0.5, data_part: 1}]}

Expansion adds ordinary ``models`` entries, so the ``train`` rule trains every (model, seed) as one
job:

- ``<experiment>.base``: the base recipe, trained ``epochs + max(extra_epochs)`` epochs. Member
  ``base`` is its epoch ``epochs``, member ``plus<k>ep`` its epoch ``epochs + k`` (no new training).
- ``<experiment>.<condition>``: base overrides, then the condition's; one run per seed (default: the
  base seed). A seed sets ``init_seed`` and ``order_seed`` unless the overrides pin them, so
  ``{overrides: {order_seed: 0}, seeds: [1, 2]}`` varies only the initialisation.
- ``<experiment>.<condition>.<i>``: one run per variant at the base seed; a variant holds recipe
  keys (and optionally ``arch``) on top of the condition's overrides.

A run that resolves to the same architecture, recipe and seeds as an earlier one of the experiment
(e.g. ``half_data: {overrides: {data_fraction: 0.5}}`` and part 0 of ``different_data``) is trained
once: the later member points at the earlier model and no entry is added for it.

Every member is compared at epoch ``epochs`` of the base recipe (conditions cannot change it). A
member is labelled ``<condition>`` when its condition has one model, else ``<condition>.s<seed>``
(seeds) or ``<condition>.<i>`` (variants).

Pretrained models (``pretrained: {<label>: {arch, weights}}``, e.g. the paper's SOTA set) become
``<experiment>.<label>`` entries that train 0 epochs: their dump's only row is the given weights evaluated
on the split. They join the comparison at E like models of ``predictions_csv``, without a base run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import check_recipe, recipe_defaults
from ..errors import UserError

RESERVED_CONDITIONS = re.compile(r"base|plus\d+ep")
# Keys of a `ddd` experiment that declare its models; every other key (schema defaults filled in) is an
# option of its analyses and reaches the modules through experiment.json.
GRID_KEYS = ("dataset", "split", "base", "conditions", "extra_epochs", "pretrained")
PRETRAINED_RECIPE = "pretrained"  # the recipe of pretrained entries that name none: schema defaults, 0 epochs


@dataclass(frozen=True)
class Member:
    """One compared model state: run (``model``, ``seed``) after epoch ``epoch``.

    ``compare`` is ``base`` (compared with the base member) or ``within`` (with the other members
    of its condition).
    """

    label: str
    condition: str
    model: str
    seed: int
    epoch: int
    compare: str
    arch: str


@dataclass(frozen=True)
class Experiment:
    """An expanded ``ddd`` experiment: its members in config order and its analysis options."""

    name: str
    dataset: str
    split: str
    epochs: int
    members: tuple[Member, ...]
    options: Mapping[str, Any]
    pretrained: tuple[Member, ...] = ()

    def runs(self) -> list[tuple[str, int]]:
        """The distinct training runs (model, seed) behind the members and pretrained models, in order."""
        return list(dict.fromkeys((m.model, m.seed) for m in (*self.members, *self.pretrained)))

    def rsa_members(self) -> list[Member]:
        """First member of each condition (every member of the base run: its checkpoint keeps
        snapshots of the weights after the base epochs and each extra epoch)."""
        chosen: dict[str, Member] = {}
        for member in self.members:
            chosen.setdefault(member.condition, member)
        return list(chosen.values())

    def as_dict(self, model_dir: Callable[[str, int], str]) -> dict:
        """JSON-ready description for the analysis modules; ``model_dir(model, seed)`` locates a run."""
        def described(member: Member) -> dict:
            return {**asdict(member), "predictions": f"{model_dir(member.model, member.seed)}/predictions.h5",
                    "checkpoint": f"{model_dir(member.model, member.seed)}/model.pt"}

        return {"name": self.name, "dataset": self.dataset, "split": self.split, "epochs": self.epochs,
                "members": [described(m) for m in self.members], "pretrained": [described(m) for m in self.pretrained],
                "rsa_members": [m.label for m in self.rsa_members()], **self.options}


def add_experiment_models(config: dict, schema: dict) -> None:
    """Check every ``ddd`` experiment of a schema-validated config and add its models (in place).

    Raises UserError with one line naming the ``ddd`` key. Adding is idempotent: an existing
    ``models`` entry equal to the generated one is kept, a different one is a name clash.
    """
    for name, experiment in config.get("ddd", {}).items():
        _check_experiment(name, experiment, config, schema)
        if any(entry.get("recipe") is None for entry in experiment["pretrained"].values()):
            config["recipes"].setdefault(PRETRAINED_RECIPE, recipe_defaults({"epochs": 0}, schema))
        models, _ = _expand(name, experiment, config)
        models.update(_pretrained_models(name, experiment))
        for model_name, entry in models.items():
            existing = config.setdefault("models", {}).get(model_name)
            if existing is not None and existing != entry:
                raise UserError(f"config key models.{model_name}: the name is also generated by ddd experiment "
                                f"{name!r}; rename the model or the experiment")
            config["models"][model_name] = entry


def experiments(config: Mapping[str, Any]) -> dict[str, Experiment]:
    """Every ``ddd`` experiment of a validated config, expanded into its members."""
    result = {}
    for name, experiment in config.get("ddd", {}).items():
        _, members = _expand(name, experiment, config)
        epochs = _base_recipe(experiment, config)["epochs"] if "base" in experiment else 0
        pretrained = tuple(Member(label, label, f"{name}.{label}", 0, 0, "base", entry["arch"])
                           for label, entry in experiment["pretrained"].items())
        result[name] = Experiment(
            name=name, dataset=experiment["dataset"], split=experiment["split"], epochs=epochs,
            members=tuple(members), pretrained=pretrained,
            options={key: value for key, value in experiment.items() if key not in GRID_KEYS})
    return result


def _pretrained_models(name: str, experiment: Mapping) -> dict[str, dict]:
    """``models`` entries of the experiment's pretrained models: 0 epochs, the split dumped, their weights."""
    return {f"{name}.{label}": {"dataset": experiment["dataset"], "arch": entry["arch"],
                                "recipe": entry.get("recipe") or PRETRAINED_RECIPE,
                                "overrides": {**entry["overrides"], "epochs": 0}, "seeds": [0],
                                "dump_splits": [experiment["split"]], "weights": entry["weights"]}
            for label, entry in experiment["pretrained"].items()}


def _base_recipe(experiment: Mapping, config: Mapping) -> dict:
    base = experiment["base"]
    return {**config["recipes"][base["recipe"]], **base["overrides"]}


def _expand(name: str, experiment: Mapping, config: Mapping) -> tuple[dict[str, dict], list[Member]]:
    """(models entries, members) of one checked experiment; none for an external-only experiment."""
    if "base" not in experiment:
        return {}, []
    base = experiment["base"]
    epochs = _base_recipe(experiment, config)["epochs"]
    extra = sorted(experiment["extra_epochs"])
    split = experiment["split"]

    def entry(arch: str, overrides: dict, seeds: list[int]) -> dict:
        return {"dataset": experiment["dataset"], "arch": arch, "recipe": base["recipe"],
                "overrides": overrides, "seeds": list(seeds), "dump_splits": [split]}

    base_model = f"{name}.base"
    final = epochs + max(extra, default=0)
    snapshots = sorted({*base["overrides"].get("snapshot_epochs", []), epochs, *(epochs + k for k in extra)} - {final})
    base_overrides = {**base["overrides"], "epochs": final}
    if snapshots:  # the weights of the base member and its extra epochs, for the RSA
        base_overrides["snapshot_epochs"] = snapshots
    models = {base_model: entry(base["arch"], base_overrides, [base["seed"]])}
    runs: dict[str, str] = {}  # one resolved single-seed run -> the model that trains it

    def add(model: str, arch: str, overrides: dict, seeds: list[int]) -> str:
        """Add a models entry and return its name, or the name of an earlier identical run."""
        if len(seeds) == 1:
            recipe = {**config["recipes"][base["recipe"]], **overrides}
            for key in ("init_seed", "order_seed"):
                recipe[key] = seeds[0] if recipe.get(key) is None else recipe[key]
            run = json.dumps([arch, recipe], sort_keys=True)
            if run in runs:
                return runs[run]
            runs[run] = model
        models[model] = entry(arch, overrides, seeds)
        return model

    members = [Member("base", "base", base_model, base["seed"], epochs, "base", base["arch"])]
    members += [Member(f"plus{k}ep", f"plus{k}ep", base_model, base["seed"], epochs + k, "base", base["arch"])
                for k in extra]
    for condition, spec in experiment["conditions"].items():
        arch = spec.get("arch", base["arch"])
        overrides = {**base["overrides"], **spec["overrides"]}
        if "variants" in spec:
            variants = spec["variants"]
            for i, variant in enumerate(variants):
                model = f"{name}.{condition}.{i}"
                variant_arch = variant.get("arch", arch)
                recipe_keys = {k: v for k, v in variant.items() if k != "arch"}
                model = add(model, variant_arch, {**overrides, **recipe_keys}, [base["seed"]])
                label = condition if len(variants) == 1 else f"{condition}.{i}"
                members.append(Member(label, condition, model, base["seed"], epochs, spec["compare"], variant_arch))
        else:
            seeds = spec.get("seeds", [base["seed"]])
            model = add(f"{name}.{condition}", arch, overrides, seeds)
            for seed in seeds:
                label = condition if len(seeds) == 1 else f"{condition}.s{seed}"
                members.append(Member(label, condition, model, seed, epochs, spec["compare"], arch))
    return models, members


def _check_experiment(name: str, experiment: Mapping, config: Mapping, schema: dict) -> None:
    key = f"ddd.{name}"
    if "." in name:
        raise UserError(f"config key {key}: experiment names may not contain '.' (they prefix model names)")
    if experiment["dataset"] not in config["datasets"]:
        raise UserError(f"config key {key}.dataset: {experiment['dataset']!r} is not a dataset; define it under "
                        f"`datasets` (have: {', '.join(sorted(config['datasets']))})")
    reference = experiment["condition_order"]
    if reference is not None and (reference == name or reference not in config.get("ddd", {})):
        raise UserError(f"config key {key}.condition_order: {reference!r} is not another ddd experiment "
                        f"(have: {', '.join(sorted(set(config['ddd']) - {name}))})")
    if _check_sources(key, experiment, config):
        return
    base = experiment["base"]
    if base["recipe"] not in config["recipes"]:
        raise UserError(f"config key {key}.base.recipe: {base['recipe']!r} is not a recipe; define it under "
                        f"`recipes` (have: {', '.join(sorted(config['recipes']))})")
    recipe = _base_recipe(experiment, config)
    check_recipe(recipe, f"{key}.base.overrides", schema)
    for condition, spec in experiment["conditions"].items():
        _check_condition(condition, spec, recipe, base, f"{key}.conditions.{condition}", schema)
        _check_precision(experiment, recipe, {**recipe, **spec["overrides"]}, spec, f"{key}.conditions.{condition}")
    if experiment["rsa_images"] == 1:
        raise UserError(f"config key {key}.rsa_images: RSA needs at least 2 images (0 turns it off)")
    if not experiment["predictions_csv"] and not experiment["pretrained"]:  # those add models of their own
        _check_exceptions(key, experiment, base)


def _check_sources(key: str, experiment: Mapping, config: Mapping) -> bool:
    """Check pretrained models and per-image results; True when the experiment has no base run (nothing
    more to check)."""
    for label, entry in experiment["pretrained"].items():
        if "." in label or RESERVED_CONDITIONS.fullmatch(label):
            raise UserError(f"config key {key}.pretrained.{label}: pretrained model labels may not contain '.' "
                            "nor be 'base' or 'plus<k>ep'")
        recipe = entry.get("recipe")
        if recipe is not None and recipe not in config["recipes"]:
            raise UserError(f"config key {key}.pretrained.{label}.recipe: {recipe!r} is not a recipe; define it "
                            f"under `recipes` or leave it out (have: {', '.join(sorted(config['recipes']))})")
    if experiment["per_image_results"] is not None:
        others = [k for k in ("base", "conditions") if k in experiment]
        others += [k for k in ("predictions_csv", "pretrained") if experiment[k]]
        if others:
            raise UserError(f"config key {key}.per_image_results: published per-image results hold no decisions "
                            f"of single models, so they cannot be compared with {', '.join(others)}; declare them "
                            "in an experiment of their own")
        return True
    if "base" not in experiment or "conditions" not in experiment:
        if "base" in experiment or "conditions" in experiment or not (
                experiment["predictions_csv"] or experiment["pretrained"]):
            raise UserError(f"config key {key}: give a base run and conditions, or only models trained elsewhere "
                            "(predictions_csv, pretrained) or per_image_results")
        return True
    return False


def _check_condition(condition: str, spec: Mapping, recipe: dict, base: Mapping, where: str, schema: dict) -> None:
    if "." in condition or RESERVED_CONDITIONS.fullmatch(condition):
        raise UserError(f"config key {where}: condition names may not contain '.' nor be 'base' or "
                        "'plus<k>ep' (reserved for the base run and its extra epochs)")
    if "epochs" in spec["overrides"]:
        raise UserError(f"config key {where}.overrides.epochs: every condition trains the base's "
                        f"{recipe['epochs']} epochs; use extra_epochs for longer training")
    condition_recipe = {**recipe, **spec["overrides"]}
    if "variants" in spec:
        if "seeds" in spec:
            raise UserError(f"config key {where}: give either seeds or variants, not both")
        for i, variant in enumerate(spec["variants"]):
            _check_variant(variant, condition_recipe, f"{where}.variants.{i}", schema)
        count = len(spec["variants"])
    else:
        check_recipe(condition_recipe, f"{where}.overrides", schema)
        count = len(spec.get("seeds", [base["seed"]]))
    if spec["compare"] == "within" and count < 2:
        raise UserError(f"config key {where}.compare: 'within' compares the models of the condition with "
                        f"each other, but it has only {count}; add seeds or variants, or use 'base'")


def _check_precision(experiment: Mapping, base: dict, condition: dict, spec: Mapping, where: str) -> None:
    """Every member trains at the base's precision unless the experiment varies precision on purpose:
    otherwise a condition's errors would mix its own factor with floating-point differences."""
    if experiment["vary_precision"]:
        return
    variants = spec.get("variants", [{}])
    for i, variant in enumerate(variants):
        precision = variant.get("precision", condition["precision"])
        if precision != base["precision"]:
            at = f"{where}.variants.{i}" if "variants" in spec and "precision" in variant else f"{where}.overrides"
            raise UserError(f"config key {at}.precision: {precision} differs from the base run's {base['precision']}; "
                            "every member of a DDD experiment trains at one precision (set it in base.overrides), "
                            "or set vary_precision: true when precision is the factor the experiment studies")


def _check_variant(variant: Mapping, recipe: dict, where: str, schema: dict) -> None:
    allowed = set(schema["$defs"]["recipe"]["properties"]) | {"arch"}
    unknown = sorted(set(variant) - allowed)
    if unknown:
        raise UserError(f"config key {where}: unknown key(s) {', '.join(map(repr, unknown))}; a variant holds "
                        f"arch and recipe keys ({', '.join(sorted(allowed - {'arch'}))})")
    if "epochs" in variant:
        raise UserError(f"config key {where}.epochs: every condition trains the base's {recipe['epochs']} "
                        "epochs; use extra_epochs for longer training")
    if "arch" in variant and not isinstance(variant["arch"], str):
        raise UserError(f"config key {where}.arch: {variant['arch']!r} is not an architecture name")
    check_recipe({**recipe, **{k: v for k, v in variant.items() if k != "arch"}}, where, schema)


def _check_exceptions(key: str, experiment: Mapping, base: Mapping) -> None:
    """2 m < number of models in the difficulty set, or an image could be trivial and impossible."""
    conditions = experiment["conditions"].values()
    if experiment["models_per_condition"] == "last":
        n_models = 1 + len(experiment["extra_epochs"]) + len(experiment["conditions"])
    else:
        n_models = 1 + len(experiment["extra_epochs"]) + sum(
            len(spec["variants"]) if "variants" in spec else len(spec.get("seeds", [base["seed"]]))
            for spec in conditions)
    m = experiment["loose_max_exceptions"]
    if 2 * m >= n_models:
        raise UserError(f"config key {key}.loose_max_exceptions: {m} must be less than half of the {n_models} "
                        "models whose decisions define trivial / impossible images; lower it")
