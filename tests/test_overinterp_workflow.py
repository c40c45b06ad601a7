"""The overinterpretation chain for real on a tiny config: train -> SIS -> subsets -> retrain -> evaluate -> tables.

Asserts the paper's effect on the miniature (models trained and evaluated on backward-selection subsets are
far more accurate than on random subsets of the same size) and that every table number is recomputable
from the stored evaluation files.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pathologies.io import h5py
from test_workflow import copy_workflow, report_names, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
CONFIG = ROOT / "tests" / "configs" / "overinterp_tiny.yaml"
TABLES = "results/overinterp/digits/tables"


EXP = "results/overinterp/digits"
ANSWERS = ("resources/human/ada.json", "resources/human/bo.json")


def configs(work) -> list[str]:
    """--configfile values: the tiny config and the fixture's list of the participants' answer files."""
    return ["--configfile", str(CONFIG), str(work / "answers.yaml")]


def write_answers(work) -> None:
    """Two participants' answers to the exported page (Table S6): ada is right on every other item and answers the
    rest with the next class; bo answers only the first three items of each fraction, rightly, the rest unanswered
    (they count as wrong)."""
    key = pd.read_csv(work / EXP / "human_benchmark/key.csv", dtype={"item": str, "class_name": str})
    names = sorted(key["class_name"].unique())
    ada = {row.item: row.class_name if i % 2 == 0 else names[(names.index(row.class_name) + 1) % len(names)]
           for i, row in enumerate(key.itertuples())}
    bo = {row.item: row.class_name for _, part in key.groupby("fraction") for row in part.head(3).itertuples()}
    for path, participant, answers in zip(ANSWERS, ("ada", "bo"), (ada, bo), strict=True):
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        unanswered = sorted(set(key["item"]) - set(answers))
        (work / path).write_text(json.dumps({"participant": participant, "answers": answers,
                                             "unanswered": unanswered}))
    (work / "answers.yaml").write_text(json.dumps({"overinterpretation": {"digits": {"human_benchmark": {
        "answers": list(ANSWERS)}}}}))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny chain; the human benchmark is exported first, two participants answer it, and the full run
    scores them through the workflow's rules (answers listed in a second config file, merged into the first)."""
    work = copy_workflow(tmp_path_factory.mktemp("overinterp"))
    snakemake(f"{EXP}/human_benchmark/key.csv", "--cores", "2", "--configfile", str(CONFIG), cwd=work)
    write_answers(work)
    snakemake("--cores", "2", *configs(work), cwd=work)
    return work


def test_bs_subsets_train_far_better_models_than_random_subsets(finished):
    accuracy = pd.read_csv(finished / TABLES / "accuracy.csv")
    matching = accuracy[(accuracy["role"] == "retrained") & (accuracy["eval_on"] != "full")
                        & (accuracy["test_set"] == "digits")].set_index("condition")
    for arch in ("small_cnn", "mlp"):
        bs, rnd = matching.loc[f"{arch}.bs10", "accuracy_mean"], matching.loc[f"{arch}.random10", "accuracy_mean"]
        assert bs > 50 and bs > rnd + 30, (arch, bs, rnd)


def test_every_table_number_is_recomputable_from_the_stored_predictions(finished):
    by_split = pd.read_csv(finished / TABLES / "accuracy_by_split.csv")
    assert len(by_split) > 10
    for row in by_split.itertuples():
        with h5py.File(finished / row.path) as handle:
            group = handle[f"{row.eval_dataset}/{row.eval_split}"]
            pred, labels = group["logits"][()].argmax(axis=1), group["labels"][()]
            assert np.array_equal(pred, group["pred"][()])
        assert row.n == len(labels) and row.accuracy == pytest.approx(100 * np.mean(pred == labels))
    accuracy = pd.read_csv(finished / TABLES / "accuracy.csv")
    for row in accuracy.itertuples():
        runs = by_split[(by_split["condition"] == row.condition) & (by_split["test_set"] == row.test_set)
                        & (by_split["eval_on"] == row.eval_on) & (by_split["role"] == row.role)]
        if not np.isnan(row.eval_fraction):
            runs = runs[np.isclose(runs["eval_fraction"], row.eval_fraction)]
        per_run = runs.groupby(["model", "seed", "draw"])["accuracy"].mean()
        assert row.n_runs == len(per_run) and row.accuracy_mean == pytest.approx(per_run.mean())
    markdown = (finished / TABLES / "tables.md").read_text()
    for test_set in ("digits", "digits_resplit"):
        bs = accuracy[(accuracy["condition"] == "small_cnn.bs10") & (accuracy["eval_on"] == "bs")
                      & (accuracy["test_set"] == test_set)].iloc[0]
        assert f"{bs.accuracy_mean:.2f} ± {bs.accuracy_std:.2f}" in markdown


