"""Sharded SIS of a calibrated model and of an ensemble (pathologies.overinterp.derived_sis, calibrated_sis).

The jobs come from a real config expansion (OverinterpRules); the files are written by the commands the
rules run, on small CNNs trained for a few epochs, and merged by ``pathologies.sis.merge``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kill_at_call, make_quadrant_dataset, make_spec
from pathologies.config import run_specs
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.io import h5py
from pathologies.overinterp import calibrated_sis
from pathologies.overinterp.rules import OverinterpRules
from pathologies.sis import extract as extract_module
from pathologies.sis.merge import merge_shards
from pathologies.training.train import train_run

# merge provenance: which code wrote each shard, how many shards were joined
PROVENANCE = {"code_version", "merged_shards"}


def rules_of(shards: int = 3) -> OverinterpRules:
    config = validate({
        "datasets": {"digits": {"kind": "digits"}},
        "recipes": {"quick": {"epochs": 1}},
        "models": {"cnn": {"dataset": "digits", "arch": "small_cnn", "recipe": "quick", "seeds": [0, 1]}},
        "sis": {"runs": {"test": {"models": ["cnn"], "split": "test", "sample": 9, "thresholds": [0.6, 0.9],
                                  "tie_break": "random", "lockstep_images": 2, "shards": shards, "runtime": 90},
                         "train": {"models": ["cnn"], "seeds": [0], "split": "train", "sample": 20}}},
        "overinterpretation": {"exp": {
            "source": {"model": "cnn", "seed": 0}, "threshold": 0.9, "fractions": [0.1], "random_draws": 1,
            "retrain": {"fraction": 0.1, "replicates": 1, "archs": ["small_cnn"], "augment": [False]},
            "ensembles": {"pair": {"members": [{"model": "cnn"}]}},
        }},
    })
    return OverinterpRules(config, run_specs(config), lambda m, s: f"results/models/{m}/seed{s}",
                           lambda name: f"results/data/{name}.h5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """(dataset, two checkpoints, calibration JSON) on 8x8 one-channel quadrant images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("derived")
    dataset = make_quadrant_dataset(folder / "quadrants.h5", n_train=256, n_test=24, size=8)
    models = []
    for seed in (0, 1):
        out = folder / f"seed{seed}"
        train_run(make_spec(epochs=3, seed=seed), dataset, model_out=out / "model.pt", log_out=out / "log.csv",
                  predictions_out=out / "predictions.h5", state_dir=out / "state", device="cpu", progress=False)
        models.append(out / "model.pt")
    calibration = folder / "calibration.json"
    calibration.write_text(json.dumps({"temperature": 2.5}))
    yield dataset, models, calibration
    torch.set_num_threads(threads)


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    found = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                          else None)
        return found, dict(handle.attrs)


