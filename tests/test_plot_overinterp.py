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


def test_curves_of_every_image_are_read_in_chunks_and_their_mean_is_over_all(tmp_path, quadrant_dataset,
                                                                           monkeypatch):
    """`curves: all` (Figure S8): every curve, read a few rows at a time; the black line is the mean of all of them
    (f on the full image first), computed here from the file's arrays."""
    from pathologies.sis import figures

    rows = np.arange(13)
    rng = np.random.default_rng(1)
    curve, f_full = rng.random((13, 64)), rng.random(13)
    path = write_sis_file(tmp_path / "s.h5", quadrant_dataset, "test", rows,
                          np.tile(np.arange(64), (13, 1)), curve=curve, f_full=f_full)
    monkeypatch.setattr(figures, "CURVE_CHUNK", 4)  # 4 + 4 + 4 + 1 rows
    mean = figures.plot_curves_sample(path, None, 0, tmp_path / "all.png")
    np.testing.assert_allclose(mean, np.concatenate([[f_full.mean()], curve.mean(axis=0)]))
    pick = np.sort(np.random.default_rng(3).choice(13, 5, replace=False))  # a seeded sample, not contiguous
    sample = figures.plot_curves_sample(path, 5, 3, tmp_path / "five.png")
    np.testing.assert_allclose(sample, np.concatenate([[f_full[pick].mean()], curve[pick].mean(axis=0)]))
    assert figures.curves_count("all") is None and figures.curves_count("32") == 32
    assert (tmp_path / "all.png").stat().st_size > 1000


def test_fifteen_examples_per_class_stack_each_class_in_two_rows(tmp_path, quadrant_dataset):
    """Figure S1's 15 per class: the images of a class above their SIS (a tall figure), rows named by class."""
    import matplotlib.image

    rows = np.arange(64)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in rows])
    path = write_sis_file(tmp_path / "s.h5", quadrant_dataset, "test", rows, order, thresholds=(0.9,))
    names = plot_examples(path, 0.9, 15, 0, tmp_path / "s1.png")
    assert names == ["tl", "tr", "bl", "br"]  # the dataset's class names, not indices
    height, width = matplotlib.image.imread(tmp_path / "s1.png").shape[:2]
    assert height > 0.4 * width  # 8 rows of up to 15 (side by side it would be 4 rows of 30 panels)


def test_imagenet_figures_and_tables_name_classes_not_wordnet_ids(tmp_path):
    """A tiny ImageNet index (1,000 WordNet-id class folders, 8 x 8 PNGs): the SIS examples and the SIS-size table
    and figure show torchvision's category names (class 0 tench, 995 earthstar, 999 toilet tissue)."""
    from conftest import make_imagenet_index
    from pathologies.overinterp.figures import by_class_labels

    wnids = tuple(f"n{i:08d}" for i in range(1000))
    index = make_imagenet_index(tmp_path, {"train": 1, "val": 1}, 8, noise=50, step=1, wnids=wnids)
    rows = np.array([0, 995, 999])
    order = np.tile(np.arange(64), (3, 1))
    path = write_sis_file(tmp_path / "sis.h5", index, "test", rows, order, thresholds=(0.9,))
    assert plot_examples(path, 0.9, 1, 0, tmp_path / "ex.png") == ["tench", "earthstar", "toilet tissue"]
    tables = analyse([{"path": str(path), "model": "m", "seed": 0, "dataset": "imagenet", "split": "test",
                       "variant": "original"}])
    by_class = tables["by_class"]
    assert by_class["class_name"].tolist() == ["tench", "earthstar", "toilet tissue"]
    assert by_class_labels(by_class) == ["tench", "earthstar", "toilet tissue"]
    assert by_class_labels(pd.DataFrame({"class": [3, 4], "class_name": ["3", ""]})) == ["class 3", "class 4"]
    plot_sizes(tables["correctness"], tables["increase"], by_class, 0.9, tmp_path / "sizes.png")
    assert (tmp_path / "sizes.png").stat().st_size > 1000
