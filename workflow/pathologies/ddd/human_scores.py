"""Scores of the human experiments of Meding et al. (2022), A.10-A.11 (Figures 6, 25-28).

    python -m pathologies.ddd.human_scores --pairs pairs.csv --questions questions.csv \\
        [--pair-answers A.csv ...] [--question-answers B.csv ...] \\
        --pairs-out human_pairs.csv --questions-out human_questions.csv --agreement-out human_agreement.csv

Answer files (one per observer, named by the file stem) are CSV files the user fills in from the
templates :mod:`pathologies.ddd.human_pages` writes: experiment 1 ``trial,answer`` with answer L or R
(the image the observer finds easier for a network); experiment 2 ``trial,q1,q2,q3`` with q1 a count of
object categories (integer >= 0), q2 in no / maybe / yes (is there a main category) and q3 in no /
slightly / very (is the presentation unusual). Empty cells are unanswered trials.

- ``human_pairs.csv``: per observer n_trials, n_answered, n_correct, accuracy (chose the trivial image),
  p_value (one-sided exact binomial test of n_correct of n_answered against chance, 1/2: the paper's "72 %
  gives p = 5e-8") and mean_kappa (error consistency with each other observer, the paper's 0.41-0.75), then
  a row ``all`` (pooled).
- ``human_questions.csv``: per reading x observer (and ``all``, pooled) x question x answer x category: n,
  share_of_answer (the categories of one answer sum to 1: Figure 6), share_of_question (the answers of one
  question sum to 1: Figures 25-28), mean_accuracy (mean fraction of models right on those images).
- ``human_agreement.csv``: per reading and question, Krippendorff's alpha across all observers (q1 interval,
  q2 and q3 ordinal) and over each pair of observers (mean, min, max), and for q1 the mean / min / max
  pairwise Pearson correlation.
- ``human_model_accuracy.csv`` (with ``--model-accuracy-out``): :mod:`pathologies.ddd.human_analysis`.

Experiment 2's tables hold two readings of the same answers, column ``label_errors``: ``kept`` (Figures 25,
27) and ``removed`` (Figures 6, 26, 28): :func:`pathologies.ddd.human_analysis.readings`. With
``--experiment`` (the experiment description) they use its ``human`` options (drop_trials, balance,
balance_seed, exclude_observers) and its ``exclude_ids`` (the label errors); without it both readings hold
every item.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_csv, read_experiment
from .agreement import krippendorff_alpha, pairwise_alpha
from .consistency import pair_stats
from .human_analysis import drop_observers, model_accuracy_table, readings

Q1_MAX = 1_000_000  # q1 counts object categories in one image; more is a typing slip
SCALES = {"q2": ("no", "maybe", "yes"), "q3": ("no", "slightly", "very")}


def _read(path: str, columns: tuple[str, ...], trials: pd.Series) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"answer file {path} does not exist; place it there or fix ddd.<experiment>.human") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"answer file {path} is not a readable CSV file ({err})") from None
    missing = [c for c in ("trial", *columns) if c not in table.columns]
    if missing:
        raise UserError(f"answer file {path} lacks columns {missing}; start from the template next to the page")
    try:
        table["trial"] = table["trial"].astype(int)
    except ValueError:
        raise UserError(f"answer file {path}: column trial must hold the trial numbers of the page") from None
    unknown = sorted(set(table["trial"]) - set(trials))
    if unknown or table["trial"].duplicated().any():
        raise UserError(f"answer file {path}: trials {unknown[:3] or 'repeated'} "
                        f"do not match the page's 1..{len(trials)}")
    return table.set_index("trial").reindex(trials)[list(columns)].fillna("")


def pair_scores(pairs: pd.DataFrame, answers: dict[str, str]) -> pd.DataFrame:
    """Per observer: answered trials, accuracy and mean kappa with the other observers."""
    names, correct, answered = [], [], []
    for name, path in answers.items():
        table = _read(path, ("answer",), pairs["trial"])
        given = table["answer"].str.strip().str.upper()
        bad = sorted(set(given) - {"L", "R", ""})
        if bad:
            raise UserError(f"answer file {path}: answers must be L or R (found {bad[:3]})")
        names.append(name)
        answered.append((given != "").to_numpy())
        correct.append((given == pairs["easier"].to_numpy()).to_numpy())
    correct, answered = np.array(correct), np.array(answered)
    n_correct, n_answered = correct.sum(axis=1), answered.sum(axis=1)
    kappa = pair_stats(correct).kappa if len(names) > 1 else np.full((1, 1), np.nan)
    off_diagonal = np.where(np.eye(len(names), dtype=bool), np.nan, kappa)
    with np.errstate(invalid="ignore"):
        mean_kappa = np.nanmean(off_diagonal, axis=1) if len(names) > 1 else [np.nan]
    table = pd.DataFrame({"observer": names, "n_trials": len(pairs), "n_answered": n_answered,
                          "n_correct": n_correct, "accuracy": n_correct / np.maximum(n_answered, 1),
                          "p_value": [chance_p_value(k, n) for k, n in zip(n_correct, n_answered, strict=True)],
                          "mean_kappa": mean_kappa})
    total = {"observer": "all", "n_trials": len(pairs) * len(names), "n_answered": int(n_answered.sum()),
             "n_correct": int(n_correct.sum()), "accuracy": n_correct.sum() / max(n_answered.sum(), 1),
             "p_value": chance_p_value(int(n_correct.sum()), int(n_answered.sum())),
             "mean_kappa": float(np.nanmean(mean_kappa))}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def chance_p_value(n_correct: int, n_answered: int) -> float:
    """One-sided exact binomial test of ``n_correct`` right of ``n_answered`` against guessing (p = 1/2)."""
    if n_answered == 0:
        return float("nan")
    return float(stats.binomtest(int(n_correct), int(n_answered), 0.5, alternative="greater").pvalue)


def question_answers(questions: pd.DataFrame, answers: dict[str, str]) -> pd.DataFrame:
    """Long table: observer, trial, question, answer (q1 as an integer string, q2 / q3 as words)."""
    rows = []
    for name, path in answers.items():
        table = _read(path, ("q1", "q2", "q3"), questions["trial"])
        for question in ("q1", "q2", "q3"):
            given = table[question].str.strip().str.lower()
            allowed = SCALES.get(question)
            if allowed is None:  # ASCII digits only: str.isdigit also takes '²', which int() refuses
                bad = [(t, v) for t, v in given.items()
                       if v and not (re.fullmatch(r"[0-9]+", v) and int(v) <= Q1_MAX)]
            else:
                bad = [(t, v) for t, v in given.items() if v and v not in allowed]
            if bad:
                trial, value = bad[0]
                expected = f"a count (0, 1, 2, ... {Q1_MAX})" if allowed is None else " / ".join(allowed)
                raise UserError(f"answer file {path}: trial {trial}: {question} must be {expected}, found {value!r}")
            rows.append(pd.DataFrame({"observer": name, "trial": table.index, "question": question, "answer": given}))
    long = pd.concat(rows, ignore_index=True)
    return long[long["answer"] != ""]


def question_table(questions: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Counts and shares of answers per observer (and pooled) x question x answer x category."""
    data = long.merge(questions[["trial", "category", "fraction_correct"]], on="trial")
    data = pd.concat([data, data.assign(observer="all")], ignore_index=True)
    keys = ["observer", "question", "answer", "category"]
    table = data.groupby(keys, sort=False).agg(n=("trial", "size"), mean_accuracy=("fraction_correct", "mean"))
    table = table.reset_index()
    table["share_of_answer"] = table["n"] / table.groupby(["observer", "question", "answer"])["n"].transform("sum")
    table["share_of_question"] = table["n"] / table.groupby(["observer", "question"])["n"].transform("sum")
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def agreement_table(long: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's alpha (all observers, each pair) per question; pairwise correlation of q1."""
    rows = []
    for question, metric in (("q1", "interval"), ("q2", "ordinal"), ("q3", "ordinal")):
        part = long[long["question"] == question]
        if part.empty:
            continue
        codes = part["answer"].astype(int) if question == "q1" else part["answer"].map(
            {word: i for i, word in enumerate(SCALES[question])})
        wide = part.assign(value=codes.astype(float)).pivot(index="observer", columns="trial", values="value")
        ratings = wide.to_numpy()
        rows.append({"question": question, "statistic": f"krippendorff_alpha_{metric}", "scope": "all observers",
                     "value": krippendorff_alpha(ratings, metric), "n_observers": len(wide)})
        if len(wide) > 1:
            pairs = pairwise_alpha(ratings, metric)
            for scope, value in (("pairs: mean", np.nanmean(pairs)), ("pairs: min", np.nanmin(pairs)),
                                 ("pairs: max", np.nanmax(pairs))):
                rows.append({"question": question, "statistic": f"krippendorff_alpha_{metric}", "scope": scope,
                             "value": value, "n_observers": len(wide)})
        if question == "q1" and len(wide) > 1:
            correlations = [pd.Series(ratings[a]).corr(pd.Series(ratings[b]))
                            for a, b in itertools.combinations(range(len(wide)), 2)]
            for scope, value in (("pairs: mean", np.nanmean(correlations)), ("pairs: min", np.nanmin(correlations)),
                                 ("pairs: max", np.nanmax(correlations))):
                rows.append({"question": "q1", "statistic": "pearson_correlation", "scope": scope, "value": value,
                             "n_observers": len(wide)})
    return pd.DataFrame(rows, columns=["question", "statistic", "scope", "value", "n_observers"])


def reading_tables(questions: pd.DataFrame, long: pd.DataFrame, drop_trials=(), excluded_ids=(),
                   balance: bool = False, seed: int = 1312) -> dict[str, pd.DataFrame]:
    """Experiment 2's tables (``questions``, ``agreement``, ``model_accuracy``) of both readings of one set of
    answers, one above the other, the reading in a first column ``label_errors`` (``kept`` / ``removed``)."""
    parts: dict[str, list[pd.DataFrame]] = {"questions": [], "agreement": [], "model_accuracy": []}
    for reading, items in readings(questions, drop_trials, excluded_ids, balance, seed).items():
        answered = long[long["trial"].isin(items["trial"])]
        for name, table in (("questions", question_table(items, answered)), ("agreement", agreement_table(answered)),
                            ("model_accuracy", model_accuracy_table(items, answered, SCALES))):
            table.insert(0, "label_errors", reading)
            parts[name].append(table)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def _observers(paths: list[str]) -> dict[str, str]:
    names = {Path(p).stem: p for p in paths}
    if len(names) != len(paths):
        raise UserError("answer files must have distinct names: the file name (without .csv) names the observer")
    return names


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--pair-answers", nargs="*", default=[])
    parser.add_argument("--question-answers", nargs="*", default=[])
    parser.add_argument("--experiment", help="experiment.json: the human options and exclude_ids of the analysis")
    for name in ("pairs", "questions", "agreement"):
        parser.add_argument(f"--{name}-out", required=True)
    parser.add_argument("--model-accuracy-out")
    args = parser.parse_args(argv)
    pairs, questions = read_csv(args.pairs, "pairs table"), read_csv(args.questions, "questions table")
    pair_table = (pair_scores(pairs, _observers(args.pair_answers)) if args.pair_answers
                  else pd.DataFrame(columns=["observer", "n_trials", "n_answered", "n_correct", "accuracy", "p_value",
                                             "mean_kappa"]))
    long = (question_answers(questions, _observers(args.question_answers)) if args.question_answers
            else pd.DataFrame(columns=["observer", "trial", "question", "answer"]))
    drop, excluded, balance, seed = [], [], False, 1312
    if args.experiment:
        from .exclusion import excluded_ids
        from .experiment import KEYS

        spec = read_experiment(args.experiment, KEYS)
        human = spec.get("human") or {}
        drop, excluded = human.get("drop_trials", []), excluded_ids(spec)
        balance, seed = human.get("balance", False), human.get("balance_seed", 1312)
        long = drop_observers(long, human.get("exclude_observers", {}))
    tables = {args.pairs_out: pair_table}
    for name, table in reading_tables(questions, long, drop, excluded, balance, seed).items():
        path = getattr(args, f"{name}_out")
        if path:
            tables[path] = table
    for path, table in tables.items():
        with atomic_output(path) as tmp:
            table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