def assert_same_file(merged: Path, whole: Path) -> None:
    """Same datasets, values (floats to float32 batching noise) and attributes except provenance."""
    data, attrs = read_all(merged)
    expected, expected_attrs = read_all(whole)
    assert sorted(data) == sorted(expected) and len(expected["index"]) == 9
    for name, value in expected.items():
        assert data[name].dtype == value.dtype and data[name].shape == value.shape, name
        if value.dtype.kind == "f":
            np.testing.assert_allclose(data[name], value, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(data[name], value, err_msg=name)
    assert set(attrs) == set(expected_attrs)
    for key in set(expected_attrs) - PROVENANCE:
        np.testing.assert_array_equal(attrs[key], expected_attrs[key], err_msg=key)


def run_sharded(write, job, folder: Path) -> tuple[Path, Path]:
    """(merged shards, merged unsharded run) of ``write(spec, shard, num_shards, out)``."""
    spec = job.spec()
    shards = [folder / Path(job.shard_path(i)).name for i in range(job.shards)]
    for i, out in enumerate(shards):
        write(spec, i, job.shards, out)
    write(spec, 0, 1, folder / "whole.h5")
    merge_shards(shards[::-1], folder / "merged.h5")
    merge_shards([folder / "whole.h5"], folder / "whole_merged.h5")
    return folder / "merged.h5", folder / "whole_merged.h5"


def test_jobs_reuse_the_source_settings_and_scale_shards_with_the_members():
    rules = rules_of(shards=3)
    calibrated = rules.calibrated_job("exp", "cnn", "0")
    ensemble = rules.ensemble_job("exp", "pair")
    source = rules.experiments["exp"].sis[("cnn", 0, "digits", "test")]
    assert (calibrated.shards, calibrated.runtime) == (3, 90)  # one model: the source's cost per shard
    assert (ensemble.shards, ensemble.runtime) == (6, 90)  # 2 models: twice the shards, same per shard
    assert ensemble.members == (("cnn", 0), ("cnn", 1))
    assert calibrated.shard_paths() == [f"results/overinterp/exp/calibrated_sis/cnn/seed0/shard{i}of3.h5"
                                        for i in range(3)]
    assert ensemble.shard_path(5) == "results/overinterp/exp/ensembles/pair/sis_test/shard5of6.h5"
    assert ensemble.state_dir(5) == "results/resume/overinterp/exp/ensembles/pair/sis_test/shard5of6"
    assert json.loads(ensemble.spec()) == {**source.as_dict(), "shards": 6}
    with pytest.raises(UserError, match="cut into 6 shards, not 3"):
        rules.ensemble_job("exp", "pair", "3")
    with pytest.raises(UserError, match="cnn seed 1 has no calibrated SIS"):
        rules.calibrated_job("exp", "cnn", 1)
    with pytest.raises(UserError, match="'trio' is not an ensemble"):
        rules.ensemble_job("exp", "trio")


def test_sharded_calibrated_sis_merge_equals_an_unsharded_run(trained, tmp_path):
    dataset, models, calibration = trained
    job = rules_of().calibrated_job("exp", "cnn", 0)

    def write(spec, shard, num_shards, out):
        assert calibrated_sis.main(["--model", str(models[0]), "--calibration", str(calibration), "--dataset",
                                    str(dataset), "--spec", spec, "--shard", str(shard), "--num-shards",
                                    str(num_shards), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0

    merged, whole = run_sharded(write, job, tmp_path)
    assert_same_file(merged, whole)
    data, attrs = read_all(merged)
    assert attrs["temperature"] == 2.5 and attrs["calibration"] == str(calibration)
    assert (attrs["num_shards"], attrs["merged_shards"], attrs["num_images"]) == (1, 3, 9)
    # the temperature applies: f on the full image is that of the scaled logits, below the model's own
    extract_module.run([models[0]], dataset, json.loads(job.spec()), out=tmp_path / "plain.h5", device="cpu")
    plain, _ = read_all(tmp_path / "plain.h5")
    assert np.all(data["f_full"] < plain["f_full"]) and np.array_equal(data["class"], plain["class"])


def test_sharded_ensemble_sis_merge_equals_an_unsharded_run(trained, tmp_path):
    dataset, models, _ = trained
    job = rules_of().ensemble_job("exp", "pair")

    def write(spec, shard, num_shards, out):
        args = [arg for model in models for arg in ("--model", str(model))]
        assert extract_module.main([*args, "--dataset", str(dataset), "--spec", spec, "--shard", str(shard),
                                    "--num-shards", str(num_shards), "--out", str(out), "--device", "cpu",
                                    "--no-progress"]) == 0

    merged, whole = run_sharded(write, job, tmp_path)
    assert_same_file(merged, whole)
    _, attrs = read_all(merged)
    assert json.loads(attrs["model"]) == [str(model) for model in models] and attrs["merged_shards"] == 6


def test_a_killed_calibrated_shard_resumes_bit_identical_and_ignores_an_uncalibrated_state(trained, tmp_path,
                                                                                           monkeypatch, capsys):
    dataset, models, calibration = trained
    job = rules_of(shards=1).calibrated_job("exp", "cnn", 0)
    spec = json.loads(job.spec())  # 9 images in lockstep groups of 2: 5 groups
    state = tmp_path / "resume"

    def calibrated(out, **kwargs):
        calibrated_sis.run(str(models[0]), str(calibration), str(dataset), spec, str(out), device="cpu", **kwargs)

    calibrated(tmp_path / "whole.h5")
    # a finished state of the uncalibrated model, same spec and shard: not this job's
    wire = kill_at_call(monkeypatch, extract_module, "to_model_input", 3)  # dies at the third group
    with pytest.raises(KeyboardInterrupt):
        extract_module.run([models[0]], dataset, spec, out=tmp_path / "plain.h5", device="cpu", state_dir=state)
    wire.calls = 0
    with pytest.raises(KeyboardInterrupt):
        calibrated(tmp_path / "resumed.h5", state_dir=state)
    assert "belongs to another extraction" in capsys.readouterr().err
    assert (state / "state.npz").exists() and not (tmp_path / "resumed.h5").exists()
    wire.calls, wire.call = 0, None  # the rerun: only count the groups it runs
    calibrated(tmp_path / "resumed.h5", state_dir=state)
    assert wire.calls == 3 and "resuming from" in capsys.readouterr().err  # groups 3-5: 1-2 from the state
    assert not state.exists()
    whole, _ = read_all(tmp_path / "whole.h5")
    resumed, _ = read_all(tmp_path / "resumed.h5")
    assert sorted(whole) == sorted(resumed)
    for name, value in whole.items():
        assert resumed[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("change, message", [
    ({"--shard": "3"}, "shard 3 is out of range for 3 shards (0..2)"),
    ({"--calibration": "missing.json"}, "calibration file missing.json does not exist"),
])
def test_bad_calibrated_sis_input_is_one_line_and_no_file(trained, tmp_path, capsys, change, message, monkeypatch):
    dataset, models, calibration = trained
    monkeypatch.chdir(tmp_path)
    options = {"--model": str(models[0]), "--calibration": str(calibration), "--dataset": str(dataset),
               "--spec": rules_of().calibrated_job("exp", "cnn", 0).spec(), "--shard": "0", "--num-shards": "3",
               "--out": "out.h5", "--device": "cpu", **change}
    with pytest.raises(SystemExit) as exit_:
        calibrated_sis.main([arg for item in options.items() for arg in item])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()
