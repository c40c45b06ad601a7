"""The DDD variant grid: config `ddd` -> models entries, members, validation errors, rule paths."""

from __future__ import annotations

import copy

import pytest

from pathologies.analysis import input_options
from pathologies.config import run_specs
from pathologies.ddd.grid import experiments
from pathologies.ddd.rules import DddRules
from pathologies.errors import UserError
from pathologies.experiments import validate


def paper_grid(**experiment) -> dict:
    """The appendix A.1 grid at the paper's counts (5 per multi-model condition) on a small recipe."""
    ddd = {
        "dataset": "noise",
        "base": {"arch": "small_cnn", "recipe": "r", "seed": 0},
        "extra_epochs": [1, 10],
        "conditions": {
            "optimizer": {"overrides": {"nesterov": True}},
            "half_batch": {"overrides": {"split_batch": True}},
            "init": {"overrides": {"order_seed": 0}, "seeds": [1, 2, 3, 4, 5]},
            "lr": {"variants": [{"lr": lr} for lr in (0.148, 0.149, 0.15, 0.151, 0.152)]},
            "nondeterministic": {"overrides": {"deterministic": False, "init_seed": 0, "order_seed": 0},
                                 "seeds": [1, 2, 3, 4, 5]},
            "data_order": {"overrides": {"init_seed": 0}, "seeds": [1, 2, 3, 4, 5]},
            "architecture": {"arch": "resnet20", "overrides": {"batch_size": 64}},
            "half_data": {"overrides": {"data_fraction": 0.5}},
            "combined": {"arch": "resnet20", "overrides": {"nesterov": True},
                         "variants": [{"lr": 0.148 + 0.001 * i, "init_seed": i, "order_seed": i}
                                      for i in range(1, 6)]},
            "different_data": {"compare": "within",
                               "variants": [{"data_fraction": 0.5, "data_part": 0},
                                            {"data_fraction": 0.5, "data_part": 1}]},
        },
    }
    ddd.update(experiment)
    return {"datasets": {"noise": {"kind": "gaussian"}},
            "recipes": {"r": {"lr": 0.1, "epochs": 4, "batch_size": 128}},
            "ddd": {"paper": ddd}}


def test_grid_expands_into_models_with_the_paper_counts():
    config = validate(paper_grid())
    runs = run_specs(config)
    experiment = experiments(config)["paper"]
    assert len(experiment.members) == 34  # 13 conditions: 1 + 2 (+k) + 1 + 1 + 5 + 5 + 5 + 5 + 1 + 1 + 5 + 2
    # "+k" members are epochs of the base run; half_data is part 0 of different_data: trained once
    assert len(experiment.runs()) == len(runs) == 31
    assert len({m.condition for m in experiment.members}) == 13
    assert sorted(config["models"]) == sorted(
        ["paper.base", "paper.optimizer", "paper.half_batch", "paper.init", "paper.nondeterministic",
         "paper.data_order", "paper.architecture", "paper.half_data"]
        + [f"paper.lr.{i}" for i in range(5)] + [f"paper.combined.{i}" for i in range(5)]
        + ["paper.different_data.1"])
    # The base trains epochs + max(extra); everything else trains the base recipe's epochs.
    assert runs[("paper.base", 0)].recipe["epochs"] == 14
    assert {spec.recipe["epochs"] for key, spec in runs.items() if key[0] != "paper.base"} == {4}
    by_label = {m.label: m for m in experiment.members}
    assert (by_label["base"].epoch, by_label["plus1ep"].epoch, by_label["plus10ep"].epoch) == (4, 5, 14)
    assert by_label["plus10ep"].model == "paper.base"
    assert by_label["different_data.0"].model == "paper.half_data"
    different = by_label["different_data.0"]
    assert (different.condition, different.compare) == ("different_data", "within")


def test_only_identical_runs_are_shared():
    """A different data seed, or a seed that is not the base's, makes another run."""
    grid = paper_grid()
    grid["ddd"]["paper"]["conditions"]["different_data"]["variants"][0]["data_seed"] = 1
    assert "paper.different_data.0" in validate(grid)["models"]
    grid = paper_grid()
    grid["ddd"]["paper"]["conditions"]["half_data"]["seeds"] = [3]
    assert "paper.different_data.0" in validate(grid)["models"]

