"""The DDD stage for real: a tiny grid trained and analysed by Snakemake, numbers checked against the dumps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, make_imagenet_index
from test_workflow import copy_workflow, report_names, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
DDD_TINY = ROOT / "tests" / "configs" / "ddd_tiny.yaml"


def dump_correct(work, model: str, seed: int = 0) -> np.ndarray:
    """(epochs + 1, N) correctness read straight from a prediction dump."""
    from pathologies.io import h5py

    with h5py.File(work / f"results/models/{model}/seed{seed}/predictions.h5") as handle:
        return handle["test/pred"][()] == handle["test/targets"][()]


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two right/wrong vectors, written out."""
    p1, p2 = a.mean(), b.mean()
    c_obs = np.mean(a == b)
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return (c_obs - c_exp) / (1 - c_exp)


def test_ddd_stage_runs_and_its_tables_are_recomputable_from_the_dumps(tmp_path):
    work = copy_workflow(tmp_path)
    snakemake("--cores", "2", "--configfile", str(DDD_TINY), cwd=work)
    folder = work / "results" / "ddd" / "tiny"
    for name in ("members", "kappa", "conditions", "epoch_kappa", "difficulty", "fractions", "histogram",
                 "difficulty_profiles", "difficulty_histograms", "class_accuracy", "decision_changes",
                 "kl_accuracy", "rsa"):
        assert (folder / f"{name}.csv").stat().st_size > 0, name
    assert (folder / "experiment.json").exists()
    figures = sorted(path.name for path in (folder / "figures").glob("*.png"))
    assert figures == ["fig02_histogram.png", "fig03_conditions.png", "fig04_decisions.png",
                       "fig05_kappa_heatmaps.png", "fig07_rsa.png", "fig08_base_epochs.png", "fig09_kl_accuracy.png",
                       "fig10_difficulty_models.png", "fig13_accuracy.png", "fig17_decision_changes.png",
                       "fig20_class_accuracy.png", "table1_class_extremes.png"]

    base = dump_correct(work, "tiny.base")
    assert base.shape[0] == 4  # epochs 0..2 plus the one extra epoch
    init2 = dump_correct(work, "tiny.init", 2)
    halves = [dump_correct(work, f"tiny.different_data.{i}") for i in range(2)]
    table = pd.read_csv(folder / "kappa.csv")
    everything = table[table["set"] == "all"]

    def row(epoch: int, a: str, b: str) -> pd.Series:
        return everything[(everything["epoch"] == epoch) & (everything["model_a"] == a)
                          & (everything["model_b"] == b)].iloc[0]

    # "plus1ep" at epoch e is the base run's epoch e + 1.
    assert row(2, "plus1ep", "init.s2")["kappa"] == pytest.approx(kappa(base[3], init2[2]))
    assert row(1, "base", "plus1ep")["kappa"] == pytest.approx(kappa(base[1], base[2]))
    conditions = pd.read_csv(folder / "conditions.csv")
    within = conditions[(conditions["set"] == "all") & (conditions["condition"] == "different_data")].iloc[0]
    assert within["reference"] == "different_data.1"
    assert within["kappa"] == pytest.approx(kappa(halves[0][2], halves[1][2]))

    difficulty = pd.read_csv(folder / "difficulty.csv")
    # Difficulty set: base, plus1ep, init (last seed), different_data (last part), at epoch 2.
    n_correct = base[2].astype(int) + base[3] + init2[2] + halves[1][2]
    assert difficulty["n_correct"].tolist() == n_correct.tolist()
    assert (difficulty["strict"] == "in_between").sum() == table.loc[table["set"] == "in_between", "n_images"].iloc[0]

    summary = (folder / "summary.txt").read_text()
    assert "DDD experiment 'tiny'" in summary and "different_data (within)" in summary
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(DDD_TINY), cwd=work).stdout

    names = report_names("--configfile", str(DDD_TINY), cwd=work)
    assert any(name.endswith("fig05_kappa_heatmaps.png") for name in names)
    assert any(name.endswith("summary.txt") for name in names)


SOTA_CONFIG = """
device: cpu
datasets:
  noise: {kind: gaussian, num_classes: 4, image_size: 6, train_per_class: 5, test_per_class: 15, std_step: 8.0}
ddd:
  sota:
    dataset: noise
    predictions_csv: [resources/sota.csv]
    exclude_ids: resources/label_errors.csv
    superclasses: resources/superclasses.csv
    label_ambiguity: resources/ambiguity.csv
    human:
      pairs: 3
      questions_per_category: 3
      rule: loose
      pair_answers: [resources/ann_pairs.csv, resources/bob_pairs.csv]
      question_answers: [resources/ann.csv, resources/bob.csv]
    n_boot: 10
"""


