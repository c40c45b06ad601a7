"""Human experiments of the DDD paper (A.10-A.11): static pages, scores of answer files, Krippendorff's alpha."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathologies.ddd import difficulty as ddd_difficulty
from pathologies.ddd import figures, human_pages, human_scores
from pathologies.ddd.agreement import krippendorff_alpha, pairwise_alpha
from pathologies.errors import UserError

nan = np.nan
# Krippendorff's own example (Computing Krippendorff's alpha-reliability, 2011): 4 observers, 12 units.
RELIABILITY = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])


@pytest.mark.parametrize("metric, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example(metric, published):
    assert krippendorff_alpha(RELIABILITY, metric) == pytest.approx(published, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_near_zero_for_independent_raters():
    ratings = np.tile(np.array([0, 1, 2, 2, 1, 0], float), (3, 1))
    assert krippendorff_alpha(ratings) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert abs(krippendorff_alpha(rng.integers(0, 3, (4, 2000)).astype(float))) < 0.05
    assert np.isnan(krippendorff_alpha(np.ones((2, 5))))  # no variation: undefined
    assert len(pairwise_alpha(RELIABILITY)) == 6


def test_pages_and_scores_from_planted_observers(experiment, tmp_path, capsys):
    """Pages of pairs and questions; an observer who always picks the trivial image scores 1, a contrarian 0;
    answer shares and alpha are recomputed from the answer files."""
    difficulty = ddd_difficulty.build_tables(experiment["spec"], experiment["dataset"])["difficulty"]
    difficulty_csv = tmp_path / "difficulty.csv"
    difficulty.to_csv(difficulty_csv, index=False)
    spec = {**experiment["spec"], "human": {"pairs": 5, "questions_per_category": 4, "rule": "strict", "seed": 0}}
    spec_file = tmp_path / "experiment.json"
    spec_file.write_text(__import__("json").dumps(spec))
    out = tmp_path / "human"
    assert human_pages.main(["--experiment", str(spec_file), "--difficulty", str(difficulty_csv),
                             "--dataset", experiment["dataset"], "--out-dir", str(out)]) == 0
    pairs, questions = pd.read_csv(out / "pairs.csv"), pd.read_csv(out / "questions.csv")
    category = difficulty.set_index("image_id")["strict"]
    assert len(pairs) == 5 and (category.loc[pairs["trivial_id"]] == "trivial").all()
    assert (category.loc[pairs["impossible_id"]] == "impossible").all()
    assert (np.where(pairs["easier"] == "L", pairs["left_id"], pairs["right_id"]) == pairs["trivial_id"]).all()
    assert questions["category"].value_counts().to_dict() == {"trivial": 4, "in_between": 4, "impossible": 4}
    page = (out / "pairs.html").read_text()
    assert all(f"images/{i}.png" in page for i in pairs["left_id"]) and "<script" not in page
    assert all((out / "images" / f"{i}.png").exists() for i in questions["image_id"])

    answers = {"good": pairs["easier"], "contrary": pairs["easier"].map({"L": "R", "R": "L"})}
    paths = []
    for name, given in answers.items():
        paths.append(tmp_path / f"{name}.csv")
        pd.DataFrame({"trial": pairs["trial"], "answer": given}).to_csv(paths[-1], index=False)
    scores = human_scores.pair_scores(pairs, {p.stem: str(p) for p in paths}).set_index("observer")
    assert scores.loc["good", "accuracy"] == 1.0 and scores.loc["contrary", "accuracy"] == 0.0
    assert scores.loc["all", "accuracy"] == 0.5

    q2 = {"trivial": "yes", "in_between": "maybe", "impossible": "no"}
    files = {}
    for name, shift in (("a", 0), ("b", 1)):
        files[name] = str(tmp_path / f"q_{name}.csv")
        pd.DataFrame({"trial": questions["trial"], "q1": questions.index % 3 + shift,
                      "q2": questions["category"].map(q2), "q3": ""}).to_csv(files[name], index=False)
    long = human_scores.question_answers(questions, files)
    table = human_scores.question_table(questions, long)
    yes = table[(table["observer"] == "all") & (table["question"] == "q2") & (table["answer"] == "yes")]
    assert yes[["category", "share_of_answer"]].values.tolist() == [["trivial", 1.0]]
    agreement = human_scores.agreement_table(long).set_index(["question", "scope"])
    assert agreement.loc[("q2", "all observers"), "value"] == pytest.approx(1.0)  # both raters agree on q2
    q1 = np.array([questions.index % 3, questions.index % 3 + 1], float)
    assert agreement.loc[("q1", "all observers"), "value"] == pytest.approx(krippendorff_alpha(q1, "interval"))
    correlation = agreement[agreement["statistic"] == "pearson_correlation"]
    assert correlation.loc[("q1", "pairs: mean"), "value"] == pytest.approx(1.0)  # q1 shifted by one: r = 1
    assert "q3" not in set(agreement.index.get_level_values(0))  # nobody answered q3

    figures.plot_human_questions(table, tmp_path / "fig06.png")
    figures.plot_human_questions(table, tmp_path / "fig27.png", share="share_of_question", observers=True)
    figures.plot_human_pairs(scores.reset_index(), tmp_path / "pairs.png")
    figures.plot_pairs(pairs, out / "images", tmp_path / "fig18.png")
    assert all((tmp_path / f).stat().st_size for f in ("fig06.png", "fig27.png", "pairs.png", "fig18.png"))

    pd.DataFrame({"trial": [1], "answer": ["X"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="answers must be L or R"):
        human_scores.pair_scores(pairs, {"bad": str(tmp_path / "bad.csv")})
    pd.DataFrame({"trial": [99], "answer": ["L"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="do not match the page"):
        human_scores.pair_scores(pairs, {"bad": str(tmp_path / "bad.csv")})


def test_pair_scores_carry_a_one_sided_binomial_test_against_chance(tmp_path):
    """Per observer: P(X >= k) for X ~ Binomial(n, 1/2), written out with math.comb."""
    import math

    pairs = pd.DataFrame({"trial": np.arange(1, 150), "easier": np.where(np.arange(149) % 2, "L", "R")})
    rng = np.random.default_rng(0)
    paths = {}
    for name, k in (("good", 107), ("guess", 75)):
        right = np.zeros(149, bool)
        right[rng.choice(149, k, replace=False)] = True
        answer = np.where(right, pairs["easier"], np.where(pairs["easier"] == "L", "R", "L"))
        pd.DataFrame({"trial": pairs["trial"], "answer": answer}).to_csv(tmp_path / f"{name}.csv", index=False)
        paths[name] = str(tmp_path / f"{name}.csv")
    table = human_scores.pair_scores(pairs, paths).set_index("observer")

    def tail(k: int, n: int) -> float:
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n

    assert table.loc["good", "n_correct"] == 107 and table.loc["good", "p_value"] == pytest.approx(tail(107, 149))
    assert table.loc["good", "p_value"] == pytest.approx(5.0e-8, rel=0.01)  # the paper's 72 % observer
    assert table.loc["guess", "p_value"] == pytest.approx(tail(75, 149))
    assert table.loc["all", "p_value"] == pytest.approx(tail(182, 298))


def authors_balance(categories: np.ndarray, errors: np.ndarray, seed: int = 1312) -> np.ndarray:
    """The authors' notebook (06_figure_6), rewritten on plain arrays: positions of the 300 items kept.
    Categories coded as theirs: 0 impossible, 1 in-between, 2 trivial."""
    np.random.seed(seed)
    positions = np.arange(len(categories))
    error_inds = np.where(errors == 1)[0]
    kept = np.delete(positions, np.concatenate((error_inds, [43, 221, 253])))
    codes = categories[kept]
    impossible, inbetween, trivial = (np.where(codes == c)[0] for c in (0, 1, 2))
    rm_inbetween = np.random.choice(inbetween, len(inbetween) - len(impossible), replace=False)
    rm_trivial = np.random.choice(trivial, len(trivial) - len(impossible), replace=False)
    return np.delete(kept, np.concatenate((rm_inbetween, rm_trivial)))


def test_experiment_two_items_are_balanced_as_the_authors_draw_them():
    from pathologies.ddd.human_analysis import analysis_items

    rng = np.random.default_rng(3)
    categories = rng.permutation(np.repeat([0, 1, 2], 100))
    errors = np.zeros(300, int)  # label errors mostly among impossible items (the smallest category then)
    errors[rng.choice(np.flatnonzero(categories == 0), 30, replace=False)] = 1
    errors[rng.choice(np.flatnonzero(categories != 0), 10, replace=False)] = 1
    names = np.array(["impossible", "in_between", "trivial"])[categories]
    questions = pd.DataFrame({"trial": np.arange(1, 301), "image_id": 1000 + np.arange(300), "category": names,
                              "fraction_correct": rng.random(300)})
    items = analysis_items(questions, [44, 222, 254], 1000 + np.flatnonzero(errors), balance=True, seed=1312)
    expected = authors_balance(categories, errors)
    assert items["trial"].tolist() == (expected + 1).tolist()
    counts = items["category"].value_counts()
    assert counts.nunique() == 1 and counts["impossible"] == np.count_nonzero(
        (categories == 0) & (errors == 0) & ~np.isin(np.arange(300), [43, 221, 253]))
    unbalanced = analysis_items(questions, [44, 222, 254])
    assert len(unbalanced) == 297 and not set(unbalanced["trial"]) & {44, 222, 254}


def test_model_accuracy_by_answer_and_q1_correlation_with_observer_exclusion():
    from pathologies.ddd.human_analysis import drop_observers, model_accuracy_table

    rng = np.random.default_rng(1)
    items = pd.DataFrame({"trial": np.arange(1, 31), "image_id": np.arange(30), "category": "trivial",
                          "fraction_correct": rng.random(30)})
    rows = []
    for observer in ("o1", "o2", "o3"):
        rows.append(pd.DataFrame({"observer": observer, "trial": items["trial"], "question": "q1",
                                  "answer": rng.integers(0, 5, 30).astype(str)}))
        rows.append(pd.DataFrame({"observer": observer, "trial": items["trial"], "question": "q2",
                                  "answer": rng.choice(["no", "maybe", "yes"], 30)}))
    long = drop_observers(pd.concat(rows, ignore_index=True), {"q2": ["o2"]})
    assert set(long.loc[long["question"] == "q2", "observer"]) == {"o1", "o3"}
    assert set(long.loc[long["question"] == "q1", "observer"]) == {"o1", "o2", "o3"}
    table = model_accuracy_table(items, long, {"q2": ("no", "maybe", "yes")}).set_index(["question", "answer"])

    q1 = np.mean([rows[2 * i]["answer"].astype(float).to_numpy() for i in range(3)], axis=0)
    r = np.corrcoef(q1, items["fraction_correct"])[0, 1]
    assert table.loc[("q1", ""), "value"] == pytest.approx(r)
    accuracy = items["fraction_correct"].to_numpy()
    for answer in ("no", "maybe", "yes"):
        chosen = [accuracy[rows[2 * i + 1]["answer"].to_numpy() == answer] for i in (0, 2)]  # o1, o3
        assert table.loc[("q2", answer), "value"] == pytest.approx(np.concatenate(chosen).mean())
        assert table.loc[("q2", answer), "n"] == sum(len(c) for c in chosen)


def test_experiment_two_stimuli_draw_label_errors_too_and_not_because_of_them(experiment, tmp_path):
    """Experiment 2 draws from every image, label errors included and flagged, with categories counted
    from the planted decisions; the same seed draws the same images without exclude_ids. Experiment 1 never
    shows a label error."""
    import json

    from ddd_fixtures import E, member_correct

    stack = np.stack([member_correct(experiment, label, E) for label in ("base", "plus1ep", "init.s2", "halves.1")])
    n_correct, ids = stack.sum(axis=0), experiment["ids"]
    category = np.where(n_correct == 4, "trivial", np.where(n_correct == 0, "impossible", "in_between"))
    impossible = np.flatnonzero(category == "impossible")
    errors = np.concatenate([impossible[3:], np.flatnonzero(category == "trivial")[:5]])  # all but 3 impossible
    (tmp_path / "errors.txt").write_text("\n".join(str(i) for i in ids[errors]) + "\n")
    human = {"pairs": 3, "questions_per_category": 10, "rule": "strict", "seed": 4}

    def pages(name: str, exclude: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        spec = {**experiment["spec"], "exclude_ids": exclude, "human": human}
        tables = ddd_difficulty.build_tables(spec, experiment["dataset"])
        folder = tmp_path / name
        folder.mkdir()
        for table in ("difficulty", "difficulty_excluded"):
            tables[table].to_csv(folder / f"{table}.csv", index=False)
        (folder / "experiment.json").write_text(json.dumps(spec))
        assert human_pages.main(["--experiment", str(folder / "experiment.json"), "--difficulty",
                                 str(folder / "difficulty.csv"), "--difficulty-excluded",
                                 str(folder / "difficulty_excluded.csv"), "--dataset", experiment["dataset"],
                                 "--out-dir", str(folder / "human")]) == 0
        return pd.read_csv(folder / "human" / "pairs.csv"), pd.read_csv(folder / "human" / "questions.csv")

    pairs, questions = pages("with_errors", str(tmp_path / "errors.txt"))
    row = pd.Series(np.arange(len(ids)), index=ids).loc[questions["image_id"]].to_numpy()
    assert questions["category"].tolist() == category[row].tolist()
    assert questions["fraction_correct"].tolist() == pytest.approx((n_correct[row] / 4).tolist())
    assert questions["label_error"].tolist() == np.isin(row, errors).tolist()
    # 10 impossible images drawn from a pool in which only 3 are not label errors: at least 7 are
    assert questions.loc[questions["category"] == "impossible", "label_error"].sum() >= 7
    assert not np.isin(pairs[["trivial_id", "impossible_id"]].to_numpy(), ids[errors]).any()
    assert set(pairs["impossible_id"]) <= set(ids[impossible[:3]])

    _, unmarked = pages("without_errors", None)
    assert unmarked.drop(columns="label_error").equals(questions.drop(columns="label_error"))
    assert not unmarked["label_error"].any()


def test_both_readings_of_experiment_two_come_from_one_set_of_answers(experiment, tmp_path):
    """human_questions.csv, human_model_accuracy.csv and human_agreement.csv hold the analysis with label
    errors (every item but the dropped trials) and without (label errors out, then balanced as the authors'
    notebook), both recomputed here from the answer files."""
    import json

    rng = np.random.default_rng(5)
    codes = rng.permutation(np.repeat([0, 1, 2], 100))  # the authors' codes: 0 impossible, 1 in-between, 2 trivial
    errors = np.zeros(300, int)
    errors[rng.choice(np.flatnonzero(codes == 0), 35, replace=False)] = 1
    errors[rng.choice(np.flatnonzero(codes != 0), 12, replace=False)] = 1
    accuracy = np.where(codes == 2, 1.0, np.where(codes == 0, 0.0, rng.integers(1, 11, 300) / 11))
    questions = pd.DataFrame({"trial": np.arange(1, 301), "image_id": 5000 + np.arange(300),
                              "category": np.array(["impossible", "in_between", "trivial"])[codes],
                              "fraction_correct": accuracy, "label_error": errors.astype(bool)})
    questions.to_csv(tmp_path / "questions.csv", index=False)
    pd.DataFrame({"trial": [1], "left_id": [1], "right_id": [2], "trivial_id": [1], "impossible_id": [2],
                  "easier": ["L"]}).to_csv(tmp_path / "pairs.csv", index=False)
    (tmp_path / "errors.txt").write_text("\n".join(str(5000 + i) for i in np.flatnonzero(errors)) + "\n")
    answers = {}
    for observer in ("o1", "o2", "o3"):
        answers[observer] = pd.DataFrame({"trial": questions["trial"], "q1": rng.integers(0, 4, 300) + (codes == 0),
                                          "q2": rng.choice(["no", "maybe", "yes"], 300),
                                          "q3": rng.choice(["no", "slightly", "very"], 300)})
        answers[observer].to_csv(tmp_path / f"{observer}.csv", index=False)
    human = {"drop_trials": [44, 222, 254], "balance": True, "balance_seed": 1312, "exclude_observers": {"q2": ["o2"]}}
    spec = {**experiment["spec"], "exclude_ids": str(tmp_path / "errors.txt"), "human": human}
    (tmp_path / "experiment.json").write_text(json.dumps(spec))
    out = {name: tmp_path / f"human_{name}.csv" for name in ("pairs", "questions", "agreement", "model_accuracy")}
    options = [x for name, path in out.items() for x in (f"--{name.replace('_', '-')}-out", str(path))]
    assert human_scores.main(["--pairs", str(tmp_path / "pairs.csv"), "--questions", str(tmp_path / "questions.csv"),
                              "--question-answers", *(str(tmp_path / f"{o}.csv") for o in answers),
                              "--experiment", str(tmp_path / "experiment.json"), *options]) == 0
    tables = {name: pd.read_csv(path) for name, path in out.items() if name != "pairs"}

    kept = np.delete(np.arange(300), [43, 221, 253])
    removed = authors_balance(codes, errors)
    impossible_left = np.count_nonzero((codes == 0) & (errors == 0) & ~np.isin(np.arange(300), [43, 221, 253]))
    assert np.bincount(codes[removed]).tolist() == [impossible_left] * 3  # balanced to the impossible count
    assert not errors[removed].any() and errors[kept].sum() == errors.sum() - errors[[43, 221, 253]].sum()
    for reading, positions in (("kept", kept), ("removed", removed)):
        table = tables["questions"][tables["questions"]["label_errors"] == reading]
        pooled = table[table["observer"] == "all"].set_index(["question", "answer", "category"])["n"]
        for question, observers in (("q2", ("o1", "o3")), ("q3", ("o1", "o2", "o3"))):
            given = np.concatenate([answers[o][question].to_numpy()[positions] for o in observers])
            category = np.tile(questions["category"].to_numpy()[positions], len(observers))
            expected = pd.crosstab(given, category).stack()
            expected = expected[expected > 0]
            got = pooled.loc[question]
            assert got.sort_index().to_dict() == {k: int(v) for k, v in expected.sort_index().items()}, reading
        model = tables["model_accuracy"][tables["model_accuracy"]["label_errors"] == reading]
        mean_q1 = np.mean([answers[o]["q1"].to_numpy()[positions] for o in answers], axis=0)
        r = model.loc[model["question"] == "q1", "value"].iloc[0]
        assert r == pytest.approx(np.corrcoef(mean_q1, accuracy[positions])[0, 1])
        yes = model[(model["question"] == "q2") & (model["answer"] == "yes")].iloc[0]
        chosen = np.concatenate([accuracy[positions][answers[o]["q2"].to_numpy()[positions] == "yes"]
                                 for o in ("o1", "o3")])
        assert (yes["n"], yes["value"]) == (len(chosen), pytest.approx(chosen.mean()))
        agreement = tables["agreement"][tables["agreement"]["label_errors"] == reading]
        alpha = agreement.query("question == 'q3' and scope == 'all observers'")["value"].iloc[0]
        q3 = np.array([answers[o]["q3"].map({"no": 0, "slightly": 1, "very": 2}).to_numpy()[positions]
                       for o in answers], float)
        assert alpha == pytest.approx(krippendorff_alpha(q3, "ordinal"))

    for name in ("fig25_human_answers", "fig26_human_answers", "fig28_human_observers"):
        assert figures.main([name, "--questions", str(out["questions"]), "--out", str(tmp_path / f"{name}.png")]) == 0
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    for reading, positions in (("kept", kept), ("removed", removed)):  # what Figures 25 / 26 draw
        drawn = figures.plot_human_questions(tables["questions"], tmp_path / f"{reading}.png",
                                             share="share_of_question", label_errors=reading)
        q1 = drawn[drawn["question"] == "q1"]
        assert q1["n"].sum() == 3 * len(positions) and set(q1["label_errors"]) == {reading}
