"""The Snakemake workflow itself: lint, dry runs of every config, config errors, a tiny real run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.workflow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


# A guard against a hung run, not a speed limit: the largest tiny run (tests/configs/overinterp_tiny.yaml, 86 jobs)
# took about 15 min on 2 cores shared with other work.
SNAKEMAKE_TIMEOUT_S = 1800


def snakemake(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SNAKEMAKE_TIMEOUT_S)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def report_names(*args: str, cwd: Path) -> list[str]:
    """Build ``report.zip`` in ``cwd`` with ``snakemake <args> --report`` and list the files it holds."""
    snakemake(*args, "--report", "report.zip", cwd=cwd)
    with zipfile.ZipFile(cwd / "report.zip") as archive:
        return archive.namelist()


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (code + configs, no results) to run in isolation."""
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / item)
    return dest


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """One results-free copy of the workflow shared by the dry-run tests."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_lint_is_clean():
    done = snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition" in done.stdout + done.stderr


# Jobs each config must expand to, derived from the papers' designs as the configs declare them.
DDD_TRAININGS = 1 + 1 + 1 + 5 + 5 + 5 + 5 + 1 + 1 + 5 + 1  # A.1: base, nesterov, half batch, init, lr,
# nondeterministic, data order, architecture, half data, combined, two disjoint halves (+1/+10 epochs: no job;
# the first half is the half-data run, trained once and used twice)
EXPECTED_JOBS = {
    # digits_cnn 2 seeds + gaussian_cnn 1 + DDD miniature 16 + retraining (bs, random, mask-only control) x
    # (aug, not) x 2 replicates; the calibrated source takes its test SIS's 2 shards, the 2-model ensemble 2 x 2
    "config.yaml": {"train": 2 + 1 + 16 + 3 * 2 * 2, "sis_extract": 2 * 2 + 1 + 1, "sis_merge": 4,
                    "overinterp_calibrated_sis": 2, "overinterp_calibrated_sis_merge": 1,
                    "overinterp_ensemble_sis": 2 * 2, "overinterp_ensemble_sis_merge": 1, "total": 107},
    # 6 models (3 archs, with/without input dropout) x 5 seeds + the robust ResNet50 (pretrained, epochs 0);
    # retraining: ResNet20's BS and random subsets, the others' BS subsets, and every BS retraining's mask-only
    # control, each into 3 archs x 5 replicates without augmentation, and again "(+)" but the mask-only control
    # (augment_mode reference: (+) keeps the un-augmented positions, so one control serves both); SIS shards:
    # test 3 x 100, train 3 x 500, dropout models' test 3 x 100, CIFAR-10.1 3 x 20, CIFAR-10-C sample (the
    # authors' 2,000 images) 3 x 20, robust model's test 100, S4.8 random ties 3 repeats x 10, S4.10 gradient
    # k = 1 3 x 10, float32 ties (Figure 3a as published) 100; pixel subsets of CIFAR-10.1 and the CIFAR-10-C
    # sample (where the sources have SIS) for each of the 3 experiments; figures (examples, curves, heatmaps) of
    # each of the 9 SIS runs; calibrated sources: 3 x the test SIS's 100 shards; ensembles (ResNet18 x 5 seeds,
    # mixed 3 archs): members x 100 shards
    "cifar10_overinterpretation.yaml": {"train": 6 * 5 + 1 + (3 + 2 + 2) * 3 * 5 + (2 + 1 + 1) * 3 * 5,
                                        "sis_extract": 300 + 1500 + 300 + 60 + 60 + 100 + 30 + 30 + 100,
                                        "sis_merge": 15 + 3 + 3 + 1 + 1, "sis_figures": 9, "sis_heatmaps": 9,
                                        "overinterp_subsets_resnet20": 1, "overinterp_subsets_resnet20_cifar10_1": 1,
                                        "overinterp_subsets_vgg16_bn_cifar10c": 1, "overinterp_fig_leakage": 3,
                                        "overinterp_fig_calibrated_examples": 3, "overinterp_calibrated_sis": 300,
                                        "overinterp_calibrated_sis_merge": 3, "overinterp_ensemble_sis": 500 + 300,
                                        "overinterp_ensemble_sis_merge": 2, "total": 4103},
    # pretrained ResNet50, robust ResNet50, Inception v3, ViT-B/16 (epochs 0) + 5 replicates on 10% BS, on
    # random subsets and on the BS keep-masks alone (mask-only control): ResNet50's into ResNet50 and
    # DenseNet-121, Inception's into Inception (Table S7); SIS shards: ResNet50 validation 100 + train 2,000,
    # robust ResNet50 validation 100, Inception v3 validation 100 + train 2,000, ViT 1,000 validation images in
    # 10; evaluations: 2 + 30 (ResNet50), 1 + 15 (Inception); a leakage figure per experiment;
    # calibrated ResNet50 and Inception v3: their validation SIS's 100 shards each
    "imagenet_overinterpretation.yaml": {"train": 4 + 3 * 2 * 5 + 3 * 5,
                                         "sis_extract": 100 + 2000 + 100 + 100 + 2000 + 10, "sis_merge": 6,
                                         "overinterp_subsets_resnet50": 1, "overinterp_subsets_inception_v3": 1,
                                         "overinterp_evaluate": 48, "overinterp_fig_leakage": 2, "sis_figures": 6,
                                         "overinterp_calibrated_sis": 2 * 100, "overinterp_calibrated_sis_merge": 2,
                                         "total": 4657},  # + the ViT's 384-px index (imagenet_384)
    # DDD (base = the SIS source, nesterov, init x 2, data order x 2, ResNet20, two disjoint halves) + retraining
    # (small CNN, MLP) x (BS, random, mask-only leakage floor) x 2 replicates; SIS: test 1 shard + train 2 shards
    # (+ calibrated source);
    # DDD Table 1 and accuracy figure as every DDD experiment
    "fashion_mnist.yaml": {"train": 9 + 3 * 2 * 2, "sis_extract": 1 + 2, "sis_merge": 2,
                           "overinterp_calibrated_sis": 1, "overinterp_calibrated_sis_merge": 1,
                           "ddd_table1_class_extremes": 1, "total": 77},
    # every DDD experiment also writes Table 1 (table + figure) and the accuracy figure (13/14); CIFAR-100
    # adds the superclass table and Figures 11-12 (built-in coarse classes)
    # ImageNet: the ResNet-18 grid and the A.3 base controls (VGG-11, DenseNet-121 grids: Figures 15-16);
    # ImageNet and CIFAR-100 also export the human-experiment pages (Figures 18 / 19)
    # + the SOTA set's 6 pretrained models (epochs 0: evaluation only) and the published per-image results,
    # neither with Figure 3 (no base run); the published results without Figures 4 and 5 (no single models)
    "ddd_imagenet.yaml": {"train": 3 * DDD_TRAININGS + 6, "ddd_class_extremes": 5, "ddd_table1_class_extremes": 5,
                          "ddd_fig13_accuracy": 5, "ddd_fig03_conditions": 3, "ddd_fig05_kappa_heatmaps": 4,
                          "ddd_fig04_decisions": 4, "ddd_human_pages": 1, "ddd_fig18_pairs": 1, "total": 177},
    "ddd_cifar100.yaml": {"train": DDD_TRAININGS, "ddd_superclasses": 1, "ddd_fig11_superclasses": 1,
                          "ddd_fig12_superclass_categories": 1, "ddd_human_pages": 1, "ddd_fig18_pairs": 1,
                          "total": 56},
    "ddd_gaussian.yaml": {"train": DDD_TRAININGS, "ddd_kl": 1, "ddd_fig13_accuracy": 1, "total": 53},
}
def job_counts(stdout: str) -> dict[str, int]:
    """{rule: count} from the job table of `snakemake -n --quiet rules`."""
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "Job"):
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize("configfile", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_dry_runs_to_its_expected_jobs(configfile, fresh_copy):
    """Job counts per rule. How long the graph takes to build is a benchmark (``python -m pathologies.bench dag``
    prints CPU ms per job and its ratio across configs), not a timed test: CI machines differ."""
    done = snakemake("-n", "--quiet", "rules", "--configfile", str(configfile), cwd=fresh_copy)
    counts = job_counts(done.stdout)
    expected = EXPECTED_JOBS[configfile.name]
    assert {rule: counts.get(rule) for rule in expected} == expected


def test_dag_benchmark_counts_the_jobs_of_the_dry_run(fresh_copy):
    """``bench dag`` reads the job total from the same dry run the test above checks (stderr shown on failure)."""
    done = subprocess.run([sys.executable, "-m", "pathologies.bench", "dag", "--directory", str(fresh_copy),
                           "--configs", "config/fashion_mnist.yaml"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("fashion_mnist.yaml"))
    assert int(row[1]) == EXPECTED_JOBS["fashion_mnist.yaml"]["total"]
    assert float(row[2]) > 0 and float(row[3]) > 0
    assert done.stdout.splitlines()[-1].startswith("dag_max_ratio=")


def test_dag_benchmark_ratios_show_a_graph_that_grows_faster_than_its_jobs():
    from pathologies.bench.dag import NOISE_FLOOR_S, DryRun, ratios, render

    linear = [DryRun("small", 100, 3.0, 3.0 + 2 * NOISE_FLOOR_S, 5.0), DryRun("big", 1000, 3.0, 23.0, 23.0)]
    assert [round(r, 6) for r in ratios(linear)] == [1.0, 1.0]
    quadratic = [linear[0], DryRun("big", 1000, 3.0, 3.0 + 10 * 20.0, 200.0)]
    assert ratios(quadratic)[1] == pytest.approx(10.0)
    noisy = [DryRun("tiny", 77, 2.8, 2.7, 2.9), linear[1]]  # graph below the noise floor: no cost per job
    assert ratios(noisy) == [None, 1.0] and render(noisy).splitlines()[-1] == "dag_max_ratio=1.00"
    assert render(noisy[:1]).splitlines()[-1] == "dag_max_ratio=n/a"


def test_calibrated_and_ensemble_sis_dry_run_as_resumable_shards_and_a_merge(fresh_copy):
    """config.yaml: the calibrated source takes digits_exact's 2 shards, the 2-model ensemble 2 x 2."""
    ensemble = "results/overinterp/digits/ensembles/cnn2/sis_test"
    calibrated = "results/overinterp/digits/calibrated_sis/digits_cnn/seed0"
    done = snakemake("-n", "-p", f"{ensemble}.h5", f"{calibrated}.h5", cwd=fresh_copy)
    commands = [line for line in done.stdout.splitlines() if line.startswith("Shell command:")]
    for folder, shards, module in ((ensemble, 4, "sis.extract"), (calibrated, 2, "overinterp.calibrated_sis")):
        resume = folder.replace("results/", "results/resume/", 1)
        for i in range(shards):
            (command,) = [c for c in commands if f"--out {folder}/shard{i}of{shards}.h5 " in c]
            assert f"python -m pathologies.{module} " in command and f'"shards": {shards}' in command
            assert f"--shard {i} --num-shards {shards} " in command
            assert f"--state-dir {resume}/shard{i}of{shards} " in command
        (merge,) = [c for c in commands if f"--out {folder}.h5 " in c]
        assert merge.startswith("Shell command: python -m pathologies.sis.merge --shards ")
        assert all(f"{folder}/shard{i}of{shards}.h5" in merge for i in range(shards))


