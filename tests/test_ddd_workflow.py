"""The DDD stage for real: a tiny grid trained and analysed by Snakemake, numbers checked against the dumps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from test_workflow import copy_workflow, report_names, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
DDD_TINY = ROOT / "tests" / "configs" / "ddd_tiny.yaml"


def dump_correct(work, model: str, seed: int = 0) -> np.ndarray:
    """(epochs + 1, N) correctness read straight from a prediction dump."""
    from pathologies.io import h5py

    with h5py.File(work / f"results/models/{model}/seed{seed}/predictions.h5") as handle:
        return handle["test/pred"][()] == handle["test/targets"][()]


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two right/wrong vectors, written out."""
    p1, p2 = a.mean(), b.mean()
    c_obs = np.mean(a == b)
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return (c_obs - c_exp) / (1 - c_exp)


def test_ddd_stage_runs_and_its_tables_are_recomputable_from_the_dumps(tmp_path):
    work = copy_workflow(tmp_path)
    snakemake("--cores", "2", "--configfile", str(DDD_TINY), cwd=work)
    folder = work / "results" / "ddd" / "tiny"
    for name in ("members", "kappa", "conditions", "epoch_kappa", "difficulty", "fractions", "histogram",
                 "difficulty_profiles", "difficulty_histograms", "class_accuracy", "decision_changes",
                 "kl_accuracy", "rsa"):
        assert (folder / f"{name}.csv").stat().st_size > 0, name
    assert (folder / "experiment.json").exists()
    figures = sorted(path.name for path in (folder / "figures").glob("*.png"))
    assert figures == ["fig02_histogram.png", "fig03_conditions.png", "fig04_decisions.png",
                       "fig05_kappa_heatmaps.png", "fig07_rsa.png", "fig08_base_epochs.png", "fig09_kl_accuracy.png",
                       "fig10_difficulty_models.png", "fig17_decision_changes.png", "fig20_class_accuracy.png"]

    base = dump_correct(work, "tiny.base")
    assert base.shape[0] == 4  # epochs 0..2 plus the one extra epoch
    init2 = dump_correct(work, "tiny.init", 2)
    halves = [dump_correct(work, f"tiny.different_data.{i}") for i in range(2)]
    table = pd.read_csv(folder / "kappa.csv")
    everything = table[table["set"] == "all"]

    def row(epoch: int, a: str, b: str) -> pd.Series:
        return everything[(everything["epoch"] == epoch) & (everything["model_a"] == a)
                          & (everything["model_b"] == b)].iloc[0]

    # "plus1ep" at epoch e is the base run's epoch e + 1.
    assert row(2, "plus1ep", "init.s2")["kappa"] == pytest.approx(kappa(base[3], init2[2]))
    assert row(1, "base", "plus1ep")["kappa"] == pytest.approx(kappa(base[1], base[2]))
    conditions = pd.read_csv(folder / "conditions.csv")
    within = conditions[(conditions["set"] == "all") & (conditions["condition"] == "different_data")].iloc[0]
    assert within["reference"] == "different_data.1"
    assert within["kappa"] == pytest.approx(kappa(halves[0][2], halves[1][2]))

    difficulty = pd.read_csv(folder / "difficulty.csv")
    # Difficulty set: base, plus1ep, init (last seed), different_data (last part), at epoch 2.
    n_correct = base[2].astype(int) + base[3] + init2[2] + halves[1][2]
    assert difficulty["n_correct"].tolist() == n_correct.tolist()
    assert (difficulty["strict"] == "in_between").sum() == table.loc[table["set"] == "in_between", "n_images"].iloc[0]

    summary = (folder / "summary.txt").read_text()
    assert "DDD experiment 'tiny'" in summary and "different_data (within)" in summary
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(DDD_TINY), cwd=work).stdout

    names = report_names("--configfile", str(DDD_TINY), cwd=work)
    assert any(name.endswith("fig05_kappa_heatmaps.png") for name in names)
    assert any(name.endswith("summary.txt") for name in names)