def test_csv_only_experiment_with_planted_label_errors_runs_in_snakemake(tmp_path):
    """An experiment of external predictions only (no training): planted label errors are excluded from
    every table and counted, superclasses, label ambiguity and human answers come from user files, and the
    report builds."""
    from pathologies.io import h5py

    work = copy_workflow(tmp_path)
    config = work / "sota.yaml"
    config.write_text(SOTA_CONFIG)
    snakemake("results/data/noise.h5", "--cores", "1", "--configfile", str(config), cwd=work)
    with h5py.File(work / "results/data/noise.h5") as handle:
        ids, targets = handle["test/ids"][()], handle["test/labels"][()]
    rng = np.random.default_rng(0)
    errors = rng.choice(len(ids), 12, replace=False)  # planted label errors: every model "wrong" there
    p = np.where(rng.random(len(ids)) < 0.5, 1.0, 0.5)
    right = rng.random((5, len(ids))) < p
    right[:, errors] = False
    resources = work / "resources"
    resources.mkdir()
    pd.concat([pd.DataFrame({"image_id": ids, "model": f"m{m}", "target": targets,
                             "prediction": np.where(right[m], targets, (targets + 1) % 4)}) for m in range(5)]
              ).to_csv(resources / "sota.csv", index=False)
    pd.DataFrame({"image_id": ids[errors]}).to_csv(resources / "label_errors.csv", index=False)
    pd.DataFrame({"class": [0, 1, 2, 3], "superclass": ["low", "low", "high", "high"]}).to_csv(
        resources / "superclasses.csv", index=False)
    pd.DataFrame({"image_id": ids[:20], "ambiguous": (np.arange(20) % 2)}).to_csv(resources / "ambiguity.csv",
                                                                                 index=False)
    # The human pages come first; observers answer from them.
    snakemake("results/ddd/sota/human", "--cores", "1", "--configfile", str(config), cwd=work)
    human = work / "results" / "ddd" / "sota" / "human"
    pairs, questions = pd.read_csv(human / "pairs.csv"), pd.read_csv(human / "questions.csv")
    assert not set(pairs["trivial_id"]) & set(ids[errors]) and (human / "pairs.html").exists()
    # experiment 2 draws label errors too (12 of the impossible pool under the loose rule), flagged
    assert questions["label_error"].tolist() == np.isin(questions["image_id"], ids[errors]).tolist()
    assert questions["label_error"].any() and not set(pairs["impossible_id"]) & set(ids[errors])
    pd.DataFrame({"trial": pairs["trial"], "answer": pairs["easier"]}).to_csv(resources / "ann_pairs.csv", index=False)
    pd.DataFrame({"trial": pairs["trial"], "answer": "L"}).to_csv(resources / "bob_pairs.csv", index=False)
    for name in ("ann", "bob"):
        pd.DataFrame({"trial": questions["trial"], "q1": 1, "q2": "yes",
                      "q3": np.where(questions["category"] == "impossible", "very", "no")}).to_csv(
            resources / f"{name}.csv", index=False)
    done = snakemake("--cores", "2", "--configfile", str(config), cwd=work)
    assert "train" not in {line.split()[0] for line in done.stdout.splitlines() if line.strip()}

    folder = work / "results" / "ddd" / "sota"
    keep = np.ones(len(ids), bool)
    keep[errors] = False
    histogram = pd.read_csv(folder / "histogram.csv")
    assert histogram["excluded_images"].tolist() == [12, 0, 0, 0, 0, 0]
    expected = np.bincount(right[:, keep].sum(axis=0), minlength=6) / keep.sum()
    assert histogram["observed"].tolist() == pytest.approx(expected.tolist())
    kappa = pd.read_csv(folder / "kappa.csv")
    assert set(kappa.loc[kappa["set"] == "all", "n_images"]) == {keep.sum()}
    row = kappa[(kappa["set"] == "all") & (kappa["model_a"] == "m0") & (kappa["model_b"] == "m1")].iloc[0]
    assert row["kappa"] == pytest.approx(kappa_of := kappa_fn(right[0][keep], right[1][keep]))
    assert kappa_of == kappa_of  # defined
    superclass = pd.read_csv(folder / "superclasses.csv")
    assert superclass.groupby("superclass")["n_images"].sum().to_dict() == {
        "high": int(np.count_nonzero(keep & (targets >= 2))), "low": int(np.count_nonzero(keep & (targets < 2)))}
    ambiguity = pd.read_csv(folder / "label_ambiguity.csv").set_index("category")
    assert ambiguity.loc["all", "n_rated"] == np.count_nonzero(keep[:20])
    assert len(pd.read_csv(folder / "class_extremes.csv")) == 4
    summary = (folder / "summary.txt").read_text()
    assert "excluded before every table and figure: 12 images" in summary
    scores = pd.read_csv(folder / "human_pairs.csv").set_index("observer")
    assert scores.loc["ann_pairs", "accuracy"] == 1.0
    assert scores.loc["bob_pairs", "accuracy"] == pytest.approx((pairs["easier"] == "L").mean())
    agreement = pd.read_csv(folder / "human_agreement.csv").set_index(["label_errors", "question", "scope"])
    assert agreement.loc[("kept", "q3", "all observers"), "value"] == pytest.approx(1.0)
    # one set of answers, two readings: every item with the label errors, the others without
    answered = pd.read_csv(folder / "human_questions.csv").query("observer == 'all' and question == 'q1'")
    items = answered.groupby("label_errors")["n"].sum() / 2  # two observers
    assert items.to_dict() == {"kept": len(questions), "removed": (~questions["label_error"]).sum()}
    figures = sorted(path.name for path in (folder / "figures").glob("*.png"))
    assert figures == ["a13_label_ambiguity.png", "fig02_histogram.png", "fig04_decisions.png",
                       "fig05_kappa_heatmaps.png", "fig06_human_questions.png", "fig10_difficulty_models.png",
                       "fig11_superclasses.png", "fig12_superclass_categories.png", "fig13_accuracy.png",
                       "fig18_pairs.png", "fig20_class_accuracy.png", "fig25_human_answers.png",
                       "fig26_human_answers.png", "fig27_human_observers.png", "fig28_human_observers.png",
                       "human_pairs.png", "table1_class_extremes.png"]
    names = report_names("--configfile", str(config), cwd=work)
    assert any(name.endswith("fig11_superclasses.png") for name in names)


