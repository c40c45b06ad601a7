"""The `overinterpretation` config: generated subset datasets and models, the job grid, clear errors."""

from __future__ import annotations

import copy

import pytest

from pathologies.config import run_specs
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.overinterp.grid import expand, percent_name
from pathologies.overinterp.rules import OverinterpRules
from pathologies.sis.jobs import sis_jobs

BASE = {
    "datasets": {"digits": {"kind": "digits"}, "noise": {"kind": "gaussian", "image_size": 8}},
    "recipes": {"quick": {"epochs": 3, "crop_padding": 2, "hflip": True}, "other": {"epochs": 1}},
    "models": {
        "cnn": {"dataset": "digits", "arch": "small_cnn", "recipe": "quick", "seeds": [0, 1]},
        "cnn_dropout": {"dataset": "digits", "arch": "small_cnn", "recipe": "quick",
                        "overrides": {"input_dropout_keep": 0.8}, "seeds": [0]},
    },
    "sis": {"runs": {"test": {"models": ["cnn"], "split": "test", "thresholds": [0.9, 0.99]},
                     "train": {"models": ["cnn"], "seeds": [0], "split": "train", "sample": 100}}},
    "overinterpretation": {"exp": {
        "source": {"model": "cnn", "seed": 0},
        "models": ["cnn", "cnn_dropout"],
        "fractions": [0.05, 0.125],
        "random_draws": 2,
        "retrain": {"fraction": 0.1, "replicates": 3, "archs": ["small_cnn", "mlp"], "augment": [False, True]},
        "ensembles": {"pair": {"members": [{"model": "cnn"}]}},
    }},
}