def test_a_second_test_set_with_source_sis_gets_bs_and_random_subsets(finished):
    """Table S4's BS rows: models evaluated on the pixel subsets of another test set (CIFAR-10.1 in the paper)."""
    accuracy = pd.read_csv(finished / TABLES / "accuracy.csv")
    other = accuracy[accuracy["test_set"] == "digits_resplit"].set_index(["role", "condition", "eval_on"])
    assert other.loc[("pretrained", "digits_cnn", "bs"), "n_runs"].item() == 1  # the source alone
    assert other.loc[("pretrained", "digits_cnn", "random"), "n_runs"].item() == 2 * 2  # 2 seeds x 2 draws
    for arch in ("small_cnn", "mlp"):
        bs = other.loc[("retrained", f"{arch}.bs10", "bs"), "accuracy_mean"].item()
        rnd = other.loc[("retrained", f"{arch}.random10", "random"), "accuracy_mean"].item()
        assert bs > rnd + 20, (arch, bs, rnd)
    with h5py.File(finished / "results/overinterp/digits/subsets/digits_resplit/bs10.h5") as handle:
        assert list(handle["test/masks"].shape) == [60, 8, 8]
        assert handle.attrs["source_dataset"].endswith("digits_resplit.h5")


def test_training_and_evaluation_see_the_same_masked_images(finished):
    """The trainer's last-epoch test predictions on the subset dataset equal the evaluation's."""
    with h5py.File(finished / "results/models/digits.small_cnn.bs10/seed0/predictions.h5") as handle:
        dumped = handle["test/pred"][-1]
    with h5py.File(finished / "results/overinterp/digits/eval/digits.small_cnn.bs10/seed0.h5") as handle:
        assert np.array_equal(handle["digits.bs10/test/pred"][()], dumped)
        assert handle["digits.bs10/test"].attrs["masked"]


def test_calibration_ensembles_sizes_figures_and_report(finished):
    calibration = pd.read_csv(finished / TABLES / "calibration.csv")
    assert len(calibration) == 2 and (calibration["temperature"] > 0).all()
    assert calibration["sis_calibrated_n"].notna().tolist() == [True, False]  # the source run only
    assert (calibration["nll_fit_after"] <= calibration["nll_fit_before"] + 1e-12).all()
    ensembles = pd.read_csv(finished / TABLES / "ensembles.csv")
    assert set(ensembles["eval_on"]) == {"full", "random"}
    summary = pd.read_csv(finished / TABLES / "sis_summary.csv")
    assert set(summary["variant"]) == {"original", "calibrated", "ensemble"} and (summary["threshold"] == 0.99).all()
    source = summary[(summary["variant"] == "original") & (summary["seed"] == 0) & (summary["split"] == "test")]
    assert calibration.loc[calibration["seed"] == 0, "sis_original_n"].item() == source["n_sis"].item()
    for figure in ("heatmaps", "sis_examples", "confidence_curves", "sis_size_correctness", "accuracy",
                   "ensemble_pair", "calibrated_sis_examples"):  # the last: Figure S6
        assert (finished / f"results/overinterp/digits/figures/{figure}.png").stat().st_size > 1000
    key = pd.read_csv(finished / "results/overinterp/digits/human_benchmark/key.csv")
    assert len(key) == 2 * 5
    assert "Nothing to be done" in snakemake("-n", *configs(finished), cwd=finished).stdout
    names = report_names(*configs(finished), cwd=finished)
    assert any(name.endswith("heatmaps.png") for name in names)
    assert any(name.endswith("accuracy.csv") for name in names)


