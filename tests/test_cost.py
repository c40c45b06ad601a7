"""The bill of a config (pathologies.cost) and the throughput table it reads (pathologies.sis.throughput)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pathologies import cost
from pathologies.bench.sis import main as bench_sis
from pathologies.config import run_specs
from pathologies.errors import UserError
from pathologies.experiments import load, validate
from pathologies.sis.jobs import sis_jobs
from pathologies.sis.throughput import COLUMNS, read_throughput, record

ROOT = Path(__file__).resolve().parents[1]


def table(tmp_path: Path, *rows: tuple) -> Path:
    path = tmp_path / "throughput.csv"
    for device, arch, size, rate in rows:
        record(path, {"device": device, "arch": arch, "image_size": size, "precision": "fp32",
                      "forward_per_s": rate, "measured": "2026-11-29", "how": "test"})
    return path


def test_record_replaces_the_row_of_the_same_key(tmp_path):
    path = table(tmp_path, ("gpu", "small_cnn", 8, 100.0), ("gpu", "mlp", 8, 50.0), ("gpu", "small_cnn", 8, 200.0))
    rows = read_throughput(path)
    assert [(r["arch"], r["forward_per_s"]) for r in rows] == [("mlp", 50.0), ("small_cnn", 200.0)]
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_rates_measured_scaled_by_pixels_or_by_flops(tmp_path):
    rows = read_throughput(table(tmp_path, ("gpu", "small_cnn", 8, 1000.0)))
    measured = cost.find_rate(rows, "gpu", "small_cnn", 8, "fp32")
    assert (measured.forward_per_s, measured.how) == (1000.0, "measured (2026-11-29)")
    bigger = cost.find_rate(rows, "gpu", "small_cnn", 16, "fp32")
    assert bigger.forward_per_s == pytest.approx(250.0) and "by pixel count" in bigger.how
    other = cost.find_rate(rows, "gpu", "mlp", 8, "fp32")
    ratio = cost.forward_flops("small_cnn", 8) / cost.forward_flops("mlp", 8)
    assert other.forward_per_s == pytest.approx(1000.0 * ratio) and "by forward FLOPs" in other.how
    with pytest.raises(UserError, match="no rate for device 'cpu9'"):
        cost.find_rate(rows, "cpu9", "small_cnn", 8, "fp32")


def test_forward_passes_per_image():
    assert cost.sis_forwards({"method": "exact", "patch": 1, "block": 1}, 32) == 524_800
    assert cost.sis_forwards({"method": "exact", "patch": 2, "block": 1}, 28) == 196 * 197 // 2
    assert cost.sis_forwards({"method": "gradient", "patch": 1, "block": 100}, 224) == math.ceil(224**2 / 100) * 3


def test_bill_of_the_default_config_is_recomputed_job_by_job(tmp_path):
    """Every SIS job and training run of config/config.yaml, priced independently of cost.bill."""
    config = load(ROOT / "config" / "config.yaml")
    rows = read_throughput(table(tmp_path, ("gpu", "small_cnn", 8, 2000.0), ("gpu", "mlp", 8, 4000.0)))
    bill = cost.bill(config, rows, "gpu")
    runs = run_specs(config)
    expected = 0.0
    for job in sis_jobs(config, runs).values():
        sizes, size = cost.dataset_sizes(job.dataset, config["datasets"], config)
        images = job.settings.get("sample") or sizes[job.split]
        rate = cost.find_rate(rows, "gpu", runs[(job.model, job.seed)].arch, size, "fp32").forward_per_s
        expected += images * cost.sis_forwards(job.settings, size) / rate / 3600
    sis_hours = sum(line["hours"] for line in bill if line["rule"] == "sis_extract")
    assert sis_hours == pytest.approx(expected) and sis_hours > 0
    trained = sum(line["jobs"] for line in bill if line["rule"] == "train")
    assert trained == sum(1 for spec in runs.values() if spec.recipe["epochs"] > 0)


def test_calibrated_and_ensemble_sis_are_billed_per_rule_and_member(tmp_path):
    """config.yaml plus a mixed ensemble (CNN seed 0 + MLP): calibrated = one model's passes over the source's
    images, ensemble = one pass per member per candidate at each member's rate, jobs = their shards."""
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["models"]["digits_mlp"] = {"dataset": "digits", "arch": "mlp", "recipe": "quick", "seeds": [0]}
    raw["overinterpretation"]["digits"]["ensembles"]["mixed"] = {
        "members": [{"model": "digits_cnn", "seeds": [0]}, {"model": "digits_mlp"}]}
    config = validate(raw)
    rows = read_throughput(table(tmp_path, ("gpu", "small_cnn", 8, 2000.0), ("gpu", "mlp", 8, 4000.0)))
    lines = {(line["rule"], line["arch"]): line for line in cost.bill(config, rows, "gpu")}
    per_image = 64 * 65 // 2  # exact SIS of 8x8 images, on digits_exact's 64 sampled test images
    calibrated = lines[("overinterp_calibrated_sis", "small_cnn")]
    assert (calibrated["jobs"], calibrated["forwards"]) == (2, 64 * per_image)  # digits_exact's 2 shards
    assert calibrated["hours"] == pytest.approx(64 * per_image / 2000 / 3600)
    cnn, mlp = lines[("overinterp_ensemble_sis", "small_cnn")], lines[("overinterp_ensemble_sis", "mlp")]
    # cnn2 (2 seeds) + mixed's CNN member; mixed's MLP member at the MLP's rate; 2 members x 2 shards each
    assert (cnn["jobs"], cnn["forwards"]) == (4 + 4, 3 * 64 * per_image)
    assert (mlp["jobs"], mlp["forwards"]) == (0, 64 * per_image)
    assert mlp["hours"] == pytest.approx(64 * per_image / 4000 / 3600)
    assert ("overinterp_calibrated_sis", "mlp") not in lines


