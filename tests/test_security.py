"""Silent wrong results (issue #22): catalogue of cases where a run used to succeed with wrong numbers.

Each case was reproduced on the code before its fix and states its exact expectation:

- resume states are keyed on the *content* of what they depend on (models, dataset, initial weights), so
  a model retrained (or a weights file replaced) at the same path after a kill starts over with one log
  line instead of mixing two models' results;
- resume states carry a checksum: an edited state is discarded with one log line and recomputed;
- human-benchmark answers are compared with the key's class names as text ("3", "007", "NA");
- non-finite training, weights and scores stop with one line and leave no finished-looking output.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import kill_at_call, make_quadrant_dataset, make_spec
from overinterp_fixtures import save_untrained_model, write_sis_file
from pathologies import io as pio
from pathologies.config import run_specs
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model
from pathologies.models.registry import build_model
from pathologies.overinterp import calibrated_sis
from pathologies.sis import extract as extract_module
from pathologies.sis.jobs import sis_jobs
from pathologies.training import train as train_module
from pathologies.training.train import train_run

GROUPS = 3  # 6 images in lockstep groups of 2


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_quadrant_dataset(tmp_path_factory.mktemp("data") / "q.h5", n_train=64, n_test=12, size=6)


@functools.cache
def _sis_spec() -> str:
    config = validate({"datasets": {"quadrants": {"kind": "digits"}},
                       "models": {"m": {"dataset": "quadrants", "arch": "small_cnn", "seeds": [0]}},
                       "sis": {"runs": {"r": {"models": ["m"], "thresholds": [0.3], "sample": 6,
                                              "lockstep_images": 2}}}})
    (job,) = sis_jobs(config, run_specs(config)).values()
    return json.dumps(job.as_dict())


def sis_spec() -> dict:
    """The spec of an exact SIS job of 6 test images in lockstep groups of 2 (validated once)."""
    return json.loads(_sis_spec())


def sis_run(kind: str, models: list[Path], dataset: Path, out: Path, folder: Path, state: Path | None = None):
    """One shard of the SIS job of ``kind``: sis (one model), ensemble (several), calibrated (T = 2)."""
    if kind == "calibrated":
        calibration = folder / "calibration.json"
        calibration.write_text(json.dumps({"temperature": 2.0}))
        calibrated_sis.run(str(models[0]), str(calibration), str(dataset), sis_spec(), str(out), device="cpu",
                           state_dir=state)
    else:
        extract_module.run(models, dataset, sis_spec(), out=out, device="cpu", state_dir=state)


def killed_sis_run(kind, models, dataset, folder, state, monkeypatch):
    """A shard killed in its third lockstep group: the state holds the first two groups (4 images)."""
    wire = kill_at_call(monkeypatch, extract_module, "to_model_input", 3)
    with pytest.raises(KeyboardInterrupt):
        sis_run(kind, models, dataset, folder / "resumed.h5", folder, state)
    assert (state / "state.npz").exists() and not (folder / "resumed.h5").exists()
    wire.calls, wire.call = 0, None  # from now on: count the groups a run computes
    return wire


def read_all(path: Path) -> dict[str, bytes]:
    with h5py.File(path) as handle:
        names = []
        handle.visit(lambda name: names.append(name) if isinstance(handle[name], h5py.Dataset) else None)
        return {name: handle[name][()].tobytes() for name in names}


def models_of(kind: str, folder: Path, dataset: Path) -> list[Path]:
    count = 2 if kind == "ensemble" else 1
    return [save_untrained_model(folder / f"m{i}.pt", dataset, seed=10 * i) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# SIS resume: keyed on content, checksummed


@pytest.mark.parametrize("kind", ["sis", "calibrated", "ensemble"])
def test_a_model_retrained_at_the_same_path_after_a_kill_is_not_mixed_with_the_old_one(kind, data, tmp_path,
                                                                                     monkeypatch, capsys):
    """Kill a shard, replace (the last of) its model file(s) with another model, rerun: the stale state
    is discarded with one line, every group is recomputed, the file equals a fresh run of the new model."""
    models = models_of(kind, tmp_path, data)
    state = tmp_path / "resume"
    wire = killed_sis_run(kind, models, data, tmp_path, state, monkeypatch)
    with np.load(state / "state.npz") as old:
        old_orders = old["order"][:4]
    save_untrained_model(models[-1], data, seed=99)  # "retrained": other weights, same path
    capsys.readouterr()
    sis_run(kind, models, data, tmp_path / "resumed.h5", tmp_path, state)
    err = capsys.readouterr().err
    assert f"{state / 'state.npz'} belongs to another extraction; starting from the first image" in err
    assert "resuming" not in err and wire.calls == GROUPS and not state.exists()
    sis_run(kind, models, data, tmp_path / "fresh.h5", tmp_path)
    fresh = read_all(tmp_path / "fresh.h5")
    assert read_all(tmp_path / "resumed.h5") == fresh
    with h5py.File(tmp_path / "fresh.h5") as handle:  # the test can fail: the old model's orders differ
        assert not np.array_equal(handle["order"][:4], old_orders)


def test_a_dataset_rebuilt_at_the_same_path_after_a_kill_starts_the_shard_over(tmp_path, monkeypatch, capsys):
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=64, n_test=12, size=6)
    models = models_of("sis", tmp_path, dataset)
    state = tmp_path / "resume"
    killed_sis_run("sis", models, dataset, tmp_path, state, monkeypatch)
    make_quadrant_dataset(dataset, n_train=64, n_test=12, size=6, seed=5)  # same path and shapes, new pixels
    capsys.readouterr()
    sis_run("sis", models, dataset, tmp_path / "resumed.h5", tmp_path, state)
    assert "belongs to another extraction; starting from the first image" in capsys.readouterr().err
    sis_run("sis", models, dataset, tmp_path / "fresh.h5", tmp_path)
    assert read_all(tmp_path / "resumed.h5") == read_all(tmp_path / "fresh.h5")


def test_the_same_model_and_dataset_under_other_paths_still_resume(data, tmp_path, monkeypatch, capsys):
    """The identity is content, not paths: copies resume (and the file equals an uninterrupted run's)."""
    models = models_of("sis", tmp_path, data)
    state = tmp_path / "resume"
    sis_run("sis", models, data, tmp_path / "whole.h5", tmp_path)
    wire = killed_sis_run("sis", models, data, tmp_path, state, monkeypatch)
    moved = [Path(shutil.copy(models[0], tmp_path / "copy.pt"))]
    moved_data = Path(shutil.copy(data, tmp_path / "copy.h5"))
    capsys.readouterr()
    extract_module.run(moved, moved_data, sis_spec(), out=tmp_path / "resumed.h5", device="cpu", state_dir=state)
    assert "resuming from" in capsys.readouterr().err and wire.calls == GROUPS - 2
    whole, resumed = read_all(tmp_path / "whole.h5"), read_all(tmp_path / "resumed.h5")
    assert resumed == whole


@pytest.mark.parametrize("edit", ["curve", "order", "mask", "done", "checksum_removed"])
def test_an_edited_sis_state_is_discarded_and_the_shard_recomputed(edit, data, tmp_path, monkeypatch, capsys):
    """Rows of a killed shard's state.npz edited by hand (the checksum kept): one log line, every group
    recomputed, the file equals an uninterrupted run's (no edited row reaches it)."""
    models = models_of("sis", tmp_path, data)
    state = tmp_path / "resume"
    sis_run("sis", models, data, tmp_path / "whole.h5", tmp_path)
    wire = killed_sis_run("sis", models, data, tmp_path, state, monkeypatch)
    arrays = dict(np.load(state / "state.npz"))
    if edit == "curve":
        arrays["curve"][0] = 0.5
    elif edit == "order":
        arrays["order"][1] = arrays["order"][1][::-1]
    elif edit == "mask":
        arrays["mask0"][2] = ~arrays["mask0"][2]
    elif edit == "done":
        arrays["done"] = np.asarray(6)  # claims a third group it never finished (its rows are zeros)
    else:
        arrays["curve"][0] = 0.5
        del arrays["checksum"]
    with open(state / "state.npz", "wb") as handle:
        np.savez(handle, **arrays)
    capsys.readouterr()
    sis_run("sis", models, data, tmp_path / "resumed.h5", tmp_path, state)
    err = capsys.readouterr().err
    assert f"{state / 'state.npz'} does not match its checksum (edited or damaged); starting from the first image" \
        in err and "resuming" not in err
    assert wire.calls == GROUPS and not state.exists()
    assert read_all(tmp_path / "resumed.h5") == read_all(tmp_path / "whole.h5")


def test_a_sis_state_that_is_not_a_npz_file_is_discarded(data, tmp_path, monkeypatch, capsys):
    models = models_of("sis", tmp_path, data)
    state = tmp_path / "resume"
    wire = killed_sis_run("sis", models, data, tmp_path, state, monkeypatch)
    (state / "state.npz").write_bytes(b"PK\x03\x04 torn")
    capsys.readouterr()
    sis_run("sis", models, data, tmp_path / "resumed.h5", tmp_path, state)
    assert f"{state / 'state.npz'} is unreadable (BadZipFile); starting from the first image" in capsys.readouterr().err
    assert wire.calls == GROUPS


def test_the_sis_state_checksum_covers_every_array(data, tmp_path, monkeypatch):
    models = models_of("sis", tmp_path, data)
    killed_sis_run("sis", models, data, tmp_path, tmp_path / "resume", monkeypatch)
    with np.load(tmp_path / "resume" / "state.npz") as state:
        content = {name: state[name] for name in state.files if name != "checksum"}
        assert str(state["checksum"]) == pio.content_checksum(content)
    assert {"identity", "done", "classes", "f_full", "order", "curve", "mask0", "none0"} <= set(content)


def test_content_checksum_sees_every_value_dtype_and_shape():
    base = {"a": np.arange(4, dtype=np.int32), "b": [1.5, None, "x"], "t": torch.ones(2, 2)}
    same = {"t": torch.ones(2, 2), "b": [1.5, None, "x"], "a": np.arange(4, dtype=np.int32)}  # key order: none
    assert pio.content_checksum(base) == pio.content_checksum(same)
    for changed in ({**base, "a": np.arange(4, dtype=np.int64)}, {**base, "a": np.arange(4).reshape(2, 2)},
                    {**base, "b": [1.5, None, "y"]}, {**base, "b": (1.5, None, "x")},
                    {**base, "t": torch.ones(4)}, {**base, "t": torch.ones(2, 2, dtype=torch.float64)},
                    {**base, "extra": 0}):
        assert pio.content_checksum(changed) != pio.content_checksum(base)
    with pytest.raises(TypeError):
        pio.content_checksum({"x": object()})


def test_fingerprint_of_a_non_hdf5_file_is_of_its_bytes(data, tmp_path):
    a = save_untrained_model(tmp_path / "a.pt", data, seed=0)
    b = Path(shutil.copy(a, tmp_path / "b.pt"))
    c = save_untrained_model(tmp_path / "c.pt", data, seed=1)
    assert pio.fingerprint(a) == pio.fingerprint(b) != pio.fingerprint(c)
    assert pio.fingerprint(a, chunk_bytes=5) == pio.fingerprint(a)
    assert pio.fingerprint(data) == pio.h5_fingerprint(data)  # HDF5: content, not layout


# ---------------------------------------------------------------------------------------------
# training resume: weights content, checksum


def outputs(folder: Path) -> dict[str, Path]:
    return {"model_out": folder / "model.pt", "log_out": folder / "train_log.csv",
            "predictions_out": folder / "predictions.h5"}


def train(spec: dict, dataset: Path, folder: Path, **kwargs) -> dict[str, Path]:
    paths = outputs(folder)
    train_run(spec, dataset, **paths, state_dir=folder / "state", device="cpu", progress=False, **kwargs)
    return paths


def same_training(a: dict[str, Path], b: dict[str, Path]) -> bool:
    wa, wb = (torch.load(p["model_out"], weights_only=True)["state_dict"] for p in (a, b))
    with h5py.File(a["predictions_out"]) as fa, h5py.File(b["predictions_out"]) as fb:
        dumps = all(np.array_equal(fa[f"test/{k}"][()], fb[f"test/{k}"][()]) for k in ("pred", "conf"))
    return dumps and all(torch.equal(value, wb[key]) for key, value in wa.items())


def save_weights(path: Path, seed: int, scale: float = 1.0) -> Path:
    torch.manual_seed(seed)
    state = build_model("small_cnn", 4, in_channels=1, image_size=6).state_dict()
    torch.save({k: v * scale if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def test_a_weights_file_replaced_after_a_kill_starts_training_over(data, tmp_path, capfd):
    spec = {**make_spec(epochs=2), "weights": str(save_weights(tmp_path / "init.pt", seed=1))}
    train(spec, data, tmp_path / "run", stop_after=1)
    save_weights(tmp_path / "init.pt", seed=2)  # other initial weights, same path (and so the same spec)
    capfd.readouterr()
    resumed = train(spec, data, tmp_path / "run")
    err = capfd.readouterr().err
    assert (f"ignoring resume state {tmp_path / 'run' / 'state' / 'state.pt'}: it was saved for another run spec, "
            "weights file content, dataset content or code version; starting from epoch 0") in err
    assert "resuming" not in err
    fresh = train(spec, data, tmp_path / "fresh")
    assert same_training(resumed, fresh)
    save_weights(tmp_path / "init.pt", seed=1)
    old = train(spec, data, tmp_path / "old")
    assert not same_training(old, fresh)  # the test can fail: the old weights train to another model


@pytest.mark.parametrize("edit", ["weights", "rows", "epoch", "checksum_removed"])
def test_an_edited_training_state_is_discarded(edit, data, tmp_path, capfd):
    spec = make_spec(epochs=2)
    whole = train(spec, data, tmp_path / "whole")
    train(spec, data, tmp_path / "run", stop_after=1)
    path = tmp_path / "run" / "state" / "state.pt"
    state = torch.load(path, weights_only=True)
    if edit == "weights":
        name = next(iter(state["model"]))
        state["model"][name] = state["model"][name] + 1
    elif edit == "rows":
        state["rows"][1]["test_acc"] = 1.0
    elif edit == "epoch":
        state["epoch"] = 2  # claims the run is finished
    else:
        state["model"][next(iter(state["model"]))] *= 0
        del state["checksum"]
    torch.save(state, path)
    capfd.readouterr()
    resumed = train(spec, data, tmp_path / "run")
    err = capfd.readouterr().err
    assert (f"ignoring resume state {path}: it does not match its checksum (edited or damaged); "
            "starting from epoch 0") in err and "resuming" not in err
    assert same_training(resumed, whole)
    pd.testing.assert_frame_equal(pd.read_csv(resumed["log_out"]).drop(columns="seconds"),
                                  pd.read_csv(whole["log_out"]).drop(columns="seconds"))


# ---------------------------------------------------------------------------------------------
# human benchmark: class names are text


def numeric_class_dataset(path: Path, names: list[str]) -> Path:
    """The quadrant dataset with the given (numeric-looking) class names."""
    make_quadrant_dataset(path, n_train=16, n_test=24)
    with h5py.File(path, "r+") as handle:
        pio.write_attrs(handle, {"class_names": names})
    return path


@pytest.mark.parametrize("classes", ["digits", "zero_padded"])
def test_a_participant_who_answers_every_item_right_scores_100_percent(classes, tmp_path, capsys):
    from pathologies.data.prepare import prepare_dataset
    from pathologies.overinterp.human_benchmark import export, main

    if classes == "digits":  # the default config's dataset: class names "0" ... "9"
        dataset = tmp_path / "digits.h5"
        prepare_dataset("digits", {"kind": "digits"}, tmp_path / "resources", dataset)
    else:
        dataset = numeric_class_dataset(tmp_path / "padded.h5", ["01", "007", "NA", "10"])
    rows = np.arange(20)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in rows])
    sis = write_sis_file(tmp_path / "sis.h5", dataset, "test", rows, order)
    key_path = tmp_path / "key.csv"
    export(sis, [0.2], 8, 0, tmp_path / "index.html", key_path)
    key = pd.read_csv(key_path, dtype=str, keep_default_na=False)
    with h5py.File(dataset) as handle:
        names = set(pio.read_json_attr(handle, "class_names"))
    assert set(key["class_name"]) <= names and len(set(key["class_name"])) > 1
    right = dict(zip(key["item"], key["class_name"], strict=True))
    wrong_one = {**right, key["item"][0]: next(n for n in sorted(names) if n != key["class_name"][0])}
    for name, answers in (("right", right), ("one_wrong", wrong_one)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"participant": name, "answers": answers}))
    assert main(["--score", str(tmp_path / "right.json"), str(tmp_path / "one_wrong.json"),
                 "--key-out", str(key_path), "--scores-out", str(tmp_path / "scores.csv")]) == 0
    scores = pd.read_csv(tmp_path / "scores.csv").set_index("participant")
    assert scores.loc["right", "accuracy"] == 100.0 and scores.loc["right", "correct"] == 8
    assert scores.loc["one_wrong", "accuracy"] == 87.5


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # one observer: no kappa to average
def test_ddd_human_scores_compare_answers_as_text(tmp_path):
    """The DDD scoring reads answers as text and compares them with L / R, so numeric-looking cells
    cannot go wrong the way the benchmark's class names did: an observer who is always right scores 1,
    zero-padded trial numbers and counts ("007") are the numbers they spell."""
    from pathologies.ddd import human_scores

    pairs = pd.DataFrame({"trial": [1, 2, 3, 4], "easier": ["L", "R", "R", "L"]})
    questions = pd.DataFrame({"trial": [1, 2, 3], "category": ["trivial", "in_between", "impossible"],
                              "fraction_correct": [1.0, 0.5, 0.0]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    questions.to_csv(tmp_path / "questions.csv", index=False)
    (tmp_path / "obs.csv").write_text("trial,answer\n01,L\n002,r\n3,R\n4,L\n")
    (tmp_path / "qa.csv").write_text("trial,q1,q2,q3\n1,007,yes,no\n2,2,maybe,very\n3,0,no,slightly\n")
    (tmp_path / "qb.csv").write_text("trial,q1,q2,q3\n1,7,yes,no\n2,02,maybe,very\n3,00,no,slightly\n")
    out = {name: tmp_path / f"{name}.csv" for name in ("p", "q", "a")}
    assert human_scores.main(["--pairs", str(tmp_path / "pairs.csv"), "--questions", str(tmp_path / "questions.csv"),
                              "--pair-answers", str(tmp_path / "obs.csv"),
                              "--question-answers", str(tmp_path / "qa.csv"), str(tmp_path / "qb.csv"),
                              "--pairs-out", str(out["p"]), "--questions-out", str(out["q"]),
                              "--agreement-out", str(out["a"])]) == 0
    scores = pd.read_csv(out["p"]).set_index("observer")
    assert scores.loc["obs", "accuracy"] == 1.0 and scores.loc["obs", "n_answered"] == 4
    agreement = pd.read_csv(out["a"]).set_index(["label_errors", "question", "statistic", "scope"])
    assert agreement.loc[("kept", "q1", "krippendorff_alpha_interval", "all observers"), "value"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# non-finite models


def test_a_diverging_training_stops_with_one_line_and_writes_no_output(tmp_path, capsys):
    spec = make_spec(epochs=2, lr=1e12)
    data = make_quadrant_dataset(tmp_path / "q.h5", n_train=256, n_test=12, size=6)
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as caught:
        train_module.main(["--dataset", str(data), "--spec", json.dumps(spec), "--state-dir", str(folder / "state"),
                           "--device", "cpu", "--no-progress", "--threads", "1",
                           *[arg for key, path in outputs(folder).items()
                             for arg in (f"--{key.replace('_', '-')}", str(path))]])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: models.m seed 0: training diverged at epoch 1: "
                              "the loss became nan at batch 3 of 8 ")
    assert "(lr 1e+12); lower `lr` in its recipe or overrides" in err[-1]
    assert not any(path.exists() for path in outputs(folder).values())
    assert not (folder / "state").exists()  # no epoch finished: nothing to resume
    assert sorted(p.name for p in folder.rglob("*")) == []


def test_weights_that_become_non_finite_in_the_last_batch_are_caught():
    model = build_model("small_cnn", 4, in_channels=1, image_size=6)
    train_module.check_finite(torch.tensor([1.0, 2.0]), [1, 2], model)  # finite: passes
    with pytest.raises(train_module.Diverged, match=r"the loss became inf at batch 2 of 3"):
        train_module.check_finite(torch.tensor([1.0, float("inf"), float("nan")]), [1, 2, 3], model)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(train_module.Diverged, match=r"weights features.0.weight are non-finite after the last batch"):
        train_module.check_finite(torch.tensor([1.0, 2.0]), [1, 2], model)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weights_file_is_refused_before_training(value, data, tmp_path):
    weights = save_weights(tmp_path / "init.pt", seed=1, scale=value)
    spec = {**make_spec(epochs=1), "weights": str(weights)}
    with pytest.raises(UserError) as caught:
        train(spec, data, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"weights file {weights} holds non-finite values (inf or nan)") and "\n" not in message
    assert not any(path.exists() for path in outputs(tmp_path / "run").values())


def test_a_non_finite_checkpoint_is_refused_when_loading(data, tmp_path):
    good = save_untrained_model(tmp_path / "good.pt", data)
    payload = torch.load(good, weights_only=True)
    payload["snapshots"] = {0: dict(payload["state_dict"])}  # a finite snapshot beside non-finite final weights
    payload["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    payload["epoch"] = 3
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(UserError, match=rf"^model checkpoint {re.escape(str(tmp_path / 'nan.pt'))} holds non-finite"):
        load_model(tmp_path / "nan.pt")
    load_model(tmp_path / "nan.pt", epoch=0)  # the snapshot itself is fine


def test_sis_of_a_model_with_non_finite_scores_is_one_line_and_no_file(data, tmp_path, capsys):
    """Finite weights whose logits overflow (x 1e38): f is nan; refused, naming the model and the image
    (before the fix every image got a full-image SIS with none = False)."""
    path = save_untrained_model(tmp_path / "huge.pt", data)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: v * 1e38 if k.endswith("weight") else v for k, v in payload["state_dict"].items()}
    torch.save(payload, path)
    out = tmp_path / "sis.h5"
    with pytest.raises(SystemExit) as caught:
        extract_module.main(["--model", str(path), "--dataset", str(data), "--spec", json.dumps(sis_spec()),
                             "--out", str(out), "--device", "cpu", "--no-progress"])
    assert caught.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    with h5py.File(data) as handle:
        ids = handle["test/ids"][()]
    assert line.startswith(f"error: model {path} gives a non-finite probability (f = nan) on ")
    image = int(line.split("image id ")[1].split()[0])
    assert image in ids and "retrain it" in line and "no SIS written" in line
    assert not out.exists() and list(tmp_path.glob(".sis.h5.tmp*")) == []
