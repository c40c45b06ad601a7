"""Tests of the SIS extraction stage (pathologies.sis.extract, sis.merge, sis.rules, sis.jobs).

A small CNN is trained for a few epochs on a 6x6 one-channel "brightest quadrant" dataset (p = 36
pixels: 666 candidate evaluations per image), so the invariants are checked on a TRAINED model,
recomputed from nothing but the file, the checkpoint and the dataset.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_quadrant_dataset, make_spec
from pathologies.config import run_specs
from pathologies.data.layout import Split, load_split, to_model_input
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.io import h5py, read_json_attr
from pathologies.models.checkpoint import load_model
from pathologies.sis.engine import FunctionScorer, Scorer
from pathologies.sis.extract import Settings, shard_rows, threshold_name
from pathologies.sis.extract import extract as extract_images
from pathologies.sis.extract import main as extract_main
from pathologies.sis.extract import run as extract
from pathologies.sis.jobs import sis_jobs
from pathologies.sis.merge import merge_shards
from pathologies.sis.rules import SisRules
from pathologies.training.train import train_run

SIZE = 6
P = SIZE * SIZE
THRESHOLDS = [0.6, 0.9, 0.99]


def sis_config(**run) -> dict:
    """A validated config with one model `m` (seeds 0, 1) and one SIS run `r` with these settings."""
    return validate({
        "datasets": {"quadrants": {"kind": "digits"}, "other": {"kind": "digits"}},
        "models": {"m": {"dataset": "quadrants", "arch": "small_cnn", "seeds": [0, 1]}},
        "sis": {"runs": {"r": {"models": ["m"], **run}}},
    })


def sis_spec(**run) -> dict:
    """The spec of the (m, seed 0) job, produced through the real config validation and expansion."""
    config = sis_config(seeds=[0], **run)
    (job,) = sis_jobs(config, run_specs(config)).values()
    return job.as_dict()


@pytest.fixture(scope="module")
def one_thread():
    """conftest's one-thread fixture is function-scoped, so it does not cover module fixtures."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """(dataset, checkpoint) of a small CNN trained for 3 epochs on 6x6 quadrant images."""
    folder = tmp_path_factory.mktemp("trained")
    dataset = make_quadrant_dataset(folder / "quadrants.h5", n_train=256, n_test=24, size=SIZE)
    train_run(make_spec(epochs=3), dataset, model_out=folder / "model.pt", log_out=folder / "log.csv",
              predictions_out=folder / "predictions.h5", state_dir=folder / "state", device="cpu", progress=False)
    return dataset, folder / "model.pt"


@pytest.fixture(scope="module")
def exact_file(trained, tmp_path_factory, one_thread) -> Path:
    dataset, model = trained
    out = tmp_path_factory.mktemp("exact") / "test.h5"
    extract([model], dataset, sis_spec(thresholds=THRESHOLDS, collection=True), out=out, device="cpu")
    return out


def scorer_and_images(trained) -> tuple[Scorer, torch.Tensor, dict]:
    dataset, model_path = trained
    model, meta = load_model(model_path)
    split = load_split(dataset, "test")
    return Scorer(model), to_model_input(split.images, meta["mean"], meta["std"]), split


