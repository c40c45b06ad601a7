"""Human-benchmark export: seeded items per fraction, BS subsets of the right size, a page and an answer key."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from overinterp_fixtures import write_sis_file
from pathologies.data.layout import load_split
from pathologies.overinterp.human_benchmark import benchmark_items, export, main, score, split_shares


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
    assert set(key.columns) >= {"item", "fraction", "source", "row", "label", "class_name", "model_class"}
    assert 'id="unanswered">4</span> of 4 images unanswered' in page  # visible before any download
    answers = {"answers": {key["item"][0]: key["class_name"][0], key["item"][1]: "wrong"}}
    scored = score(answers, key)
    assert scored["accuracy"].tolist() == [25.0] and scored["n_unanswered"].tolist() == [2]


@pytest.mark.parametrize("total, shares, expected", [
    (100, [35, 35, 30], [35, 35, 30]), (100, [1, 1, 1], [34, 33, 33]), (10, [35, 35, 30], [4, 3, 3]),
    (5, [1], [5]), (3, [0, 1], [0, 3]),
])
def test_split_shares_by_largest_remainders(total, shares, expected):
    assert split_shares(total, shares) == expected


def test_stimuli_mix_source_models_by_their_shares(tmp_path, quadrant_dataset):
    files = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        files.append(_sis(tmp_path / name, quadrant_dataset)[0])
    items = benchmark_items(files, [0.1, 0.5], images=20, seed=0, shares=[35, 35, 30])
    counts = items.groupby(["fraction", "source"]).size()
    assert counts.unstack().values.tolist() == [[7, 7, 6], [7, 7, 6]]


def _answer_files(tmp_path, key, right_shares):
    """One answers JSON per participant: the first ``right`` items of each fraction answered right."""
    paths = []
    for p, right in enumerate(right_shares):
        answers = {}
        for fraction, group in key.groupby("fraction"):
            for j, item in enumerate(group.itertuples()):
                answers[item.item] = item.class_name if j < right[fraction] else "wrong"
        path = tmp_path / f"p{p}.json"
        path.write_text(json.dumps({"participant": f"p{p}", "answers": answers, "unanswered": []}))
        paths.append(path)
    return paths


def test_readme_scoring_command_aggregates_participants_into_table_s6_and_figure_s11(tmp_path, quadrant_dataset,
                                                                                      capsys):
    sis, _, _ = _sis(tmp_path, quadrant_dataset)
    export(sis, [0.1, 0.5], 4, 0, tmp_path / "index.html", tmp_path / "key.csv")
    key = pd.read_csv(tmp_path / "key.csv")
    files = _answer_files(tmp_path, key, [{0.1: 1, 0.5: 4}, {0.1: 2, 0.5: 3}, {0.1: 0, 0.5: 4}])
    # the command of docs/file_formats.md, exactly: no --sis, no --html-out
    assert main(["--score", str(files[0]), "--key-out", str(tmp_path / "key.csv")]) == 0
    assert main(["--score", *map(str, files), "--key-out", str(tmp_path / "key.csv"), "--table-out",
                 str(tmp_path / "s6.csv"), "--figure-out", str(tmp_path / "s11.png")]) == 0
    table = pd.read_csv(tmp_path / "s6.csv").set_index("fraction")
    assert table.loc[0.1, "accuracy_mean"] == pytest.approx(25.0)
    assert table.loc[0.1, "accuracy_std"] == pytest.approx(np.std([25, 50, 0], ddof=1))
    assert table.loc[0.5, "accuracy_mean"] == pytest.approx(np.mean([100, 75, 100]))
    assert (table["n_participants"] == 3).all() and (tmp_path / "s11.png").stat().st_size > 1000
    assert "p2" in capsys.readouterr().out


def test_scoring_errors_are_one_line(tmp_path, quadrant_dataset, capsys):
    sis, _, _ = _sis(tmp_path, quadrant_dataset)
    export(sis, [0.1], 2, 0, tmp_path / "index.html", tmp_path / "key.csv")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"answers": {"q9999": "x"}}))
    for args, message in ((["--score", str(tmp_path / "bad.json")], "is not JSON"),
                          (["--score", str(tmp_path / "other.json")], "that the key does not hold"),
                          (["--score", str(tmp_path / "missing.json")], "does not exist"),
                          ([], "exporting needs --sis")):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--key-out", str(tmp_path / "key.csv")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
