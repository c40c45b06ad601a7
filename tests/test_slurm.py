"""The SLURM profile (profiles/slurm): static checks, and real runs on a private localhost SLURM.

The real runs (markers ``slurm`` and ``slow``) install SLURM and MUNGE from Debian when they are
missing, start a one-node cluster without accounting (tests/slurm/localslurm.py), run the workflow
through profiles/slurm as a site would adapt it to that node (no account, squeue for status, no
GPUs), and compare the outputs bit for bit with a local run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from slurm.localslurm import LocalSlurm, SlurmUnavailable, check_system_conf_is_free, install_if_missing
from test_workflow import SNAKEMAKE, copy_workflow, snakemake

pytestmark = pytest.mark.workflow
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = ROOT / "profiles" / "default" / "config.yaml"
CONFIG = ROOT / "tests" / "slurm" / "config.yaml"
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SITE_RESOURCES = ("slurm_account", "slurm_partition", "gpu_model")  # meaningless on the test node
MODEL_DIRS = ["results/models/digits_cnn/seed0", "results/models/digits_cnn/seed1"]


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- static checks --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


@pytest.fixture(scope="module")
def dry_run_jobs(fresh_copy):
    """(rule, resources) of every job of a forced dry run, memoised per (config, workflow profile)."""
    cache: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {}

    def jobs(configfile: Path, workflow_profile: str) -> list[tuple[str, dict[str, str]]]:
        key = (str(configfile), workflow_profile)
        if key not in cache:
            done = snakemake("-n", "--forceall", "--configfile", str(configfile),
                             "--workflow-profile", workflow_profile, cwd=fresh_copy)
            blocks = re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", done.stdout + done.stderr, re.M)
            cache[key] = [(match[1], parse_resources(match[2])) for match in blocks]
            assert cache[key], f"no jobs found in the dry run of {configfile.name}"
        return cache[key]

    return jobs


def parse_resources(block: str) -> dict[str, str]:
    line = re.search(r"^    resources: (.*)$", block, re.M)
    return dict(item.split("=", 1) for item in line[1].split(", ")) if line else {}


def test_slurm_profile_keeps_the_default_profile_settings_and_the_default_stays_site_neutral():
    default, slurm = load_yaml(DEFAULT_PROFILE), load_yaml(PROFILE)
    # `--workflow-profile profiles/slurm` replaces profiles/default, so nothing of it may get lost
    assert not set(default) - set(slurm), f"add {sorted(set(default) - set(slurm))} to {PROFILE}"
    site_keys = [key for key in default if key in ("executor", "jobs", "default-resources", "set-resources")
                 or key.startswith("slurm")]
    assert not site_keys, f"{DEFAULT_PROFILE} is loaded on every run: move {site_keys} to a site profile"
    assert slurm["executor"] == "slurm"


def test_slurm_profile_sets_resources_only_of_rules_that_exist():
    rules = set(snakemake("--list-rules").stdout.split())
    unknown = set(load_yaml(PROFILE)["set-resources"]) - rules
    assert not unknown, f"set-resources in {PROFILE} names rules the workflow lacks: {sorted(unknown)}"


def test_retries_get_more_memory_and_time():
    for rule, resources in load_yaml(PROFILE)["set-resources"].items():
        for key in {"mem_mb", "runtime"} & set(resources):
            first, retry = (eval(str(resources[key]), {"attempt": attempt}) for attempt in (1, 2))
            assert retry > first, f"set-resources {rule}.{key} does not grow with attempt"


@pytest.mark.parametrize("configfile", CONFIGS, ids=lambda p: p.name)
def test_every_rule_declares_memory_and_runtime(configfile, dry_run_jobs):
    for rule, resources in dry_run_jobs(configfile, "none"):
        if rule != "all":
            assert {"mem_mb", "runtime"} <= set(resources), f"rule {rule} declares no mem_mb/runtime"


@pytest.mark.parametrize("configfile", CONFIGS, ids=lambda p: p.name)
def test_gpu_rules_request_gpus_through_resources_on_slurm(configfile, dry_run_jobs):
    gpu_rules = {rule for rule, resources in dry_run_jobs(configfile, "none") if "gpu" in resources}
    assert "train" in gpu_rules
    for rule, resources in dry_run_jobs(configfile, "profiles/slurm"):
        assert not re.search(r"--gres|--gpus", resources.get("slurm_extra", "")), \
            f"rule {rule}: request GPUs with the gpu resource, not slurm_extra"
        if rule in gpu_rules:
            assert resources.get("gpu") == "1" and "cpus_per_gpu" in resources, \
                f"GPU rule {rule} needs set-resources {rule}: gpu: 1 and cpus_per_gpu in {PROFILE}"


# --- real runs on a localhost SLURM --------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A one-node SLURM whose client commands every subprocess of the module reaches via SLURM_CONF."""
    try:
        install_if_missing()
        check_system_conf_is_free()
    except SlurmUnavailable as err:
        pytest.skip(str(err))
    with LocalSlurm() as local, pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(local.conf))
        patch.setenv("PATH", local.env["PATH"])
        yield local


