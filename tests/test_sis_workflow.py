"""The SIS stage as Snakemake runs it: a tiny real run (tests/configs/sis_tiny.yaml) and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from pathologies.data.layout import load_split, to_model_input
from pathologies.io import h5py, read_json_attr
from pathologies.models.checkpoint import load_model
from pathologies.sis.engine import Scorer
from test_workflow import copy_workflow, report_names, snakemake

pytestmark = pytest.mark.workflow
SIS_TINY = ROOT / "tests" / "configs" / "sis_tiny.yaml"
DIGITS = "results/sis/digits_exact/digits_cnn/seed0/digits/test.h5"
GRADIENT = "results/sis/digits_gradient/digits_cnn/seed0/digits/train.h5"
TIES = [f"results/sis/digits_ties.r{i}/digits_cnn/seed0/digits/test.h5" for i in range(2)]
VERIFIED = "results/sis/digits_verified/digits_cnn/seed0/digits/test.h5"
TARGETS = [DIGITS, GRADIENT, *TIES, VERIFIED, *[f"results/figures/sis_{kind}_{run}.png"
                                      for run in ("digits_exact", "digits_gradient", "digits_ties")
                                      for kind in ("examples", "curves", "heatmaps")]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A copy of the workflow after running the SIS stage of sis_tiny.yaml (20 jobs, about a minute)."""
    work = copy_workflow(tmp_path_factory.mktemp("sis_workflow"))
    snakemake(*TARGETS, "--cores", "2", "--configfile", str(SIS_TINY), cwd=work)
    return work


def assert_every_sis_is_sufficient(work: Path, sis_file: str) -> int:
    """Recompute f on every stored SIS from the file, the checkpoint and the dataset; return #SIS."""
    with h5py.File(work / sis_file) as handle:
        model, meta = load_model(work / handle.attrs["model"])
        split = load_split(work / handle.attrs["dataset"], str(handle.attrs["split"]))
        rows, classes = handle["index"][()], torch.as_tensor(handle["class"][()])
        images = to_model_input(split.images[rows], meta["mean"], meta["std"])
        scorer = Scorer(model)
        found = 0
        for tau in handle.attrs["thresholds"]:
            group = handle[f"sis/{float(tau)!r}"]
            mask, none = torch.as_tensor(group["mask"][()]), group["none"][()]
            f = scorer(images * mask[:, None], classes).numpy()
            assert (f[~none] >= tau).all()
            np.testing.assert_array_equal(none, handle["f_full"][()] < tau)
            found += int((~none).sum())
    return found


@pytest.mark.slow
def test_tiny_sis_run_writes_merged_files_and_figures(tiny_run):
    work = tiny_run
    shards = [work / f"results/sis/digits_exact/digits_cnn/seed0/digits/test/shard{i}of2.h5" for i in range(2)]
    with h5py.File(work / DIGITS) as merged:
        index = merged["index"][()]
        assert len(index) == 6 and merged.attrs["merged_shards"] == 2 and merged.attrs["method"] == "exact"
        assert read_json_attr(merged, "config")["run"] == "digits_exact"
        parts = []
        for path in shards:
            with h5py.File(path) as shard:
                parts.append(shard["order"][()])
        np.testing.assert_array_equal(np.concatenate(parts), merged["order"][()])
    assert assert_every_sis_is_sufficient(work, DIGITS) >= 3
    with h5py.File(work / GRADIENT) as handle:
        assert handle.attrs["method"] == "gradient" and handle.attrs["split"] == "train"
        np.testing.assert_array_equal(handle["steps"][0], [7, 14, 21, 28, 35, 42, 49, 56, 63, 64])
        assert handle["collection/0.5/count"][()].max() >= 1
    assert assert_every_sis_is_sufficient(work, GRADIENT) >= 1
    for target in TARGETS[5:]:
        assert (work / target).stat().st_size > 1000
    assert (work / "results/benchmarks/sis_extract/digits_exact/digits_cnn/seed0/digits/test/shard1of2.tsv").exists()
    assert "Nothing to be done" in snakemake(*TARGETS, "-n", "--configfile", str(SIS_TINY), cwd=work).stdout