kappa_fn = kappa


INDEX_CONFIG = """
device: cpu
datasets:
  inet: {kind: imagenet, image_size: 8, resize: 8}
ddd:
  sota:
    dataset: inet
    predictions_csv: [resources/sota.csv]
    exclude_ids: resources/label_errors.txt
    n_boot: 10
"""


def test_label_errors_listed_by_file_name_are_excluded_in_snakemake(tmp_path):
    """Label errors named by file (as Northcutt et al. list ImageNet's) on a real ImageNet index: converted
    to the prepared ids through the index, which becomes an input of the rules that exclude them."""
    from pathologies.io import h5py

    work = copy_workflow(tmp_path)
    make_imagenet_index(work, {"train": 2, "val": 10}, 8, noise=50, step=100)  # resources/imagenet/*
    config = work / "inet.yaml"
    config.write_text(INDEX_CONFIG)
    snakemake("results/data/inet.h5", "--cores", "1", "--configfile", str(config), cwd=work)
    with h5py.File(work / "results/data/inet.h5") as handle:
        ids, targets = handle["test/ids"][()], handle["test/labels"][()]
        paths = handle["test/paths"].asstr()[()]
    rng = np.random.default_rng(0)
    errors = np.sort(rng.choice(len(ids), 5, replace=False))
    right = rng.random((4, len(ids))) < 0.6
    pd.concat([pd.DataFrame({"image_id": ids, "model": f"m{m}", "target": targets,
                             "prediction": np.where(right[m], targets, 1 - targets)}) for m in range(4)]
              ).to_csv(work / "resources" / "sota.csv", index=False)
    # n001/3.png: the class folder tells the two folders' files of the same name apart
    names = ["/".join(paths[i].split("/")[-2:]) for i in errors]
    (work / "resources" / "label_errors.txt").write_text("\n".join(names) + "\n")
    snakemake("results/ddd/sota/summary.txt", "--cores", "2", "--configfile", str(config), cwd=work)

    folder = work / "results" / "ddd" / "sota"
    assert pd.read_csv(folder / "histogram.csv")["excluded_images"].sum() == 5
    assert sorted(pd.read_csv(folder / "difficulty.csv")["image_id"]) == sorted(np.delete(ids, errors))
    assert "excluded before every table and figure: 5 images" in (folder / "summary.txt").read_text()

    (work / "resources" / "label_errors.txt").write_text("n001/no_such_image.png\n")
    done = snakemake("results/ddd/sota/kappa.csv", "--cores", "1", "--configfile", str(config), "--forcerun",
                     "ddd_kappa", cwd=work, check=False)
    log = (work / "results/logs/ddd/sota/kappa.log").read_text()
    assert done.returncode != 0
    assert "1 of 1 file names are not images of split 'test' of results/data/inet.h5: n001/no_such_image.png" in log



