"""Human-benchmark export: seeded items per fraction, BS subsets of the right size, a page and an answer key."""

from __future__ import annotations

import numpy as np
import pandas as pd

from overinterp_fixtures import write_sis_file
from pathologies.data.layout import load_split
from pathologies.overinterp.human_benchmark import benchmark_items, export, score


def _sis(tmp_path, quadrant_dataset):
    rows = np.arange(10, 30)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in range(len(rows))])
    return write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", rows, order), rows, order


def test_items_show_only_the_bs_subset_of_each_fraction(tmp_path, quadrant_dataset):
    sis, rows, order = _sis(tmp_path, quadrant_dataset)
    items = benchmark_items(sis, [0.1, 0.5], images=6, seed=1)
    assert len(items) == 12 and items["item"].is_unique
    assert items.groupby("fraction").size().to_dict() == {0.1: 6, 0.5: 6}
    assert items.equals(benchmark_items(sis, [0.1, 0.5], images=6, seed=1))  # seeded
    source = load_split(quadrant_dataset, "test")
    for item in items.itertuples():
        i = int(np.flatnonzero(rows == item.row)[0])
        kept = 6 if item.fraction == 0.1 else 32
        shown = item.image.ravel() == source.images[item.row].ravel()
        assert shown[order[i, -kept:]].all()  # the last removed features are visible
        assert item.label == source.labels[item.row]


def test_page_and_key_and_scoring(tmp_path, quadrant_dataset):
    sis, _, _ = _sis(tmp_path, quadrant_dataset)
    export(sis, [0.2], 4, 0, tmp_path / "index.html", tmp_path / "key.csv")
    page = (tmp_path / "index.html").read_text()
    key = pd.read_csv(tmp_path / "key.csv")
    assert page.count("<select") == 4 and page.count("data:image/png;base64,") == 4
    assert set(key.columns) >= {"item", "fraction", "row", "label", "class_name", "model_class"}
    answers = {"answers": {key["item"][0]: key["class_name"][0], key["item"][1]: "wrong"}}
    assert score(answers, key)["correct"].tolist() == [0.25]
