"""Both papers' effects on real images: a Fashion-MNIST subsample through the whole workflow.

tests/configs/fashion_mnist_tiny.yaml trains on 2,000 Fashion-MNIST images (the Debian package
dataset-fashion-mnist; CI installs it): an MLP source whose Batched Gradient SIS of 2x2 patches give 5% BS
subsets, small CNNs and MLPs retrained on BS and on random 5% subsets, and a 4-model small-CNN DDD grid.
Asserted: models trained and evaluated on BS subsets are far more accurate than on random subsets (Carter
et al.), and error consistency on in-between images is far below that on all images (Meding et al.), each
cross-checked against the stored predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pathologies.data.mnist import DEBIAN_FASHION_MNIST
from pathologies.io import h5py
from test_ddd_workflow import dump_correct, kappa
from test_workflow import copy_workflow, snakemake

pytestmark = [
    pytest.mark.workflow, pytest.mark.slow,
    pytest.mark.skipif(not all((DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for name in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        reason=f"Fashion-MNIST is not in {DEBIAN_FASHION_MNIST}/: apt-get install dataset-fashion-mnist"),
]
CONFIG = ROOT / "tests" / "configs" / "fashion_mnist_tiny.yaml"
TARGETS = ("results/overinterp/fm/tables/accuracy.csv", "results/ddd/fm/kappa.csv", "results/ddd/fm/difficulty.csv")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("fashion_mnist"))
    snakemake("--cores", "2", *TARGETS, "--configfile", str(CONFIG), cwd=work)
    return work


def test_the_images_are_real_fashion_mnist(finished):
    with h5py.File(finished / "results/data/fmnist.h5") as handle:
        assert list(handle.attrs["image_shape"]) == [28, 28, 1] and handle.attrs["kind"] == "fashion_mnist"
        assert handle["train/images"].shape == (2000, 28, 28, 1) and handle["test/images"].shape == (500, 28, 28, 1)


def test_bs_subsets_train_far_more_accurate_models_than_random_subsets(finished):
    accuracy = pd.read_csv(finished / TARGETS[0])
    retrained = accuracy[(accuracy["role"] == "retrained") & (accuracy["eval_on"] != "full")].set_index("condition")
    for arch in ("small_cnn", "mlp"):
        bs = retrained.loc[f"{arch}.bs5", "accuracy_mean"]
        rnd = retrained.loc[f"{arch}.random5", "accuracy_mean"]
        assert bs > 55 and bs > rnd + 25, (arch, bs, rnd)
        # the same numbers straight from the retrained models' evaluation files
        for subset, value in (("bs5", bs), ("random5.d0", rnd)):
            model = f"fm.{arch}.{subset}"
            with h5py.File(finished / f"results/overinterp/fm/eval/{model}/seed0.h5") as handle:
                group = handle[f"fm.{subset}/test"]
                assert 100 * np.mean(group["pred"][()] == group["labels"][()]) == pytest.approx(value)


def test_error_consistency_is_far_lower_on_in_between_images(finished):
    table = pd.read_csv(finished / TARGETS[1])
    last = table[table["epoch"] == table["epoch"].max()]
    everything = last[last["set"] == "all"]["kappa"].mean()
    in_between = last[last["set"] == "in_between"]["kappa"].mean()
    assert everything > 0.4 and in_between < everything - 0.3, (everything, in_between)
    # one pair recomputed from the prediction dumps, on all images and on the in-between ones
    base, init2 = dump_correct(finished, "fm.base"), dump_correct(finished, "fm.init", 2)
    epoch = int(last["epoch"].iloc[0])
    difficulty = pd.read_csv(finished / TARGETS[2])
    between = (difficulty["strict"] == "in_between").to_numpy()
    for name, mask in (("all", slice(None)), ("in_between", between)):
        pair = {tuple(sorted(p)) for p in zip(last["model_a"], last["model_b"], strict=True)} & {("base", "init.s2")}
        assert pair, "kappa.csv has no row for base vs init.s2"
        pair_rows = (last["set"] == name) & (last["model_a"] + last["model_b"]).isin(["baseinit.s2", "init.s2base"])
        row = last[pair_rows].iloc[0]
        assert row["kappa"] == pytest.approx(kappa(base[epoch][mask], init2[epoch][mask]))
