"""DDD label-error exclusion and experiments of external (SOTA) predictions only, on planted decisions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_quadrant_dataset
from ddd_fixtures import N_CLASSES, N_IMAGES, E, experiment_config, member_correct
from pathologies.data.imagenet import IndexSplit, write_index
from pathologies.ddd import difficulty as ddd_difficulty
from pathologies.ddd import figures
from pathologies.ddd import kappa as ddd_kappa
from pathologies.ddd.consistency import error_consistency
from pathologies.ddd.exclusion import excluded_ids, lists_names, read_ids
from pathologies.ddd.grid import experiments
from pathologies.ddd.rules import DddRules
from pathologies.ddd.summary import summary
from pathologies.errors import UserError
from pathologies.experiments import validate

LABELS = ("base", "plus1ep", "init.s2", "halves.1")  # the difficulty set: last member of each condition


def test_read_ids_from_npy_or_csv_with_one_line_errors(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([5, 3, 5]))
    assert read_ids(tmp_path / "ids.npy").tolist() == [3, 5]
    pd.DataFrame({"image_id": [7, 1], "note": ["a", "b"]}).to_csv(tmp_path / "ids.csv", index=False)
    assert read_ids(tmp_path / "ids.csv").tolist() == [1, 7]
    (tmp_path / "ids.txt").write_text("# label errors\n9\n\n2\n")
    assert read_ids(tmp_path / "ids.txt").tolist() == [2, 9]
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "ids.json").write_text("[1]\n")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "two.csv", index=False)
    pd.DataFrame({"image_id": [1.5]}).to_csv(tmp_path / "float.csv", index=False)
    for name, message in [("objects.npy", "not a plain .npy array"), ("ids.json", "give a .npy, .csv or .txt file"),
                          ("two.csv", "needs a column 'image_id', 'file_name' or 'mask'"),
                          ("float.csv", "integer image ids"),
                          ("missing.npy", "does not exist")]:
        with pytest.raises(UserError, match=message):
            read_ids(tmp_path / name)


def write_val_index(path: Path, ids: np.ndarray, targets: np.ndarray) -> Path:
    """An ImageNet-style index whose test split lists ``val/<wnid>/ILSVRC2012_val_<n>.JPEG`` in folder order,
    image i with validation number 2 * i + 1 (so the prepared id and the number in the name differ)."""
    paths = [f"val/n{target:08d}/ILSVRC2012_val_{2 * i + 1:08d}.JPEG" for i, target in enumerate(targets)]
    write_index(path, name="val", kind="imagenet", splits={"test": IndexSplit(paths, targets, ids)},
                class_names=[f"n{c:08d}" for c in range(N_CLASSES)], image_root="resources/imagenet",
                image_size=8, resize=8, mean=[0.5] * 3, std=[0.2] * 3)
    return path


def test_file_names_are_converted_to_ids_through_the_index(tmp_path):
    ids, targets = np.array([30, 10, 20, 40]), np.array([0, 1, 1, 2])
    index = write_val_index(tmp_path / "val.h5", ids, targets)
    (tmp_path / "names.txt").write_text("ILSVRC2012_val_00000005.JPEG\nn00000000/ILSVRC2012_val_00000001.JPEG\n")
    assert read_ids(tmp_path / "names.txt", index).tolist() == [20, 30]
    pd.DataFrame({"file_name": ["val/n00000002/ILSVRC2012_val_00000007.JPEG"], "note": ["x"]}).to_csv(
        tmp_path / "names.csv", index=False)
    assert read_ids(tmp_path / "names.csv", index).tolist() == [40]
    np.save(tmp_path / "names.npy", np.array(["ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000003.JPEG"]))
    assert read_ids(tmp_path / "names.npy", index).tolist() == [10]
    assert lists_names(tmp_path / "names.npy") and not lists_names(tmp_path / "missing.npy")

    (tmp_path / "wrong.txt").write_text("ILSVRC2012_val_00000001.JPEG\nILSVRC2012_val_00000002.JPEG\n")
    with pytest.raises(UserError, match=r"1 of 2 file names are not images of split 'test' of .*val\.h5: "
                                        r"ILSVRC2012_val_00000002\.JPEG; check"):
        read_ids(tmp_path / "wrong.txt", index)
    with pytest.raises(UserError, match="no prepared dataset is given"):
        read_ids(tmp_path / "names.txt")
    arrays = make_quadrant_dataset(tmp_path / "q.h5", n_train=4, n_test=4)
    with pytest.raises(UserError, match=r"q\.h5 keeps no file names .* list the split's image ids instead"):
        read_ids(tmp_path / "names.txt", arrays)
    twice = tmp_path / "twice.h5"  # one file name in two class folders
    write_index(twice, name="t", kind="imagenet", splits={"test": IndexSplit(
        ["val/a/x.JPEG", "val/b/x.JPEG"], np.array([0, 1]), np.array([0, 1]))}, class_names=["a", "b"],
        image_root="r", image_size=8, resize=8, mean=[0.5] * 3, std=[0.2] * 3)
    (tmp_path / "x.txt").write_text("x.JPEG\n")
    with pytest.raises(UserError, match="x.JPEG match several images"):
        read_ids(tmp_path / "x.txt", twice)
    (tmp_path / "b.txt").write_text("b/x.JPEG\n")
    assert read_ids(tmp_path / "b.txt", twice).tolist() == [1]


def test_a_list_of_file_names_excludes_what_the_list_of_their_ids_excludes(experiment, tmp_path):
    """The same label errors as ids and as file names: identical tables, summary line and rule inputs."""
    ids, targets = experiment["ids"], experiment["targets"]
    index = write_val_index(tmp_path / "val.h5", ids, targets)
    planted = np.sort(np.random.default_rng(3).choice(N_IMAGES, 25, replace=False))
    np.save(tmp_path / "errors.npy", ids[planted])
    (tmp_path / "errors.txt").write_text("".join(f"ILSVRC2012_val_{2 * i + 1:08d}.JPEG\n" for i in planted))
    tables = {}
    for form in ("npy", "txt"):
        spec = {**experiment["spec"], "exclude_ids": str(tmp_path / f"errors.{form}"), "dataset_file": str(index)}
        assert excluded_ids(spec).tolist() == sorted(ids[planted].tolist())
        kappa, conditions, _ = ddd_kappa.build_tables(spec)
        difficulty = ddd_difficulty.build_tables(spec, experiment["dataset"])
        tables[form] = (kappa, difficulty)
        text = summary(spec, difficulty["members"], difficulty["difficulty"], kappa, conditions,
                       difficulty["histograms"], histogram=difficulty["histogram"])
        assert f"excluded before every table and figure: 25 images of the split listed in {tmp_path}/errors.{form} " \
               "(25 ids listed, 0 of them not in the split)" in text
    pd.testing.assert_frame_equal(tables["npy"][0], tables["txt"][0])
    for name in ("difficulty", "histogram", "members"):
        pd.testing.assert_frame_equal(tables["npy"][1][name], tables["txt"][1][name])
    assert set(tables["txt"][1]["difficulty"]["image_id"]).isdisjoint(ids[planted])

    for form, inputs in (("npy", [f"{tmp_path}/errors.npy"]), ("txt", [f"{tmp_path}/errors.txt", "toy.h5"])):
        config = experiment_config(exclude_ids=f"{tmp_path}/errors.{form}")
        rules = DddRules(config, lambda m, s: f"{m}/{s}", lambda name: f"{name}.h5")
        assert rules.exclude("toy") == inputs  # names need the prepared dataset as an input
        assert json.loads(rules.spec("toy"))["dataset_file"] == "toy.h5"


def test_planted_label_errors_leave_every_table_and_are_counted(experiment, tmp_path):
    """Images listed in exclude_ids vanish from kappa, difficulty and decision changes; the histogram
    counts them separately and summary.txt says how many."""
    ids = experiment["ids"]
    rng = np.random.default_rng(1)
    planted = np.sort(rng.choice(N_IMAGES, 40, replace=False))
    exclude = tmp_path / "label_errors.npy"
    np.save(exclude, np.append(ids[planted], [-1, -2]))  # two ids that are not in the split
    spec = {**experiment["spec"], "exclude_ids": str(exclude)}
    keep = np.ones(N_IMAGES, dtype=bool)
    keep[planted] = False

    kappa, conditions, epochs = ddd_kappa.build_tables(spec)
    assert set(kappa.loc[kappa["set"] == "all", "n_images"]) == {N_IMAGES - 40}
    for epoch in (1, E):
        row = kappa[(kappa["set"] == "all") & (kappa["epoch"] == epoch) & (kappa["model_a"] == "base")
                    & (kappa["model_b"] == "init.s1")].iloc[0]
        expected = error_consistency(member_correct(experiment, "base", epoch)[keep],
                                     member_correct(experiment, "init.s1", epoch)[keep])
        assert row["kappa"] == pytest.approx(expected["kappa"])
    run = experiment["correct"][("toy.base", 0)]
    row = epochs[(epochs["epoch_a"] == 1) & (epochs["epoch_b"] == 2)].iloc[0]
    assert row["kappa"] == pytest.approx(error_consistency(run[1][keep], run[2][keep])["kappa"])

    tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
    assert tables["difficulty"]["image_id"].tolist() == ids[keep].tolist()
    stack = np.stack([member_correct(experiment, label, E) for label in LABELS]).sum(axis=0)
    # the excluded images' own rows (the stimuli of human experiment 2 draw from them too), same columns
    errors = tables["difficulty_excluded"]
    assert list(errors.columns) == list(tables["difficulty"].columns)
    assert errors["image_id"].tolist() == ids[planted].tolist()
    assert errors["n_correct"].tolist() == stack[planted].tolist()
    strict = np.where(stack[planted] == 4, "trivial", np.where(stack[planted] == 0, "impossible", "in_between"))
    assert errors["strict"].tolist() == strict.tolist()
    histogram = tables["histogram"]
    assert histogram["excluded_images"].tolist() == np.bincount(stack[planted], minlength=5).tolist()
    observed = np.bincount(stack[keep], minlength=5) / keep.sum()
    assert histogram["observed"].tolist() == pytest.approx(observed.tolist())
    changes = tables["changes"]
    assert set(changes["changed"] <= keep.sum()) == {True}
    pred = experiment["pred"][("toy.base", 0)]
    first = changes[(changes["member"] == "base") & (changes["epoch"] == 0)].iloc[0]
    assert first["changed"] == np.count_nonzero(pred[0][keep] != pred[1][keep])

    text = summary(spec, tables["members"], tables["difficulty"], kappa, conditions, tables["histograms"],
                   histogram=histogram)
    assert f"excluded before every table and figure: 40 images of the split listed in {exclude} " \
           "(42 ids listed, 2 of them not in the split)" in text
    assert f"{N_IMAGES - 40} test images" in text

    # Figure 2a as the paper draws it: all images in blue, the excluded ones in red, both shares of all images
    data = figures.plot_histogram(histogram, tmp_path / "fig02.png")
    assert (tmp_path / "fig02.png").stat().st_size > 0 and len(data) == 3 * 5

    def drawn(frame, source):
        return frame[frame["source"] == source].sort_values("k")["fraction"].tolist()

    assert drawn(data, "observed") == pytest.approx((np.bincount(stack, minlength=5) / N_IMAGES).tolist())
    assert drawn(data, "excluded") == pytest.approx((np.bincount(stack[planted], minlength=5) / N_IMAGES).tolist())
    p_all = stack.mean() / 4
    pmf = [math.comb(4, k) * p_all**k * (1 - p_all) ** (4 - k) for k in range(5)]
    assert drawn(data, "binomial") == pytest.approx(pmf)
    # the other reading: kept images in blue, the excluded ones normalised among themselves
    separate = figures.plot_histogram(histogram, tmp_path / "fig02s.png", errors="separate")
    assert drawn(separate, "observed") == pytest.approx((np.bincount(stack[keep], minlength=5) / keep.sum()).tolist())
    assert drawn(separate, "excluded") == pytest.approx((np.bincount(stack[planted], minlength=5) / 40).tolist())


def sota_config(csv: str, **options) -> dict:
    return validate({"datasets": {"toy": {"kind": "gaussian", "num_classes": N_CLASSES}},
                     "ddd": {"sota": {"dataset": "toy", "predictions_csv": [csv], "n_boot": 10, **options}}})


def write_sota(path: Path, ids: np.ndarray, targets: np.ndarray, n_models: int = 5) -> tuple[Path, np.ndarray]:
    """Planted external decisions: a third of the images trivial, a fifth impossible, the rest coin flips."""
    rng = np.random.default_rng(2)
    p = rng.choice([1.0, 0.0, 0.5], size=len(ids), p=[0.35, 0.2, 0.45])
    right = rng.random((n_models, len(ids))) < p
    rows = [pd.DataFrame({"image_id": ids, "model": f"sota{m}", "target": targets,
                          "prediction": np.where(right[m], targets, (targets + 1) % N_CLASSES)})
            for m in range(n_models)]
    pd.concat(rows).to_csv(path, index=False)
    return path, right


def test_an_experiment_of_external_predictions_only(experiment, tmp_path):
    """No base run and no training: kappa between every pair of CSV models, difficulty, accuracy figure."""
    csv, right = write_sota(tmp_path / "sota.csv", experiment["ids"], experiment["targets"])
    config = sota_config(str(csv))
    assert config["models"] == {}  # nothing to train
    spec = experiments(config)["sota"].as_dict(lambda m, s: f"{m}/{s}")
    assert spec["members"] == [] and spec["epochs"] == 0

    kappa, conditions, epochs = ddd_kappa.build_tables(spec)
    assert conditions.empty and epochs.empty and set(kappa["epoch"]) == {0}
    row = kappa[(kappa["set"] == "all") & (kappa["model_a"] == "sota1") & (kappa["model_b"] == "sota3")].iloc[0]
    assert row["kappa"] == pytest.approx(error_consistency(right[1], right[3])["kappa"])
    tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
    assert tables["difficulty"]["n_correct"].tolist() == right.sum(axis=0).tolist()
    assert tables["changes"].empty
    assert tables["members"]["accuracy"].tolist() == pytest.approx(right.mean(axis=1).tolist())
    means = figures.plot_accuracy(tables["members"], tmp_path / "fig14.png")
    assert means["accuracy"].tolist() == pytest.approx(right.mean(axis=1).tolist())
    figures.plot_class_accuracy(tables["class_accuracy"], tmp_path / "fig20.png")  # no base: the mean
    figures.plot_kappa_heatmaps(kappa, tmp_path / "fig05.png")
    text = summary(spec, tables["members"], tables["difficulty"], kappa, conditions, tables["histograms"])
    assert "no base run (external models only)" in text

    rules = DddRules(config, lambda m, s: f"{m}/{s}", lambda name: f"{name}.h5")
    names = {Path(p).name for p in rules.targets()}
    assert {"fig02_histogram.png", "fig05_kappa_heatmaps.png", "fig13_accuracy.png", "kappa.csv"} <= names
    assert not names & {"fig03_conditions.png", "fig08_base_epochs.png", "fig17_decision_changes.png", "rsa.csv",
                        "kl_accuracy.csv", "fig07_rsa.png"}
    assert rules.predictions("sota") == [] and rules.external("sota") == [str(csv)]


@pytest.mark.parametrize("experiment_keys, message", [
    ({"predictions_csv": []}, "give a base run and conditions, or only models trained elsewhere"),
    ({"base": {"arch": "mlp"}}, "give a base run and conditions, or only models trained elsewhere"),
])
def test_an_experiment_needs_a_base_or_external_predictions(experiment_keys, message):
    raw = {"datasets": {"toy": {"kind": "gaussian"}},
           "ddd": {"x": {"dataset": "toy", "predictions_csv": ["a.csv"], **experiment_keys}}}
    with pytest.raises(UserError, match=message):
        validate(raw)


def test_published_per_image_results_give_the_excluded_images_their_own_rows_too(experiment, tmp_path):
    """difficulty_excluded.csv of published per-image counts: the label errors' counts, no per-model columns."""
    counts = np.random.default_rng(4).integers(0, 6, N_IMAGES)
    np.save(tmp_path / "published.npy", (counts / 5).reshape(-1, 1))
    errors = np.arange(0, N_IMAGES, 7)
    np.save(tmp_path / "errors.npy", experiment["ids"][errors])
    config = validate({"datasets": {"toy": {"kind": "gaussian", "num_classes": N_CLASSES}},
                       "ddd": {"pub": {"dataset": "toy", "exclude_ids": str(tmp_path / "errors.npy"),
                                       "per_image_results": {"file": str(tmp_path / "published.npy"), "n_models": 5}}}})
    spec = {**experiments(config)["pub"].as_dict(lambda m, s: f"{m}/{s}"), "dataset_file": experiment["dataset"]}
    tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
    excluded, kept = tables["difficulty_excluded"], tables["difficulty"]
    assert excluded["image_id"].tolist() == experiment["ids"][errors].tolist()
    assert excluded["n_correct"].tolist() == counts[errors].tolist()
    assert list(excluded.columns) == list(kept.columns) and not any(c.startswith("correct.") for c in kept.columns)
    assert len(kept) == N_IMAGES - len(errors)
