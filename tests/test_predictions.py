"""Loading per-epoch prediction dumps and external CSV predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathologies.ddd.consistency import consistency_table
from pathologies.errors import UserError
from pathologies.io import atomic_output, create_dataset, h5py, provenance, write_attrs
from pathologies.training.predictions import load_correctness, load_predictions_csv, merge, read_dump

IDS = np.array([7, 3, 11, 5, 20, 9], dtype=np.int64)
TARGETS = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)


def write_dump(path: Path, pred: np.ndarray, targets=TARGETS, ids=IDS, epochs: int | None = None,
               split: str = "test") -> Path:
    """A prediction dump in the layout pathologies.training.train writes: pred (E+1, N)."""
    pred = np.asarray(pred, dtype=np.int32)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        write_attrs(handle, {"model": path.parent.name, "seed": 0, "arch": "small_cnn", "dataset": "toy",
                             "epochs": pred.shape[0] - 1 if epochs is None else epochs,
                             **provenance(recipe={"epochs": pred.shape[0] - 1})})
        group = handle.create_group(split)
        create_dataset(group, "targets", np.asarray(targets, dtype=np.int64))
        create_dataset(group, "ids", np.asarray(ids, dtype=np.int64))
        create_dataset(group, "pred", pred)
        create_dataset(group, "conf", np.full(pred.shape, 0.5, dtype=np.float32))
    return path


def random_predictions(n_epochs: int, seed: int) -> np.ndarray:
    """(E+1, N) predictions over 3 classes."""
    return np.random.default_rng(seed).integers(0, 3, (n_epochs + 1, len(IDS)))


@pytest.fixture
def dumps(tmp_path: Path) -> dict[str, Path]:
    return {name: write_dump(tmp_path / name / "predictions.h5", random_predictions(4, seed))
            for seed, name in enumerate(["base", "other", "third"])}


def write_csv(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=["image_id", "model", "prediction", "target"]).to_csv(path, index=False)
    return path


def csv_rows(models: dict[str, np.ndarray], ids=IDS, targets=TARGETS) -> list[tuple]:
    return [(int(i), name, int(p), int(t)) for name, preds in models.items()
            for i, p, t in zip(ids, preds, targets, strict=True)]


def test_load_last_all_and_listed_epochs(dumps):
    pred = {name: h5py.File(path, "r")["test/pred"][()] for name, path in dumps.items()}
    last = load_correctness(dumps)
    assert last.models == ["base", "other", "third"] and last.epochs == [-1]
    assert last.correct.shape == (3, 1, 6) and last.correct.dtype == bool
    assert np.array_equal(last.correct[1, 0], pred["other"][4] == TARGETS)
    assert last.model_epochs.tolist() == [[4], [4], [4]]
    assert np.array_equal(last.ids, IDS) and np.array_equal(last.targets, TARGETS)
    assert last.predictions is None

    every = load_correctness(dumps, epochs="all", with_predictions=True)
    assert every.epochs == [0, 1, 2, 3, 4] and every.correct.shape == (3, 5, 6)
    assert np.array_equal(every.predictions[2], pred["third"])
    assert np.array_equal(every.correct, every.predictions == TARGETS)

    listed = load_correctness(dumps, epochs=[3, 0, -1, -5])
    assert listed.epochs == [3, 0, -1, -5] and listed.model_epochs[0].tolist() == [3, 0, 4, 0]
    assert np.array_equal(listed.correct[0, 0], pred["base"][3] == TARGETS)
    assert np.array_equal(listed.correct[0, 3], pred["base"][0] == TARGETS)


def test_different_epoch_counts(tmp_path, dumps):
    short = write_dump(tmp_path / "short" / "predictions.h5", random_predictions(2, 9))
    paths = {**dumps, "short": short}
    mixed = load_correctness(paths)  # "last" = each model's own final epoch
    assert mixed.model_epochs[:, 0].tolist() == [4, 4, 4, 2]
    assert load_correctness(paths, epochs=[-2]).model_epochs[:, 0].tolist() == [3, 3, 3, 1]
    with pytest.raises(UserError, match="short/predictions.h5 has epochs"):
        load_correctness(paths, epochs="all")
    with pytest.raises(UserError, match=r"short/predictions.h5 has epochs 0..2.*\[3\]"):
        load_correctness(paths, epochs=[3])


@pytest.mark.parametrize("problem, message", [
    ("ids", "image ids differ from those in"),
    ("targets", "targets differ from those in"),
    ("missing", "does not exist; build it with `snakemake"),
    ("split", "has no split 'test'"),
    ("attrs", "attribute epochs=7 but pred has 5 rows"),
    ("not_hdf5", "not a readable HDF5 file"),
])
def test_bad_dumps_are_one_line_errors_naming_the_file(tmp_path, dumps, problem, message):
    bad = tmp_path / "bad" / "predictions.h5"
    if problem == "ids":
        write_dump(bad, random_predictions(4, 5), ids=IDS + 100)
    elif problem == "targets":
        write_dump(bad, random_predictions(4, 5), targets=(TARGETS + 1) % 3)
    elif problem == "split":
        write_dump(bad, random_predictions(4, 5), split="train")
    elif problem == "attrs":
        write_dump(bad, random_predictions(4, 5), epochs=7)
    elif problem == "not_hdf5":
        bad.parent.mkdir()
        bad.write_text("not hdf5")
    with pytest.raises(UserError) as error:
        load_correctness({**dumps, "bad": bad})
    assert message in str(error.value) and str(bad) in str(error.value)
    assert "\n" not in str(error.value)


def test_csv_import_reorders_to_dump_ids_and_joins(tmp_path, dumps):
    rng = np.random.default_rng(1)
    external = {"vit": rng.integers(0, 3, 6), "clip": TARGETS.copy()}
    rows = csv_rows(external)
    rng.shuffle(rows)
    path = write_csv(tmp_path / "external.csv", rows)
    reference = load_correctness(dumps)
    imported = load_predictions_csv(path, ids=reference.ids, targets=reference.targets)
    assert imported.models == ["vit", "clip"] or imported.models == ["clip", "vit"]
    vit = imported.models.index("vit")
    assert np.array_equal(imported.ids, IDS)
    assert np.array_equal(imported.correct[vit, 0], external["vit"] == TARGETS)
    assert imported.correct[imported.models.index("clip")].all()
    joined = merge([reference, imported])
    assert joined.models == ["base", "other", "third", *imported.models]
    assert joined.correct.shape == (5, 1, 6) and joined.sources[-1] == str(path)
    table = consistency_table(joined.correct, joined.models, joined.epochs)
    assert len(table) == 10 and set(table["epoch"]) == {-1}


def test_csv_without_ids_is_sorted_by_image_id(tmp_path):
    path = write_csv(tmp_path / "e.csv", csv_rows({"a": TARGETS}))
    imported = load_predictions_csv(path)
    assert imported.ids.tolist() == sorted(IDS.tolist())
    assert imported.correct.all() and imported.model_epochs.tolist() == [[-1]]


@pytest.mark.parametrize("problem, message", [
    ("ids", "image ids differ from the prediction dumps (1 missing, e.g. [20]; 1 unknown, e.g. [99])"),
    ("model_ids", "model 'b' has predictions for 5 images but the file covers 6"),
    ("targets", "targets disagree with the prediction dumps for 1 images (e.g. image 3: 2 here, 1 there)"),
    ("duplicate", "model 'a' has more than one row for image 7"),
    ("columns", "lacks columns ['target']"),
    ("text", "column 'prediction' must hold integers only"),
    ("conflict", "image 3 has different targets in different rows"),
])
def test_bad_csv_is_a_one_line_error_naming_the_file(tmp_path, problem, message):
    rows = csv_rows({"a": TARGETS, "b": TARGETS})
    frame = pd.DataFrame(rows, columns=["image_id", "model", "prediction", "target"])
    if problem == "ids":
        frame.loc[frame["image_id"] == 20, "image_id"] = 99
    elif problem == "model_ids":
        frame = frame.drop(index=frame[(frame["model"] == "b") & (frame["image_id"] == 20)].index)
    elif problem == "targets":
        frame.loc[frame["image_id"] == 3, "target"] = 2
    elif problem == "duplicate":
        frame = pd.concat([frame, frame.iloc[[0]]])
    elif problem == "columns":
        frame = frame.drop(columns="target")
    elif problem == "text":
        frame["prediction"] = frame["prediction"].astype(str).replace("0", "cat")
    elif problem == "conflict":
        frame.loc[(frame["image_id"] == 3) & (frame["model"] == "b"), "target"] = 0
    path = tmp_path / "external.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError) as error:
        load_predictions_csv(path, ids=IDS, targets=TARGETS)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_merge_rejects_duplicate_names_and_mismatched_epochs(tmp_path, dumps):
    every = load_correctness(dumps, epochs="all")
    external = load_predictions_csv(write_csv(tmp_path / "e.csv", csv_rows({"base": TARGETS})), ids=IDS)
    with pytest.raises(UserError, match="e.csv has epochs \\[-1\\] but .* has \\[0, 1, 2, 3, 4\\]"):
        merge([every, external])
    with pytest.raises(UserError, match=r"model names \['base'\] occur more than once"):
        merge([load_correctness(dumps), external])


def test_read_dump_names_model_by_path_and_select(dumps):
    single = read_dump(dumps["other"], epochs=[1, 2])
    assert single.models == [str(dumps["other"])] and single.correct.shape == (1, 2, 6)
    subset = load_correctness(dumps).select(["third", "base"])
    assert subset.models == ["third", "base"] and subset.sources[0] == str(dumps["third"])
    with pytest.raises(UserError, match="unknown models"):
        load_correctness(dumps).select(["nope"])
    with pytest.raises(UserError, match="epochs must be 'last', 'all'"):
        load_correctness(dumps, epochs="final")