def test_mask_only_control_and_agreement_with_the_source(finished):
    """Beyond the paper: every BS row beside its mask-only leakage floor; agreement recomputed from the files."""
    accuracy = pd.read_csv(finished / TABLES / "accuracy.csv")
    leakage = pd.read_csv(finished / TABLES / "leakage.csv").set_index(["arch", "test_set"])
    assert len(leakage) == 2 * 2  # 2 archs x 2 test sets
    by_split = pd.read_csv(finished / TABLES / "accuracy_by_split.csv")
    for test_set in ("digits", "digits_resplit"):
        with h5py.File(finished / "results/overinterp/digits/eval/digits_cnn/seed0.h5") as handle:
            group = handle[f"{test_set}/test"]
            source = dict(zip(group["ids"][()].tolist(), group["pred"][()].tolist(), strict=True))
        for arch in ("small_cnn", "mlp"):
            row = leakage.loc[(arch, test_set)]
            for kind in ("bs", "mask"):
                dataset = f"digits.{kind}10" if test_set == "digits" else f"digits.{test_set}.{kind}10"
                agree, agree_wrong = [], []
                for seed in (0, 1):
                    evaluation = f"results/overinterp/digits/eval/digits.{arch}.{kind}10/seed{seed}.h5"
                    with h5py.File(finished / evaluation) as h:
                        group = h[f"{dataset}/test"]
                        pred, labels, ids = group["pred"][()], group["labels"][()], group["ids"][()]
                    src = np.array([source[i] for i in ids.tolist()])
                    agree.append(100 * np.mean(pred == src))
                    wrong = src != labels  # the tiny source may be right on every image: then NaN
                    agree_wrong.append(100 * np.mean((pred == src)[wrong]) if wrong.any() else np.nan)
                assert row[f"{kind}_agree_mean"] == pytest.approx(np.mean(agree))
                assert row[f"{kind}_agree_wrong_mean"] == pytest.approx(np.nanmean(agree_wrong)
                                                                        if not np.isnan(agree_wrong).all() else np.nan,
                                                                        nan_ok=True)
                mine = accuracy[(accuracy["condition"] == f"{arch}.{kind}10") & (accuracy["eval_on"] == kind)
                                & (accuracy["test_set"] == test_set)]
                assert row[f"{kind}_accuracy_mean"] == pytest.approx(mine["accuracy_mean"].item())
    assert by_split["agree_source"].notna().all()
    with h5py.File(finished / "results/overinterp/digits/subsets/mask10.h5") as handle:
        images, masks = handle["test/images"][()], handle["test/masks"][()]
        assert handle.attrs["subset_kind"] == "mask" and (images[masks] == 255).all()
        assert len(np.unique(images[~masks])) == 1  # the mean colour: no pixel value of the image survives
    assert (finished / "results/overinterp/digits/figures/leakage.png").stat().st_size > 1000


def test_noisy_linear_masking_experiment(finished):
    """ROAD imputation: subsets hold imputed pixels, evaluated as stored (no zeroing), BS and mask rows."""
    with h5py.File(finished / "results/overinterp/digits_road/subsets/bs10.h5") as handle:
        assert handle.attrs["masking"] == "noisy_linear"
    with h5py.File(finished / "results/overinterp/digits_road/eval/digits_cnn/seed0.h5") as handle:
        assert not handle["digits_road.bs10/test"].attrs["masked"]
    accuracy = pd.read_csv(finished / "results/overinterp/digits_road/tables/accuracy.csv")
    full = accuracy[(accuracy["condition"] == "digits_cnn") & (accuracy["eval_on"] == "full")].set_index("topk")
    assert sorted(full.index) == [1, 2] and full.loc[2, "accuracy_mean"] >= full.loc[1, "accuracy_mean"]
    with h5py.File(finished / "results/overinterp/digits_road/eval/digits_cnn/seed0.h5") as handle:
        logits, labels = handle["digits/test/logits"][()], handle["digits/test/labels"][()]
    top2 = (np.argsort(-logits, axis=1, kind="stable")[:, :2] == labels[:, None]).any(axis=1)
    by_split = pd.read_csv(finished / "results/overinterp/digits_road/tables/accuracy_by_split.csv")
    mine = by_split[(by_split["model"] == "digits_cnn") & (by_split["seed"] == 0)
                    & (by_split["eval_dataset"] == "digits") & (by_split["topk"] == 2)]
    assert mine["accuracy"].item() == pytest.approx(100 * top2.mean())
    leakage = pd.read_csv(finished / "results/overinterp/digits_road/tables/leakage.csv")
    assert list(leakage["arch"]) == ["small_cnn"] * 2 and leakage["mask_accuracy_mean"].notna().all()
    assert (finished / "results/overinterp/digits_road/figures/leakage.png").stat().st_size > 1000


