"""DDD figures: each drawn from tables the test makes; the PNG exists and shows the expected data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathologies.ddd import figures
from pathologies.ddd.measures import correct_histogram, difficulty_models

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def kappa_rows(pairs: dict[tuple[str, str], float], conditions: dict[str, str], epoch: int = 5,
               set_name: str = "all") -> pd.DataFrame:
    return pd.DataFrame([{"set": set_name, "epoch": epoch, "model_a": a, "condition_a": conditions[a],
                          "model_b": b, "condition_b": conditions[b], "kappa": k} for (a, b), k in pairs.items()])


CONDITIONS = {"base": "base", "plus1ep": "plus1ep", "init.s1": "init", "init.s2": "init"}
PAIRS = {("base", "plus1ep"): 0.9, ("base", "init.s1"): 0.6, ("base", "init.s2"): 0.8,
         ("plus1ep", "init.s1"): 0.5, ("plus1ep", "init.s2"): 0.7, ("init.s1", "init.s2"): 0.4}


def test_condition_matrix_means_pairs_and_fills_single_model_diagonals():
    matrix = figures.condition_matrix(kappa_rows(PAIRS, CONDITIONS))
    assert list(matrix.index) == list(matrix.columns) == ["base", "plus1ep", "init"]
    assert matrix.loc["base", "init"] == pytest.approx(0.7) == matrix.loc["init", "base"]
    assert matrix.loc["plus1ep", "init"] == pytest.approx(0.6)
    assert matrix.loc["init", "init"] == pytest.approx(0.4)  # within the condition
    assert matrix.loc["base", "base"] == 1.0  # a single model


def test_kappa_heatmaps(tmp_path):
    kappa = pd.concat([kappa_rows(PAIRS, CONDITIONS), kappa_rows({k: v - 0.3 for k, v in PAIRS.items()},
                                                                 CONDITIONS, set_name="in_between"),
                       kappa_rows({k: 0.0 for k in PAIRS}, CONDITIONS, epoch=4)])
    matrices = figures.plot_kappa_heatmaps(kappa, tmp_path / "fig05.png")
    assert is_png(tmp_path / "fig05.png")
    assert matrices["in_between"].loc["base", "init"] == pytest.approx(0.4)  # last epoch only
    only_all = figures.plot_kappa_heatmaps(kappa_rows(PAIRS, CONDITIONS), tmp_path / "fig05b.png")
    assert set(only_all) == {"all"} and is_png(tmp_path / "fig05b.png")


def test_histogram(tmp_path):
    n_correct = np.array([0, 0, 3, 3, 3, 1, 2, 3])
    data = figures.plot_histogram(correct_histogram(n_correct, 3), tmp_path / "fig02.png")
    assert is_png(tmp_path / "fig02.png")
    observed = data[data["source"] == "observed"].set_index("models correct")["fraction"]
    assert observed["None"] == 0.25 and observed["All"] == 0.5 and observed["1"] == 0.125


def test_conditions_figure(tmp_path):
    conditions = pd.DataFrame({"set": ["all"] * 3 + ["in_between"], "condition": ["plus1ep", "init", "init", "init"],
                               "member": ["plus1ep", "init.s1", "init.s2", "init.s1"],
                               "kappa": [0.9, 0.6, 0.8, 0.1], "ci_low": [0.85, np.nan, 0.7, 0.0],
                               "ci_high": [0.95, np.nan, 0.9, 0.2]})
    means = figures.plot_conditions(conditions, tmp_path / "fig03.png")
    assert is_png(tmp_path / "fig03.png")
    assert means.set_index("condition")["kappa"].to_dict() == pytest.approx({"plus1ep": 0.9, "init": 0.7})
    # Figures 15 / 16: ordered by another experiment's mean kappa; conditions it lacks come last.
    reference = pd.DataFrame({"set": "all", "condition": ["plus1ep", "init", "lr"], "kappa": [0.2, 0.5, 0.9]})
    means = figures.plot_conditions(conditions.assign(condition=conditions["condition"].replace("plus1ep", "new")),
                                    tmp_path / "fig15.png", order_by=reference)
    assert means["condition"].tolist() == ["init", "new"]
    means = figures.plot_conditions(conditions, tmp_path / "fig16.png", order_by=reference)
    assert means["condition"].tolist() == ["init", "plus1ep"]


def test_decisions_are_sorted_by_mean_accuracy(tmp_path):
    difficulty = pd.DataFrame({"fraction_correct": [0.5, 1.0, 0.0], "correct.base": [1, 1, 0],
                               "correct.init": [0, 1, 0], "n_correct": [1, 2, 0]})
    matrix = figures.plot_decisions(difficulty, tmp_path / "fig04.png")
    assert is_png(tmp_path / "fig04.png")
    assert list(matrix.index) == ["base", "init"]
    assert matrix.to_numpy().tolist() == [[1, 1, 0], [1, 0, 0]]


def test_rsa_against_the_base_run(tmp_path):
    rsa = pd.DataFrame({"model_a": ["plus2ep", "plus2ep", "init"], "model_b": ["init", "lr", "lr"],
                        "condition_a": ["plus2ep", "plus2ep", "init"], "condition_b": ["init", "lr", "lr"],
                        "epoch_a": [7, 7, 5], "epoch_b": [5, 5, 5], "rsa": [0.8, 0.6, 0.1], "n_images": 10})
    members = pd.DataFrame({"label": ["base", "plus2ep", "init", "lr"],
                            "model": ["e.base", "e.base", "e.init", "e.lr"]})
    data = figures.plot_rsa(rsa, members, tmp_path / "fig07.png")
    assert is_png(tmp_path / "fig07.png")
    assert data.values.tolist() == [["init", "penultimate", 0.8], ["lr", "penultimate", 0.6]]
    both = pd.concat([rsa.assign(layer="penultimate"), rsa.assign(layer="logits", rsa=rsa["rsa"] / 2)])
    data = figures.plot_rsa(both, members, tmp_path / "fig07b.png")
    assert data.values.tolist() == [["init", "penultimate", 0.8], ["lr", "penultimate", 0.6],
                                    ["init", "logits", 0.4], ["lr", "logits", 0.3]]


def test_base_epochs(tmp_path):
    correct = np.array([[0, 0, 1], [1, 0, 1], [1, 0, 0]], dtype=bool)  # epochs 0..2, three images
    epoch_kappa = pd.DataFrame({"epoch_a": [0, 0, 1], "epoch_b": [1, 2, 2], "kappa": [0.5, -0.5, 0.25]})
    data = figures.plot_base_epochs(correct, epoch_kappa, tmp_path / "fig08.png")
    assert is_png(tmp_path / "fig08.png")
    assert data["decisions"].tolist() == [[1, 1], [1, 0], [0, 0]]  # epochs 1..2, images by accuracy over them
    assert data["kappa"].tolist() == [[1, 0.25], [0.25, 1]]  # epoch 0 left out, as in the paper
    data = figures.plot_base_epochs(correct, epoch_kappa, tmp_path / "fig08b.png", last=1)  # E = 1: no extra epoch
    assert data["decisions"].tolist() == [[1], [1], [0]] and data["kappa"].tolist() == [[1]]


def test_kl_accuracy_scatter_skips_the_first_20_classes_as_the_paper(tmp_path):
    n = 25
    kl = pd.DataFrame({"class": np.arange(n), "std": np.arange(1.0, n + 1),
                       "kl_to_next": [*np.linspace(5, 1, n - 1), np.nan],
                       "accuracy": np.linspace(1, 0, n), "mean_accuracy": np.linspace(1, 0, n)})
    data = figures.plot_kl_accuracy(kl, tmp_path / "fig09.png")
    assert is_png(tmp_path / "fig09.png")
    assert data["class"].tolist() == [20, 21, 22, 23]  # classes 21..24 (1-based) with a next class


def test_difficulty_models_figure(tmp_path):
    rng = np.random.default_rng(0)
    n_correct = np.where(rng.random(500) < 0.6, 6, rng.integers(0, 7, 500))
    profiles, histograms = difficulty_models(n_correct, 6, seed=0)
    shown = figures.plot_difficulty_models(profiles, histograms, tmp_path / "fig10.png")
    assert is_png(tmp_path / "fig10.png")
    assert set(zip(shown["model"], shown["statistic"], strict=True)) == {
        ("observed", "observed"), ("uniform", "expected"), ("exponential", "sampled"), ("sigmoid", "sampled"),
        ("beta (fitted)", "sampled")}
    empty = figures.plot_difficulty_models(pd.DataFrame(columns=["model", "p", "weight"]),
                                           histograms[histograms["model"].isin(["observed", "uniform"])],
                                           tmp_path / "fig10b.png")
    assert is_png(tmp_path / "fig10b.png") and len(empty) == 14


def test_decision_changes_show_the_last_model_per_condition(tmp_path):
    changes = pd.DataFrame({"member": ["base", "base", "init.s1", "init.s1", "init.s2", "init.s2"],
                            "condition": ["base", "base", "init", "init", "init", "init"],
                            "epoch": [0, 1] * 3, "next_epoch": [1, 2] * 3, "changed": [9, 4, 8, 3, 7, 2]})
    data = figures.plot_decision_changes(changes, tmp_path / "fig17.png")
    assert is_png(tmp_path / "fig17.png")
    assert data["member"].unique().tolist() == ["base", "init.s2"]


def test_class_accuracy_sorted_by_base(tmp_path):
    table = pd.DataFrame({"member": ["base"] * 3 + ["other"] * 3, "class": [0, 1, 2] * 2,
                          "accuracy": [0.2, 0.9, 0.5, 0.4, 0.7, 0.6]})
    data = figures.plot_class_accuracy(table, tmp_path / "fig20.png")
    assert is_png(tmp_path / "fig20.png")
    assert data["class"].tolist() == [1, 2, 0] and data["class_name"].tolist() == ["1", "2", "0"]
    assert data["min"].tolist() == [0.7, 0.5, 0.2] and data["max"].tolist() == [0.9, 0.6, 0.4]


def test_cli_draws_a_figure_from_a_table(tmp_path, capsys):
    path = tmp_path / "histogram.csv"
    correct_histogram(np.array([0, 1, 2, 2]), 2).to_csv(path, index=False)
    assert figures.main(["fig02_histogram", "--histogram", str(path), "--out", str(tmp_path / "f.png")]) == 0
    assert is_png(tmp_path / "f.png")
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["fig02_histogram", "--histogram", str(tmp_path / "missing.csv"),
                      "--out", str(tmp_path / "g.png")])
    assert exit_info.value.code == 2
    assert "error: cannot read table" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
