"""Training: outputs, per-epoch dumps, determinism, resume after a hard kill, recipe options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, make_imagenet_index, make_quadrant_dataset, make_spec
from pathologies.data.layout import dataset_info, load_split, to_model_input
from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.models.checkpoint import load_model, read_checkpoint
from pathologies.training.train import augment_batch, predict, subset_indices, train_run


def run(spec: dict, dataset: Path, out: Path) -> dict[str, Path]:
    paths = {"model_out": out / "model.pt", "log_out": out / "train_log.csv",
             "predictions_out": out / "predictions.h5"}
    train_run(spec, dataset, **paths, state_dir=out / "state", device="cpu", progress=False)
    return paths


def read_dump(path: Path, split: str = "test") -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle[split][key][()] for key in ("targets", "ids", "pred", "conf")}


def test_outputs_dump_every_epoch_and_match_the_saved_model(quadrant_dataset, tmp_path):
    spec = make_spec(epochs=3)
    paths = run(spec, quadrant_dataset, tmp_path)
    dump = read_dump(paths["predictions_out"])
    test = load_split(quadrant_dataset, "test")
    assert dump["pred"].shape == (4, len(test)) and dump["conf"].shape == (4, len(test))
    np.testing.assert_array_equal(dump["targets"], test.labels)
    np.testing.assert_array_equal(dump["ids"], test.ids)
    assert ((dump["conf"] > 0) & (dump["conf"] <= 1)).all()

    log = pd.read_csv(paths["log_out"])
    assert list(log["epoch"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(log["test_acc"], (dump["pred"] == dump["targets"]).mean(axis=1))
    assert log["test_acc"].iloc[-1] > 0.8, "the quadrant task is easy; training must learn it"

    model, meta = load_model(paths["model_out"])
    info = dataset_info(quadrant_dataset)
    pred, conf = predict(model, to_model_input(test.images, meta["mean"], meta["std"]))
    np.testing.assert_array_equal(pred, dump["pred"][-1])
    np.testing.assert_allclose(conf, dump["conf"][-1], rtol=1e-5)
    assert meta["mean"] == pytest.approx(info.mean) and meta["run"] == spec
    assert not (tmp_path / "state").exists(), "resume state is removed once outputs are complete"


def test_same_spec_gives_bit_identical_outputs(quadrant_dataset, tmp_path):
    spec = make_spec(epochs=2, crop_padding=1, hflip=True, input_dropout_keep=0.8)
    a = run(spec, quadrant_dataset, tmp_path / "a")
    b = run(spec, quadrant_dataset, tmp_path / "b")
    for key, value in read_checkpoint(a["model_out"])["state_dict"].items():
        assert torch.equal(value, read_checkpoint(b["model_out"])["state_dict"][key]), key
    np.testing.assert_array_equal(read_dump(a["predictions_out"])["conf"], read_dump(b["predictions_out"])["conf"])


@pytest.mark.parametrize("change", [{"order_seed": 7}, {"init_seed": 7}, {"split_batch": True},
                                    {"data_fraction": 0.5}, {"nesterov": True}])
def test_recipe_options_change_the_result(quadrant_dataset, tmp_path, change):
    base = read_dump(run(make_spec(epochs=1), quadrant_dataset, tmp_path / "base")["predictions_out"])
    other = read_dump(run(make_spec(epochs=1, **change), quadrant_dataset, tmp_path / "other")["predictions_out"])
    assert not np.array_equal(base["conf"][-1], other["conf"][-1])
    if "order_seed" in change:  # data order alone leaves the untrained network unchanged
        np.testing.assert_array_equal(base["conf"][0], other["conf"][0])


def test_disjoint_halves_cover_the_training_split():
    a, b = subset_indices(101, 0.5, 0, seed=3), subset_indices(101, 0.5, 1, seed=3)
    assert set(a).isdisjoint(b) and sorted({*a, *b}) == list(range(101))
    np.testing.assert_array_equal(subset_indices(10, 1.0, 0, seed=3), np.arange(10))


def test_augmentation_moves_image_and_mask_together():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(16, 3, 6, 6) + 5.0  # never 0, so zero padding is recognisable
    mask = (image[:, :1] > 5.0).float()
    aug_image, aug_mask = augment_batch(gen, 2, True, image, mask)
    inside = aug_image[:, :1] != 0
    assert torch.equal(aug_mask.bool(), (aug_image[:, :1] > 5.0) & inside)
    assert not torch.equal(aug_image, image), "some crop or flip must have happened"


def test_missing_dataset_and_missing_gpu_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run(make_spec(), tmp_path / "nope.h5", tmp_path)
    if not torch.cuda.is_available():
        ds = make_quadrant_dataset(tmp_path / "q.h5", n_train=8, n_test=4)
        with pytest.raises(UserError, match="cuda"):
            train_run(make_spec(), ds, model_out=tmp_path / "m.pt", log_out=tmp_path / "l.csv",
                      predictions_out=tmp_path / "p.h5", state_dir=tmp_path / "s", device="cuda")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.csv"))


@pytest.mark.slow
def test_killed_training_resumes_to_identical_outputs(tmp_path):
    """SIGKILL the training process mid-run; the rerun must equal an uninterrupted run bit for bit."""
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=2048, n_test=128)
    spec = make_spec(epochs=6, crop_padding=1, hflip=True, input_dropout_keep=0.9, snapshot_epochs=[0, 2, 4])
    reference = run(spec, dataset, tmp_path / "reference")

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pathologies.training.train", "--dataset", str(dataset), "--spec", json.dumps(spec),
           "--model-out", str(out / "model.pt"), "--log-out", str(out / "train_log.csv"),
           "--predictions-out", str(out / "predictions.h5"), "--state-dir", str(out / "state"),
           "--device", "cpu", "--no-progress", "--threads", str(torch.get_num_threads())]
    env = {"PYTHONPATH": str(ROOT / "workflow"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "state" / "state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state_epoch = torch.load(out / "state" / "state.pt", weights_only=True)["epoch"]
    assert 1 <= state_epoch < 6, f"kill should land mid-run (state after epoch {state_epoch})"
    assert not (out / "model.pt").exists() and not (out / "predictions.h5").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming m seed 0 after epoch {state_epoch}" in done.stderr
    expected, resumed = read_checkpoint(reference["model_out"]), read_checkpoint(out / "model.pt")
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert sorted(resumed["snapshots"]) == [0, 2, 4]  # snapshots taken before the kill survive it
    for epoch, weights in expected["snapshots"].items():
        for key, value in weights.items():
            assert torch.equal(value, resumed["snapshots"][epoch][key]), (epoch, key)
    ref, got = read_dump(reference["predictions_out"]), read_dump(out / "predictions.h5")
    for key in ref:
        np.testing.assert_array_equal(ref[key], got[key])
    pd.testing.assert_frame_equal(pd.read_csv(reference["log_out"]).drop(columns="seconds"),
                                  pd.read_csv(out / "train_log.csv").drop(columns="seconds"))


def test_a_snapshot_equals_the_weights_of_a_shorter_run(tmp_path):
    """The DDD base run trains E + 10 epochs; its epoch-E snapshot is what an E-epoch run ends with."""
    dataset = make_quadrant_dataset(tmp_path / "q.h5", n_train=256, n_test=32)
    long = run(make_spec(epochs=3, lr_milestones=[2], snapshot_epochs=[1, 2]), dataset, tmp_path / "long")
    short = run(make_spec(epochs=2, lr_milestones=[2]), dataset, tmp_path / "short")
    snapshot, _ = load_model(long["model_out"], epoch=2)
    final_short, _ = load_model(short["model_out"], epoch=2)
    final_long, meta = load_model(long["model_out"])
    assert meta["epoch"] == 3 and sorted(read_checkpoint(long["model_out"])["snapshots"]) == [1, 2]
    for (key, value), other in zip(snapshot.state_dict().items(), final_short.state_dict().values(), strict=True):
        assert torch.equal(value, other), key
    assert not torch.equal(snapshot.state_dict()["classifier.weight"], final_long.state_dict()["classifier.weight"])
    with pytest.raises(UserError, match=r"not epoch 0; add it to the recipe's snapshot_epochs"):
        load_model(long["model_out"], epoch=0)
    with pytest.raises(UserError, match=r"config key models.m: snapshot_epochs \[5\] lie beyond its 3 epochs"):
        make_spec(epochs=3, snapshot_epochs=[1, 5])


def test_imagenet_index_datasets_stream_from_disk(tmp_path):
    """An ImageFolder index trains through DataLoader workers and dumps like an in-memory dataset."""
    index = make_imagenet_index(tmp_path, {"train": 12, "val": 4}, 10, noise=80, step=150)

    spec = make_spec(epochs=2, batch_size=8, crop_padding=1, hflip=True)
    paths = {"model_out": tmp_path / "m.pt", "log_out": tmp_path / "l.csv", "predictions_out": tmp_path / "p.h5"}
    train_run(spec, index, **paths, state_dir=tmp_path / "s", device="cpu", progress=False, workers=0)
    dump = read_dump(paths["predictions_out"])
    assert dump["pred"].shape == (3, 8)
    np.testing.assert_array_equal(dump["targets"], [0, 0, 0, 0, 1, 1, 1, 1])
    assert (dump["pred"][-1] == dump["targets"]).mean() == 1.0, "bright vs dark images are trivially separable"


def test_random_resized_crop_trains_on_fresh_crops_of_index_images(tmp_path, quadrant_dataset):
    """RandomResizedCrop (the pytorch/examples ImageNet recipe) crops the original 10x10 images to 8x8,
    seeded by the training generator (array datasets: tests/test_transforms.py)."""
    import torch

    from pathologies.data.imagenet import ImageIndexDataset

    index = make_imagenet_index(tmp_path, {"train": 12, "val": 4}, 10, noise=80, step=150)
    crops = ImageIndexDataset(index, "train", random_resized_crop=True)
    centre = ImageIndexDataset(index, "train")
    torch.manual_seed(0)
    first = [crops[i][0].numpy() for i in range(4)]
    torch.manual_seed(0)
    again = [crops[i][0].numpy() for i in range(4)]
    assert first[0].shape == (8, 8, 3)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert any(not np.array_equal(a, centre[i][0].numpy()) for i, a in enumerate(first))

    spec = make_spec(epochs=1, batch_size=8, hflip=True, random_resized_crop=True)
    outputs = []
    for run in ("a", "b"):
        paths = {"model_out": tmp_path / f"{run}.pt", "log_out": tmp_path / f"{run}.csv",
                 "predictions_out": tmp_path / f"{run}.h5"}
        train_run(spec, index, **paths, state_dir=tmp_path / f"s{run}", device="cpu", progress=False, workers=1)
        outputs.append(read_dump(paths["predictions_out"])["conf"])
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the same seed gives the same crops
