"""SIS size of correct vs wrong images, by class and summaries, on hand-made SIS files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from overinterp_fixtures import write_sis_file
from pathologies.errors import UserError
from pathologies.overinterp.sis_sizes import analyse, main, mean_interval, read_sis_sizes, welch_difference


def test_mean_interval_is_the_student_t_interval():
    values = np.array([1.0, 4.0, 2.0, 7.0, 3.0])
    mean, low, high = mean_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(3.4) and (low, high) == pytest.approx(expected)
    assert np.isnan(mean_interval(np.array([2.0]))[1]) and np.isnan(mean_interval(np.array([]))[0])


def test_welch_difference_matches_scipy():
    a, b = np.array([5.0, 6.0, 9.0, 7.0, 8.0]), np.array([1.0, 2.0, 4.0])
    diff, low, high = welch_difference(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean()) and (low, high) == pytest.approx(tuple(expected))


@pytest.fixture
def sis_file(tmp_path, quadrant_dataset):
    """6 test images: labels from the dataset, classes chosen so images 0-3 are right and 4-5 wrong."""
    from pathologies.data.layout import load_split

    labels = load_split(quadrant_dataset, "test").labels[:6]
    classes = labels.copy()
    classes[4:] = (labels[4:] + 1) % 4
    sizes = {0.9: np.array([4, 8, 6, 2, 10, 20]), 0.5: np.array([1, 2, 3, 4, 5, 6])}
    order = np.tile(np.arange(64), (6, 1))
    f_full = np.array([0.95, 0.99, 0.97, 0.3, 0.96, 0.92])  # image 3 has no SIS at 0.9
    return write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", np.arange(6), order, classes=classes,
                          f_full=f_full, thresholds=(0.5, 0.9), sizes=sizes)


def test_sizes_in_percent_of_the_image_per_threshold(sis_file):
    sizes = read_sis_sizes(sis_file)
    assert sizes.thresholds == (0.5, 0.9)
    assert sizes.size_pct[0.9].tolist() == pytest.approx([100 * s / 64 for s in (4, 8, 6, 2, 10, 20)])
    assert sizes.has_sis[0.9].tolist() == [True, True, True, False, True, True]
    assert sizes.correct.tolist() == [True] * 4 + [False] * 2


def test_correct_vs_wrong_by_class_and_summary(sis_file):
    tables = analyse([{"path": str(sis_file), "model": "m", "seed": 0}])
    correctness = tables["correctness"].set_index(["threshold", "group"])
    # threshold 0.9: correct images with an SIS are 0, 1, 2 (image 3 has none); wrong: 4, 5
    assert correctness.loc[(0.9, "correct"), "n"] == 3
    assert correctness.loc[(0.9, "correct"), "mean_size_pct"] == pytest.approx(100 * 6 / 64)
    assert correctness.loc[(0.9, "wrong"), "mean_size_pct"] == pytest.approx(100 * 15 / 64)
    assert correctness.loc[(0.9, "wrong"), "mean_confidence"] == pytest.approx(0.94)
    increase = tables["increase"].set_index("threshold")
    assert increase.loc[0.9, "increase_pct"] == pytest.approx(100 * (6 - 15) / 15)
    summary = tables["summary"].set_index("threshold")
    assert summary.loc[0.9, "n_sis"] == 5 and summary.loc[0.5, "n_sis"] == 5  # image 3: f 0.3 < 0.5
    assert summary.loc[0.9, "std_size_pct"] == pytest.approx(np.std([100 * s / 64 for s in (4, 8, 6, 10, 20)]))
    assert summary.loc[0.9, "accuracy"] == pytest.approx(4 / 6)
    by_class = tables["by_class"]
    assert by_class.groupby("threshold")["n"].sum().to_dict() == {0.5: 5, 0.9: 5}
    assert (tables["correctness"]["model"] == "m").all()


def test_cli_reads_the_experiment_spec(tmp_path, sis_file):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"sis_files": [{"path": str(sis_file), "variant": "original"}]}))
    outs = {name: tmp_path / f"{name}.csv" for name in ("correctness", "increase", "by-class", "summary")}
    out_args = [arg for name, path in outs.items() for arg in (f"--{name}-out", str(path))]
    assert main(["--experiment", str(spec), *out_args]) == 0
    assert len(pd.read_csv(outs["summary"])) == 2
    with pytest.raises(UserError, match="does not exist"):
        read_sis_sizes(tmp_path / "nothing.h5")


def test_by_class_names_the_classes_and_a_missing_dataset_is_one_line(sis_file, quadrant_dataset):
    """by_class.csv names each class from the SIS file's dataset; without that dataset the reader says which file
    to build instead of writing a table without names."""
    by_class = analyse([{"path": str(sis_file)}])["by_class"]
    names = dict(zip(by_class["class"], by_class["class_name"], strict=True))
    assert len(names) >= 2 and names == {c: ["tl", "tr", "bl", "br"][c] for c in names}
    quadrant_dataset.unlink()
    with pytest.raises(UserError, match=f"prepared dataset {quadrant_dataset} does not exist"):
        read_sis_sizes(sis_file)