def keep_pixels(images: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """``images`` with every pixel outside ``masks`` (n, H, W) set to the masked value 0."""
    return images * torch.as_tensor(masks)[:, None]


def test_shard_rows_cut_the_seeded_selection_into_contiguous_parts():
    parts = [shard_rows(100, 30, 7, i, 4) for i in range(4)]
    whole = shard_rows(100, 30, 7, 0, 1)
    assert [len(part) for part in parts] == [8, 8, 7, 7]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len(set(whole)) == 30 and np.all(np.diff(whole) > 0)
    assert not np.array_equal(whole, shard_rows(100, 30, 8, 0, 1))  # the seed matters
    np.testing.assert_array_equal(shard_rows(5, None, 0, 0, 1), np.arange(5))
    assert len(shard_rows(2, None, 0, 2, 3)) == 0  # more shards than images: empty shards
    with pytest.raises(UserError, match="sample of 6 images exceeds the 5 images"):
        shard_rows(5, 6, 0, 0, 1)


def test_threshold_group_names_are_exact_text():
    assert [threshold_name(t) for t in (0.99, 0.9, 1, 0.125)] == ["0.99", "0.9", "1.0", "0.125"]


def test_file_layout_and_attributes(exact_file, trained):
    dataset, model = trained
    with h5py.File(exact_file) as handle:
        n = 24
        assert handle["order"].dtype == np.int32 and handle["order"].shape == (n, P)
        assert handle["curve"].dtype == np.float64 and handle["curve"].shape == (n, P)
        for name in ("index", "ids", "label", "class"):
            assert handle[name].dtype == np.int64 and handle[name].shape == (n,)
        assert "steps" not in handle  # exact: one feature per step
        assert handle["order"].compression == "gzip" and handle["order"].chunks is not None
        for tau in THRESHOLDS:
            group = handle[f"sis/{threshold_name(tau)}"]
            assert group["mask"].dtype == bool and group["mask"].shape == (n, SIZE, SIZE)
            assert group["size"].dtype == np.int32 and group["none"].dtype == bool
            assert handle[f"collection/{threshold_name(tau)}/member"].shape == (n, SIZE, SIZE)
        attrs = handle.attrs
        assert attrs["method"] == "exact" and attrs["block"] == 1 and attrs["patch"] == 1
        np.testing.assert_array_equal(attrs["thresholds"], THRESHOLDS)
        assert attrs["tie_break"] == "index" and attrs["softmax_dtype"] == "float64"
        assert attrs["model"] == str(model) and attrs["dataset"] == str(dataset) and attrs["split"] == "test"
        assert (attrs["shard"], attrs["num_shards"], attrs["num_images"], attrs["split_size"]) == (0, 1, 24, 24)
        np.testing.assert_array_equal(attrs["image_shape"], [SIZE, SIZE, 1])
        assert read_json_attr(handle, "model_run")[0]["arch"] == "small_cnn"
        assert read_json_attr(handle, "config")["thresholds"] == THRESHOLDS
        assert attrs["code_version"]


def test_invariants_recomputed_from_the_file(exact_file, trained):
    scorer, images, split = scorer_and_images(trained)
    with h5py.File(exact_file) as handle:
        data = {name: handle[name][()] for name in ("index", "ids", "label", "class", "f_full", "order", "curve")}
        sis = {tau: {key: handle[f"sis/{threshold_name(tau)}/{key}"][()] for key in ("mask", "size", "none")}
               for tau in THRESHOLDS}
    rows = data["index"]
    np.testing.assert_array_equal(data["ids"], split.ids[rows])
    np.testing.assert_array_equal(data["label"], split.labels[rows])
    x = images[rows]
    classes, f_full = scorer.predict(x)
    np.testing.assert_array_equal(data["class"], classes.numpy())
    np.testing.assert_allclose(data["f_full"], f_full.numpy(), rtol=0, atol=1e-6)
    assert (data["class"] == data["label"]).mean() > 0.7  # the model learnt something

    # the curve replays: f after masking each prefix of the stored order
    for i in range(len(rows)):
        assert sorted(data["order"][i]) == list(range(P))
        removed = np.zeros((P, P), dtype=bool)
        for step in range(P):
            removed[step:, data["order"][i][step]] = True
        replay = scorer(keep_pixels(x[i].expand(P, -1, -1, -1), ~removed.reshape(P, SIZE, SIZE)),
                        torch.full((P,), int(data["class"][i])))
        np.testing.assert_allclose(replay.numpy(), data["curve"][i], rtol=0, atol=1e-6)

    for tau in THRESHOLDS:
        mask, size, none = sis[tau]["mask"], sis[tau]["size"], sis[tau]["none"]
        np.testing.assert_array_equal(none, data["f_full"] < tau)
        assert not mask[none].any() and not size[none].any()  # no SIS: never an all-True mask
        np.testing.assert_array_equal(size, mask.sum(axis=(1, 2)))
        for i in np.flatnonzero(~none):  # the SIS is a suffix of the removal order
            suffix = np.zeros(P, dtype=bool)
            suffix[data["order"][i][P - size[i]:]] = True
            np.testing.assert_array_equal(mask[i].ravel(), suffix)
        # every SIS is sufficient: f with only the SIS kept reaches tau
        has = np.flatnonzero(~none)
        f_sis = scorer(keep_pixels(x[has], mask[has]), torch.as_tensor(data["class"][has]))
        assert (f_sis.numpy() >= tau).all()
    # larger tau, superset; and the test is not vacuous
    for low, high in pairwise(THRESHOLDS):
        both = ~sis[high]["none"]
        assert not (sis[low]["mask"][both] & ~sis[high]["mask"][both]).any()
    assert sis[0.6]["none"].sum() < len(rows) and sis[0.99]["none"].any()
    assert len(set(sis[0.9]["size"][~sis[0.9]["none"]])) > 2


def test_collections_are_disjoint_sufficient_and_start_with_the_sis(exact_file, trained):
    scorer, images, _ = scorer_and_images(trained)
    most = 0
    with h5py.File(exact_file) as handle:
        rows, classes = handle["index"][()], handle["class"][()]
        for tau in THRESHOLDS:
            member = handle[f"collection/{threshold_name(tau)}/member"][()]
            count = handle[f"collection/{threshold_name(tau)}/count"][()]
            mask, none = handle[f"sis/{threshold_name(tau)}/mask"][()], handle[f"sis/{threshold_name(tau)}/none"][()]
            assert not count[none].any() and not member[none].any()
            for i in np.flatnonzero(~none):
                assert count[i] >= 1 and member[i].max() <= count[i]
                np.testing.assert_array_equal(member[i] == 1, mask[i])
                for k in range(1, int(member[i].max()) + 1):
                    f = scorer(keep_pixels(images[rows[i]:rows[i] + 1], (member[i] == k)[None]),
                               torch.tensor([classes[i]]))
                    assert f.item() >= tau
            most = max(most, count.max())
    assert most >= 2  # some image has more than one disjoint SIS


def test_batched_gradient_file(trained, tmp_path):
    dataset, model = trained
    scorer, images, _ = scorer_and_images(trained)
    out = tmp_path / "gradient.h5"
    extract([model], dataset, sis_spec(method="gradient", block=5, thresholds=[0.9], sample=10, seed=3),
            out=out, device="cpu")
    steps = math.ceil(P / 5)
    with h5py.File(out) as handle:
        assert handle.attrs["method"] == "gradient" and handle.attrs["block"] == 5
        assert handle["curve"].shape == (10, steps) and handle["steps"].shape == (10, steps)
        np.testing.assert_array_equal(handle["steps"][0], [5, 10, 15, 20, 25, 30, 35, 36])
        rows, order, curve = handle["index"][()], handle["order"][()], handle["curve"][()]
        np.testing.assert_array_equal(rows, shard_rows(24, 10, 3, 0, 1))
        mask, size, none = (handle[f"sis/0.9/{key}"][()] for key in ("mask", "size", "none"))
        classes = handle["class"][()]
    for i in range(10):
        assert sorted(order[i]) == list(range(P))
        kept = np.ones(P, dtype=bool)
        kept[order[i][:10]] = False  # after two steps
        f = scorer(keep_pixels(images[rows[i]:rows[i] + 1], kept.reshape(1, SIZE, SIZE)), torch.tensor([classes[i]]))
        assert f.item() == pytest.approx(curve[i, 1], abs=1e-6)
    assert (~none).sum() >= 3
    for i in np.flatnonzero(~none):
        assert P - size[i] in {0, 5, 10, 15, 20, 25, 30, 35, 36}  # whole blocks popped from the stack
        f = scorer(keep_pixels(images[rows[i]:rows[i] + 1], mask[i:i + 1]), torch.tensor([classes[i]]))
        assert f.item() >= 0.9


def read_all(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                          else None)
        attrs = dict(handle.attrs)
    return found, attrs


def test_merged_shards_equal_an_unsharded_run(trained, tmp_path):
    dataset, model = trained
    spec = sis_spec(thresholds=[0.6, 0.9], sample=13, tie_break="random", tie_break_seed=5)
    extract([model], dataset, spec, out=tmp_path / "whole.h5", device="cpu")
    merge_shards([tmp_path / "whole.h5"], tmp_path / "whole_merged.h5")
    shards = [tmp_path / f"shard{i}of3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        extract([model], dataset, spec, shard=i, num_shards=3, out=path, device="cpu")
    merge_shards(shards[::-1], tmp_path / "merged.h5")  # any order: the shard attribute decides
    whole, whole_attrs = read_all(tmp_path / "whole_merged.h5")
    merged, merged_attrs = read_all(tmp_path / "merged.h5")
    assert sorted(whole) == sorted(merged) and len(whole["index"]) == 13
    for name, value in whole.items():
        if value.dtype.kind == "f":  # float32 forward passes may differ in the last bits between batches
            np.testing.assert_allclose(merged[name], value, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(merged[name], value, err_msg=name)
    assert merged_attrs["merged_shards"] == 3 and whole_attrs["merged_shards"] == 1
    assert (merged_attrs["shard"], merged_attrs["num_shards"]) == (0, 1)
    for key in set(whole_attrs) - {"merged_shards"}:
        np.testing.assert_array_equal(merged_attrs[key], whole_attrs[key], err_msg=key)
    # random tie-breaking is seeded: a rerun gives the same orders
    extract([model], dataset, spec, out=tmp_path / "again.h5", device="cpu")
    again, _ = read_all(tmp_path / "again.h5")
    np.testing.assert_array_equal(again["order"], read_all(tmp_path / "whole.h5")[0]["order"])


@pytest.mark.parametrize("precision, device", [
    ("fp32", "cpu"), ("verified", "cpu"),
    pytest.param("fp32", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
])
def test_a_tuned_batch_size_extraction_equals_the_declared_one(trained, tmp_path, precision, device):
    dataset, model = trained
    spec = sis_spec(thresholds=[0.6, 0.9], sample=6, batch_size=64, lockstep_images=3, precision=precision)
    extract([model], dataset, spec, out=tmp_path / "declared.h5", device=device)
    cache = tmp_path / "batch.json"
    extract([model], dataset, spec, out=tmp_path / "tuned.h5", device=device, batch_size_cache=cache)
    assert json.loads(cache.read_text())  # measured and cached
    declared, _ = read_all(tmp_path / "declared.h5")
    tuned, _ = read_all(tmp_path / "tuned.h5")
    assert sorted(declared) == sorted(tuned)
    for name, value in declared.items():
        np.testing.assert_array_equal(tuned[name], value, err_msg=name)


def test_random_tie_breaks_depend_on_the_row_not_on_the_shard():
    constant = FunctionScorer(lambda x: torch.full((len(x),), 0.5))  # every candidate ties
    images = np.zeros((6, 3, 3, 1), dtype=np.uint8)
    rows = np.arange(10, 16)
    settings = Settings.from_spec(sis_spec(thresholds=[0.5], tie_break="random", tie_break_seed=1))

    def orders(part: slice) -> np.ndarray:
        shard = Split(images[part], rows[part], rows[part])
        return extract_images(constant, shard, rows[part], settings, normalisation={"mean": [0.0], "std": [1.0]},
                              device=torch.device("cpu")).order

    whole = orders(slice(None))
    np.testing.assert_array_equal(orders(slice(3, None)), whole[3:])
    assert all(sorted(order) == list(range(9)) for order in whole)
    assert len({tuple(order) for order in whole}) == 6 and tuple(whole[0]) != tuple(range(9))


def test_empty_shards_merge(trained, tmp_path):
    dataset, model = trained
    spec = sis_spec(thresholds=[0.9], sample=2)
    shards = [tmp_path / f"shard{i}of3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        extract([model], dataset, spec, shard=i, num_shards=3, out=path, device="cpu")
    with h5py.File(shards[2]) as handle:
        assert handle["order"].shape == (0, P) and handle["sis/0.9/mask"].shape == (0, SIZE, SIZE)
    merge_shards(shards, tmp_path / "merged.h5")
    with h5py.File(tmp_path / "merged.h5") as handle:
        np.testing.assert_array_equal(handle["index"][()], shard_rows(24, 2, 0, 0, 1))


def test_merge_refuses_shards_that_do_not_belong_together(trained, tmp_path):
    dataset, model = trained
    for i, thresholds in enumerate(([0.9], [0.8])):
        extract([model], dataset, sis_spec(thresholds=thresholds, sample=4), shard=i, num_shards=2,
                out=tmp_path / f"s{i}.h5", device="cpu")
    with pytest.raises(UserError, match="differ in attribute"):
        merge_shards([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "merged.h5")
    with pytest.raises(UserError, match=r"one of 2 shards \(0..1\)"):
        merge_shards([tmp_path / "s0.h5"], tmp_path / "merged.h5")
    with pytest.raises(UserError, match="does not exist"):
        merge_shards([tmp_path / "s0.h5", tmp_path / "missing.h5"], tmp_path / "merged.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.h5", "s1.h5"]


@pytest.fixture
def rgb_dataset(tmp_path) -> Path:
    return make_quadrant_dataset(tmp_path / "rgb.h5", n_train=8, n_test=8, size=SIZE, channels=3)


@pytest.mark.parametrize("case, expected", [
    ("threshold_high", "SIS threshold 1.5 is outside (0, 1]"),
    ("threshold_zero", "SIS threshold 0 is outside (0, 1]"),
    ("shape", "takes 1-channel 6x6 images with 4 classes, but dataset"),
    ("checkpoint", "model checkpoint"),
    ("split", "has no split 'validation'"),
    ("sample", "sample of 99 images exceeds the 24 images"),
    ("shard", "shard 2 is out of range for 2 shards"),
    ("spec", "SIS spec lacks key(s) method"),
])
def test_bad_input_gives_one_line_and_no_file(case, expected, trained, rgb_dataset, tmp_path, capsys):
    dataset, model = trained
    spec = sis_spec(thresholds=[0.9], sample=4)
    args = {"model": model, "dataset": dataset, "shard": "0"}
    if case == "threshold_high":
        spec["thresholds"] = [0.9, 1.5]
    elif case == "threshold_zero":
        spec["thresholds"] = [0]
    elif case == "shape":
        args["dataset"] = rgb_dataset
    elif case == "checkpoint":
        args["model"] = tmp_path / "missing" / "model.pt"
    elif case == "split":
        spec["split"] = "validation"
    elif case == "sample":
        spec["sample"] = 99
    elif case == "shard":
        args["shard"] = "2"
    elif case == "spec":
        del spec["method"]
    out = tmp_path / "out" / "shard.h5"

    with pytest.raises(SystemExit) as exit_info:
        extract_main(["--model", str(args["model"]), "--dataset", str(args["dataset"]), "--spec", json.dumps(spec),
                      "--shard", args["shard"], "--num-shards", "2", "--out", str(out), "--device", "cpu",
                      "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


# ---------------------------------------------------------------------------------------------
# Config expansion and rule parameters


def test_config_expands_runs_into_one_job_per_run_model_seed_dataset_split():
    config = sis_config(thresholds=[0.9], shards=3, dataset="other", split="train", sample=10)
    jobs = sis_jobs(config, run_specs(config))
    assert sorted(jobs) == [("r", "m", 0, "other", "train"), ("r", "m", 1, "other", "train")]
    job = jobs[("r", "m", 1, "other", "train")]
    assert (job.run, job.group, job.shards, job.runtime) == ("r", "r", 3, 60)
    assert job.as_dict()["thresholds"] == [0.9] and job.as_dict()["method"] == "exact"
    rules = SisRules(config, run_specs(config), lambda m, s: f"results/models/{m}/seed{s}")
    assert rules.shards("r", "m", "1", "other", "train") == [
        f"results/sis/r/m/seed1/other/train/shard{i}of3.h5" for i in range(3)]
    assert rules.checkpoints("r", "m", "0", "other", "train") == ["results/models/m/seed0/model.pt"]
    assert rules.targets() == ["results/sis/r/m/seed0/other/train.h5", "results/sis/r/m/seed1/other/train.h5",
                               "results/figures/sis_examples_r.png", "results/figures/sis_curves_r.png",
                               "results/figures/sis_heatmaps_r.png"]
    assert rules.heatmap_args("r") == ["--sis", "m=results/sis/r/m/seed0/other/train.h5",
                                       "--sis", "m=results/sis/r/m/seed1/other/train.h5", "--fraction", "0.05"]
    with pytest.raises(UserError, match="into 3 shards, not 2"):
        rules.spec("r", "m", "0", "other", "train", "2")
    with pytest.raises(UserError, match="not extracted by any run"):
        rules.job("r", "m", "0", "quadrants", "test")


@pytest.mark.parametrize("run, expected", [
    ({"models": ["nope"]}, "sis.runs.r.models: 'nope' is not a model"),
    ({"seeds": [7]}, "sis.runs.r.seeds: model 'm' has no seed 7"),
    ({"dataset": "nope"}, "sis.runs.r.dataset: 'nope' is not a dataset"),
    ({"block": 4}, "sis.runs.r.block: 4 applies to method gradient only"),
    ({"thresholds": [1.5]}, "config key sis.runs.r.thresholds.0"),
    ({"thresholds": [0]}, "config key sis.runs.r.thresholds.0"),
    ({"method": "greedy"}, "config key sis.runs.r.method"),
])
def test_bad_sis_config_names_the_key(run, expected):
    with pytest.raises(UserError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        config = sis_config(**run)
        sis_jobs(config, run_specs(config))


def test_two_runs_of_one_model_and_split_write_two_files():
    config = sis_config(seeds=[0])
    config["sis"]["runs"]["again"] = dict(config["sis"]["runs"]["r"], method="gradient", block=1)
    rules = SisRules(config, run_specs(config), lambda m, s: f"results/models/{m}/seed{s}")
    files = [path for path in rules.targets() if path.endswith(".h5")]
    assert files == ["results/sis/r/m/seed0/quadrants/test.h5", "results/sis/again/m/seed0/quadrants/test.h5"]
    assert json.loads(rules.spec("again", "m", 0, "quadrants", "test", 1))["method"] == "gradient"


def test_random_tie_break_repeats_expand_into_runs_with_their_own_seeds():
    config = sis_config(seeds=[0], tie_break="random", tie_break_seed=5, repeats=3)
    jobs = sis_jobs(config, run_specs(config))
    assert [(job.run, job.group, job.settings["tie_break_seed"]) for job in jobs.values()] == [
        ("r.r0", "r", 5), ("r.r1", "r", 6), ("r.r2", "r", 7)]
    assert all("repeats" not in job.as_dict() for job in jobs.values())
    with pytest.raises(UserError, match=r"sis\.runs\.r\.repeats: 2 repeats of index tie-breaking"):
        config = sis_config(repeats=2)
        sis_jobs(config, run_specs(config))


def test_bf16_precision_is_recorded_and_its_sis_are_sufficient_under_bf16(trained, tmp_path):
    dataset, model_path = trained
    extract([model_path], dataset, sis_spec(thresholds=[0.9], sample=6, precision="bf16"),
            out=tmp_path / "bf16.h5", device="cpu")
    with h5py.File(tmp_path / "bf16.h5") as handle:
        assert handle.attrs["precision"] == "bf16"
        rows, classes = handle["index"][()], handle["class"][()]
        mask, none = handle["sis/0.9/mask"][()], handle["sis/0.9/none"][()]
    model, meta = load_model(model_path)
    images = to_model_input(load_split(dataset, "test").images, meta["mean"], meta["std"])[rows]
    has = np.flatnonzero(~none)
    assert has.size
    f_sis = Scorer(model, amp_dtype=torch.bfloat16)(keep_pixels(images[has], mask[has]), torch.as_tensor(classes[has]))
    assert (f_sis.numpy() >= 0.9).all()


def test_unknown_precision_is_refused_naming_the_key():
    spec = sis_spec()
    spec["precision"] = "fp8"
    with pytest.raises(UserError, match="precision"):
        Settings.from_spec(spec)
    with pytest.raises(UserError, match="sis.runs.r.precision"):
        sis_config(precision="fp16")