PRETRAINED_CONFIG = """
device: cpu
train_threads: 1
datasets:
  noise: {kind: gaussian, num_classes: 4, image_size: 6, train_per_class: 5, test_per_class: 15, std_step: 8.0}
ddd:
  zoo:
    dataset: noise
    pretrained:
      alpha: {arch: mlp, weights: {file: resources/alpha.pt, sha256: %s}}
      beta: {arch: small_cnn, weights: resources/beta.pt}
    in_between_rule: strict
    loose_max_exceptions: 0
    n_boot: 5
  published:
    dataset: noise
    per_image_results: {file: resources/published.npy, n_models: 5}
    in_between_rule: loose
"""


def test_pretrained_models_and_published_per_image_results_run_in_snakemake(tmp_path):
    """Two pretrained models built from generated weights files are evaluated without training into the
    dump layout (checked against evaluating the weights directly), and a generated per-image array gives
    the fractions and histogram of an independent count."""
    import hashlib

    import torch
    from scipy import stats

    from pathologies.data.layout import dataset_info, load_split, to_model_input
    from pathologies.models.registry import build_model

    work = copy_workflow(tmp_path)
    resources = work / "resources"
    resources.mkdir()
    nets = {}
    for seed, (name, arch) in enumerate((("alpha", "mlp"), ("beta", "small_cnn"))):
        torch.manual_seed(100 + seed)
        nets[name] = build_model(arch, 4, in_channels=3, image_size=6).eval()
        for parameter in nets[name].parameters():  # not the run's own initialisation
            parameter.data.add_(torch.randn_like(parameter))
        torch.save(nets[name].state_dict(), resources / f"{name}.pt")
    digest = hashlib.sha256((resources / "alpha.pt").read_bytes()).hexdigest()
    counts = np.random.default_rng(5).integers(0, 6, 60)
    np.save(resources / "published.npy", (counts / 5).reshape(-1, 1))
    config = work / "zoo.yaml"
    config.write_text(PRETRAINED_CONFIG % digest)
    targets = [f"results/ddd/zoo/{table}.csv" for table in ("difficulty", "members", "kappa")]
    published = ("fractions.csv", "histogram.csv", "members.csv", "kappa.csv", "summary.txt",
                 "figures/fig02_histogram.png")
    targets += [f"results/ddd/published/{table}" for table in published]
    snakemake(*targets, "--cores", "2", "--configfile", str(config), cwd=work)

    data = work / "results/data/noise.h5"
    info, test = dataset_info(data), load_split(data, "test")
    x = to_model_input(test.images, info.mean, info.std, torch.device("cpu"))
    right = []
    for name, net in nets.items():
        from pathologies.io import h5py

        with h5py.File(work / f"results/models/zoo.{name}/seed0/predictions.h5") as handle:
            pred = handle["test/pred"][()]
            assert handle.attrs["epochs"] == 0 and pred.shape == (1, 60)
        with torch.no_grad():
            direct = net(x).argmax(1).numpy()
        assert np.array_equal(pred[0], direct), name
        right.append(direct == test.labels)
    folder = work / "results/ddd/zoo"
    difficulty = pd.read_csv(folder / "difficulty.csv")
    assert difficulty["n_correct"].tolist() == (right[0].astype(int) + right[1]).tolist()
    members = pd.read_csv(folder / "members.csv").set_index("label")
    assert members.loc["alpha", "accuracy"] == pytest.approx(right[0].mean())
    row = pd.read_csv(folder / "kappa.csv").query("set == 'all'").iloc[0]
    assert row["kappa"] == pytest.approx(kappa(right[0], right[1]))

    folder = work / "results/ddd/published"
    fractions = pd.read_csv(folder / "fractions.csv").set_index(["rule", "category"])
    expected = {("strict", "trivial"): counts == 5, ("strict", "impossible"): counts == 0,
                ("loose", "trivial"): counts >= 4, ("loose", "impossible"): counts <= 1}
    for key, chosen in expected.items():
        assert fractions.loc[key, "n_images"] == chosen.sum(), key
        assert fractions.loc[key, "fraction"] == pytest.approx(chosen.mean()), key
    histogram = pd.read_csv(folder / "histogram.csv")
    assert histogram["observed"].tolist() == pytest.approx((np.bincount(counts, minlength=6) / 60).tolist())
    assert histogram["binomial"].tolist() == pytest.approx(stats.binom.pmf(np.arange(6), 5, counts.mean() / 5).tolist())
    assert pd.read_csv(folder / "members.csv")["accuracy"].tolist() == pytest.approx([counts.mean() / 5])
    assert pd.read_csv(folder / "kappa.csv").empty
    assert "DDD experiment 'published'" in (folder / "summary.txt").read_text()
