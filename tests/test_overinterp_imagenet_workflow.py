"""The overinterpretation chain for real on a tiny ImageNet *index* (8 x 8 PNG class folders): the BS retraining
beside its mask-only control, both streamed from disk, and the leakage table's mask-only and agreement rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, make_imagenet_folder
from pathologies.data.layout import dataset_info
from pathologies.io import h5py
from test_workflow import copy_workflow, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
CONFIG = ROOT / "tests" / "configs" / "overinterp_imagenet_tiny.yaml"
EXP = "results/overinterp/tinynet"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("overinterp_imagenet"))
    make_imagenet_folder(work, {"train": 16, "val": 8}, 8, noise=100, step=120)
    snakemake("--cores", "2", "--configfile", str(CONFIG), cwd=work)
    return work


def eval_split(work, model: str, dataset: str) -> dict[str, np.ndarray]:
    with h5py.File(work / f"{EXP}/eval/{model}/seed0.h5") as handle:
        return {key: handle[f"{dataset}/test/{key}"][()] for key in ("pred", "labels", "ids")}


def test_mask_only_subset_is_an_index_of_the_bs_keep_masks(finished):
    info = dataset_info(finished / f"{EXP}/subsets/mask25.h5")
    assert (info.storage, info.kind) == ("index", "pixel_subset")
    with h5py.File(finished / f"{EXP}/subsets/mask25.h5") as mask, h5py.File(finished / f"{EXP}/subsets/bs25.h5") as bs:
        assert mask.attrs["subset_kind"] == "mask" and "images" not in mask["train"]
        for split in ("train", "test"):
            np.testing.assert_array_equal(mask[f"{split}/masks"][()], bs[f"{split}/masks"][()])
            assert mask[f"{split}/masks"].shape[0] == {"train": 32, "test": 16}[split]


def test_leakage_table_has_the_mask_only_floor_and_agreement_recomputed_from_the_files(finished):
    leakage = pd.read_csv(finished / f"{EXP}/tables/leakage.csv")
    assert len(leakage) == 1
    row = leakage.iloc[0]
    assert (row["arch"], row["test_set"], row["n_runs_bs"], row["n_runs_mask"]) == ("small_cnn", "tinynet", 1, 1)
    full = eval_split(finished, "tinynet_cnn", "tinynet")
    source = dict(zip(full["ids"].tolist(), full["pred"].tolist(), strict=True))
    for kind in ("bs", "mask"):
        got = eval_split(finished, f"tinynet.small_cnn.{kind}25", f"tinynet.{kind}25")
        assert row[f"{kind}_accuracy_mean"] == pytest.approx(100 * np.mean(got["pred"] == got["labels"]))
        agree = got["pred"] == np.array([source[i] for i in got["ids"].tolist()])
        assert row[f"{kind}_agree_mean"] == pytest.approx(100 * np.mean(agree))
    assert "BS masks only" in (finished / f"{EXP}/tables/tables.md").read_text()


def test_training_and_evaluation_stream_the_same_mask_only_images(finished):
    with h5py.File(finished / "results/models/tinynet.small_cnn.mask25/seed0/predictions.h5") as handle:
        dumped = handle["test/pred"][-1]
    with h5py.File(finished / f"{EXP}/eval/tinynet.small_cnn.mask25/seed0.h5") as handle:
        assert handle["tinynet.mask25/test"].attrs["masked"]
        np.testing.assert_array_equal(handle["tinynet.mask25/test/pred"][()], dumped)
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(CONFIG), cwd=finished).stdout