def config(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    raw["overinterpretation"]["exp"].update(changes)
    return validate(raw)


def test_percent_names():
    assert [percent_name(f) for f in (0.05, 0.1, 0.125, 1.0, 0.3)] == ["5", "10", "12p5", "100", "30"]


def test_generated_datasets_and_models_are_ordinary_config_entries():
    cfg = config()
    subsets = {name: d for name, d in cfg["datasets"].items() if d["kind"] == "pixel_subset"}
    # fractions 5, 12.5 and the retrain fraction 10; random draws: max(2 draws, 3 replicates)
    # and the mask-only control of the retrain fraction
    assert set(subsets) == {f"exp.{kind}" for pct in ("5", "12p5", "10")
                            for kind in (f"bs{pct}", *(f"random{pct}.d{d}" for d in range(3)))} | {"exp.mask10"}
    assert subsets["exp.random10.d2"]["path"] == "results/overinterp/exp/subsets/random10_d2.h5"
    bs = cfg["models"]["exp.mlp.bs10"]
    assert bs == {"dataset": "exp.bs10", "arch": "mlp", "recipe": "quick", "seeds": [0, 1, 2],
                  "overrides": {"crop_padding": 0, "hflip": False}, "dump_splits": ["test"]}
    augmented = cfg["models"]["exp.small_cnn.random10.d1.aug"]
    assert augmented["dataset"] == "exp.random10.d1" and augmented["seeds"] == [1]
    assert augmented["overrides"] == {"crop_padding": 4, "hflip": True}
    runs = run_specs(cfg)
    assert runs[("exp.small_cnn.bs10", 2)].recipe["crop_padding"] == 0
    # (bs, random, mask-only control) x 2 archs x (aug, not) x 3 replicates
    assert len([key for key in runs if key[0].startswith("exp.")]) == 3 * 2 * 2 * 3


def test_retraining_with_its_own_recipe_drops_the_source_overrides():
    cfg = config(retrain={"recipe": "other", "overrides": {"lr": 0.01}, "replicates": 1, "subsets": ["bs"]})
    assert cfg["models"]["exp.small_cnn.bs5"] == {
        "dataset": "exp.bs5", "arch": "small_cnn", "recipe": "other", "seeds": [0], "dump_splits": ["test"],
        "overrides": {"lr": 0.01, "crop_padding": 0, "hflip": False}}


def test_evaluation_grid():
    cfg = config()
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    pre = [e for e in experiment.evaluations if e.role == "pretrained"]
    bs = [e for e in pre if e.eval_on == "bs"]
    # BS subsets: only the source run, every fraction
    assert {(e.model, e.seed) for e in bs} == {("cnn", 0)} and len(bs) == 3
    # every pretrained run (models + ensemble members): full images + 3 fractions x 2 random draws
    runs = {("cnn", 0), ("cnn", 1), ("cnn_dropout", 0)}
    for run in runs:
        mine = [e for e in pre if (e.model, e.seed) == run and e.eval_on != "bs"]
        assert len(mine) == 1 + 3 * 2
        assert {e.draw for e in mine if e.eval_on == "random"} == {0, 1}
    re = [e for e in experiment.evaluations if e.model == "exp.mlp.random10.d2.aug"]
    assert [(e.eval_dataset, e.eval_on) for e in re] == [("digits", "full"), ("exp.random10.d2", "random")]
    assert all(e.path == "results/overinterp/exp/eval/exp.mlp.random10.d2.aug/seed2.h5" for e in re)
    assert {(e.train_on, e.condition) for e in re} == {("random", "mlp.random10.aug")}
    # SIS files: the declared runs of the evaluated models, calibrated ones, the ensemble
    variants = sorted((s.model, s.seed, s.split, s.variant) for s in experiment.sis_files)
    assert variants == [("cnn", 0, "test", "calibrated"), ("cnn", 0, "test", "original"),
                        ("cnn", 0, "train", "original"), ("cnn", 1, "test", "original"),
                        ("pair", -1, "test", "ensemble")]
    assert set(experiment.calibrations) == runs and experiment.calibrated_sis == [("cnn", 0)]


def test_rules_helper_gives_paths_and_arguments():
    cfg = config()
    rules = OverinterpRules(cfg, run_specs(cfg), lambda m, s: f"results/models/{m}/seed{s}",
                            lambda name: cfg["datasets"][name].get("path", f"results/data/{name}.h5"))
    assert rules.subset_sis("exp") == {"train": "results/sis/train/cnn/seed0/digits/train.h5",
                                       "test": "results/sis/test/cnn/seed0/digits/test.h5"}
    args = " ".join(rules.subset_args("exp"))
    assert "--subset random 0.05 1 exp.random5.d1 results/overinterp/exp/subsets/random5_d1.h5" in args
    assert args.count("--subset") == len(rules.subset_files("exp")) == 3 * 4 + 1
    assert "--subset mask 0.1 -1 exp.mask10 results/overinterp/exp/subsets/mask10.h5" in args
    assert "--masking" not in args
    assert list(rules.eval_datasets("exp", "cnn", "0"))[:2] == ["digits", "exp.bs5"]
    assert rules.eval_datasets("exp", "exp.small_cnn.bs10", 1) == {
        "digits": "results/data/digits.h5", "exp.bs10": "results/overinterp/exp/subsets/bs10.h5"}
    assert rules.ensemble_checkpoints("exp", "pair") == ["results/models/cnn/seed0/model.pt",
                                                          "results/models/cnn/seed1/model.pt"]
    targets = rules.targets()
    assert "results/overinterp/exp/tables/tables.md" in targets
    assert "results/overinterp/exp/figures/ensemble_pair.png" in targets
    with pytest.raises(UserError, match="not an overinterpretation experiment"):
        rules.experiment("nope")


@pytest.mark.parametrize("changes, match", [
    ({"source": {"model": "nope"}}, "source.model: 'nope' is not a model"),
    ({"source": {"model": "cnn", "seed": 7}}, "has no seed 7"),
    ({"models": ["cnn", "ghost"]}, "models.1: 'ghost' is not a model"),
    ({"shifted": ["cifar"]}, "shifted.0: 'cifar' is not a dataset"),
    ({"threshold": 0.5}, "threshold: 0.5 is not among the thresholds"),
    ({"ensembles": {"one": {"members": [{"model": "cnn", "seeds": [0]}]}}}, "at least 2"),
    ({"ensembles": {"e": {"members": [{"model": "cnn", "seeds": [3]}]}}}, "has no seed(s) [3]"),
    ({"retrain": {"recipe": "missing"}}, "retrain.recipe: 'missing' is not a recipe"),
    ({"retrain": {"overrides": {"lr": -1}}}, "overinterpretation.exp.retrain.lr"),
])
def test_bad_experiments_are_one_line_errors_naming_the_key(changes, match):
    with pytest.raises(UserError, match=match.replace("(", "\\(").replace(")", "\\)").replace("[", "\\[")
                       .replace("]", "\\]")):
        config(**changes)


def test_missing_sis_runs_say_what_to_add():
    raw = copy.deepcopy(BASE)
    del raw["sis"]["runs"]["train"]
    with pytest.raises(UserError, match="no SIS of cnn seed 0 on digits/train is declared.*add a `sis.runs` entry"):
        validate(raw)
    raw["overinterpretation"]["exp"]["retrain"] = None
    assert not any(name.startswith("exp.") for name in validate(raw)["models"])  # no retraining: no train SIS


def test_schema_rejects_bad_values():
    with pytest.raises(UserError, match="fractions"):
        config(fractions=[0.0])
    raw = copy.deepcopy(BASE)
    raw["overinterpretation"]["a.b"] = raw["overinterpretation"].pop("exp")
    with pytest.raises(UserError, match="overinterpretation"):
        validate(raw)


def test_a_generated_name_that_is_taken_is_an_error():
    raw = copy.deepcopy(BASE)
    raw["models"]["exp.small_cnn.bs10"] = {"dataset": "digits", "arch": "mlp", "recipe": "quick"}
    with pytest.raises(UserError, match="models.exp.small_cnn.bs10: the name is also generated"):
        validate(raw)


def test_mask_only_controls_beside_every_bs_retraining_and_noisy_linear_masking():
    cfg = config()
    assert cfg["datasets"]["exp.mask10"]["subset"] == "mask"
    for arch in ("small_cnn", "mlp"):
        for suffix in ("", ".aug"):
            model = cfg["models"][f"exp.{arch}.mask10{suffix}"]
            assert model["dataset"] == "exp.mask10" and model["seeds"] == [0, 1, 2]
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    mask = [e for e in experiment.evaluations if e.model == "exp.mlp.mask10"]
    assert {(e.seed, e.eval_dataset, e.train_on, e.eval_on) for e in mask} == {
        (seed, dataset, "mask", on) for seed in range(3) for dataset, on in (("digits", "full"), ("exp.mask10", "mask"))
    }
    assert not any(e.eval_on == "mask" for e in experiment.evaluations if e.role == "pretrained")
    off = config(retrain={"fraction": 0.1, "mask_control": False})
    assert not any(".mask" in name for name in off["models"])
    random_only = config(retrain={"fraction": 0.1, "subsets": ["random"]})
    assert not any(".mask" in name for name in random_only["datasets"])
    imputed = config(masking="noisy_linear")
    rules = OverinterpRules(imputed, run_specs(imputed), lambda m, s: f"results/models/{m}/seed{s}",
                            lambda name: imputed["datasets"][name].get("path", f"results/data/{name}.h5"))
    assert " --masking noisy_linear " in " ".join(rules.subset_args("exp"))
    with pytest.raises(UserError, match="masking"):
        config(masking="blur")


def test_reference_rounding_and_random_draw_reach_the_subsets_job():
    def args(cfg):
        rules = OverinterpRules(cfg, run_specs(cfg), lambda m, s: f"results/models/{m}/seed{s}",
                                lambda name: cfg["datasets"][name].get("path", f"results/data/{name}.h5"))
        return rules.subset_args("exp")

    default = args(config())
    assert "--rounding" not in default and "--random-draw" not in default
    paper = args(config(subset_rounding="ceil", random_draw="reference"))
    assert " --rounding ceil --random-draw reference " in " ".join(paper)
    with pytest.raises(UserError, match="subset_rounding"):
        config(subset_rounding="floor")


def test_a_second_sis_run_of_the_source_must_be_chosen_in_sis_runs():
    raw = copy.deepcopy(BASE)
    raw["sis"]["runs"]["ties"] = {"models": ["cnn"], "seeds": [0], "split": "test", "sample": 10,
                                  "tie_break": "random", "repeats": 3}
    with pytest.raises(UserError, match=r"overinterpretation\.exp\.source\.sis_runs: SIS runs test, ties\.r0, "
                                        r"ties\.r1, ties\.r2 all extract cnn seed 0 on digits/test"):
        validate(raw)
    raw["overinterpretation"]["exp"]["source"]["sis_runs"] = ["test", "train"]
    cfg = validate(raw)
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    assert experiment.source_sis("test") == "results/sis/test/cnn/seed0/digits/test.h5"
    assert not any("/ties" in s.path for s in experiment.sis_files)
    raw["overinterpretation"]["exp"]["source"]["sis_runs"] = ["nope"]
    with pytest.raises(UserError, match=r"source\.sis_runs\.0: 'nope' is not a run"):
        validate(raw)


def test_shifted_test_sets_are_evaluated_and_their_sis_analysed():
    raw = copy.deepcopy(BASE)
    raw["datasets"].update({"c10c": {"kind": "cifar10c", "corruptions": ["fog"], "severities": [1, 5]},
                            "c101": {"kind": "cifar10.1"}})
    raw["sis"]["runs"]["shifted"] = {"models": ["cnn"], "seeds": [0], "dataset": "c10c", "split": "fog_s5",
                                     "sample": 100}
    raw["overinterpretation"]["exp"].update(shifted=["c10c", "c101"], retrain=None)
    cfg = validate(raw)
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    full = {(e.model, e.seed, e.eval_dataset) for e in experiment.evaluations if e.eval_on == "full"}
    assert {("cnn", 1, "c10c"), ("cnn", 1, "c101"), ("cnn_dropout", 0, "c10c")} <= full
    sis_files = {(s.path, s.dataset) for s in experiment.sis_files}
    assert ("results/sis/shifted/cnn/seed0/c10c/fog_s5.h5", "c10c") in sis_files


def test_shifted_test_sets_with_source_sis_get_pixel_subsets_of_their_own():
    raw = copy.deepcopy(BASE)
    raw["datasets"].update({"c10c": {"kind": "cifar10c", "corruptions": ["fog"], "severities": [1, 5]},
                            "c101": {"kind": "cifar10.1"}})
    raw["sis"]["runs"]["shifted"] = {"models": ["cnn"], "seeds": [0], "dataset": "c10c", "split": "fog_s5",
                                     "sample": 100}
    raw["overinterpretation"]["exp"].update(shifted=["c10c", "c101"])
    cfg = validate(raw)
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    shifted = {name: s for name, s in experiment.subsets.items() if s.source == "c10c"}
    percents = ("5", "12p5", "10")  # fractions and the retraining fraction; 3 draws (= replicates)
    assert set(shifted) == {f"exp.c10c.bs{pct}" for pct in percents} | {
        f"exp.c10c.random{pct}.d{draw}" for pct in percents for draw in range(3)} | {"exp.c10c.mask10"}
    assert shifted["exp.c10c.bs5"].splits == ("fog_s5",)
    assert shifted["exp.c10c.bs5"].path == "results/overinterp/exp/subsets/c10c/bs5.h5"
    assert not any(s.source == "c101" for s in experiment.subsets.values())  # no SIS of the source on it
    assert cfg["datasets"]["exp.c10c.bs5"]["kind"] == "pixel_subset"

    on_shifted = {(e.model, e.seed, e.eval_dataset, e.eval_on) for e in experiment.evaluations if e.test_set == "c10c"}
    assert ("cnn", 0, "exp.c10c.bs5", "bs") in on_shifted           # the source on its BS subsets
    assert ("cnn", 1, "exp.c10c.bs5", "bs") not in on_shifted       # BS subsets are the source's alone
    assert ("cnn", 1, "exp.c10c.random5.d1", "random") in on_shifted
    assert ("exp.mlp.bs10", 2, "exp.c10c.bs10", "bs") in on_shifted  # retrained on BS, evaluated on shifted BS
    assert ("exp.small_cnn.random10.d2", 2, "exp.c10c.random10.d2", "random") in on_shifted
    assert ("exp.small_cnn.random10.d2", 2, "exp.c10c.random10.d1", "random") not in on_shifted

    rules = OverinterpRules(cfg, run_specs(cfg), lambda m, s: f"results/models/{m}/seed{s}",
                            lambda name: cfg["datasets"][name].get("path", f"results/data/{name}.h5"))
    assert rules.subset_origins("exp") == ["digits", "c10c"]
    assert rules.subset_sis("exp", "c10c") == {"fog_s5": "results/sis/shifted/cnn/seed0/c10c/fog_s5.h5"}
    assert " --stream c10c " in " ".join(rules.subset_args("exp", "c10c"))
    assert "--stream" not in rules.subset_args("exp")
    assert rules.dataset("exp", "c10c") == "results/data/c10c.h5"
    assert all(path.startswith("results/overinterp/exp/subsets/c10c/") for path in rules.subset_files("exp", "c10c"))
    assert not any("/c10c/" in path for path in rules.subset_files("exp"))


def test_human_benchmark_mixes_source_models_and_scores_answer_files():
    raw = copy.deepcopy(BASE)
    raw["sis"]["runs"]["test"]["models"] = ["cnn", "cnn_dropout"]
    raw["overinterpretation"]["exp"]["human_benchmark"] = {"models": ["cnn", "cnn_dropout"], "shares": [35, 65],
                                                           "answers": ["answers/a.json", "answers/b.json"]}
    cfg = validate(raw)
    rules = OverinterpRules(cfg, run_specs(cfg), lambda m, s: f"results/models/{m}/seed{s}",
                            lambda name: cfg["datasets"][name].get("path", f"results/data/{name}.h5"))
    assert rules.human_benchmark_sis("exp") == ["results/sis/test/cnn/seed0/digits/test.h5",
                                                "results/sis/test/cnn_dropout/seed0/digits/test.h5"]
    assert " ".join(rules.human_benchmark_args("exp")).startswith(
        "--sis results/sis/test/cnn/seed0/digits/test.h5 --sis results/sis/test/cnn_dropout/seed0/digits/test.h5 "
        "--shares 35.0 65.0 --fractions")
    assert rules.human_answers("exp") == ["answers/a.json", "answers/b.json"]
    assert "results/overinterp/exp/tables/human_accuracy.csv" in rules.targets()
    raw["overinterpretation"]["exp"]["human_benchmark"]["shares"] = [1]
    with pytest.raises(UserError, match="human_benchmark.shares: 1 shares for 2 model"):
        validate(raw)
    raw["sis"]["runs"]["test"]["models"] = ["cnn"]
    with pytest.raises(UserError, match=r"human_benchmark\.models\.1: 'cnn_dropout' seed 0 has no SIS"):
        validate(raw)


def test_reference_augment_mode_trains_plus_on_once_augmented_subsets_without_per_epoch_augmentation():
    """augment_mode 'reference': each (+) replicate r on its own once-augmented train split (draw r), no crop or
    flip in training, evaluated on the un-augmented test subsets; one mask-only control, without augmentation."""
    retrain = {"fraction": 0.1, "replicates": 2, "archs": ["small_cnn"], "augment": [False, True],
               "augment_mode": "reference", "augmentation": {"crop_padding": 3}}
    cfg = config(retrain=retrain, shifted=[])
    once = {name: d for name, d in cfg["datasets"].items() if name.endswith(".aug")}
    assert set(once) == {f"exp.{kind}10.d{r}.aug" for kind in ("bs", "random") for r in range(2)}
    assert once["exp.bs10.d1.aug"]["path"] == "results/overinterp/exp/subsets/bs10_d1_aug.h5"
    runs = run_specs(cfg)
    plus = {name: m for name, m in cfg["models"].items() if name.endswith(".aug")}
    assert set(plus) == {f"exp.small_cnn.{kind}10.d{r}.aug" for kind in ("bs", "random") for r in range(2)}
    for name, model in plus.items():
        seed = int(name.split(".d")[1][0])
        assert model["dataset"] == name.replace(".small_cnn", "") and model["seeds"] == [seed]
        assert runs[(name, seed)].recipe["crop_padding"] == 0 and runs[(name, seed)].recipe["hflip"] is False
    assert cfg["models"]["exp.small_cnn.mask10"]["seeds"] == [0, 1]
    assert not any(".mask10.aug" in name for name in cfg["models"])  # the kept positions are not augmented
    experiment = expand("exp", cfg["overinterpretation"]["exp"], cfg, sis_jobs(cfg, run_specs(cfg)))
    assert experiment.options["augment_mode"] == "reference"
    plus_evals = {(e.model, e.seed, e.eval_dataset, e.condition, e.augment) for e in experiment.evaluations
                  if e.eval_on != "full" and e.augment}
    assert plus_evals == {(f"exp.small_cnn.bs10.d{r}.aug", r, "exp.bs10", "small_cnn.bs10.aug", True)
                          for r in range(2)} | {
        (f"exp.small_cnn.random10.d{r}.aug", r, f"exp.random10.d{r}", "small_cnn.random10.aug", True)
        for r in range(2)}
    assert not any(e.eval_dataset.endswith(".aug") for e in experiment.evaluations)
    rules = OverinterpRules(cfg, runs, lambda m, s: f"results/models/{m}/seed{s}",
                            lambda name: cfg["datasets"][name].get("path", f"results/data/{name}.h5"))
    args = " ".join(rules.subset_args("exp"))
    assert ("--augmented-subset bs 0.1 1 exp.bs10.d1.aug results/overinterp/exp/subsets/bs10_d1_aug.h5" in args
            and "--augmented-subset random 0.1 0 exp.random10.d0.aug" in args)
    assert args.endswith("--crop-padding 3 --hflip")
    assert "results/overinterp/exp/subsets/bs10_d1_aug.h5" in rules.subset_files("exp")
    assert not any(path.endswith("_aug.h5") for path in rules.bs_subsets("exp"))
    aligned = config(retrain={**retrain, "augment_mode": "aligned"})
    assert not any(name.endswith(".aug") for name in aligned["datasets"])
    assert run_specs(aligned)[("exp.small_cnn.bs10.aug", 1)].recipe["crop_padding"] == 3
    assert "--augmented-subset" not in OverinterpRules(
        aligned, run_specs(aligned), lambda m, s: "", lambda name: "").subset_args("exp")
    with pytest.raises(UserError, match="augment_mode"):
        config(retrain={**retrain, "augment_mode": "sometimes"})


def test_reference_augment_mode_is_refused_on_an_image_index():
    raw = copy.deepcopy(BASE)
    raw["datasets"]["digits"] = {"kind": "imagenet"}
    raw["overinterpretation"]["exp"]["retrain"]["augment_mode"] = "reference"
    with pytest.raises(UserError, match=r"retrain\.augment_mode: 'reference' augments stored train images once, "
                                        r"but 'digits' is an ImageNet index"):
        validate(raw)


def test_the_cifar10_paper_config_trains_plus_as_the_authors_code():
    """config/cifar10_overinterpretation.yaml: (+) = augmentation once before masking (augment_mode 'reference')."""
    import yaml

    from conftest import ROOT

    cfg = validate(yaml.safe_load((ROOT / "config" / "cifar10_overinterpretation.yaml").read_text()))
    runs = run_specs(cfg)
    for name in ("resnet20", "resnet18", "vgg16_bn"):
        assert cfg["overinterpretation"][name]["retrain"]["augment_mode"] == "reference"
        for r in range(5):
            dataset = cfg["datasets"][f"{name}.bs5.d{r}.aug"]
            assert dataset["path"] == f"results/overinterp/{name}/subsets/bs5_d{r}_aug.h5"
            model = f"{name}.vgg16_bn.bs5.d{r}.aug"
            assert cfg["models"][model]["dataset"] == f"{name}.bs5.d{r}.aug"
            assert (runs[(model, r)].recipe["crop_padding"], runs[(model, r)].recipe["hflip"]) == (0, False)
        assert f"{name}.resnet20.mask5" in cfg["models"] and f"{name}.resnet20.mask5.aug" not in cfg["models"]
    assert "resnet20.random5.d3.aug" in cfg["datasets"] and "resnet20.resnet18.random5.d3.aug" in cfg["models"]
    source = runs[("cifar10_resnet20", 0)].recipe  # the full-image models: RandomCrop(32, padding=4) pads black
    assert (source["crop_padding"], source["crop_fill"], source["hflip"]) == (4, "black", True)