@pytest.mark.parametrize("override, key", [
    ("train_threads=0", "config key train_threads"),
    ("device=tpu", "config key device"),
    ("colour=blue", "unknown key(s) 'colour'"),
])
def test_bad_config_stops_with_one_line_naming_the_key(override, key, fresh_copy):
    done = snakemake("-n", "--configfile", str(TINY), "--config", override, check=False, cwd=fresh_copy)
    assert done.returncode != 0
    assert key in done.stderr
    assert "Traceback" not in done.stderr


def test_single_target_runs_only_its_upstream_jobs(tmp_path):
    work = copy_workflow(tmp_path)
    target = "results/models/digits_cnn/seed0/predictions.h5"
    snakemake(target, "--cores", "2", "--configfile", str(TINY), cwd=work)
    assert (work / target).exists() and (work / "results/data/digits.h5").exists()
    assert not (work / "results/models/digits_cnn/seed1").exists()
    assert not (work / "results/data/gaussian.h5").exists()


@pytest.mark.slow
def test_tiny_config_runs_end_to_end_and_builds_the_report(tmp_path):
    work = copy_workflow(tmp_path)
    snakemake("--cores", "2", "--configfile", str(TINY), cwd=work)
    from pathologies.io import h5py

    for model, seed in [("digits_cnn", 0), ("digits_cnn", 1), ("gaussian_mlp", 0)]:
        with h5py.File(work / f"results/models/{model}/seed{seed}/predictions.h5") as handle:
            assert handle["test/pred"].shape[0] == 3  # epochs 0, 1, 2
    with h5py.File(work / "results/models/digits_cnn/seed0/predictions.h5") as handle:
        assert np.mean(handle["test/pred"][-1] == handle["test/targets"][()]) > 0.5
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(TINY), cwd=work).stdout

    names = report_names("--configfile", str(TINY), cwd=work)
    assert any(name.endswith("learning_curves.png") for name in names)
