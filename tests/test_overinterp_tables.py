"""Tables from hand-made evaluation files: accuracy per split and run, mean ± std, ensembles, Markdown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pathologies.io import h5py
from pathologies.overinterp.tables import accuracy_by_split, accuracy_table, build_tables, ensemble_table, markdown

LABELS = np.array([0, 1, 2, 0])


def write_eval(path, groups):
    """groups: {"dataset/split": logits (n, 3)}"""
    with h5py.File(path, "w") as handle:
        for name, logits in groups.items():
            group = handle.create_group(name)
            group["logits"] = np.asarray(logits, dtype=np.float32)
            group["labels"], group["ids"] = LABELS, np.arange(4)
            group["pred"] = np.asarray(logits).argmax(1)
            group.attrs["masked"] = "bs" in name


def onehot(preds, scale=1.0):
    return np.eye(3)[preds] * scale


def entry(path, model, seed, eval_dataset, eval_on="full", role="pretrained", draw=-1, fraction=None):
    return {"model": model, "seed": seed, "role": role, "condition": model, "arch": "cnn", "train_on": "full",
            "train_fraction": None, "augment": False, "eval_dataset": eval_dataset, "eval_on": eval_on,
            "eval_fraction": fraction, "draw": draw, "path": str(path), "test_set": eval_dataset.split(".")[0]}


@pytest.fixture
def spec(tmp_path):
    # on d, member 0 is 3/4 right, member 1 2/4 (image 1 and 2 wrong); on the subset member 0 is 1/4 right
    m0 = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.6, 0]]
    m1 = [[1, 0, 0], [0, 0, 1.5], [1, 0, 0], [1, 0, 0]]
    write_eval(tmp_path / "m0.h5", {"d/test": m0, "d.bs/test": onehot([0, 2, 1, 1]),
                                    "c/fog_s1": onehot([0, 1, 2, 0]), "c/fog_s2": onehot([1, 1, 1, 1])})
    write_eval(tmp_path / "m1.h5", {"d/test": m1, "d.bs/test": onehot([0, 1, 0, 1]),
                                    "c/fog_s1": onehot([1, 1, 1, 1]), "c/fog_s2": onehot([0, 1, 2, 0])})
    evaluations = [entry(tmp_path / "m0.h5", "m", 0, "d"), entry(tmp_path / "m1.h5", "m", 1, "d"),
                   entry(tmp_path / "m0.h5", "m", 0, "d.bs", "bs", fraction=0.1),
                   entry(tmp_path / "m0.h5", "m", 0, "c"), entry(tmp_path / "m1.h5", "m", 1, "c")]
    return {"name": "e", "dataset": "d", "source_model": "m", "source_seed": 0, "source_arch": "cnn",
            "threshold": 0.9, "evaluations": evaluations, "calibrations": [],
            "ensembles": {"pair": {"members": [["m", 0], ["m", 1]], "sis": None}}}


def test_accuracy_is_recomputed_per_split_and_averaged_over_runs(spec):
    by_split = accuracy_by_split(spec)
    assert by_split[(by_split["seed"] == 0) & (by_split["eval_dataset"] == "d")]["accuracy"].item() == 75.0
    table = accuracy_table(by_split).set_index(["test_set", "eval_on"])
    assert table.loc[("d", "full"), "accuracy_mean"] == pytest.approx(62.5)
    assert table.loc[("d", "full"), "accuracy_std"] == pytest.approx(np.std([75, 50], ddof=1))
    assert table.loc[("d", "bs"), "n_runs"] == 1 and np.isnan(table.loc[("d", "bs"), "accuracy_std"])
    # CIFAR-10-C style: a run's accuracy is the mean over its splits (seed 0: 100 and 25; seed 1: 25 and 100)
    assert table.loc[("c", "full"), "accuracy_mean"] == pytest.approx(62.5)
    assert table.loc[("c", "full"), "accuracy_std"] == 0.0


def test_ensemble_averages_member_logits(spec):
    table = ensemble_table(spec, accuracy_by_split(spec)).set_index("test_set")
    # mean logits on d: image 0 -> 0 right; 1 -> (0, .5, .75) wrong; 2 -> tie of 0 and 2 -> 0 wrong;
    # 3 -> (.5, .3, 0) right: 50%, below both members' mean
    assert table.loc["d", "accuracy_mean"] == 50.0
    assert table.loc["d", "members_mean"] == pytest.approx(62.5) and table.loc["d", "n_members"] == 2
    assert "bs" not in set(ensemble_table(spec, accuracy_by_split(spec))["eval_on"])  # member 1 has no bs


def test_build_tables_writes_csv_and_markdown(tmp_path, spec):
    summary = pd.DataFrame([{"model": "m", "seed": 0, "dataset": "d", "split": "test", "variant": variant,
                             "threshold": threshold, "n_images": 4, "n_sis": n, "mean_size_pct": size,
                             "std_size_pct": 1.0, "accuracy": 0.75}
                            for variant, threshold, n, size in [("original", 0.5, 4, 1.0), ("original", 0.9, 2, 3.0),
                                                                ("calibrated", 0.9, 1, 5.0)]])
    (tmp_path / "cal.json").write_text(json.dumps({
        "temperature": 2.0, "ece_before": 0.1, "ece_after": 0.02, "nll_fit_before": 0.5, "nll_fit_after": 0.4,
        "n_fit": 2, "n_held": 2}))
    spec["calibrations"] = [{"model": "m", "seed": 0, "path": str(tmp_path / "cal.json")}]
    tables = build_tables(spec, summary, tmp_path / "tables")
    calibration = tables["calibration"].iloc[0]  # SIS sizes at the experiment's threshold 0.9 only
    assert (calibration["sis_original_n"], calibration["sis_original_mean_pct"]) == (2, 3.0)
    assert (calibration["sis_calibrated_n"], calibration["sis_calibrated_mean_pct"]) == (1, 5.0)
    assert calibration["ece_before_pct"] == pytest.approx(10.0)
    assert tables["sis_summary"]["threshold"].tolist() == [0.9, 0.9]
    for name in ("accuracy", "accuracy_by_split", "ensembles", "calibration", "sis_summary"):
        assert (tmp_path / "tables" / f"{name}.csv").exists()
    text = (tmp_path / "tables" / "tables.md").read_text()
    assert "| m | Full images | 10% BS subsets | 25.00 |" in text
    assert "| m | Full images | Full images | 62.50 ± 17.68 | 62.50 ± 0.00 |" in text
    assert json.dumps(spec)  # the spec stays JSON


def test_markdown_renders_nan_as_empty():
    assert markdown(pd.DataFrame({"a": [1.5, float("nan")], "b": ["x", "y"]})) == \
        "| a | b |\n|---|---|\n| 1.5 | x |\n|  | y |\n"


def test_agreement_with_the_source_and_the_leakage_table(tmp_path, spec):
    from pathologies.overinterp.leakage import leakage_table, plot_leakage

    # source m seed 0 on d predicts [0, 1, 2, 1] (image 3 wrong: label 0)
    def retrained(name, kind, seed, preds):
        write_eval(tmp_path / f"{name}{seed}.h5", {f"d.{kind}/test": onehot(preds), "d/test": onehot([0, 0, 0, 0])})
        row = entry(tmp_path / f"{name}{seed}.h5", name, seed, f"d.{kind}", kind, role="retrained", fraction=0.1)
        full = entry(tmp_path / f"{name}{seed}.h5", name, seed, "d", "full", role="retrained")
        for item in (row, full):
            item.update(condition=f"cnn.{kind}10", train_on=kind, train_fraction=0.1)
        return [row, full]

    # BS models copy the source's decisions, the source's mistake included; mask-only models half of them
    spec["evaluations"] += [*retrained("bs", "bs", 0, [0, 1, 2, 1]), *retrained("bs", "bs", 1, [0, 1, 2, 1]),
                            *retrained("mk", "mask", 0, [0, 1, 0, 0]), *retrained("mk", "mask", 1, [0, 0, 2, 1]),
                            *retrained("rn", "random", 0, [1, 1, 1, 1])]
    by_split = accuracy_by_split(spec)
    source_row = by_split[(by_split["model"] == "m") & (by_split["seed"] == 0) & (by_split["eval_dataset"] == "d")]
    assert source_row["agree_source"].item() == 100.0 and source_row["n_source_wrong"].item() == 1
    other = by_split[(by_split["model"] == "m") & (by_split["seed"] == 1) & (by_split["eval_dataset"] == "d")]
    assert other["agree_source"].item() == 25.0 and other["agree_source_wrong"].item() == 0.0  # [0, 2, 0, 0]
    on_c = by_split[(by_split["test_set"] == "c") & (by_split["seed"] == 1)].set_index("eval_split")
    assert on_c.loc["fog_s1", "agree_source"] == 25.0 and on_c.loc["fog_s2", "agree_source"] == 25.0
    table = accuracy_table(by_split)
    leakage = leakage_table(table)
    assert len(leakage) == 1
    row = leakage.iloc[0]
    key = ("arch", "fraction", "test_set", "n_runs_bs", "n_runs_mask")
    assert tuple(row[k] for k in key) == ("cnn", 0.1, "d", 2, 2)
    assert row["bs_accuracy_mean"] == 75.0 and row["bs_agree_mean"] == 100.0 and row["bs_agree_wrong_mean"] == 100.0
    # mask seed 0: right on 0, 1, 3 (75%), agrees on 0, 1 (50%); seed 1: right on 0, 2 (50%), agrees 0, 2, 3 (75%)
    assert row["mask_accuracy_mean"] == 62.5 and row["mask_agree_mean"] == 62.5
    assert row["mask_agree_wrong_mean"] == 50.0 and row["random_accuracy_mean"] == 25.0
    plot_leakage(leakage, tmp_path / "leakage.png")
    assert (tmp_path / "leakage.png").stat().st_size > 1000


def test_topk_rows_for_every_k(tmp_path, spec):
    from pathologies.overinterp.tables import table1

    spec["options"] = {"topk": [1, 2]}
    # labels [0, 1, 2, 0]; top-1 [0, 0, 0, 2]: right on image 0; top-2 {0,1} {0,1} {0,1} {2,1}: images 0, 1
    write_eval(tmp_path / "k.h5", {"d/test": [[3, 2, 1], [3, 2, 1], [3, 2, 1], [1, 2, 3]]})
    spec["evaluations"].append(entry(tmp_path / "k.h5", "k", 0, "d"))
    by_split = accuracy_by_split(spec)
    row = by_split[by_split["model"] == "k"].set_index("topk")
    assert row.loc[1, "accuracy"] == 25.0 and row.loc[2, "accuracy"] == 50.0
    table = accuracy_table(by_split)
    assert sorted(set(table["topk"])) == [1, 2]
    assert "Top-k" in table1(table, "pretrained").columns
    ensembles = ensemble_table(spec, by_split)
    assert not ensembles.duplicated(["ensemble", "test_set", "split_set", "eval_on", "topk"]).any()
    assert sorted(set(ensembles["topk"])) == [1, 2]


def test_ensemble_topk_ranks_the_mean_logits(spec):
    """Top-2 of the members' mean logits on d (labels [0, 1, 2, 0]): rows [1, 0, 0], [0, .5, .75],
    [.5, 0, .5], [.5, .3, 0] rank the label first or second on every image (top-1: 50%); member 0 is
    right at top-2 on every image, member 1 on images 0 and 3 only."""
    spec["options"] = {"topk": [1, 2]}
    table = ensemble_table(spec, accuracy_by_split(spec)).set_index(["test_set", "topk"])
    assert table.loc[("d", 1), "accuracy_mean"] == 50.0 and table.loc[("d", 2), "accuracy_mean"] == 100.0
    assert table.loc[("d", 1), "members_mean"] == pytest.approx(62.5)
    assert table.loc[("d", 2), "members_mean"] == pytest.approx(75.0)
    assert table.loc[("d", 2), "members_std"] == pytest.approx(np.std([100, 50], ddof=1))
    # c, both splits: mean logits [.5, .5, 0], [0, 1, 0], [0, .5, .5], [.5, .5, 0]; image 2 (label 2) ties
    # classes 1 and 2: top-1 takes the lower class (wrong), top-2 keeps both
    assert table.loc[("c", 1), "accuracy_mean"] == 75.0 and table.loc[("c", 2), "accuracy_mean"] == 100.0


def test_cifar10c_mixed_sample_rows_are_labelled_and_not_averaged_into_the_corruptions(tmp_path, spec):
    from pathologies.overinterp.tables import table1

    write_eval(tmp_path / "m2.h5", {"c/fog_s1": onehot([0, 1, 2, 0]), "c/fog_s2": onehot([0, 1, 2, 0]),
                                    "c/mixed": onehot([1, 1, 1, 1])})
    spec["evaluations"] = [entry(tmp_path / "m2.h5", "m", 0, "c")]
    table = accuracy_table(accuracy_by_split(spec)).set_index("split_set")
    assert table.loc["all", "accuracy_mean"] == 100.0  # the corruption splits only
    assert table.loc["mixed", "accuracy_mean"] == 25.0  # the mixed sample, a row of its own
    assert set(table1(table.reset_index(), "pretrained").columns) >= {"c", "c (mixed sample)"}


def test_reference_plus_rows_stand_beside_the_unaugmented_mask_control(tmp_path, spec):
    """augment_mode 'reference': the (+) BS row's leakage floor is the mask-only control trained without
    augmentation (its kept positions are the un-augmented ones); aligned mode pairs (+) with (+) only."""
    from pathologies.overinterp.leakage import leakage_table

    def retrained(name, kind, seed, preds, augment):
        write_eval(tmp_path / f"{name}{seed}.h5", {f"d.{kind}/test": onehot(preds)})
        row = entry(tmp_path / f"{name}{seed}.h5", name, seed, f"d.{kind}", kind, role="retrained", fraction=0.1)
        row.update(condition=f"cnn.{kind}10{'.aug' if augment else ''}", train_on=kind, train_fraction=0.1,
                   augment=augment)
        return row

    spec["evaluations"] += [retrained("bs", "bs", 0, [0, 1, 2, 1], False),
                            retrained("bs.d0.aug", "bs", 0, [0, 1, 2, 0], True),
                            retrained("bs.d1.aug", "bs", 1, [0, 1, 0, 0], True),
                            retrained("mk", "mask", 0, [0, 0, 0, 0], False)]
    table = accuracy_table(accuracy_by_split(spec))
    plus = table[table["condition"] == "cnn.bs10.aug"].iloc[0]
    assert plus["n_runs"] == 2 and plus["accuracy_mean"] == pytest.approx(87.5)  # one row over both replicates
    reference = leakage_table(table, "reference").set_index("augment")
    assert reference.loc[True, "bs_accuracy_mean"] == pytest.approx(87.5)
    assert reference.loc[True, "mask_accuracy_mean"] == reference.loc[False, "mask_accuracy_mean"] == 50.0
    assert reference.loc[True, "n_runs_mask"] == 1
    aligned = leakage_table(table).set_index("augment")
    assert np.isnan(aligned.loc[True, "mask_accuracy_mean"]) and aligned.loc[True, "n_runs_mask"] == 0
    spec["options"] = {"augment_mode": "reference"}
    written = build_tables(spec, pd.DataFrame(columns=["threshold"]), tmp_path / "tables")["leakage"]
    assert written.set_index("augment").loc[True, "mask_accuracy_mean"] == 50.0  # the experiment's mode is used
    markdown_text = (tmp_path / "tables" / "tables.md").read_text()
    assert "(+) = augmentation, train images cropped and flipped once, before masking" in markdown_text
    assert "| cnn | 10% BS subsets (+) | 10% BS subsets | 87.50 ± 17.68 |" in markdown_text