def test_command_prints_every_rule_and_the_total(tmp_path, capsys):
    path = table(tmp_path, ("gpu", "small_cnn", 8, 2000.0))
    assert cost.main(["--configfile", str(ROOT / "config" / "config.yaml"), "--device", "gpu",
                      "--throughput", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("total: ") and out[-1].endswith(" gpu-hours")
    assert any(line.startswith("total sis_extract:") for line in out)
    assert any(line.startswith("overinterp_ensemble_sis   small_cnn") for line in out)  # the rule column fits
    assert any(line.startswith("total overinterp_calibrated_sis:") for line in out)
    assert any("extrapolated from small_cnn" in line for line in out)  # mlp and gaussian sizes are not measured


@pytest.mark.parametrize("content, message", [
    ("device,arch\ngpu,x\n", "line 2: empty or missing column"),
    (",".join(COLUMNS) + "\ngpu,small_cnn,eight,fp32,1,2026,x\n", "image_size must be an integer"),
])
def test_bad_throughput_table_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_throughput(path)
    with pytest.raises(SystemExit) as exit_:
        cost.main(["--configfile", str(ROOT / "config" / "config.yaml"), "--throughput", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        cost.main(["--configfile", str(ROOT / "config" / "config.yaml"), "--throughput", str(tmp_path / "none.csv")])
    assert "does not exist" in capsys.readouterr().err


def test_benchmark_records_its_measured_rate(tmp_path, capsys):
    path = tmp_path / "throughput.csv"
    assert bench_sis(["--arch", "small_cnn", "--image-size", "8", "--batches", "2", "--batch-size", "64",
                      "--record", str(path), "--device-label", "cpu-test"]) == 0
    out = capsys.readouterr().out
    (row,) = read_throughput(path)
    assert (row["device"], row["arch"], row["image_size"], row["precision"]) == ("cpu-test", "small_cnn", 8, "fp32")
    assert f"engine {row['forward_per_s']:,.0f} evaluations/s" in out


def test_training_is_billed_at_the_size_the_model_sees():
    """Meding et al.'s Gaussian recipe resizes random crops of the stored 32 x 32 images to 224: billed at 224."""
    from pathologies.config import model_input_size

    config = validate({
        "device": "auto",
        "datasets": {"gaussian": {"kind": "gaussian", "train_per_class": 10, "test_per_class": 2}},
        "recipes": {"crops": {"epochs": 2, "batch_size": 10, "random_resized_crop": True, "crop_size": 224},
                    "stored": {"epochs": 2, "batch_size": 10}},
        "models": {"crops": {"dataset": "gaussian", "arch": "mlp", "recipe": "crops", "seeds": [0]},
                   "stored": {"dataset": "gaussian", "arch": "mlp", "recipe": "stored", "seeds": [0]}},
    })
    rows = [{"device": "gpu", "arch": "mlp", "image_size": size, "precision": "fp32", "forward_per_s": 3000.0,
             "measured": "2026-12-06", "how": "test"} for size in (8, 224)]
    jobs = {job["model"]: job for job in cost.train_jobs(config, rows, "gpu")}
    stored = config["datasets"]["gaussian"]["image_size"]
    assert (jobs["crops"]["image_size"], jobs["stored"]["image_size"]) == (224, stored) and stored != 224
    recipe = config["recipes"]["crops"]
    assert model_input_size(recipe, "index", 160) == 160 and model_input_size(recipe, "array", 32) == 224