def test_reference_plus_trains_once_augmented_subsets_without_per_epoch_augmentation(finished):
    """digits_road, augment_mode 'reference': the (+) model trains on train images cropped once and masked with
    the un-augmented mask, with no crop or flip in training, and is evaluated on the un-augmented test subset;
    its leakage row stands beside the one mask-only control."""
    from pathologies.models.checkpoint import read_checkpoint

    folder = finished / "results/overinterp/digits_road"
    with h5py.File(folder / "subsets/bs10_d0_aug.h5") as plus, h5py.File(folder / "subsets/bs10.h5") as plain:
        assert plus.attrs["augmented_once"] and plus.attrs["crop_padding"] == 1 and not plus.attrs["hflip"]
        assert np.array_equal(plus["train/masks"][()], plain["train/masks"][()])  # the un-augmented masks
        assert (plus["train/crop_offsets"][()] != 1).any() and not plus["train/flipped"][()].any()
        assert not np.array_equal(plus["train/images"][()], plain["train/images"][()])
        assert np.array_equal(plus["test/images"][()], plain["test/images"][()])  # test subsets: never augmented
    run = read_checkpoint(finished / "results/models/digits_road.small_cnn.bs10.d0.aug/seed0/model.pt")["run"]
    assert run["dataset"] == "digits_road.bs10.d0.aug"
    assert (run["recipe"]["crop_padding"], run["recipe"]["hflip"]) == (0, False)
    with h5py.File(folder / "eval/digits_road.small_cnn.bs10.d0.aug/seed0.h5") as handle:
        assert set(handle) == {"digits", "digits_road.bs10"}
    accuracy = pd.read_csv(folder / "tables/accuracy.csv")
    assert set(accuracy.loc[accuracy["role"] == "retrained", "condition"]) == {
        "small_cnn.bs10", "small_cnn.bs10.aug", "small_cnn.mask10"}
    leakage = pd.read_csv(folder / "tables/leakage.csv").set_index("augment")
    assert leakage.loc[True, "mask_accuracy_mean"] == leakage.loc[False, "mask_accuracy_mean"]
    assert "cropped and flipped once, before masking" in (folder / "tables/tables.md").read_text()


def test_table_s6_scores_the_placed_answer_files_through_the_workflow(finished):
    """Table S6 (mean ± std over participants, per subset size) and Figure S11 from the scoring rule, against the
    accuracies recomputed here from the two answer files and the key (unanswered items count as wrong)."""
    key = pd.read_csv(finished / EXP / "human_benchmark/key.csv", dtype={"item": str, "class_name": str})
    accuracy = {}
    for path in ANSWERS:
        answers = json.loads((finished / path).read_text())["answers"]
        right = key["item"].map(answers) == key["class_name"]
        accuracy[path] = {f: 100.0 * right[key["fraction"] == f].mean() for f in sorted(key["fraction"].unique())}
    table = pd.read_csv(finished / EXP / "tables/human_accuracy.csv")
    assert table["fraction"].tolist() == [0.1, 0.5] and (table["n_participants"] == 2).all()
    for row in table.itertuples():
        values = np.array([accuracy[path][row.fraction] for path in ANSWERS])
        assert row.accuracy_mean == pytest.approx(values.mean())
        assert row.accuracy_std == pytest.approx(values.std(ddof=1))
        assert row.n_unanswered == 2  # bo leaves 2 of the 5 items of each fraction
    assert table["accuracy_std"].gt(0).any()  # the two participants differ: the std is not a trivial 0
    scores = pd.read_csv(finished / EXP / "tables/human_scores.csv")
    assert sorted(scores["participant"].unique()) == ["ada", "bo"]
    assert (finished / EXP / "figures/human_accuracy.png").stat().st_size > 1000
