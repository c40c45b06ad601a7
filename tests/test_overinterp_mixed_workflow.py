"""CIFAR-10-C's `mixed_sample` end to end on a tiny config: a shifted test set in CIFAR-10-C's file layout whose
seeded sample across corruptions and severities (split `mixed`) gets the source's SIS, BS and random subsets
cut from it, evaluations and tables; the full-image and subset rows of that column stand on the same images.
Also top-k rows of ensembles (mean logits) recomputed from the stored evaluations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pathologies.data.prepare import CIFAR10C_CORRUPTIONS, CIFAR10C_EXTRA_CORRUPTIONS
from pathologies.io import h5py
from pathologies.overinterp.tables import topk_correct
from test_workflow import copy_workflow, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
CONFIG = ROOT / "tests" / "configs" / "overinterp_mixed_tiny.yaml"
EXP = "results/overinterp/mixed"
CORRUPTIONS = ("gaussian_noise", "fog", "contrast")  # as the config lists them
PER_SEVERITY = 20


def write_cifar10c(folder) -> None:
    """CIFAR-10-C's layout: <corruption>.npy (5 severity blocks of 32x32 RGB uint8 images), labels.npy. The
    images are the training set's kind (class i: noise of std 10 (i + 1) around 128), a little wider with
    the corruption and severity."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    labels = np.tile(np.tile(np.arange(10), PER_SEVERITY // 10), 5)
    np.save(folder / "labels.npy", labels)
    for c, name in enumerate(CORRUPTIONS):
        std = 10.0 * (labels + 1) * np.repeat(1 + 0.02 * (c + 1) * np.arange(5), PER_SEVERITY)
        images = rng.normal(128, std[:, None, None, None], size=(len(labels), 32, 32, 3))
        np.save(folder / f"{name}.npy", np.clip(np.rint(images), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("overinterp_mixed"))
    write_cifar10c(work / "resources" / "CIFAR-10-C")
    # the tables and the figures drawn from them (top-1 rows only); not the SIS figures
    snakemake(f"{EXP}/tables/accuracy.csv", f"{EXP}/figures/accuracy.png", f"{EXP}/figures/shifted_accuracy.png",
              "--cores", "2", "--configfile", str(CONFIG), cwd=work)
    return work


def ids_of(path, group: str) -> np.ndarray:
    with h5py.File(path) as handle:
        return handle[f"{group}/ids"][()]


def test_the_mixed_sample_spans_corruptions_and_severities(finished):
    ids = ids_of(finished / "results/data/noise_c.h5", "mixed")
    assert len(ids) == 30 and len(np.unique(ids)) == 30
    known = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS
    code, index = ids // PER_SEVERITY, ids % PER_SEVERITY  # id = (corruption code * 5 + severity - 1) * n + index
    corruptions, severities = {known[c // 5] for c in code}, set(code % 5 + 1)
    assert corruptions == set(CORRUPTIONS) and len(severities) >= 4, (corruptions, severities)
    with h5py.File(finished / "results/data/noise_c.h5") as handle:  # each image is that corruption's image
        mixed = handle["mixed/images"][()]
        for row, (c, i) in enumerate(zip(code, index, strict=True)):
            block = handle[f"{known[c // 5]}_s{c % 5 + 1}"]
            assert block["ids"][i] == i and np.array_equal(block["images"][i], mixed[row])


def test_full_image_and_subset_rows_of_the_column_use_the_same_images(finished):
    mixed = ids_of(finished / "results/data/noise_c.h5", "mixed")
    sis = finished / "results/sis/mx_mixed/noise_cnn/seed0/noise_c/mixed.h5"
    assert np.array_equal(ids_of(sis, ""), mixed)  # the source's SIS on every image of the sample
    for subset in ("bs25", "random25_d0"):
        with h5py.File(finished / f"{EXP}/subsets/noise_c/{subset}.h5") as handle:
            assert list(handle) == ["mixed"] and np.array_equal(handle["mixed/ids"][()], mixed)
    by_split = pd.read_csv(finished / f"{EXP}/tables/accuracy_by_split.csv")
    column = by_split[by_split["test_set"] == "noise_c"]
    subsets = column[column["eval_on"] != "full"]
    assert set(subsets["eval_on"]) == {"bs", "random"}
    assert set(subsets["eval_split"]) == {"mixed"} and set(subsets["split_set"]) == {"mixed"}
    full_mixed = column[(column["eval_on"] == "full") & (column["split_set"] == "mixed")]
    assert set(full_mixed["eval_split"]) == {"mixed"} and set(full_mixed["seed"]) == {0, 1}
    for row in pd.concat([subsets, full_mixed]).itertuples():  # recomputed from the stored logits, same ids
        with h5py.File(finished / row.path) as handle:
            group = handle[f"{row.eval_dataset}/mixed"]
            assert np.array_equal(group["ids"][()], mixed)
            correct = topk_correct(group["logits"][()], group["labels"][()], row.topk)
        assert row.accuracy == pytest.approx(100 * correct.mean())
    # the SIS-size analyses stand on the same images: the SIS file's full-image accuracy is the source's row
    summary = pd.read_csv(finished / f"{EXP}/tables/sis_summary.csv").set_index(["dataset", "split"])
    source = full_mixed[(full_mixed["seed"] == 0) & (full_mixed["topk"] == 1)]
    assert summary.loc[("noise_c", "mixed"), "n_images"] == 30
    assert 100 * summary.loc[("noise_c", "mixed"), "accuracy"] == pytest.approx(source["accuracy"].item())


def test_tables_label_the_rows_with_their_image_set(finished):
    accuracy = pd.read_csv(finished / f"{EXP}/tables/accuracy.csv")
    column = accuracy[accuracy["test_set"] == "noise_c"]
    assert set(column.loc[column["eval_on"] != "full", "split_set"]) == {"mixed"}
    full = column[(column["eval_on"] == "full") & (column["topk"] == 1)].set_index("split_set")
    assert set(full.index) == {"all", "mixed"}
    by_split = pd.read_csv(finished / f"{EXP}/tables/accuracy_by_split.csv")
    corrupted = by_split[(by_split["test_set"] == "noise_c") & (by_split["eval_on"] == "full")
                         & (by_split["topk"] == 1) & (by_split["split_set"] == "all")]
    assert corrupted["eval_split"].nunique() == 15  # every corruption x severity, not the mixed sample
    per_run = corrupted.groupby("seed")["accuracy"].mean()
    assert full.loc["all", "accuracy_mean"] == pytest.approx(per_run.mean())
    header = next(line for line in (finished / f"{EXP}/tables/tables.md").read_text().splitlines()
                  if line.startswith("| Model |"))
    assert "| noise_c |" in header and "| noise_c (mixed sample) |" in header
    for figure in ("accuracy", "shifted_accuracy"):
        assert (finished / f"{EXP}/figures/{figure}.png").stat().st_size > 1000


def test_ensemble_rows_for_every_topk(finished):
    ensembles = pd.read_csv(finished / f"{EXP}/tables/ensembles.csv")
    mine = ensembles[(ensembles["test_set"] == "noise_c") & (ensembles["split_set"] == "mixed")
                     & (ensembles["eval_on"] == "full")].set_index("topk")
    assert sorted(mine.index) == [1, 2]
    logits = []
    for seed in (0, 1):
        with h5py.File(finished / f"{EXP}/eval/noise_cnn/seed{seed}.h5") as handle:
            logits.append(handle["noise_c/mixed/logits"][()].astype(np.float64))
            labels = handle["noise_c/mixed/labels"][()]
    for k in (1, 2):
        expected = 100 * topk_correct(np.mean(logits, axis=0), labels, k).mean()
        assert mine.loc[k, "accuracy_mean"] == pytest.approx(expected)
    assert mine.loc[2, "accuracy_mean"] >= mine.loc[1, "accuracy_mean"]
    assert mine.loc[2, "members_mean"] >= mine.loc[1, "members_mean"]
