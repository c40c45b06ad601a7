"""DDD label-error exclusion and experiments of external (SOTA) predictions only, on planted decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathologies.ddd import difficulty as ddd_difficulty, figures, kappa as ddd_kappa
from pathologies.ddd.consistency import error_consistency
from pathologies.ddd.exclusion import read_ids
from pathologies.ddd.grid import experiments
from pathologies.ddd.rules import DddRules
from pathologies.ddd.summary import summary
from pathologies.errors import UserError
from pathologies.experiments import validate
from ddd_fixtures import E, N_CLASSES, N_IMAGES, member_correct

LABELS = ("base", "plus1ep", "init.s2", "halves.1")  # the difficulty set: last member of each condition


def test_read_ids_from_npy_or_csv_with_one_line_errors(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([5, 3, 5]))
    assert read_ids(tmp_path / "ids.npy").tolist() == [3, 5]
    pd.DataFrame({"image_id": [7, 1], "note": ["a", "b"]}).to_csv(tmp_path / "ids.csv", index=False)
    assert read_ids(tmp_path / "ids.csv").tolist() == [1, 7]
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "ids.txt").write_text("1\n")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "two.csv", index=False)
    pd.DataFrame({"image_id": [1.5]}).to_csv(tmp_path / "float.csv", index=False)
    for name, message in [("objects.npy", "not a plain .npy array"), ("ids.txt", "give a .npy or .csv file"),
                          ("two.csv", "needs a column 'image_id'"), ("float.csv", "integer image ids"),
                          ("missing.npy", "does not exist")]:
        with pytest.raises(UserError, match=message):
            read_ids(tmp_path / name)


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
    histogram = tables["histogram"]
    assert histogram["excluded_images"].tolist() == np.bincount(stack[planted], minlength=5).tolist()
    assert histogram["observed"].tolist() == pytest.approx((np.bincount(stack[keep], minlength=5) / keep.sum()).tolist())
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

    data = figures.plot_histogram(histogram, tmp_path / "fig02.png")  # the red overlay of the excluded images
    assert (tmp_path / "fig02.png").stat().st_size > 0 and len(data) == 2 * 5


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
    ({"predictions_csv": []}, "give a base run and conditions, or only predictions_csv"),
    ({"base": {"arch": "mlp"}}, "give a base run and conditions, or only predictions_csv"),
])
def test_an_experiment_needs_a_base_or_external_predictions(experiment_keys, message):
    raw = {"datasets": {"toy": {"kind": "gaussian"}},
           "ddd": {"x": {"dataset": "toy", "predictions_csv": ["a.csv"], **experiment_keys}}}
    with pytest.raises(UserError, match=message):
        validate(raw)
