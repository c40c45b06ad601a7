"""Bad-input catalogue: config keys, YAML files, command-line options and input files a user gets wrong.

Each case states its exact expectation: one line (no traceback) that names the key, option or file,
the exit status where a command runs, and no output (or temporary file) left behind. Config mistakes
are caught before any job runs; the Snakemake cases check that through real ``snakemake`` calls.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, make_quadrant_dataset, make_spec
from overinterp_fixtures import save_untrained_model
from pathologies.config import load_schema
from pathologies.errors import UserError
from pathologies.experiments import load, validate
from pathologies.io import h5py
from pathologies.training.predictions import check_targets, load_predictions_csv, read_dump

DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


# ---------------------------------------------------------------------------------------------
# config keys, types and values (the default config with one mistake each)


def _set(path: str, value):
    def change(config):
        *parents, last = path.split("/")
        node = config
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return change


_DELETE = object()

CONFIG_CASES = {
    # key, type and value mistakes the schema catches
    "unknown_top_level_key": (_set("colour", "blue"), "config key <top level>: unknown key(s) 'colour'"),
    "threads_not_a_number": (_set("train_threads", "two"), "config key train_threads: 'two' is not of type 'integer'"),
    "threads_zero": (_set("train_threads", 0), "config key train_threads: 0 is less than the minimum of 1"),
    "device_unknown": (_set("device", "tpu"), "config key device: 'tpu' is not one of auto, cpu, cuda"),
    "recipe_unknown_key": (_set("recipes/quick/learning_rate", 0.1),
                           "config key recipes.quick: unknown key(s) 'learning_rate'"),
    "lr_negative": (_set("models/digits_cnn/overrides", {"lr": -1}),
                    "config key models.digits_cnn.overrides.lr: -1 is less than or equal to the minimum of 0"),
    "lr_as_text": (_set("models/digits_cnn/overrides", {"lr": "0.1"}),
                   "config key models.digits_cnn.overrides.lr: '0.1' is not of type 'number'"),
    "batch_size_zero": (_set("recipes/quick/batch_size", 0), "config key recipes.quick.batch_size: 0 is less than"),
    "epochs_negative": (_set("recipes/quick/epochs", -1), "config key recipes.quick.epochs: -1 is less than"),
    "data_fraction_zero": (_set("models/digits_cnn/overrides", {"data_fraction": 0}),
                           "config key models.digits_cnn.overrides.data_fraction: 0 is less than or equal"),
    "data_fraction_above_one": (_set("models/digits_cnn/overrides", {"data_fraction": 1.5}),
                                "config key models.digits_cnn.overrides.data_fraction: 1.5 is greater than"),
    "seed_negative": (_set("models/digits_cnn/seeds", [-1]), "config key models.digits_cnn.seeds.0: -1 is less than"),
    "seeds_repeated": (_set("models/digits_cnn/seeds", [0, 0]), "config key models.digits_cnn.seeds: [0, 0] has "
                                                                "non-unique elements"),
    "dataset_seed_beyond_32_bits": (_set("datasets/digits/seed", 2**32),
                                    "config key datasets.digits.seed: 4294967296 is greater than the maximum of "
                                    "4294967295"),
    "init_seed_beyond_32_bits": (_set("models/digits_cnn/overrides", {"init_seed": 2**40}),
                                 "config key models.digits_cnn.overrides.init_seed"),
    "dataset_without_kind": (_set("datasets/digits/kind", _DELETE),
                             "config key datasets.digits: 'kind' is a required property; add it"),
    "dataset_unknown_kind": (_set("datasets/digits/kind", "svhn"), "config key datasets.digits.kind: 'svhn' is not"),
    "gaussian_option_of_digits": (_set("datasets/digits/std_step", 2.0),
                                  "config key datasets.digits: unknown key(s) 'std_step'"),
    "test_fraction_one": (_set("datasets/digits/test_fraction", 1.0), "config key datasets.digits.test_fraction"),
    "gaussian_no_test_images": (_set("datasets/gaussian/test_per_class", 0),
                                "config key datasets.gaussian.test_per_class: 0 is less than the minimum of 1"),
    "model_name_with_space": (_set("models/my model", {"dataset": "digits", "arch": "mlp"}),
                              "config key models: name 'my model' must start with a letter or digit"),
    # names become paths and shell words: anything but letters, digits, '_' and '.' is refused
    "model_name_shell": (_set("models/a;touch x", {"dataset": "digits", "arch": "mlp"}),
                         "config key models: name 'a;touch x' must start with a letter or digit"),
    "dataset_name_option": (_set("datasets/-rf", {"kind": "digits"}), "config key datasets: name '-rf' must start"),
    "dump_split_unknown": (_set("models/digits_cnn/dump_splits", ["val"]),
                           "config key models.digits_cnn.dump_splits.0: 'val' is not one of test, train"),
    # references between keys
    "model_dataset_undefined": (_set("models/digits_cnn/dataset", "cifar10"),
                                "config key models.digits_cnn.dataset: 'cifar10' is not a dataset"),
    "model_recipe_undefined": (_set("models/digits_cnn/recipe", "fast"),
                               "config key models.digits_cnn.recipe: 'fast' is not a recipe"),
    "no_models": (lambda c: (c.pop("models"), c.pop("ddd"), c.pop("sis"), c.pop("overinterpretation")),
                  "config key models: no models to train"),
    # architectures: checked against the registry before any job
    "arch_unknown": (_set("models/digits_cnn/arch", "resnet9"),
                     "config key models.digits_cnn.arch: 'resnet9' is not one of small_cnn, mlp, resnet20"),
    "ddd_base_arch_unknown": (_set("ddd/gaussian_variants/base/arch", "cnn"),
                              "config key ddd.gaussian_variants.base.arch: 'cnn' is not one of"),
    "ddd_condition_arch_unknown": (_set("ddd/gaussian_variants/conditions/architecture/arch", "ResNet20"),
                                   "config key ddd.gaussian_variants.conditions.architecture.arch: 'ResNet20'"),
    "retrain_arch_unknown": (_set("overinterpretation/digits/retrain/archs", ["small_cnn", "vit"]),
                             "config key overinterpretation.digits.retrain.archs.1: 'vit' is not one of"),
    # values only the expanded config can check
    "data_part_out_of_range": (_set("models/digits_cnn/overrides", {"data_fraction": 0.25, "data_part": 4}),
                               "config key models.digits_cnn.overrides.data_part: 4 is out of range"),
    "data_parts_without_images": (_set("models/digits_cnn/overrides", {"data_fraction": 0.0001}),
                                  "config key models.digits_cnn: data_fraction 0.0001 cuts the 1347 training images"),
    "snapshot_after_last_epoch": (_set("models/digits_cnn/overrides", {"snapshot_epochs": [99]}),
                                  "config key models.digits_cnn: snapshot_epochs [99] lie beyond its"),
    "sis_split_missing": (_set("sis/runs/gaussian_gradient/split", "validation"),
                          "config key sis.runs.gaussian_gradient.split: dataset 'gaussian' has no split "
                          "'validation' (it has test, train)"),
    "sis_sample_too_large": (_set("sis/runs/digits_exact/sample", 5000),
                             "config key sis.runs.digits_exact.sample: 5000 images exceed the 450 images of "
                             "digits/test"),
    # CIFAR-10-C's `mixed` split: its size is the config's mixed_sample (default corruptions and severities)
    "sis_sample_beyond_mixed_sample": (
        lambda c: (_set("datasets/c10c", {"kind": "cifar10c", "mixed_sample": 10})(c),
                   _set("sis/runs/c10c_mixed", {"models": ["digits_cnn"], "dataset": "c10c", "split": "mixed",
                                                "sample": 20})(c)),
        "config key sis.runs.c10c_mixed.sample: 20 images exceed the 10 images of c10c/mixed"),
    "sis_split_of_cifar10c_missing": (
        lambda c: (_set("datasets/c10c", {"kind": "cifar10c"})(c),
                   _set("sis/runs/c10c_mixed", {"models": ["digits_cnn"], "dataset": "c10c", "split": "mixed"})(c)),
        "config key sis.runs.c10c_mixed.split: dataset 'c10c' has no split 'mixed' (it has brightness_s1,"),
    # precision and GPUs of a training run (docs/training_at_scale.md)
    "precision_unknown": (_set("recipes/quick/precision", "fp8"),
                          "config key recipes.quick.precision: 'fp8' is not one of fp32, bf16, fp16"),
    "gpus_zero": (_set("models/digits_cnn/overrides", {"gpus": 0}),
                  "config key models.digits_cnn.overrides.gpus: 0 is less than the minimum of 1"),
    "gpus_as_text": (_set("recipes/quick/gpus", "two"),
                     "config key recipes.quick.gpus: 'two' is not of type 'integer'"),
    "grad_accumulation_zero": (_set("recipes/quick/grad_accumulation", 0),
                               "config key recipes.quick.grad_accumulation: 0 is less than the minimum of 1"),
    "batch_smaller_than_gpus_times_accumulation": (
        _set("models/digits_cnn/overrides", {"gpus": 8, "grad_accumulation": 16}),
        "config key models.digits_cnn.overrides.batch_size: 64 images cannot be split over 8 GPU(s) x 16"),
    "fp16_on_cpu": (
        lambda c: (_set("device", "cpu")(c), _set("recipes/quick/precision", "fp16")(c)),
        "config key models.digits_cnn: recipe precision fp16 needs a CUDA GPU but config key device is cpu"),
    "ddd_condition_mixes_precision": (
        _set("ddd/gaussian_variants/conditions/optimizer/overrides", {"nesterov": True, "precision": "bf16"}),
        "config key ddd.gaussian_variants.conditions.optimizer.overrides.precision: bf16 differs from the base "
        "run's fp32"),
    "ddd_variant_mixes_precision": (
        _set("ddd/gaussian_variants/conditions/lr/variants", [{"lr": 0.048}, {"lr": 0.052, "precision": "bf16"}]),
        "config key ddd.gaussian_variants.conditions.lr.variants.1.precision: bf16 differs"),
    "sis_model_undefined": (_set("sis/runs/digits_exact/models", ["nope"]),
                            "config key sis.runs.digits_exact.models: 'nope' is not a model"),
    "sis_threshold_above_one": (_set("sis/runs/digits_exact/thresholds", [1.5]),
                                "config key sis.runs.digits_exact.thresholds.0: 1.5 is greater than the maximum"),
    "sis_tune_batch_size_not_boolean": (_set("sis/tune_batch_size", "yes"),
                                        "config key sis.tune_batch_size: 'yes' is not of type 'boolean'"),
}


def test_config_cases_start_from_a_valid_config():
    assert "digits_exact" in DEFAULT["sis"]["runs"] and "quick" in DEFAULT["recipes"]
    validate(copy.deepcopy(DEFAULT))


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value_is_one_line_naming_the_key(case):
    change, expected = CONFIG_CASES[case]
    config = copy.deepcopy(DEFAULT)
    change(config)
    with pytest.raises(UserError) as caught:
        validate(config)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert "unknown key" not in message or "unknown_key" in case or "option_of" in case or "top_level" in case


def test_a_ddd_experiment_may_vary_precision_when_it_declares_so():
    config = copy.deepcopy(DEFAULT)
    experiment = config["ddd"]["gaussian_variants"]
    experiment["conditions"]["optimizer"]["overrides"]["precision"] = "bf16"
    experiment["vary_precision"] = True
    models = validate(config)["models"]
    assert models["gaussian_variants.optimizer"]["overrides"]["precision"] == "bf16"


def test_schema_architectures_are_the_registry_ones():
    from pathologies.models.registry import ARCHITECTURES

    assert load_schema()["$defs"]["arch"]["enum"] == list(ARCHITECTURES)


# ---------------------------------------------------------------------------------------------
# config files


YAML_CASES = {
    "model_twice": ("models:\n  m: {dataset: d, arch: mlp}\n  m: {dataset: d, arch: small_cnn}\n",
                    "line 5: key 'm' appears twice in one mapping (also on line 4)"),
    "lr_twice": ("recipes:\n  r:\n    lr: 0.1\n    epochs: 2\n    lr: 0.5\n",
                 "line 7: key 'lr' appears twice in one mapping (also on line 5)"),
    "invalid_yaml": ("models: [unclosed\n", "is not valid YAML"),
    "not_a_mapping": ("- datasets\n- models\n", "must hold a mapping of config keys, not a list"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_config_file_is_one_line_naming_it(case, tmp_path):
    text, expected = YAML_CASES[case]
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  d: {kind: digits}\n" + text if case in ("model_twice", "lr_twice") else text)
    with pytest.raises(UserError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"config file {path}") and expected in message and "\n" not in message, message
    with pytest.raises(UserError, match=r"config file .*nope.yaml does not exist"):
        load(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------
# through Snakemake: before any job runs


TINY = (ROOT / "tests" / "configs" / "tiny.yaml").read_text()


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    from test_workflow import copy_workflow

    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def _snakemake(*args: str, cwd: Path):
    from test_workflow import snakemake

    return snakemake(*args, cwd=cwd, check=False)


SNAKEMAKE_CASES = {
    # Snakemake's own loader would keep the last of two equal keys without a word
    "model_defined_twice": (TINY.replace("models:\n", "models:\n  digits_cnn: {dataset: gaussian, arch: mlp}\n", 1),
                            "key 'digits_cnn' appears twice in one mapping"),
    "lr_twice_in_a_recipe": (TINY.replace("    lr: 0.05\n", "    lr: 0.05\n    lr: 0.5\n", 1),
                             "key 'lr' appears twice in one mapping"),
    "snapshot_epochs_beyond": (TINY.replace("    epochs: 2\n", "    epochs: 2\n    snapshot_epochs: [5]\n", 1),
                               "config key models.digits_cnn: snapshot_epochs [5] lie beyond its 2 epochs"),
    "unknown_arch": (TINY.replace("arch: mlp", "arch: lenet"), "config key models.gaussian_mlp.arch: 'lenet'"),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", sorted(SNAKEMAKE_CASES))
def test_snakemake_stops_before_any_job_with_one_line(case, workflow_copy):
    text, expected = SNAKEMAKE_CASES[case]
    configfile = workflow_copy / f"{case}.yaml"
    configfile.write_text(text)
    done = _snakemake("-n", "--configfile", str(configfile), cwd=workflow_copy)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (workflow_copy / "results").exists()


@pytest.mark.workflow
def test_weights_file_is_an_input_missing_stops_a_run_and_a_dry_run_warns(workflow_copy):
    configfile = workflow_copy / "weights.yaml"
    configfile.write_text(TINY.replace("    arch: small_cnn\n", "    arch: small_cnn\n    weights: w/start.pt\n", 1))
    target = "results/models/digits_cnn/seed0/predictions.h5"
    dry = _snakemake("-n", target, "--configfile", str(configfile), cwd=workflow_copy)
    assert dry.returncode == 0 and "warning: weights file w/start.pt (models.digits_cnn.weights) does not exist" \
        in dry.stderr
    real = _snakemake("--cores", "1", target, "--configfile", str(configfile), cwd=workflow_copy)
    assert real.returncode == 1 and "Missing input files for rule train" in real.stdout + real.stderr
    assert "w/start.pt" in real.stdout + real.stderr and "Traceback" not in real.stderr
    assert not (workflow_copy / "results" / "data").exists(), "no job may run"
    (workflow_copy / "w").mkdir()
    (workflow_copy / "w" / "start.pt").write_bytes(b"placed")
    placed = _snakemake("-n", target, "--configfile", str(configfile), cwd=workflow_copy)
    assert placed.returncode == 0
    train_job = placed.stdout.split("rule train:", 1)[1].split("\n\n", 1)[0]
    assert "w/start.pt" in train_job, "the weights file is an input of its training (replacing it retrains)"


# ---------------------------------------------------------------------------------------------
# command-line options


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    dataset = make_quadrant_dataset(folder / "q.h5", n_train=16, n_test=8)
    return dataset, save_untrained_model(folder / "m.pt", dataset)


def _sis_args(small, out: Path, *extra: str) -> list[str]:
    from test_sis_extract import sis_spec

    dataset, model = small
    return ["--model", str(model), "--dataset", str(dataset), "--spec", json.dumps(sis_spec(sample=2)),
            "--out", str(out), "--no-progress", *extra]


CLI_CASES = {
    "sis_threads_zero": ("sis", ["--threads", "0"], "argument --threads: 0 must be at least 1"),
    "sis_threads_text": ("sis", ["--threads", "two"], "argument --threads: 'two' is not an integer"),
    "sis_num_shards_zero": ("sis", ["--num-shards", "0"], "argument --num-shards: 0 must be at least 1"),
    "sis_device_unknown": ("sis", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    "sis_spec_not_json": ("sis", ["--spec", "{method: exact"], "error: --spec is not valid JSON"),
    "sis_spec_not_object": ("sis", ["--spec", "[1, 2]"], "error: --spec must be a JSON object, got list"),
    "train_threads_zero": ("train", ["--threads", "0"], "argument --threads: 0 must be at least 1"),
    "train_spec_not_json": ("train", ["--spec", "nope"], "error: --spec is not valid JSON"),
}
if not torch.cuda.is_available():
    CLI_CASES["sis_device_cuda_without_gpu"] = ("sis", ["--device", "cuda"],
                                                "error: --device cuda: no CUDA device is available")


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_option_exits_2_naming_the_option(case, small, tmp_path, capsys):
    from pathologies.sis.extract import main as sis_main
    from pathologies.training.train import main as train_main

    tool, extra, expected = CLI_CASES[case]
    out = tmp_path / "out" / "x.h5"
    if tool == "sis":
        args = _sis_args(small, out)
        if "--spec" in extra:
            args[args.index("--spec") + 1] = extra[1]
            extra = []
        main = sis_main
    else:
        args = ["--dataset", str(small[0]), "--spec", json.dumps(make_spec(epochs=1)), "--model-out",
                str(tmp_path / "out" / "m.pt"), "--log-out", str(tmp_path / "out" / "l.csv"), "--predictions-out",
                str(out), "--state-dir", str(tmp_path / "state"), "--device", "cpu", "--no-progress"]
        if "--spec" in extra:
            args[args.index("--spec") + 1] = extra[1]
            extra = []
        main = train_main
    with pytest.raises(SystemExit) as caught:
        main(args + extra)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"one line, no usage lines: {err}"
    assert expected in err and "Traceback" not in err, err
    if "argument --" in expected:  # argparse's own mistakes name the program the user ran
        program = "pathologies.sis.extract" if tool == "sis" else "pathologies.training.train"
        assert err.startswith(f"error: python -m {program}: argument --"), err
    assert not err.startswith("error: config key"), "an option is not a config key"
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("module, args, expected", [
    ("pathologies.overinterp.calibrated_sis", ["--num-shards", "0"], "argument --num-shards: 0 must be at least 1"),
    ("pathologies.cost", [], "the following arguments are required: --configfile"),
    ("pathologies.ddd.kappa",
     ["--experiment", "s", "--kappa-out", "k", "--conditions-out", "c", "--epochs-out", "e", "--nope"],
     "unrecognized arguments: --nope"),
])
def test_command_line_mistake_of_any_module_is_one_line_naming_the_program(module, args, expected):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=ROOT / "workflow", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: python -m {module}: {expected} (see python -m {module} --help)", done.stderr


_ENTRY = {"declared": 64, "measured": "2026-01-01T00:00:00+00:00", "invariant": True}


@pytest.mark.parametrize("content, detail", [
    ('{"half written": ', "Expecting value"),
    (json.dumps({"cpu|m": {**_ENTRY, "batch_size": 0}}), "entry 'cpu|m' has batch_size 0, not an integer in 1..64"),
    (json.dumps({"cpu|m": {**_ENTRY, "batch_size": 65}}), "entry 'cpu|m' has batch_size 65, not an integer in"),
    (json.dumps({"cpu|m": {**_ENTRY, "batch_size": "32"}}), "entry 'cpu|m' has batch_size '32', not an integer"),
    (json.dumps({"cpu|m": {**_ENTRY, "batch_size": 8, "declared": 0}}), "entry 'cpu|m' has declared 0"),
    (json.dumps({"cpu|m": 32}), "entry 'cpu|m' is not a JSON object"),
])
def test_damaged_batch_size_cache_is_one_line_naming_it(content, detail, small, tmp_path, capsys):
    from pathologies.sis.extract import main as sis_main

    cache = tmp_path / "cache.json"
    cache.write_text(content)
    out = tmp_path / "out" / "x.h5"
    with pytest.raises(SystemExit) as caught:
        sis_main(_sis_args(small, out, "--device", "cpu", "--batch-size-cache", str(cache)))
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]  # the rest is the job's log
    assert f"batch-size cache {cache} is damaged" in line and "delete it" in line and detail in line, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# prediction dumps and external predictions


def _write_dump(path: Path, **arrays) -> Path:
    data = {"ids": np.arange(4), "targets": np.array([0, 1, 2, 3]), "pred": np.array([[0, 1, 2, 3], [0, 1, 2, 0]])}
    data.update(arrays)
    with h5py.File(path, "w") as handle:
        handle.attrs["epochs"] = len(data["pred"]) - 1
        group = handle.create_group("test")
        for key, value in data.items():
            group[key] = value
    return path


DUMP_CASES = {
    "pred_nan": ({"pred": np.array([[0, 1, 2, 3], [0, np.nan, 2, 0]])}, "test/pred holds float64 values"),
    "pred_float": ({"pred": np.array([[0.0, 1, 2, 3], [0, 1, 2, 0]], np.float32)}, "test/pred holds float32 values"),
    "pred_strings": ({"pred": np.array([[b"a", b"b", b"c", b"d"]] * 2)}, "test/pred holds |S1 values"),
    "targets_float": ({"targets": np.array([0.0, 1, 2, 3])}, "test/targets holds float64 values"),
    "ids_fractional": ({"ids": np.array([0.5, 1, 2, 3])}, "test/ids holds float64 values"),
    "ids_duplicate": ({"ids": np.array([0, 1, 1, 3])}, "test/ids has duplicate image ids"),
    "target_negative": ({"targets": np.array([0, 1, -1, 3])}, "test/targets has negative values"),
    "pred_negative": ({"pred": np.array([[0, 1, 2, 3], [0, -1, 2, 0]])}, "test/pred has negative class indices"),
    "empty_split": ({"ids": np.zeros(0, np.int64), "targets": np.zeros(0, np.int64),
                     "pred": np.zeros((2, 0), np.int32)}, "split 'test' has no images (N = 0)"),
    "shapes_disagree": ({"targets": np.array([0, 1, 2])}, "split 'test' has inconsistent shapes"),
}


@pytest.mark.parametrize("case", sorted(DUMP_CASES))
def test_bad_prediction_dump_is_one_line_naming_it(case, tmp_path):
    arrays, expected = DUMP_CASES[case]
    path = _write_dump(tmp_path / "predictions.h5", **arrays)
    with pytest.raises(UserError) as caught:
        read_dump(path, "test", "all")
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message, message


def test_targets_beyond_the_dataset_classes_are_refused(tmp_path):
    dump = read_dump(_write_dump(tmp_path / "p.h5", targets=np.array([0, 1, 2, 7])), "test", "last")
    with pytest.raises(UserError, match=r"p.h5: target 7 but d.h5 has 4 classes; the dumps belong to another"):
        check_targets(dump, 4, "d.h5")
    check_targets(dump, 8, "d.h5")


@pytest.mark.parametrize("rows, expected", [
    ("1,a,-1,0\n2,a,1,1\n", "column 'prediction' has negative class indices"),
    ("1,a,0,-2\n2,a,1,1\n", "column 'target' has negative class indices"),
    ("1.5,a,0,0\n2,a,1,1\n", "column 'image_id' must hold integers only"),
    ("1,a,0,0\n1,a,1,0\n", "model 'a' has more than one row for image 1"),
    ("1,a,,0\n2,a,1,1\n", "column 'prediction' must hold integers only"),
])
def test_bad_external_predictions_csv_is_one_line_naming_it(rows, expected, tmp_path):
    path = tmp_path / "external.csv"
    path.write_text("image_id,model,prediction,target\n" + rows)
    with pytest.raises(UserError) as caught:
        load_predictions_csv(path)
    assert str(caught.value).startswith(str(path)) and expected in str(caught.value)


# ---------------------------------------------------------------------------------------------
# SIS: an SIS that fails verification is "none", never an empty SIS


def test_sis_failing_verification_is_written_as_none_not_as_an_empty_sis(small, tmp_path, monkeypatch):
    from pathologies.sis import extract as extract_module
    from test_sis_extract import sis_spec

    real = extract_module.sufficient_subsets

    def second_image_fails(scorer, x, selections, threshold, **kwargs):
        found = real(scorer, x, selections, threshold, **kwargs)
        return [None if i == 1 else sis for i, sis in enumerate(found)]

    monkeypatch.setattr(extract_module, "sufficient_subsets", second_image_fails)
    dataset, model = small
    out = tmp_path / "s.h5"
    extract_module.run([model], dataset, sis_spec(sample=3, thresholds=[0.01]), out=out, device="cpu")
    with h5py.File(out) as handle:
        assert (handle["f_full"][()] >= 0.01).all(), "every image starts above tau: each would have an SIS"
        none, size, mask = (handle[f"sis/0.01/{key}"][()] for key in ("none", "size", "mask"))
    np.testing.assert_array_equal(none, [False, True, False])
    assert size[1] == 0 and not mask[1].any()


# ---------------------------------------------------------------------------------------------
# the throughput table the bill reads (python -m pathologies.cost)


_HEADER = "device,arch,image_size,precision,forward_per_s,measured,how\n"
_ROW = "gpu,small_cnn,{size},fp32,{rate},2026-01-01,bench\n"

THROUGHPUT_CASES = {
    "rate_zero": (_HEADER + _ROW.format(size=8, rate=0), "line 2: forward_per_s 0.0 is not a positive finite rate"),
    "rate_negative": (_HEADER + _ROW.format(size=8, rate=-5), "line 2: forward_per_s -5.0 is not a positive finite"),
    "rate_inf": (_HEADER + _ROW.format(size=8, rate="inf"), "line 2: forward_per_s inf is not a positive finite"),
    "rate_nan": (_HEADER + _ROW.format(size=8, rate="nan"), "line 2: forward_per_s nan is not a positive finite"),
    "image_size_zero": (_HEADER + _ROW.format(size=0, rate=10), "line 2: image_size 0 must be at least 1"),
    "same_key_twice": (_HEADER + _ROW.format(size=8, rate=10) + _ROW.format(size=8, rate=100000),
                       "line 3: {'device': 'gpu', 'arch': 'small_cnn', 'image_size': 8, 'precision': 'fp32'} is "
                       "already on line 2; keep one row"),
    "binary_file": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a CSV text file"),
}


@pytest.mark.parametrize("case", sorted(THROUGHPUT_CASES))
def test_bad_throughput_table_is_one_line_naming_file_line_and_value(case, tmp_path, capsys):
    from pathologies import cost

    content, expected = THROUGHPUT_CASES[case]
    path = tmp_path / "throughput.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SystemExit) as caught:
        cost.main(["--configfile", str(ROOT / "config" / "config.yaml"), "--throughput", str(path)])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and str(path) in captured.err, captured.err
    assert expected in captured.err and "hours" not in captured.out, captured.err


# ---------------------------------------------------------------------------------------------
# dataset source files


def test_idx_header_whose_dimensions_overflow_64_bits_is_one_line(tmp_path):
    """2^31 x 2^31 x 4 = 2^64 wraps to 0 in int64: an empty body must not pass the size check."""
    from pathologies.data.mnist import read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2**31, 2**31, 4)))
    with pytest.raises(UserError) as caught:
        read_idx(path, 0x803)
    assert str(caught.value) == (f"{path} holds 0 data bytes but its header announces shape (2147483648, 2147483648, "
                                 "4) (18446744073709551616 bytes): the file is truncated or corrupt; replace it")


# ---------------------------------------------------------------------------------------------
# human-answer files (DDD experiment 2's questions; the overinterpretation benchmark's answers.json)


@pytest.mark.parametrize("q1, expected", [
    ("²", "trial 2: q1 must be a count (0, 1, 2, ... 1000000), found '²'"),
    ("1" * 30, f"trial 2: q1 must be a count (0, 1, 2, ... 1000000), found '{'1' * 30}'"),
    ("-1", "trial 2: q1 must be a count (0, 1, 2, ... 1000000), found '-1'"),
    ("1.5", "trial 2: q1 must be a count (0, 1, 2, ... 1000000), found '1.5'"),
])
def test_question_answer_that_is_no_count_is_one_line_naming_file_and_trial(q1, expected, tmp_path):
    import pandas as pd

    from pathologies.ddd.human_scores import question_answers

    path = tmp_path / "observer.csv"
    answers = pd.DataFrame({"trial": [1, 2, 3], "q1": ["1", q1, "2"], "q2": ["yes", "no", ""], "q3": ""})
    answers.to_csv(path, index=False)
    with pytest.raises(UserError) as caught:
        question_answers(pd.DataFrame({"trial": [1, 2, 3]}), {"observer": str(path)})
    assert str(caught.value) == f"answer file {path}: {expected}"


@pytest.mark.parametrize("answer, shown", [(["cat"], '["cat"] (list)'), ({"class": "cat"}, '{"class": "cat"} (dict)'),
                                           (3, "3 (int)"), (None, "null (NoneType)")])
def test_benchmark_answer_that_is_no_class_name_is_one_line_naming_file_and_item(answer, shown, tmp_path):
    from pathologies.overinterp.human_benchmark import read_answers

    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"participant": "p", "answers": {"0.05/0": "cat", "0.05/1": answer}}))
    with pytest.raises(UserError) as caught:
        read_answers(path)
    assert str(caught.value) == (f"answers file {path}: item '0.05/1' has the answer {shown}, not a class name; "
                                 "use the file the answer page downloads")


# ---------------------------------------------------------------------------------------------
# DDD experiments


@pytest.mark.parametrize("module", ["kappa", "difficulty"])
def test_excluding_every_image_of_an_experiment_is_one_line_naming_the_list(module, experiment, tmp_path):
    from pathologies.ddd import difficulty, kappa

    np.save(tmp_path / "everything.npy", experiment["ids"])
    spec = {**experiment["spec"], "exclude_ids": str(tmp_path / "everything.npy")}
    with pytest.raises(UserError) as caught:
        kappa.build_tables(spec) if module == "kappa" else difficulty.build_tables(spec, experiment["dataset"])
    assert str(caught.value) == (f"exclude_ids file {tmp_path}/everything.npy of experiment 'toy' excludes all "
                                 f"{len(experiment['ids'])} images of split 'test': no images are left to analyse; "
                                 "shorten the list or remove ddd.toy.exclude_ids")
