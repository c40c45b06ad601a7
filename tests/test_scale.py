"""Training at scale: data-parallel ranks (torchrun, gloo on CPU), gradient accumulation, precision, time budget."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, make_quadrant_dataset, make_spec
from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.models.checkpoint import read_checkpoint
from pathologies.training.budget import EXIT_CODE, BudgetReached
from pathologies.training.distributed import World
from pathologies.training.precision import check_precision
from pathologies.training.step import micro_slices
from pathologies.training.train import augment_batch, batch_rows, train_run

# Two ranks sum their shares' gradients in another order than one process sums the whole batch, so
# weights agree to float32 rounding that grows over the steps, not bit for bit.
DDP_ATOL = 1e-5


def run(spec: dict, dataset: Path, out: Path, **kwargs) -> dict[str, Path]:
    paths = {"model_out": out / "model.pt", "log_out": out / "train_log.csv", "predictions_out": out / "predictions.h5"}
    train_run(spec, dataset, **paths, state_dir=out / "state", device="cpu", progress=False, **kwargs)
    return paths


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def dump(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle["test"][key][()] for key in ("pred", "conf")}


def torchrun_cmd(spec: dict, dataset: Path, out: Path, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "pathologies.training.train", "--dataset", str(dataset), "--spec", json.dumps(spec),
            "--model-out", str(out / "model.pt"), "--log-out", str(out / "train_log.csv"),
            "--predictions-out", str(out / "predictions.h5"), "--state-dir", str(out / "state"),
            "--device", "cpu", "--no-progress", "--threads", "1"]


ENV = {"PYTHONPATH": str(ROOT / "workflow"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def assert_close_to(reference: dict[str, Path], out: Path) -> None:
    want, got = weights(reference["model_out"]), weights(out / "model.pt")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=DDP_ATOL, rtol=0, msg=key)
    ref, mine = dump(reference["predictions_out"]), dump(out / "predictions.h5")
    np.testing.assert_array_equal(mine["pred"], ref["pred"])
    np.testing.assert_allclose(mine["conf"], ref["conf"], atol=DDP_ATOL)


def test_ranks_share_every_batch_in_order():
    """The ranks' shares, in rank order, are each optimizer step's rows of the single-process batch."""
    for n, size, split in [(10, 2, False), (7, 3, False), (9, 2, True), (1, 2, False), (5, 4, True)]:
        steps = [batch_rows(n, split, World(rank, size)) for rank in range(size)]
        single = batch_rows(n, split, World())
        for step, (whole, total) in enumerate(single):
            joined = [i for rank in range(size) for i in steps[rank][step][0]]
            assert joined == list(whole) and all(steps[r][step][1] == total for r in range(size))
    assert [s.stop - s.start for s in micro_slices(10, 4)] == [3, 3, 2, 2]
    assert len(micro_slices(2, 4)) == 2 and micro_slices(0, 3) == []


def test_augmentation_of_a_share_is_that_share_of_the_whole_batch():
    x = torch.randn(6, 1, 5, 5)
    (whole,) = augment_batch(torch.Generator().manual_seed(3), 2, True, x)
    rows = torch.tensor([3, 4, 5])
    (share,) = augment_batch(torch.Generator().manual_seed(3), 2, True, x[rows], batch=6, rows=rows)
    assert torch.equal(share, whole[rows])


def test_gradient_accumulation_equals_the_large_batch_without_batch_norm(tmp_path):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=200, n_test=32)
    base = {"epochs": 2, "arch": "mlp", "batch_size": 50, "crop_padding": 1, "hflip": True}
    reference = run(make_spec(**base), dataset, tmp_path / "one")
    accumulated = run(make_spec(**base, grad_accumulation=4), dataset, tmp_path / "four")
    want, got = weights(reference["model_out"]), weights(accumulated["model_out"])
    for key in want:  # four partial sums instead of one: float32 rounding only
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(dump(reference["predictions_out"])["pred"],
                                  dump(accumulated["predictions_out"])["pred"])


def test_mixed_precision_is_refused_in_one_line_where_the_device_lacks_it(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"fp16 mixed precision needs a CUDA GPU and this job runs on cpu") as err:
        check_precision("fp16", torch.device("cpu"))
    assert "\n" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    with pytest.raises(UserError, match=r"bf16 mixed precision is not supported by Tesla V100-SXM2-16GB"):
        check_precision("bf16", torch.device("cuda"))
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=16, n_test=8)
    with pytest.raises(UserError, match="fp16"):
        run(make_spec(epochs=1, precision="fp16"), dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "refused before any output or state was written"


def test_bf16_channels_last_trains_and_records_its_precision(tmp_path):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=128, n_test=32)
    paths = run(make_spec(epochs=2, precision="bf16", channels_last=True), dataset, tmp_path)
    with h5py.File(paths["predictions_out"], "r") as handle:
        compute = json.loads(handle.attrs["compute"])
        recipe = json.loads(handle.attrs["recipe"])
    assert compute == {"world_size": 1, "device": "cpu", "precision": "bf16", "channels_last": True}
    assert recipe["precision"] == "bf16" and recipe["channels_last"] is True
    assert pd.read_csv(paths["log_out"])["train_loss"].notna().iloc[1:].all()


def test_a_time_budget_stops_between_epochs_and_the_attempts_finish_as_one_run(tmp_path):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=256, n_test=32)
    spec = make_spec(epochs=4, crop_padding=1, hflip=True)
    reference = run(spec, dataset, tmp_path / "reference")
    out, attempts = tmp_path / "budget", 0
    while not (out / "model.pt").exists():
        attempts += 1
        try:
            run(spec, dataset, out, time_budget=1e-3)  # every attempt trains one epoch, then stops
        except BudgetReached as stop:
            assert f"stopped after epoch {attempts} of 4" in str(stop) and f"exiting with code {EXIT_CODE}" in str(stop)
            assert not (out / "model.pt").exists() and not (out / "predictions.h5").exists()
    assert attempts == 4
    for key, value in weights(reference["model_out"]).items():
        assert torch.equal(value, weights(out / "model.pt")[key]), key
    for key, value in dump(reference["predictions_out"]).items():
        np.testing.assert_array_equal(value, dump(out / "predictions.h5")[key])


@pytest.mark.slow
def test_two_ranks_train_as_one_process(tmp_path):
    """torchrun with 2 CPU ranks (gloo): same batches in the same order, so the same weights and dumps."""
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=250, n_test=32)
    # 250 = 7 batches of 32 and one of 26: shares of unequal size in every step of split_batch
    spec = make_spec(epochs=3, arch="mlp", crop_padding=1, hflip=True, split_batch=True, grad_accumulation=2, gpus=2)
    reference = run(spec, dataset, tmp_path / "single")
    out = tmp_path / "ddp"
    done = subprocess.run(torchrun_cmd(spec, dataset, out), env=ENV, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(rank 1 of 2)" in done.stderr
    assert_close_to(reference, out)
    log_single, log_ddp = pd.read_csv(reference["log_out"]), pd.read_csv(out / "train_log.csv")
    np.testing.assert_allclose(log_ddp["train_loss"][1:], log_single["train_loss"][1:], rtol=1e-5)
    np.testing.assert_array_equal(log_ddp["train_acc"][1:], log_single["train_acc"][1:])
    with h5py.File(out / "predictions.h5", "r") as handle:
        assert json.loads(handle.attrs["compute"])["world_size"] == 2
    assert not (out / "state").exists()


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes(tmp_path):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=1024, n_test=32)
    spec = make_spec(epochs=6, arch="mlp", crop_padding=1, hflip=True, gpus=2)
    reference = run(spec, dataset, tmp_path / "single")
    out = tmp_path / "ddp"
    proc = subprocess.Popen(torchrun_cmd(spec, dataset, out), env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (out / "state" / "state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)
    ranks = children(proc.pid)  # torchrun starts each rank in a session of its own
    assert len(ranks) == 2
    for pid in [proc.pid, *ranks]:  # torchrun and both ranks at once, mid-epoch, as SLURM kills a job
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    epoch = torch.load(out / "state" / "state.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < 6, f"the kill should land mid-run (state after epoch {epoch})"
    assert not (out / "model.pt").exists()

    done = subprocess.run(torchrun_cmd(spec, dataset, out), env=ENV, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming m seed 0 after epoch {epoch}" in done.stderr
    assert_close_to(reference, out)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tests/gpu_checks.sh runs it)")


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda_and_keeps_fp32_weights(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=512, n_test=64)
    spec = make_spec(epochs=4, arch="resnet20", precision=precision, channels_last=True, deterministic=False)
    paths = {"model_out": tmp_path / "model.pt", "log_out": tmp_path / "log.csv", "predictions_out": tmp_path / "p.h5"}
    train_run(spec, dataset, **paths, state_dir=tmp_path / "state", device="cuda", progress=False)
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights(paths["model_out"]).values())
    assert pd.read_csv(paths["log_out"])["test_acc"].iloc[-1] > 0.8


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
def test_two_gpus_train_as_one(tmp_path):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=256, n_test=32)
    spec = make_spec(epochs=2, arch="mlp", gpus=2)
    paths = {"model_out": tmp_path / "one" / "model.pt", "log_out": tmp_path / "one" / "log.csv",
             "predictions_out": tmp_path / "one" / "predictions.h5"}
    train_run(spec, dataset, **paths, state_dir=tmp_path / "one" / "state", device="cuda", progress=False)
    cmd = [c if c != "cpu" else "cuda" for c in torchrun_cmd(spec, dataset, tmp_path / "two")]
    done = subprocess.run(cmd, env={**ENV, "PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    want, got = weights(paths["model_out"]), weights(tmp_path / "two" / "model.pt")
    for key in want:  # TF32 and NCCL reductions: looser than the CPU tolerance
        torch.testing.assert_close(got[key].cpu(), want[key].cpu(), atol=1e-3, rtol=0)


# --- the bill of training jobs and the resources the rule derives from it ----------------------------

def scale_config(**train_jobs) -> dict:
    from pathologies.experiments import validate

    return validate({
        "device": "auto",
        "datasets": {"gaussian": {"kind": "gaussian", "train_per_class": 100, "test_per_class": 20}},  # 1,000 / 200
        "recipes": {"r": {"epochs": 10, "batch_size": 50}},
        "models": {"wide": {"dataset": "gaussian", "arch": "mlp", "recipe": "r", "seeds": [0, 1],
                            "overrides": {"gpus": 2, "precision": "bf16"}},
                   "plain": {"dataset": "gaussian", "arch": "mlp", "recipe": "r", "seeds": [0]}},
        "train_jobs": train_jobs,
    })


def scale_rows():
    forward = [{"device": "gpu", "arch": "mlp", "image_size": 8, "precision": p, "forward_per_s": 3000.0,
                "measured": "2026-12-06", "how": "test"} for p in ("fp32", "bf16")]
    train = [{"device": "gpu", "arch": "mlp", "image_size": 8, "precision": "bf16", "channels_last": "true",
              "data": "synthetic", "images_per_s": 400.0, "measured": "2026-12-06", "how": "test"}]
    return forward, train


def test_training_jobs_are_billed_at_their_precision_and_gpus():
    from pathologies import cost

    forward, train = scale_rows()
    jobs = {job["model"]: job for job in cost.train_jobs(scale_config(), forward, "gpu", train)}
    dumps = 11 * 200 / 3000  # epochs + 1 evaluations of the 200 test images at the fp32 forward rate
    wide, plain = jobs["wide"], jobs["plain"]
    assert wide["jobs"] == 2 and wide["rate"].startswith("measured training")
    assert wide["wall_hours"] * 3600 == pytest.approx(10 * 1000 / (400 * (1 + cost.DDP_EFFICIENCY)) + dumps)
    assert wide["gpu_hours"] == pytest.approx(2 * wide["wall_hours"])
    assert plain["rate"].startswith("inference rate / 3")  # no fp32 training row: forward rate / 3
    assert plain["wall_hours"] * 3600 == pytest.approx(10 * 1000 / (3000 / 3) + dumps)
    lines = {line["precision"]: line for line in cost.bill(scale_config(), forward, "gpu", train)
             if line["rule"] == "train"}
    assert lines["bf16x2"]["hours"] == pytest.approx(2 * wide["gpu_hours"]) and lines["fp32"]["jobs"] == 1


def test_attempts_and_the_warning_when_limit_times_attempts_is_too_short():
    from pathologies import cost

    forward, train = scale_rows()
    plain = next(j for j in cost.train_jobs(scale_config(), forward, "gpu", train) if j["model"] == "plain")
    epoch = plain["epoch_minutes"]  # 10 epochs; a budget of 3.5 epochs trains 3 per attempt
    assert cost.attempts_needed(plain, 3.5 * epoch) == 4 and cost.attempts_needed(plain, 0.5 * epoch) is None
    text = cost.render_train_jobs([plain], {"time_limit": 3.5 * epoch + 1, "save_margin": 1, "attempts": 3}, "gpu")
    assert "warning: plain: needs 4 attempts" in text and "cannot finish within limit x attempts" in text
    text = cost.render_train_jobs([plain], {"time_limit": 0.5 * epoch + 1, "save_margin": 1, "attempts": 3}, "gpu")
    assert "never" in text and "warning: plain: one epoch takes" in text


def test_job_plan_gives_time_budget_runtime_and_attempts(monkeypatch):
    from pathologies import jobplan

    plans, attempts = jobplan.plan(scale_config())
    assert attempts is None and plans[("wide", 0)] == jobplan.JobPlan(480, None, True)
    plans, attempts = jobplan.plan(scale_config(time_limit=90, save_margin=10))
    assert attempts == 2 and plans[("plain", 0)] == jobplan.JobPlan(90, 80 * 60, False)
    forward, train = scale_rows()
    monkeypatch.setattr("pathologies.sis.throughput.read_throughput", lambda *a: forward)
    monkeypatch.setattr("pathologies.training.throughput.read_train_throughput", lambda *a: train)
    from pathologies import cost

    jobs = {j["model"]: j for j in cost.train_jobs(scale_config(), forward, "gpu", train)}
    limit = 3.5 * jobs["plain"]["epoch_minutes"] + 1
    plans, attempts = jobplan.plan(scale_config(time_limit=limit, save_margin=1, bill_device="gpu"))
    # the slowest job's attempts (10 epochs, as many whole epochs per attempt as fit) plus one spare
    assert attempts == max(math.ceil(10 / math.floor((limit - 1) / j["epoch_minutes"])) for j in jobs.values()) + 1
    assert attempts == 6  # wide: 2 epochs per attempt (its 2 GPUs at 400/s x 1.9 vs plain's 1,000/s)
    job = plans[("plain", 0)]
    assert job.budget_s == pytest.approx((limit - 1) * 60) and job.runtime == math.ceil(limit)


def test_dry_run_launches_torchrun_with_the_recipe_gpus_and_a_time_budget(tmp_path):
    import yaml

    from test_workflow import copy_workflow, snakemake

    work = copy_workflow(tmp_path)
    config = yaml.safe_load((ROOT / "tests/slurm/config.yaml").read_text())
    config["device"] = "auto"
    config["models"]["digits_cnn"]["overrides"] = {"gpus": 2}
    config["train_jobs"] = {"time_limit": 30, "save_margin": 5, "attempts": 4}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("-n", "-p", "--forceall", "--configfile", str(tmp_path / "c.yaml"), cwd=work)
    out = done.stdout + done.stderr
    assert "python -m torch.distributed.run --standalone --nproc_per_node=2 -m pathologies.training.train" in out
    assert "--time-budget 1500" in out and "gpu=2" in out and "runtime=30" in out


def test_bench_records_training_rows_and_sizes_cores_per_gpu(tmp_path, capsys):
    from pathologies.bench.train import main as bench_train
    from pathologies.training.throughput import read_train_throughput

    table = tmp_path / "train_throughput.csv"
    assert bench_train(["--sections", "decode", "--device", "cpu", "--record", str(table), "--device-label", "cpu2",
                        "--gpu-label", "cpu2", "--precision-arch", "small_cnn", "--precision-size", "224",
                        "--precision-batch", "2", "--steps", "1", "--jpegs", "3", "--workers", "0"]) == 0
    rows = read_train_throughput(table)
    assert {(r["precision"], r["channels_last"], r["data"]) for r in rows} == {
        (p, c, d) for p, c in (("fp32", "false"), ("bf16", "true")) for d in ("synthetic", "jpeg")}
    assert all(r["device"] == "cpu2" and r["images_per_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    per_core = float(out.split("decode_per_core=")[1].split()[0])
    for row in rows:  # cores one "GPU" (here the CPU rows just recorded) needs at each rate
        assert f"{math.ceil(row['images_per_s'] / per_core)} at {per_core:.0f} images/s per core" in out
    assert "PIL vs decode_jpeg resize+crop images: max |difference|" in out


@pytest.mark.parametrize("line, message", [
    ("cpu2,mlp,8,fp32,maybe,synthetic,10,2026-12-06,x", "channels_last 'maybe' is not one of true, false"),
    ("cpu2,mlp,8,fp32,false,disk,10,2026-12-06,x", "data 'disk' is not one of synthetic, jpeg"),
    ("cpu2,mlp,8,fp32,false,synthetic,-1,2026-12-06,x", "images_per_s -1.0 is not a positive finite rate"),
    ("cpu2,mlp,8,fp32,false,synthetic,inf,2026-12-06,x", "images_per_s inf is not a positive finite rate"),
    ("cpu2,mlp,8,fp32,false,synthetic,nan,2026-12-06,x", "images_per_s nan is not a positive finite rate"),
    ("cpu2,mlp,0,fp32,false,synthetic,10,2026-12-06,x", "image_size 0 must be at least 1"),
    ("cpu2,mlp,eight,fp32,false,synthetic,10,2026-12-06,x", "image_size must be an integer"),
    ("cpu2,mlp,8,fp32,false,synthetic,10,2026-12-06,x\ncpu2,mlp,8,fp32,false,synthetic,99,2026-12-07,y",
     "is already on line 2"),
])
def test_bad_training_throughput_row_is_one_line(tmp_path, line, message):
    from pathologies.training.throughput import COLUMNS, read_train_throughput

    path = tmp_path / "t.csv"
    path.write_text(",".join(COLUMNS) + "\n" + line + "\n")
    with pytest.raises(UserError, match=f"{path} line [23]: .*{message}") as err:
        read_train_throughput(path)
    assert "\n" not in str(err.value)
