"""Fault catalogue: interrupted, damaged and planted files, and what the workflow does about them.

Every case states its exact expectation: one line naming the file, no output or temporary file left,
or outputs byte-identical to an undisturbed run. Resume cases stop training through the API
(``train_run(stop_after=k)``, what a kill after epoch k leaves behind) so they are fast and
deterministic; ``tests/test_train.py`` kills a real process (slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, make_quadrant_dataset, make_spec
from overinterp_fixtures import write_sis_file
from pathologies import io as pio
from pathologies.data.layout import dataset_info, load_split
from pathologies.errors import UserError
from pathologies.io import atomic_output, h5py, read_csv, read_h5
from pathologies.models.checkpoint import read_checkpoint
from pathologies.training import train as train_module
from pathologies.training.train import ResumeState, train_run

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}


# ---------------------------------------------------------------------------------------------
# helpers


def outputs(out: Path) -> dict[str, Path]:
    return {"model_out": out / "model.pt", "log_out": out / "train_log.csv", "predictions_out": out / "predictions.h5"}


def train(spec: dict, dataset: Path, out: Path, **kwargs) -> dict[str, Path]:
    paths = outputs(out)
    train_run(spec, dataset, **paths, state_dir=out / "state", device="cpu", progress=False, **kwargs)
    return paths


def assert_same_outputs(a: dict[str, Path], b: dict[str, Path]) -> None:
    """Weights, snapshots, every dump array and the log (but its seconds) equal bit for bit."""
    ca, cb = read_checkpoint(a["model_out"]), read_checkpoint(b["model_out"])
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    assert sorted(ca.get("snapshots", {})) == sorted(cb.get("snapshots", {}))
    for epoch, weights in ca.get("snapshots", {}).items():
        for key, value in weights.items():
            assert torch.equal(value, cb["snapshots"][epoch][key]), (epoch, key)
    with h5py.File(a["predictions_out"]) as fa, h5py.File(b["predictions_out"]) as fb:
        for split in fa:
            for key in fa[split]:
                np.testing.assert_array_equal(fa[split][key][()], fb[split][key][()])
    pd.testing.assert_frame_equal(pd.read_csv(a["log_out"]).drop(columns="seconds"),
                                  pd.read_csv(b["log_out"]).drop(columns="seconds"))


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.<name>.tmp<pid>``) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp*"))


def corrupt_first_chunk(path: Path, dataset: str) -> None:
    """Overwrite the first stored chunk of ``dataset`` with zeros (a bad sector, a torn write)."""
    with h5py.File(path, "r") as handle:
        info = handle[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\0" * info.size)


def corrupt_every_dataset(path: Path) -> None:
    """:func:`corrupt_first_chunk` of every chunked dataset in the file."""
    names = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: names.append(name)
                          if isinstance(obj, h5py.Dataset) and obj.chunks and obj.size else None)
    for name in names:
        corrupt_first_chunk(path, name)


def truncate(path: Path) -> None:
    """Keep the first half of the file (a copy or download cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_quadrant_dataset(tmp_path_factory.mktemp("data") / "q.h5", n_train=128, n_test=32)


def spec3() -> dict:
    spec = make_spec(epochs=3, batch_size=32, crop_padding=1, hflip=True, input_dropout_keep=0.9,
                     snapshot_epochs=[0, 2])
    spec["dump_splits"] = ["test", "train"]
    return spec


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict[str, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test (conftest): bit-identical results need the same thread count
    try:
        return train(spec3(), dataset, tmp_path_factory.mktemp("reference"))
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# resume


@pytest.mark.parametrize("stop_after", [0, 1, 2])
def test_resume_after_a_stop_equals_an_uninterrupted_run(stop_after, dataset, reference, tmp_path, capfd):
    if stop_after == 0:  # a kill before the first epoch finished leaves no state: the rerun starts over
        paths = train(spec3(), dataset, tmp_path)
        assert_same_outputs(reference, paths)
        return
    train(spec3(), dataset, tmp_path, stop_after=stop_after)
    assert (tmp_path / "state" / "state.pt").exists()
    assert not any(p.exists() for p in outputs(tmp_path).values()), "a stopped run writes no output"
    state = torch.load(tmp_path / "state" / "state.pt", weights_only=True)  # plain data only
    assert state["epoch"] == stop_after
    capfd.readouterr()
    paths = train(spec3(), dataset, tmp_path)
    assert f"resuming m seed 0 after epoch {stop_after}" in capfd.readouterr().err
    assert_same_outputs(reference, paths)
    assert not (tmp_path / "state").exists() and leftovers(tmp_path) == []


class _Planted:
    """Unpickling this runs ``os.mkdir(marker)``: what a malicious state file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("planted", ["code", "garbage", "other_key", "not_a_dict", "right_key_no_content"])
def test_a_planted_or_foreign_resume_state_is_discarded_never_executed(planted, dataset, reference, tmp_path, capfd):
    state_file = tmp_path / "state" / "state.pt"
    state_file.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    if planted == "code":
        torch.save({"key": None, "epoch": 2, "payload": _Planted(marker)}, state_file)
    elif planted == "garbage":
        state_file.write_bytes(b"\x80\x04not a torch file")
    elif planted == "other_key":
        train(spec3(), dataset, tmp_path / "other", stop_after=1)
        other = torch.load(tmp_path / "other" / "state" / "state.pt", weights_only=True)
        other["key"]["spec"] = {**other["key"]["spec"], "seed": 99}
        torch.save(other, state_file)
    elif planted == "not_a_dict":
        torch.save([1, 2, 3], state_file)
    else:  # the right key but not what a training saves
        train(spec3(), dataset, tmp_path / "other", stop_after=1)
        key = torch.load(tmp_path / "other" / "state" / "state.pt", weights_only=True)["key"]
        torch.save({"key": key, "epoch": 1, "preds": {"test": [1]}}, state_file)
    capfd.readouterr()
    paths = train(spec3(), dataset, tmp_path)
    err = capfd.readouterr().err
    assert not marker.exists(), "loading the resume state ran code"
    assert "ignoring" in err and str(state_file) in err and "starting from epoch 0" in err
    assert_same_outputs(reference, paths)


@pytest.mark.parametrize("loader", ["checkpoint", "weights"])
def test_planted_checkpoint_or_weights_file_never_runs_code(loader, tmp_path):
    from pathologies.models.checkpoint import load_model
    from pathologies.models.registry import build_model, load_weights

    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"state_dict": {}, "payload": _Planted(marker)}, path)
    with pytest.raises(UserError) as caught:
        if loader == "checkpoint":
            load_model(path)
        else:
            load_weights(build_model("mlp", 4, in_channels=1, image_size=8), path, arch="mlp")
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("change", ["image_content", "test_split_size", "code_version"])
def test_resume_state_of_other_data_or_code_is_discarded(change, tmp_path, capfd, monkeypatch):
    """Kill after epoch 1, change what the run depends on, rerun: the state is dropped with a log
    line and the result equals a fresh run on the new inputs (no mixing, no shape error)."""
    data = make_quadrant_dataset(tmp_path / "d.h5", n_train=128, n_test=32)
    train(spec3(), data, tmp_path / "run", stop_after=1)
    if change == "image_content":
        make_quadrant_dataset(data, n_train=128, n_test=32, seed=1)  # same path and shapes, new pixels
    elif change == "test_split_size":
        make_quadrant_dataset(data, n_train=128, n_test=40)
    else:
        monkeypatch.setattr(train_module, "code_version", lambda: "0.0.0+other")
    capfd.readouterr()
    resumed = train(spec3(), data, tmp_path / "run")
    err = capfd.readouterr().err
    assert "ignoring resume state" in err and "dataset content or code version" in err
    assert "resuming" not in err
    fresh = train(spec3(), data, tmp_path / "fresh")
    assert_same_outputs(fresh, resumed)


def test_fingerprint_follows_content_not_path_or_layout(tmp_path):
    a = make_quadrant_dataset(tmp_path / "a" / "q.h5", n_train=16, n_test=8)  # the stem is the stored name
    b = make_quadrant_dataset(tmp_path / "b" / "q.h5", n_train=16, n_test=8)
    c = make_quadrant_dataset(tmp_path / "c" / "q.h5", n_train=16, n_test=8, seed=3)
    assert pio.h5_fingerprint(a) == pio.h5_fingerprint(b) != pio.h5_fingerprint(c)
    assert pio.h5_fingerprint(a, chunk_bytes=7) == pio.h5_fingerprint(a)  # block size does not matter


def test_temporaries_of_a_killed_save_are_removed_and_the_state_folder_with_them(dataset, reference, tmp_path):
    train(spec3(), dataset, tmp_path, stop_after=1)
    stale = tmp_path / "state" / ".state.pt.tmp4194999"  # a SIGKILL during torch.save leaves this
    stale.write_bytes(b"half a state")
    stale_output = tmp_path / ".predictions.h5.tmp4194998"  # and this, killed while writing the dump
    stale_output.write_bytes(b"half a dump")
    paths = train(spec3(), dataset, tmp_path)
    assert leftovers(tmp_path) == [] and not (tmp_path / "state").exists()
    assert_same_outputs(reference, paths)


def test_disk_full_while_saving_the_state_is_one_line(dataset, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4096 vs 0")

    monkeypatch.setattr(train_module.torch, "save", full)
    with pytest.raises(UserError) as caught:
        train(spec3(), dataset, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "state" / "state.pt") in message and "disk full" in message
    assert leftovers(tmp_path) == [] and not any(p.exists() for p in outputs(tmp_path).values())


def test_resume_state_holds_only_plain_data(dataset, tmp_path):
    train(spec3(), dataset, tmp_path, stop_after=2)
    state = torch.load(tmp_path / "state" / "state.pt", weights_only=True)
    assert set(state["key"]) == {"spec", "dataset", "code_version", "weights"}
    assert state["key"]["dataset"] == pio.h5_fingerprint(dataset) and state["key"]["weights"] is None
    assert state["checksum"] == pio.content_checksum({k: v for k, v in state.items() if k != "checksum"})
    assert all(isinstance(p, torch.Tensor) for rows in state["preds"].values() for pair in rows for p in pair)
    assert ResumeState(tmp_path / "state", state["key"]["spec"], state["key"]["dataset"],
                       state["key"]["code_version"]).load()["epoch"] == 2


def test_train_log_keeps_the_training_accuracy_beside_a_dumped_train_split(reference):
    log = pd.read_csv(reference["log_out"])
    assert {"train_acc", "train_eval_acc", "test_acc"} <= set(log.columns)
    assert np.isnan(log["train_acc"].iloc[0]), "epoch 0 has no training pass"
    with h5py.File(reference["predictions_out"]) as handle:
        expected = (handle["train/pred"][()] == handle["train/targets"][()]).mean(axis=1)
    np.testing.assert_allclose(log["train_eval_acc"], expected)
    assert not np.allclose(log["train_acc"].iloc[1:], log["train_eval_acc"].iloc[1:])


# ---------------------------------------------------------------------------------------------
# atomic outputs


def test_a_failing_writer_leaves_no_output_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(ZeroDivisionError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise ZeroDivisionError("the writer fails half-way")
    assert not target.exists() and leftovers(tmp_path) == []


def test_atomic_output_flushes_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(pio.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(pio.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_output(tmp_path / "x.txt") as tmp:
        tmp.write_text("done")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "x.txt").read_text() == "done"


def test_stale_temporaries_of_one_output_only_are_removed(tmp_path):
    (tmp_path / ".x.txt.tmp123").write_text("stale")
    (tmp_path / ".y.txt.tmp123").write_text("another output's")
    (tmp_path / ".x.txt.tmpl").write_text("not ours: no pid")
    with atomic_output(tmp_path / "x.txt") as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.txt.tmpl", ".y.txt.tmp123", "x.txt"]


# ---------------------------------------------------------------------------------------------
# damaged inputs: every reader names the file and says to delete and rebuild it


@pytest.fixture(scope="module")
def sis_file(dataset, tmp_path_factory) -> Path:
    rows = np.arange(6)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in rows])
    return write_sis_file(tmp_path_factory.mktemp("sis") / "test.h5", dataset, "test", rows, order,
                          curve=np.linspace(1, 0, 64)[None].repeat(6, 0), f_full=np.ones(6))


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _read_sis_sizes(path, tmp):
    from pathologies.overinterp.sis_sizes import read_sis_sizes
    read_sis_sizes(path)


def _sis_curves(path, tmp):
    from pathologies.sis.figures import plot_curves
    plot_curves([path], tmp / "curves.png")


def _overinterp_curves(path, tmp):
    from pathologies.sis.figures import plot_curves_sample as plot_curves
    plot_curves(path, 4, 0, tmp / "curves.png")


def _sis_orders(path, tmp):
    from pathologies.overinterp.subsets import read_sis_orders
    read_sis_orders(path)


def _dump_reader(path, tmp):
    from pathologies.training.predictions import read_dump
    read_dump(path, "test", "all")


def _dataset_reader(path, tmp):
    load_split(path, "train")


def _train_on(path, tmp):
    train(make_spec(epochs=1), path, tmp)


def _sis_heatmaps(path, tmp):
    from pathologies.sis.heatmaps import read_heatmaps
    read_heatmaps([path], 0.05)


SIS_READERS = {"sis_sizes": _read_sis_sizes, "sis_figures": _sis_curves, "overinterp_figures": _overinterp_curves,
               "subsets": _sis_orders, "sis_heatmaps": _sis_heatmaps}


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt_chunk", "missing_dataset"])
@pytest.mark.parametrize("reader", sorted(SIS_READERS))
def test_damaged_sis_file_is_one_line_naming_it(reader, damage, sis_file, tmp_path):
    path = _copy(sis_file, tmp_path / "test.h5")
    if damage == "missing":
        path.unlink()
        with pytest.raises(UserError, match=f"{path} does not exist; build it with `snakemake {path}`"):
            SIS_READERS[reader](path, tmp_path)
        assert list(tmp_path.iterdir()) == []
        return
    if damage == "truncated":
        truncate(path)
    elif damage == "corrupt_chunk":
        corrupt_every_dataset(path)
    else:
        with h5py.File(path, "a") as handle:
            del handle["order"], handle["curve"], handle["sis"]
    with pytest.raises(UserError) as caught:
        SIS_READERS[reader](path, tmp_path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert "rebuild" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.h5"], "no figure or temporary written"


@pytest.fixture(scope="module")
def dump_file(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dump")
    return train(make_spec(epochs=1), dataset, out)["predictions_out"]


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt_chunk", "empty_file", "not_hdf5"])
@pytest.mark.parametrize("kind", ["dataset", "dataset_for_training", "prediction_dump"])
def test_damaged_dataset_or_dump_is_one_line_naming_it(kind, damage, dataset, dump_file, tmp_path):
    source, reader, chunk = {"dataset": (dataset, _dataset_reader, "train/images"),
                             "dataset_for_training": (dataset, _train_on, "train/images"),
                             "prediction_dump": (dump_file, _dump_reader, "test/pred")}[kind]
    path = _copy(source, tmp_path / source.name)
    if damage == "missing":
        path.unlink()
        with pytest.raises(UserError, match=f"{path} does not exist; build it with `snakemake {path}`"):
            reader(path, tmp_path)
        assert list(tmp_path.iterdir()) == []
        return
    if damage == "truncated":
        truncate(path)
    elif damage == "corrupt_chunk":
        corrupt_first_chunk(path, chunk)
    elif damage == "empty_file":
        path.write_bytes(b"")
    else:
        path.write_text("image_id,model\n1,a\n")
    with pytest.raises(UserError) as caught:
        reader(path, tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "delete it and rebuild it" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_corrupt_sis_shard_names_that_shard_and_writes_no_merge(sis_file, tmp_path):
    shards = [_copy(sis_file, tmp_path / f"shard{i}of2.h5") for i in range(2)]
    for i, shard in enumerate(shards):
        with h5py.File(shard, "a") as handle:
            handle.attrs["shard"], handle.attrs["num_shards"] = i, 2
    corrupt_first_chunk(shards[0], "order")
    out = tmp_path / "merged.h5"
    done = subprocess.run([sys.executable, "-m", "pathologies.sis.merge", "--shards", *map(str, shards),
                           "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {shards[0]} is not a readable HDF5 file")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("given, expected", [
    ([0, 0], "SIS shards [0, 0] given, but {first} is one of 2 shards (0..1): shard(s) [0] given more than once, "
             "shard(s) [1] missing; pass each shard exactly once"),
    ([1], "SIS shards [1] given, but {first} is one of 2 shards (0..1): shard(s) [0] missing; pass each shard "
          "exactly once"),
    ([0, 1, 1], "SIS shards [0, 1, 1] given, but {first} is one of 2 shards (0..1): shard(s) [1] given more than "
                "once; pass each shard exactly once"),
])
def test_sis_merge_refuses_a_shard_given_twice_or_missing(given, expected, sis_file, tmp_path):
    """``merge s0 s0`` has the right number of shards, but would write shard 0's images twice and none of shard 1's."""
    from pathologies.sis.merge import merge_shards

    shards = [_copy(sis_file, tmp_path / f"shard{i}of2.h5") for i in range(2)]
    for i, shard in enumerate(shards):
        with h5py.File(shard, "a") as handle:
            handle.attrs["shard"], handle.attrs["num_shards"] = i, 2
    out = tmp_path / "merged.h5"
    with pytest.raises(UserError) as caught:
        merge_shards([shards[i] for i in given], out)
    assert str(caught.value) == expected.format(first=shards[given[0]])
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("content, expected", [
    ("", "is not a readable CSV file"),
    ("\x00\x01\x02garbage\xff\n", "is not a readable CSV file"),
    ("epoch,train_loss\n0,1.0\n", "lacks columns ['train_acc']"),
    ("epoch,train_loss,train_acc\n", "has no rows"),
    ('epoch,train_loss,train_acc\n0,"1,2\n', "is not a readable CSV file"),
])
def test_bad_training_log_is_one_line_naming_it(content, expected, tmp_path, capsys):
    from pathologies.training.learning_curves import main

    log = tmp_path / "m" / "seed0" / "train_log.csv"
    log.parent.mkdir(parents=True)
    log.write_bytes(content.encode("latin-1"))
    out = tmp_path / "curves.png"
    with pytest.raises(SystemExit) as caught:
        main(["--logs", str(log), "--out", str(out)])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {log}") and expected in lines[0], lines
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("module, option", [("pathologies.ddd.class_extremes", "--class-accuracy"),
                                            ("pathologies.overinterp.leakage", "--leakage")])
@pytest.mark.parametrize("content", ["", "\x00\x01garbage\xff\n", None])
def test_damaged_table_of_an_analysis_is_one_line_naming_it(module, option, content, tmp_path, capsys):
    """Analyses that read one workflow table: a missing, empty or garbled table is one line, nothing written."""
    import importlib

    table, out = tmp_path / "table.csv", tmp_path / "out.png"
    if content is not None:
        table.write_bytes(content.encode("latin-1"))
    with pytest.raises(SystemExit) as caught:
        importlib.import_module(module).main([option, str(table), "--out", str(out)])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(table) in lines[0], lines
    assert not out.exists() and leftovers(tmp_path) == []


def test_learning_curves_of_a_model_that_dumps_only_train(tmp_path):
    log = tmp_path / "m" / "seed0" / "train_log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,train_loss,train_acc,lr,seconds,train_eval_acc\n0,,,0.1,0,0.1\n1,1.0,0.5,0.1,1,0.6\n")
    from pathologies.training.learning_curves import plot_learning_curves, read_logs
    plot_learning_curves(read_logs([log]), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_readers_keep_programming_errors_as_tracebacks(tmp_path, dataset):
    """read_h5 turns file problems into UserError, not a KeyError of the caller's own code."""
    with pytest.raises(KeyError, match="not-a-file-problem"):
        with read_h5(dataset):
            {}["not-a-file-problem"]
    with pytest.raises(UserError, match="does not exist; build it with `snakemake"):
        read_csv(tmp_path / "nope.csv")
    assert dataset_info(dataset).num_classes == 4


def test_disk_full_in_any_command_is_one_line_and_leaves_nothing(tmp_path, capsys):
    import errno

    from pathologies.errors import cli

    target = tmp_path / "table.csv"

    @cli
    def main(argv=None):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: no space left to write")
    assert "No space left on device" in err and "free space" in err
    assert not target.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# a real kill of a Snakemake run


@pytest.mark.slow
@pytest.mark.workflow
def test_killed_snakemake_run_resumes_to_identical_outputs(tmp_path):
    """SIGKILL Snakemake and its training job mid-run; after ``--unlock``, rerunning the same command
    finishes from the last epoch, leaves no temporary or resume file, and equals an uninterrupted run bit for bit."""
    import json
    import signal
    import time

    from test_workflow import SNAKEMAKE, copy_workflow, snakemake

    config = (ROOT / "tests" / "configs" / "tiny.yaml").read_text().replace("    epochs: 2\n", "    epochs: 8\n")
    target = "results/models/digits_cnn/seed0/predictions.h5"
    (tmp_path / "killed").mkdir()
    work = copy_workflow(tmp_path / "killed")
    (work / "c.yaml").write_text(config)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([SNAKEMAKE, target, "--cores", "1", "--configfile", "c.yaml"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = work / "results" / "resume" / "digits_cnn" / "seed0" / "state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (work / target).exists(), "the kill must land mid-training"

    # a killed Snakemake leaves its lock: docs/cluster_and_cost.md "After failures" says --unlock once, then rerun
    snakemake(target, "--unlock", "--configfile", "c.yaml", cwd=work)
    done = snakemake(target, "--cores", "1", "--configfile", "c.yaml", cwd=work)
    log = (work / "results" / "logs" / "train" / "digits_cnn" / "seed0.log").read_text()
    assert "resuming digits_cnn seed 0 after epoch" in log, done.stderr[-2000:]
    assert not [p for p in (work / "results" / "resume").rglob("*") if p.is_file()], "the resume state is removed"
    assert leftovers(work / "results") == []
    # the uninterrupted reference: the same run spec the rule passes, on the same prepared dataset
    from pathologies.config import run_specs
    from pathologies.experiments import load

    spec = json.loads(json.dumps(run_specs(load(work / "c.yaml"))[("digits_cnn", 0)].as_dict(), sort_keys=True))
    reference = train(spec, work / "results" / "data" / "digits.h5", tmp_path / "reference")
    assert_same_outputs(reference, outputs(work / "results/models/digits_cnn/seed0"))


def test_a_full_disk_inside_a_reader_is_not_blamed_on_the_input(dataset, tmp_path):
    import errno

    with pytest.raises(OSError) as caught:
        with read_h5(dataset):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.h5"))
    assert not isinstance(caught.value, UserError) and caught.value.errno == errno.ENOSPC


# ---------------------------------------------------------------------------------------------
# an ImageNet index whose image was damaged after indexing


@pytest.mark.parametrize("damage, detail", [
    (lambda path: path.write_text("not an image any more"), "cannot identify image file"),
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "truncated"),
])
def test_damaged_image_of_an_imagenet_index_is_one_line_also_from_a_loader_worker(damage, detail, tmp_path, capsys):
    """A missing image already gave one line; an image replaced by text or cut short gives one too, also
    when a DataLoader worker decodes it (the worker's traceback is not shown)."""
    from PIL import Image

    from pathologies.data.imagenet import ImageIndexDataset
    from pathologies.data.prepare import prepare_dataset
    from pathologies.errors import cli

    root = tmp_path / "resources" / "imagenet"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            (root / split / wnid).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(root / split / wnid / "a.jpg",
                                                                              quality=95)
    index = tmp_path / "imagenet.h5"
    prepare_dataset("imagenet", {"kind": "imagenet", "image_size": 8, "resize": 8}, tmp_path / "resources", index)
    image = root / "val" / "n02" / "a.jpg"
    damage(image)
    capsys.readouterr()  # the indexing log
    with pytest.raises(UserError) as caught:
        ImageIndexDataset(index, "test")[1]
    assert str(caught.value).startswith(f"image {image} listed in the ImageNet index cannot be decoded (")
    assert detail in str(caught.value) and "replace it with a good copy" in str(caught.value)

    @cli
    def main(argv=None):
        for _ in torch.utils.data.DataLoader(ImageIndexDataset(index, "test"), batch_size=2, num_workers=1):
            pass

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {caught.value}", err


# ---------------------------------------------------------------------------------------------
# a full disk, for real: the writing process runs under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored),
# so its writes fail in the kernel as on a full disk (EFBIG instead of ENOSPC, the same code paths)


def _limited(args: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess:
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_file_size)


def _assert_one_disk_full_line(done: subprocess.CompletedProcess, output: Path, reason: str = "File too large"
                               ) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: no space left to write {output} ({reason}); free space or raise the quota "
                      "and rerun"], done.stderr[-3000:]
    assert not output.exists() and leftovers(output.parent) == []


@pytest.mark.parametrize("share", [0.1, 0.99])
def test_full_disk_while_preparing_a_dataset_is_one_line_and_leaves_nothing(share, tmp_path):
    """Was: 66 lines of h5py "Exception ignored" tracebacks, then a segfault (rc 139). ``share`` of the
    finished file's size: the limit is met while writing image chunks, or at the end (the last metadata,
    written when the file closes)."""
    from pathologies.data.prepare import prepare_dataset

    spec = {"kind": "gaussian", "train_per_class": 20, "test_per_class": 10}
    prepare_dataset("g", spec, tmp_path, tmp_path / "whole.h5")
    out = tmp_path / "out" / "g.h5"
    out.parent.mkdir()
    done = _limited(["-m", "pathologies.data.prepare", "--name", "g", "--spec", json.dumps(spec), "--out",
                     str(out)], int((tmp_path / "whole.h5").stat().st_size * share), tmp_path)
    _assert_one_disk_full_line(done, out)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """This process's writes beyond ``limit`` bytes of a file fail (EFBIG) while the block runs."""
    import resource
    import signal

    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def _assert_one_line(err: str, output: Path, reason: str) -> None:
    assert "Traceback" not in err and "Exception ignored" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    expected = f"error: no space left to write {output} ({reason}); free space or raise the quota and rerun"
    assert errors == [expected], err
    assert not output.exists() and leftovers(output.parent) == []


def test_full_disk_while_saving_a_model_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """torch.save reports a failed write as a RuntimeError ("unexpected pos ..."): was a traceback. It does not
    say why the write failed, so the line says what is most likely."""
    from pathologies.errors import cli
    from pathologies.models.checkpoint import save_model
    from pathologies.models.registry import build_model

    model = build_model("small_cnn", 4, in_channels=1, image_size=8)
    out = tmp_path / "out" / "model.pt"
    out.parent.mkdir()

    @cli
    def main():
        with file_size_limit(4096):
            save_model(out, model, arch="small_cnn", num_classes=4, in_channels=1, image_size=8, mean=[0.5],
                       std=[0.2])

    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    _assert_one_line(capsys.readouterr().err, out, "No space left on device")


def test_full_disk_in_a_sis_shard_is_one_line_and_leaves_nothing(dataset, tmp_path, capsys):
    """Was: the error over two lines (h5py's message holds a newline)."""
    from overinterp_fixtures import save_untrained_model
    from pathologies.sis.extract import main
    from test_sis_extract import sis_spec

    model = save_untrained_model(tmp_path / "m.pt", dataset)
    out = tmp_path / "out" / "sis.h5"
    out.parent.mkdir()
    with pytest.raises(SystemExit) as caught, file_size_limit(2048):
        main(["--model", str(model), "--dataset", str(dataset), "--spec", json.dumps(sis_spec(sample=4)), "--out",
              str(out), "--device", "cpu", "--no-progress"])
    assert caught.value.code == 2
    _assert_one_line(capsys.readouterr().err, out, "File too large")