def test_conditions_change_exactly_what_they_declare():
    runs = run_specs(validate(paper_grid()))
    base = runs[("paper.base", 0)].recipe
    assert (base["init_seed"], base["order_seed"], base["nesterov"]) == (0, 0, False)
    for seed in range(1, 6):
        assert (runs[("paper.init", seed)].recipe["init_seed"], runs[("paper.init", seed)].recipe["order_seed"]) \
            == (seed, 0)
        assert (runs[("paper.data_order", seed)].recipe["init_seed"],
                runs[("paper.data_order", seed)].recipe["order_seed"]) == (0, seed)
        nondeterministic = runs[("paper.nondeterministic", seed)].recipe
        assert (nondeterministic["deterministic"], nondeterministic["init_seed"], nondeterministic["order_seed"]) \
            == (False, 0, 0)
    assert [runs[(f"paper.lr.{i}", 0)].recipe["lr"] for i in range(5)] == [0.148, 0.149, 0.15, 0.151, 0.152]
    assert runs[("paper.optimizer", 0)].recipe["nesterov"] is True
    assert runs[("paper.half_batch", 0)].recipe["split_batch"] is True
    assert runs[("paper.half_data", 0)].recipe["data_fraction"] == 0.5
    assert (runs[("paper.architecture", 0)].arch, runs[("paper.architecture", 0)].recipe["batch_size"]) \
        == ("resnet20", 64)
    combined = [runs[(f"paper.combined.{i}", 0)] for i in range(5)]
    assert {c.arch for c in combined} == {"resnet20"} and all(c.recipe["nesterov"] for c in combined)
    assert [c.recipe["init_seed"] for c in combined] == [c.recipe["order_seed"] for c in combined] == [1, 2, 3, 4, 5]
    halves = [runs[(model, 0)].recipe for model in ("paper.half_data", "paper.different_data.1")]
    assert [(h["data_fraction"], h["data_part"]) for h in halves] == [(0.5, 0), (0.5, 1)]
    # Apart from what a condition declares (and the base's extra epochs and snapshots), every recipe is the base's.
    for (model, _seed), spec in runs.items():
        if model != "paper.base":
            differing = {k for k in base if spec.recipe[k] != base[k]}
            assert differing <= {"epochs", "snapshot_epochs", "nesterov", "split_batch", "init_seed", "order_seed",
                                 "lr", "deterministic", "batch_size", "data_fraction", "data_part"}, model


def test_members_labels_compare_and_dump_split():
    config = validate(paper_grid(split="train"))
    experiment = experiments(config)["paper"]
    labels = [m.label for m in experiment.members]
    assert labels[:3] == ["base", "plus1ep", "plus10ep"]
    assert "init.s3" in labels and "lr.4" in labels and "optimizer" in labels
    assert {m.compare for m in experiment.members if m.condition == "different_data"} == {"within"}
    assert {m.compare for m in experiment.members if m.condition != "different_data"} == {"base"}
    assert all(config["models"][m.model]["dump_splits"] == ["train"] for m in experiment.members)
    assert experiment.split == "train" and experiment.epochs == 4


def test_rsa_takes_each_condition_at_its_epoch_from_snapshots_of_the_base_run():
    config = validate(paper_grid())
    experiment = experiments(config)["paper"]
    rsa = experiment.rsa_members()
    assert [(m.label, m.epoch) for m in rsa][:4] == [("base", 4), ("plus1ep", 5), ("plus10ep", 14), ("optimizer", 4)]
    assert len(rsa) == 13 and "init.s1" in [m.label for m in rsa]
    base = config["models"]["paper.base"]["overrides"]
    assert (base["epochs"], base["snapshot_epochs"]) == (14, [4, 5])  # the final weights are epoch 14's
    no_extra = validate(paper_grid(extra_epochs=[]))["models"]["paper.base"]["overrides"]
    assert no_extra["epochs"] == 4 and "snapshot_epochs" not in no_extra


def test_expansion_is_idempotent_and_keeps_user_models():
    raw = paper_grid()
    raw["models"] = {"extra": {"dataset": "noise", "arch": "mlp", "recipe": "r"}}
    once = validate(raw)
    assert "extra" in once["models"] and "paper.base" in once["models"]
    assert validate(once) == once


def test_spec_json_locates_every_run():
    experiment = experiments(validate(paper_grid()))["paper"]
    spec = experiment.as_dict(lambda model, seed: f"runs/{model}/s{seed}")
    assert spec["members"][1]["predictions"] == "runs/paper.base/s0/predictions.h5"
    assert spec["members"][1]["checkpoint"] == "runs/paper.base/s0/model.pt"
    assert spec["rsa_members"][:3] == ["base", "plus1ep", "plus10ep"]
    assert (spec["n_boot"], spec["loose_max_exceptions"], spec["in_between_rule"]) == (1000, 1, "strict")


def _with(change) -> dict:
    config = paper_grid()
    change(config["ddd"]["paper"], config)
    return config


