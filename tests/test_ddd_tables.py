"""DDD tables from per-epoch dumps: kappa per epoch and set, conditions, difficulty, KL, summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddd_fixtures import N_CLASSES, N_IMAGES, E, member_correct
from pathologies.ddd import difficulty as ddd_difficulty
from pathologies.ddd import kappa as ddd_kappa
from pathologies.ddd.consistency import error_consistency
from pathologies.ddd.kl import kl_table
from pathologies.ddd.measures import gaussian_class_kl
from pathologies.ddd.summary import summary
from pathologies.errors import UserError


def test_kappa_rows_are_recomputed_from_the_dumps(experiment):
    kappa, _, _ = ddd_kappa.build_tables(experiment["spec"])
    labels = [m["label"] for m in experiment["spec"]["members"]]
    assert labels == ["base", "plus1ep", "init.s1", "init.s2", "halves.0", "halves.1"]
    n_pairs = len(labels) * (len(labels) - 1) // 2
    assert len(kappa[kappa["set"] == "all"]) == (E + 1) * n_pairs
    for epoch in range(E + 1):
        for a, b in [("base", "plus1ep"), ("plus1ep", "halves.1"), ("init.s1", "init.s2")]:
            row = kappa[(kappa["set"] == "all") & (kappa["epoch"] == epoch) & (kappa["model_a"] == a)
                        & (kappa["model_b"] == b)].iloc[0]
            expected = error_consistency(member_correct(experiment, a, epoch), member_correct(experiment, b, epoch))
            assert row["kappa"] == pytest.approx(expected["kappa"])
            assert row["p_value"] == pytest.approx(expected["p_value"])
    assert kappa.loc[kappa["model_a"] == "init.s1", "condition_a"].unique().tolist() == ["init"]
    # Bootstrap intervals at the comparison epoch only.
    assert kappa["ci_low"].notna().eq(kappa["epoch"] == E).all()
    assert (kappa.loc[kappa["epoch"] == E, "ci_low"] <= kappa.loc[kappa["epoch"] == E, "kappa"] + 1e-12).all()


def test_in_between_set_comes_from_the_difficulty_set_at_the_comparison_epoch(experiment):
    kappa, _, _ = ddd_kappa.build_tables(experiment["spec"])
    # Difficulty set: the last member of each condition.
    stack = np.stack([member_correct(experiment, label, E) for label in ("base", "plus1ep", "init.s2", "halves.1")])
    mask = (stack.sum(axis=0) > 0) & (stack.sum(axis=0) < 4)
    between = kappa[kappa["set"] == "in_between"]
    assert set(between["n_images"]) == {int(mask.sum())}
    row = between[(between["epoch"] == 1) & (between["model_a"] == "base") & (between["model_b"] == "init.s1")].iloc[0]
    expected = error_consistency(member_correct(experiment, "base", 1)[mask],
                                 member_correct(experiment, "init.s1", 1)[mask])
    assert row["kappa"] == pytest.approx(expected["kappa"])


def test_conditions_compare_with_base_or_within(experiment):
    kappa, conditions, _ = ddd_kappa.build_tables(experiment["spec"])
    everything = conditions[conditions["set"] == "all"]
    assert everything[["member", "reference"]].values.tolist() == [
        ["plus1ep", "base"], ["init.s1", "base"], ["init.s2", "base"], ["halves.0", "halves.1"]]
    row = everything[everything["member"] == "init.s2"].iloc[0]
    final = kappa[(kappa["set"] == "all") & (kappa["epoch"] == E) & (kappa["model_a"] == "base")
                  & (kappa["model_b"] == "init.s2")].iloc[0]
    assert (row["kappa"], row["ci_low"], row["acc_member"], row["acc_reference"]) == \
        (final["kappa"], final["ci_low"], final["acc_b"], final["acc_a"])
    assert row["acc_member"] == pytest.approx(member_correct(experiment, "init.s2", E).mean())
    assert set(conditions["set"]) == {"all", "in_between"}


def test_epoch_table_covers_every_epoch_of_the_base_run(experiment):
    _, _, epochs = ddd_kappa.build_tables(experiment["spec"])
    assert len(epochs) == (E + 2) * (E + 1) // 2
    row = epochs[(epochs["epoch_a"] == 1) & (epochs["epoch_b"] == E + 1)].iloc[0]
    run = experiment["correct"][("toy.base", 0)]
    assert row["kappa"] == pytest.approx(error_consistency(run[1], run[E + 1])["kappa"])


def write_external(path: Path, experiment: dict, names=("ext",)) -> Path:
    rng = np.random.default_rng(5)
    rows = []
    for name in names:
        pred = np.where(rng.random(N_IMAGES) < 0.7, experiment["targets"], (experiment["targets"] + 1) % N_CLASSES)
        rows.append(pd.DataFrame({"image_id": experiment["ids"], "model": name, "prediction": pred,
                                  "target": experiment["targets"]}))
    pd.concat(rows).sample(frac=1, random_state=0).to_csv(path, index=False)
    return path


def test_external_predictions_join_at_the_comparison_epoch(experiment, tmp_path):
    csv = write_external(tmp_path / "external.csv", experiment)
    spec = {**experiment["spec"], "predictions_csv": [str(csv)]}
    kappa, conditions, _ = ddd_kappa.build_tables(spec)
    with_external = kappa[(kappa["model_a"] == "ext") | (kappa["model_b"] == "ext")]
    assert set(with_external["epoch"]) == {E} and set(with_external["condition_b"]) == {"ext"}
    table = pd.read_csv(csv).set_index("image_id").loc[experiment["ids"]]
    expected = error_consistency(member_correct(experiment, "base", E),
                                 (table["prediction"] == table["target"]).to_numpy())
    row = conditions[(conditions["set"] == "all") & (conditions["member"] == "ext")].iloc[0]
    assert row["reference"] == "base" and row["kappa"] == pytest.approx(expected["kappa"])
    tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
    assert tables["difficulty"]["n_models"].iloc[0] == 5  # base, plus1ep, init, halves, ext
    assert tables["members"].set_index("label").loc["ext", "source"] == str(csv)

    clash = {**experiment["spec"], "predictions_csv": [str(write_external(tmp_path / "x.csv", experiment, ["base"]))]}
    with pytest.raises(UserError, match="already used by members"):
        ddd_kappa.build_tables(clash)


def test_difficulty_tables_count_the_last_model_of_each_condition(experiment):
    tables = ddd_difficulty.build_tables(experiment["spec"], experiment["dataset"])
    difficulty = tables["difficulty"]
    labels = ["base", "plus1ep", "init.s2", "halves.1"]
    assert [c for c in difficulty.columns if c.startswith("correct.")] == [f"correct.{x}" for x in labels]
    stack = np.stack([member_correct(experiment, label, E) for label in labels])
    assert difficulty["n_correct"].tolist() == stack.sum(axis=0).tolist()
    assert difficulty["image_id"].tolist() == experiment["ids"].tolist()
    assert (difficulty["strict"] == "trivial").sum() == (stack.sum(axis=0) == 4).sum()
    assert (difficulty["loose"] == "impossible").sum() == (stack.sum(axis=0) <= 1).sum()
    assert difficulty["in_between"].tolist() == (difficulty["strict"] == "in_between").tolist()
    assert tables["members"]["in_difficulty_set"].tolist() == [True, True, False, True, False, True]
    fractions = tables["fractions"]
    assert fractions.groupby("rule")["fraction"].sum().tolist() == pytest.approx([1.0, 1.0])
    histogram = tables["histogram"]
    assert histogram["observed"].tolist() == pytest.approx(np.bincount(stack.sum(axis=0), minlength=5) / N_IMAGES)

    classes = tables["class_accuracy"]
    base = classes[classes["member"] == "base"].set_index("class")
    right = member_correct(experiment, "base", E)
    for c in range(N_CLASSES):
        assert base.loc[c, "accuracy"] == pytest.approx(right[experiment["targets"] == c].mean())
        assert base.loc[c, "class_name"] == f"c{c}"


def test_decision_changes_list_each_run_once(experiment):
    changes = ddd_difficulty.build_tables(experiment["spec"], experiment["dataset"])["changes"]
    assert changes["member"].unique().tolist() == ["base", "init.s1", "init.s2", "halves.0", "halves.1"]
    base = changes[changes["member"] == "base"]
    pred = experiment["pred"][("toy.base", 0)]
    assert base["epoch"].tolist() == list(range(E + 1))  # transitions 0->1 ... E->E+1
    assert base["changed"].tolist() == [int((pred[e] != pred[e + 1]).sum()) for e in range(E + 1)]


def test_difficulty_models_handle_extreme_accuracies():
    profiles, histograms = ddd_difficulty.difficulty_model_tables(np.full(50, 4), 4, seed=0)
    assert profiles.empty and set(histograms["model"]) == {"observed", "uniform"}
    n_correct = np.r_[np.full(95, 10), np.full(5, 0)]  # mean accuracy 0.95: beyond a 0.1-wide sigmoid
    width = ddd_difficulty.sigmoid_width(0.95)
    assert width < 0.1
    profiles, histograms = ddd_difficulty.difficulty_model_tables(n_correct, 10, seed=0)
    sigmoid = profiles[profiles["model"] == "sigmoid"]
    assert sigmoid["p"].to_numpy() @ sigmoid["weight"].to_numpy() == pytest.approx(0.95)
    assert set(profiles["sigmoid_width"]) == {width}


def test_kl_table_uses_the_base_accuracy_per_class():
    accuracy = pd.DataFrame({"member": ["base"] * 4 + ["other"] * 4, "class": [0, 1, 2, 3] * 2,
                             "accuracy": [1.0, 0.8, 0.5, 0.4, 0.9, 0.6, 0.5, 0.2]})
    table = kl_table(accuracy, np.array([1.0, 2.0, 3.0, 4.0]), n_values=12)
    assert table["kl_to_next"].iloc[:3].tolist() == pytest.approx(gaussian_class_kl([1, 2, 3, 4]).tolist())
    assert table["kl_to_next_image"].iloc[:3].tolist() == pytest.approx(gaussian_class_kl([1, 2, 3, 4], 12).tolist())
    assert np.isnan(table["kl_to_next"].iloc[3])
    assert table["accuracy"].tolist() == [1.0, 0.8, 0.5, 0.4]
    assert table["mean_accuracy"].tolist() == pytest.approx([0.95, 0.7, 0.5, 0.3])
    with pytest.raises(UserError, match="no member 'base'"):
        kl_table(accuracy[accuracy["member"] == "other"], np.array([1.0, 2.0, 3.0, 4.0]), 12)


def test_summary_reports_each_condition(experiment):
    spec = experiment["spec"]
    kappa, conditions, _ = ddd_kappa.build_tables(spec)
    tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
    rsa = pd.DataFrame({"model_a": ["plus1ep", "plus1ep", "init.s1"], "model_b": ["init.s1", "halves.0", "halves.0"],
                        "condition_a": ["plus1ep", "plus1ep", "init"], "condition_b": ["init", "halves", "halves"],
                        "epoch_a": [4, 4, 3], "epoch_b": [3, 3, 3], "rsa": [0.5, 0.7, 0.9], "n_images": 10})
    text = summary(spec, tables["members"], tables["difficulty"], kappa, conditions, tables["histograms"], rsa)
    lines = text.splitlines()
    plus = next(line for line in lines if line.strip().startswith("plus1ep"))
    value = conditions[(conditions["set"] == "all") & (conditions["member"] == "plus1ep")]["kappa"].iloc[0]
    assert f"{value:.3f}" in plus
    assert any(line.strip().startswith("halves (within)") for line in lines)
    assert "RSA with the base run (plus1ep, epoch 4) on 10 images: mean 0.600 over 2 conditions" in text
    assert f"{N_IMAGES} test images, 6 models" in text


def test_cli_writes_tables_from_the_experiment_file(experiment, tmp_path, capsys):
    import json

    from pathologies.ddd import experiment as ddd_data
    from pathologies.io import read_experiment

    spec_file = tmp_path / "experiment.json"
    assert ddd_data.main(["--spec", json.dumps(experiment["spec"]), "--out", str(spec_file)]) == 0
    assert read_experiment(spec_file) == experiment["spec"]
    outs = [tmp_path / name for name in ("k.csv", "c.csv", "e.csv")]
    assert ddd_kappa.main(["--experiment", str(spec_file), "--kappa-out", str(outs[0]),
                           "--conditions-out", str(outs[1]),
                           "--epochs-out", str(outs[2])]) == 0
    kappa, _, _ = ddd_kappa.build_tables(experiment["spec"])
    pd.testing.assert_frame_equal(pd.read_csv(outs[0]), kappa, check_dtype=False)

    for argv, message in [(["--spec", "{not json", "--out", str(tmp_path / "x.json")], "--spec is not valid"),
                          (["--spec", "[1]", "--out", str(tmp_path / "x.json")], "must be a JSON object"),
                          (["--spec", '{"name": "x"}', "--out", str(tmp_path / "x.json")], "lacks")]:
        with pytest.raises(SystemExit) as exit_info:
            ddd_data.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(UserError, match="does not exist; build it with"):
        read_experiment(tmp_path / "missing.json")


def test_kl_cli_reads_the_stds_from_the_prepared_dataset(tmp_path, quadrant_dataset, capsys):
    from pathologies.data.prepare import prepare_dataset
    from pathologies.ddd import kl as ddd_kl

    dataset = tmp_path / "noise.h5"
    prepare_dataset("noise", {"kind": "gaussian", "num_classes": 3, "image_size": 2, "train_per_class": 2,
                              "test_per_class": 2, "std_step": 4.0}, tmp_path, dataset)
    accuracy = tmp_path / "class_accuracy.csv"
    pd.DataFrame({"member": "base", "class": [0, 1, 2], "accuracy": [0.9, 0.5, 0.1]}).to_csv(accuracy, index=False)
    assert ddd_kl.main(["--class-accuracy", str(accuracy), "--dataset", str(dataset),
                        "--out", str(tmp_path / "kl.csv")]) == 0
    table = pd.read_csv(tmp_path / "kl.csv")
    assert table["std"].tolist() == [4.0, 8.0, 12.0]
    assert table["kl_to_next_image"].iloc[:2].tolist() == pytest.approx(
        gaussian_class_kl([4, 8, 12], 2 * 2 * 3).tolist())
    assert table["kl_to_next"].iloc[:2].tolist() == pytest.approx(gaussian_class_kl([4, 8, 12]).tolist())
    with pytest.raises(SystemExit):
        ddd_kl.main(["--class-accuracy", str(accuracy), "--dataset", str(quadrant_dataset),
                     "--out", str(tmp_path / "x.csv")])
    assert "the KL analysis needs kind 'gaussian'" in capsys.readouterr().err
