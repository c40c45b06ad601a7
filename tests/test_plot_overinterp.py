"""Figures of an overinterpretation experiment draw from small hand-made files (smoke tests plus the rank map)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from overinterp_fixtures import write_sis_file
from pathologies.errors import UserError
from pathologies.overinterp.figures import plot_accuracy, plot_shifted, plot_sizes
from pathologies.overinterp.sis_sizes import analyse
from pathologies.overinterp.subsets import build_subset_dataset
from pathologies.sis.figures import plot_curves_sample as plot_curves
from pathologies.sis.figures import plot_ensemble
from pathologies.sis.figures import plot_examples_by_class as plot_examples
from pathologies.sis.heatmaps import plot_heatmaps, removal_rank


def test_removal_rank_is_the_mean_position_in_the_order():
    order = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    ranks = removal_rank(order, patch=1, height=2, width=2)
    assert ranks.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert removal_rank(order[:1], 1, 2, 2).tolist() == [[0.0, 1 / 3], [2 / 3, 1.0]]


@pytest.fixture
def sis(tmp_path, quadrant_dataset):
    rows = np.arange(12)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in rows])
    f_full = np.linspace(0.5, 1.0, 12)
    return write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", rows, order, f_full=f_full,
                          curve=np.tile(np.linspace(1, 0, 64), (12, 1)), thresholds=(0.6, 0.9))


def test_every_figure_is_written(tmp_path, quadrant_dataset, sis):
    build_subset_dataset(tmp_path / "bs5.h5", quadrant_dataset, {"test": sis}, kind="bs", fraction=0.05)
    outputs = {name: tmp_path / f"{name}.png" for name in ("heat", "examples", "curves", "ensemble", "accuracy")}
    plot_heatmaps(sis, [tmp_path / "bs5.h5"], 0.9, outputs["heat"])
    plot_examples(sis, 0.6, 2, 0, outputs["examples"])
    plot_curves(sis, 5, 0, outputs["curves"])
    plot_ensemble(sis, [sis], 0.9, 3, outputs["ensemble"])
    accuracy = pd.DataFrame([{"role": r, "condition": c, "train_on": t, "train_fraction": f, "augment": False,
                              "eval_on": t, "eval_fraction": f, "test_set": "d", "accuracy_mean": m,
                              "accuracy_std": 1.0} for r, c, t, f, m in
                             [("pretrained", "m", "full", np.nan, 90), ("retrained", "a.bs5", "bs", 0.05, 80)]])
    plot_accuracy(accuracy, "d", outputs["accuracy"])
    by_split = pd.DataFrame([{"role": "pretrained", "eval_on": "full", "condition": m, "eval_dataset": d,
                              "eval_split": s, "accuracy": a} for m in ("m", "m_dropout") for d, s in
                             (("d", "test"), ("c", "fog_s1"), ("c", "fog_s5")) for a in (50, 60)])
    plot_shifted(by_split, tmp_path / "shifted.png")
    assert (tmp_path / "shifted.png").stat().st_size > 1000
    assert all(path.stat().st_size > 1000 for path in outputs.values())
    tables = analyse([{"path": str(sis), "model": "m", "seed": 0, "dataset": "d", "split": "test",
                       "variant": "original"}])
    plot_sizes(tables["correctness"], tables["increase"], tables["by_class"], 0.9, tmp_path / "sizes.png")
    assert (tmp_path / "sizes.png").stat().st_size > 1000


def test_missing_thresholds_and_missing_sis_are_clear_errors(tmp_path, quadrant_dataset, sis):
    with pytest.raises(UserError, match="no threshold 0.5"):
        plot_examples(sis, 0.5, 2, 0, tmp_path / "x.png")
    unsure = write_sis_file(tmp_path / "unsure.h5", quadrant_dataset, "test", np.arange(2),
                            np.tile(np.arange(64), (2, 1)), f_full=np.array([0.1, 0.2]))
    with pytest.raises(UserError, match="has an SIS at threshold 0.9"):
        plot_examples(unsure, 0.9, 1, 0, tmp_path / "y.png")
    assert not (tmp_path / "y.png").exists()


def test_examples_show_a_seeded_sample_of_classes_when_there_are_many(tmp_path, sis):
    """Four classes (the quadrants), at most two shown: the figure has half the rows."""
    import matplotlib.image

    plot_examples(sis, 0.6, 1, 0, tmp_path / "all.png")
    plot_examples(sis, 0.6, 1, 0, tmp_path / "two.png", max_classes=2)
    heights = [matplotlib.image.imread(tmp_path / name).shape[0] for name in ("all.png", "two.png")]
    assert heights[1] < 0.75 * heights[0]