@pytest.fixture(scope="module")
def node_profile(cluster, tmp_path_factory) -> Path:
    """profiles/slurm as a site adapts it to this node: no account, squeue for status, no GPUs, and no
    job asking for more memory than the node has."""
    node_memory_mb = int(cluster.run("sinfo", "--noheader", "--format=%m").stdout.split()[0])
    profile = load_yaml(PROFILE)
    for resources in [profile.get("default-resources", {}), *profile.get("set-resources", {}).values()]:
        for key in SITE_RESOURCES:
            resources.pop(key, None)
        if "gpu" in resources:
            resources["gpu"] = 0
        if "mem_mb" in resources:
            resources["mem_mb"] = f"min({resources['mem_mb']}, {node_memory_mb})"
    profile.update({  # no slurm_account: the plugin finds none with sacct and submits without -A
        "slurm-status-command": "squeue",  # no accounting database, so no sacct
        # The plugin polls this long after a job ended and 10 s longer each time none has: a job
        # here takes about 12 s from sbatch to exit, so polling at 15 s catches most at once.
        "slurm-init-seconds-before-status-checks": 15,
        "seconds-between-status-checks": 15,
        "slurm-keep-successful-logs": True,  # the SLURM job logs are part of the evidence
        "latency-wait": 5,
    })
    folder = tmp_path_factory.mktemp("node_profile")
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The reference: the same config run locally."""
    work = copy_workflow(tmp_path_factory.mktemp("local"))
    snakemake("--cores", "2", "--configfile", str(CONFIG), cwd=work)
    return work


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    from pathologies.io import h5py

    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset)
                          else None)
    return arrays


def assert_same_outputs(expected: Path, actual: Path, model_dirs: list[str]) -> None:
    """Prediction dumps, prepared data and model weights are bit-identical."""
    for name in ["results/data/digits.h5", *(f"{d}/predictions.h5" for d in model_dirs)]:
        want, got = h5_arrays(expected / name), h5_arrays(actual / name)
        assert want.keys() == got.keys(), name
        for key in want:
            assert np.array_equal(want[key], got[key]), f"{name}:{key} differs from the local run"
    for model_dir in model_dirs:
        want, got = (torch.load(root / model_dir / "model.pt", weights_only=False)["state_dict"]
                     for root in (expected, actual))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), f"{model_dir}/model.pt differs from the local run"


def submitted_jobs(output: str) -> dict[str, Path]:
    """SLURM job id -> job log, as the executor reports its submissions."""
    return {job: Path(log) for job, log in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", output)}


def squeue(cluster: LocalSlurm, *args: str) -> list[list[str]]:
    done = cluster.run("squeue", "--noheader", "--format=%i|%T|%k", *args)
    return [line.split("|") for line in done.stdout.split()]


@pytest.mark.slurm
@pytest.mark.slow
def test_workflow_runs_through_slurm_and_equals_the_local_run(cluster, node_profile, local_run, tmp_path):
    work = copy_workflow(tmp_path)
    done = snakemake("--workflow-profile", str(node_profile), "--configfile", str(CONFIG), cwd=work)

    jobs = submitted_jobs(done.stdout + done.stderr)
    states = squeue(cluster, "--states=all", f"--jobs={','.join(jobs)}")
    assert sorted(comment for _, _, comment in states) == [
        "rule_learning_curves", "rule_prepare_dataset_wildcards_digits",
        "rule_train_wildcards_digits_cnn_0", "rule_train_wildcards_digits_cnn_1"]
    assert {state for _, state, _ in states} == {"COMPLETED"}
    for job, log in jobs.items():
        assert "1 of 1 steps (100%) done" in log.read_text(), f"SLURM job {job} log {log}"
    assert_same_outputs(local_run, work, MODEL_DIRS)


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_job_reruns_and_resumes_without_losing_work(cluster, node_profile, local_run, tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    target = f"{MODEL_DIRS[0]}/predictions.h5"
    state = work / "results/resume/digits_cnn/seed0/state.pt"
    args = [target, "--workflow-profile", str(node_profile), "--configfile", str(CONFIG)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    with open(tmp_path / "first_run.log", "w+") as log:
        first = subprocess.Popen([SNAKEMAKE, *args, "--retries", "0"], cwd=work, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            training = wait_for_running_training(cluster, state, first)
            cluster.run("scancel", training)
            first.wait(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
        log.seek(0)
        output = log.read()
    assert first.returncode != 0 and f"SLURM-job '{training}' failed" in output and "CANCELLED" in output
    assert state.exists(), "the finished epochs of the cancelled training were lost"
    dataset = work / "results/data/digits.h5"
    prepared = dataset.stat().st_mtime_ns

    snakemake(*args, cwd=work)
    assert "resuming digits_cnn seed 0 after epoch" in (work / "results/logs/train/digits_cnn/seed0.log").read_text()
    assert dataset.stat().st_mtime_ns == prepared, "the rerun redid a job that had finished"
    assert not state.exists()
    assert_same_outputs(local_run, work, MODEL_DIRS[:1])


def wait_for_running_training(cluster: LocalSlurm, state: Path, run: subprocess.Popen, timeout: float = 180) -> str:
    """The SLURM job id of the training once it is running and has saved an epoch checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        if state.exists():
            running = [job for job, _, comment in squeue(cluster, "--states=RUNNING")
                       if comment.startswith("rule_train")]
            if running:
                return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no running training with an epoch checkpoint within {timeout} s "
                         f"(snakemake exit code {run.poll()})")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_time_budget_finishes_in_several_attempts(cluster, node_profile, tmp_path):
    """train_jobs.time_limit of 6 ms: every SLURM job trains one epoch (a job always trains at least one),
    saves its state and exits 75; the rule's retries resubmit it until its 3 epochs are done, and the
    outputs equal those of an uninterrupted local run."""
    config = load_yaml(CONFIG)
    config["recipes"]["slurm_test"]["epochs"] = 3
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(config))
    config["train_jobs"] = {"time_limit": 0.0001, "save_margin": 0, "attempts": 5}
    (tmp_path / "budget.yaml").write_text(yaml.safe_dump(config))
    target = f"{MODEL_DIRS[0]}/predictions.h5"
    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    local = copy_workflow(tmp_path / "local")
    snakemake(target, "--cores", "2", "--configfile", str(tmp_path / "plain.yaml"), cwd=local)
    work = copy_workflow(tmp_path / "slurm")
    done = snakemake(target, "--workflow-profile", str(node_profile), "--configfile", str(tmp_path / "budget.yaml"),
                     cwd=work)
    output = done.stdout + done.stderr
    trainings = {job: log for job, log in submitted_jobs(output).items() if "rule_train" in str(log)}
    assert len(trainings) == 3, f"expected one attempt per epoch, got {len(trainings)}"
    stopped = [job for job, log in trainings.items() if "exit status 75" in log.read_text()]
    assert len(stopped) == 2, {job: log.read_text()[-500:] for job, log in trainings.items()}
    assert "resuming digits_cnn seed 0 after epoch 2" in (work / "results/logs/train/digits_cnn/seed0.log").read_text()
    assert not (work / "results/resume/digits_cnn/seed0/state.pt").exists()
    assert_same_outputs(local, work, MODEL_DIRS[:1])