BAD = [
    (lambda e, c: e.update(dataset="cifar"), "config key ddd.paper.dataset: 'cifar' is not a dataset"),
    (lambda e, c: e["base"].update(recipe="fast"), "config key ddd.paper.base.recipe: 'fast' is not a recipe"),
    (lambda e, c: e["base"].update(overrides={"lr": -1}), "config key ddd.paper.base.overrides.lr:"),
    (lambda e, c: e["conditions"]["optimizer"]["overrides"].update(epochs=9),
     "config key ddd.paper.conditions.optimizer.overrides.epochs: every condition trains the base's 4 epochs"),
    (lambda e, c: e["conditions"]["lr"]["variants"].append({"lrr": 0.1}),
     "config key ddd.paper.conditions.lr.variants.5: unknown key(s) 'lrr'"),
    (lambda e, c: e["conditions"]["lr"]["variants"][0].update(lr="fast"),
     "config key ddd.paper.conditions.lr.variants.0.lr:"),
    (lambda e, c: e["conditions"]["lr"]["variants"][0].update(epochs=3),
     "config key ddd.paper.conditions.lr.variants.0.epochs"),
    (lambda e, c: e["conditions"].update(base={}), "config key ddd.paper.conditions.base: condition names"),
    (lambda e, c: e["conditions"].update(plus1ep={}), "config key ddd.paper.conditions.plus1ep: condition names"),
    (lambda e, c: e["conditions"].update({"a.b": {}}), "config key ddd.paper.conditions.a.b: condition names"),
    (lambda e, c: e["conditions"]["lr"].update(seeds=[1]),
     "config key ddd.paper.conditions.lr: give either seeds or variants, not both"),
    (lambda e, c: e["conditions"]["half_data"].update(compare="within"),
     "config key ddd.paper.conditions.half_data.compare: 'within'"),
    (lambda e, c: e["conditions"]["half_data"]["overrides"].update(data_part=2),
     "config key ddd.paper.conditions.half_data.overrides.data_part: 2 is out of range"),
    (lambda e, c: e.update(loose_max_exceptions=7), "config key ddd.paper.loose_max_exceptions: 7 must be less"),
    (lambda e, c: e.update(rsa_images=1), "config key ddd.paper.rsa_images"),
    (lambda e, c: e.update(colour="red"), "config key ddd.paper: unknown key(s) 'colour'"),
    (lambda e, c: e["conditions"]["init"].update(seeds=[]), "config key ddd.paper.conditions.init.seeds"),
    (lambda e, c: c.update(models={"paper.base": {"dataset": "noise", "arch": "mlp"}}),
     "config key models.paper.base: the name is also generated by ddd experiment 'paper'"),
    (lambda e, c: c.update(ddd={"a.b": e}), "config key ddd.a.b: experiment names may not contain '.'"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0].split()[-1] + str(i) for i, (_, m)
                                                      in enumerate(BAD)])
def test_bad_grid_is_one_line_naming_the_key(change, message):
    with pytest.raises(UserError) as caught:
        validate(_with(change))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_condition_order_names_another_experiment():
    grid = paper_grid(condition_order="paper")
    with pytest.raises(UserError, match="ddd.paper.condition_order: 'paper' is not another ddd experiment"):
        validate(grid)
    grid = paper_grid()
    grid["ddd"]["control"] = {**grid["ddd"]["paper"], "condition_order": "paper"}
    config = validate(grid)
    rules = DddRules(config, lambda m, s: f"{m}/{s}", lambda name: name)
    assert rules.condition_order("control") == ["results/ddd/paper/conditions.csv"]
    assert rules.condition_order("paper") == []
    assert input_options({"conditions": "c.csv", "order": []}) == ["--conditions", "c.csv"]
    assert input_options({"predictions": ["a b.h5", "c.h5"]}) == ["--predictions", "a b.h5", "c.h5"]


def test_a_config_needs_some_model():
    with pytest.raises(UserError, match="config key models: no models to train"):
        validate({"datasets": {"noise": {"kind": "gaussian"}}})


def test_rules_list_targets_by_dataset_kind_and_options():
    config = validate(paper_grid())
    rules = DddRules(config, lambda m, s: f"results/models/{m}/seed{s}", lambda name: f"results/data/{name}.h5")
    targets = rules.targets()
    assert "results/ddd/paper/figures/fig09_kl_accuracy.png" in targets  # a gaussian dataset
    assert "results/ddd/paper/kl_accuracy.csv" in targets and "results/ddd/paper/rsa.csv" in targets
    assert "results/ddd/paper/summary.txt" in targets
    # different_data's first is half_data
    assert len(rules.predictions("paper")) == 31 and len(rules.checkpoints("paper")) == 10
    assert rules.base_predictions("paper") == "results/models/paper.base/seed0/predictions.h5"
    assert rules.dataset("paper") == "results/data/noise.h5"

    raw = copy.deepcopy(paper_grid(rsa_images=0))
    raw["datasets"]["noise"] = {"kind": "digits"}
    plain = DddRules(validate(raw), lambda m, s: f"{m}/{s}", lambda name: name)
    targets = plain.targets()
    assert not any("fig09" in t or "kl_accuracy" in t or "rsa" in t for t in targets)
    assert plain.rsa_table("paper") == []
    with pytest.raises(UserError, match="results/ddd/nope is not a ddd experiment"):
        plain.spec("nope")
    assert input_options({"class_accuracy": "a.csv", "kappa": "k.csv"}) == [
        "--class-accuracy", "a.csv", "--kappa", "k.csv"]