@pytest.mark.slow
def test_runs_on_one_model_and_split_coexist_and_the_heatmap_pools_the_repeats(tiny_run):
    from pathologies.sis.heatmaps import read_heatmaps

    work = tiny_run
    orders, seeds, rows = [], [], []
    for path in (DIGITS, *TIES):
        with h5py.File(work / path) as handle:
            orders.append(handle["order"][()])
            seeds.append((str(handle.attrs["tie_break"]), int(handle.attrs["tie_break_seed"])))
            rows.append(handle["index"][()])
    assert all(np.array_equal(r, rows[0]) for r in rows)  # the same 6 images in all three runs
    assert seeds == [("index", 0), ("random", 0), ("random", 1)]
    assert assert_every_sis_is_sufficient(work, TIES[1]) >= 1
    # the figure's numbers, recomputed from the two repeat files: the last round(0.1 * 64) = 6 pixels removed
    maps = read_heatmaps([work / path for path in TIES], 0.1)
    expected = np.zeros(64)
    for order in orders[1:]:
        for row in order:
            expected[row[-6:]] += 1
    np.testing.assert_allclose(maps["bs"].ravel(), expected / 12)
    assert maps["images"] == 12 and abs(maps["bs"].sum() - 6) < 1e-9
    with h5py.File(work / TIES[0]) as a, h5py.File(work / TIES[1]) as b:
        sis = np.concatenate([f["sis/0.5/mask"][()][~f["sis/0.5/none"][()]] for f in (a, b)])
    np.testing.assert_allclose(maps["sis"]["0.5"], sis.mean(axis=0))


@pytest.mark.slow
def test_a_verified_run_writes_the_files_of_the_strict_run_and_says_what_its_screen_did(tiny_run):
    with h5py.File(tiny_run / DIGITS) as strict, h5py.File(tiny_run / VERIFIED) as verified:
        assert verified.attrs["precision"] == "verified" and verified.attrs["merged_shards"] == 2
        for name in ("index", "class", "f_full", "order", "curve", "sis/0.5/mask", "sis/0.9/mask", "sis/0.9/none"):
            assert strict[name][()].tobytes() == verified[name][()].tobytes(), name
        screens = set(str(verified.attrs["screen"]).replace(" -> ", ", ").split(", "))
        assert screens <= {"none", "bf16", "fp16", "tf32", "channels_last", "compile"}
        assert verified.attrs["candidates"] == 6 * 64 * 65 // 2  # every step of every image, both shards summed
        assert 0 < verified.attrs["rescored"] <= verified.attrs["candidates"]
        assert "screen" not in strict.attrs


@pytest.mark.slow
def test_report_holds_the_sis_figures(tiny_run):
    names = report_names(*TARGETS, "--configfile", str(SIS_TINY), cwd=tiny_run)
    assert any(name.endswith("sis_examples_digits_exact.png") for name in names)
    assert any(name.endswith("sis_curves_digits_gradient.png") for name in names)
    assert any(name.endswith("sis_heatmaps_digits_ties.png") for name in names)


@pytest.mark.parametrize("edit, key", [
    ("models: [digits_cnn]", "config key sis.runs.digits_exact.models: 'nope' is not a model"),
    ("thresholds: [0.5, 0.9]", "config key sis.runs.digits_exact.thresholds.1"),
])
def test_bad_sis_config_stops_with_one_line(edit, key, tmp_path):
    work = copy_workflow(tmp_path)
    replacement = {"models: [digits_cnn]": "models: [nope]", "thresholds: [0.5, 0.9]": "thresholds: [0.5, 1.5]"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(SIS_TINY.read_text().replace(edit, replacement[edit], 1))
    done = snakemake("-n", "--configfile", str(bad), cwd=work, check=False)
    assert done.returncode != 0 and key in done.stderr and "Traceback" not in done.stderr
