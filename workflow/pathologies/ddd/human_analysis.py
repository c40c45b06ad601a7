"""Meding et al.'s analysis of human experiment 2 (Figure 6, A.10-A.11), as the authors' notebook does it.

- Two readings of one set of answers (:func:`readings`), as the authors' notebooks: ``kept`` (label errors
  kept: Figures 25, 27) drops only ``drop_trials`` (1-based trial numbers; the authors always drop 44, 222
  and 254); ``removed`` (Figures 6, 26, 28 and the numbers of section 4) also drops the items whose image is
  in the experiment's ``exclude_ids`` (label errors) and then, with ``balance``, balances the categories.
  Label errors leave the analysis, not the stimuli.
- Balancing (``balance``, reading ``removed`` only, as the notebooks' ``filter_errors`` branch): the other
  categories are drawn down to the smallest one's count with NumPy's legacy generator,
  ``np.random.seed(balance_seed)`` then ``np.random.choice(items, surplus, replace=False)`` for in-between
  first, then trivial (then impossible, should another category be the smallest): with seed 1312 the
  authors' draw, which leaves 57 items per category on their data.
- ``exclude_observers``: per question, observers left out of every statistic of that question (the paper
  drops observer 2 for Q2).
- Model accuracy: the Pearson r between an item's mean Q1 over observers and its mean model accuracy
  (``fraction_correct``; paper: -0.37), and the mean model accuracy of the items behind each Q2 / Q3 answer,
  pooled over observers (paper: 0.64 / 0.44 / 0.37 and 0.61 / 0.55 / 0.34).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

CATEGORY_ORDER = ("in_between", "trivial", "impossible")  # the order in which surplus items are drawn


def analysis_items(questions: pd.DataFrame, drop_trials: Iterable[int] = (), excluded_ids: Iterable[int] = (),
                   balance: bool = False, seed: int = 1312) -> pd.DataFrame:
    """The rows of ``questions`` (trial, image_id, category, fraction_correct) that enter the analysis, in
    trial order."""
    kept = questions.sort_values("trial", kind="stable")
    kept = kept[~kept["trial"].isin(list(drop_trials))]
    excluded_ids = list(excluded_ids)
    if excluded_ids:  # without label errors a questions table needs no image_id column
        kept = kept[~kept["image_id"].isin(excluded_ids)]
    if not balance:
        return kept.reset_index(drop=True)
    counts = kept["category"].value_counts()
    target = min(int(counts.get(category, 0)) for category in CATEGORY_ORDER)
    smallest = next(category for category in reversed(CATEGORY_ORDER) if counts.get(category, 0) == target)
    rng = np.random.RandomState(seed)
    removed = []
    for category in CATEGORY_ORDER:
        if category == smallest:
            continue
        trials = kept.loc[kept["category"] == category, "trial"].to_numpy()
        removed.extend(rng.choice(trials, len(trials) - target, replace=False).tolist())
    return kept[~kept["trial"].isin(removed)].reset_index(drop=True)


def readings(questions: pd.DataFrame, drop_trials: Iterable[int] = (), excluded_ids: Iterable[int] = (),
             balance: bool = False, seed: int = 1312) -> dict[str, pd.DataFrame]:
    """The items of each reading (``kept``, ``removed``): :func:`analysis_items` without and with the label
    errors ``excluded_ids``, balanced (``balance``) only after their removal."""
    return {"kept": analysis_items(questions, drop_trials),
            "removed": analysis_items(questions, drop_trials, excluded_ids, balance, seed)}


def drop_observers(long: pd.DataFrame, exclude: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """The long answer table (observer, trial, question, answer) without the excluded observers of each question."""
    keep = np.ones(len(long), dtype=bool)
    for question, observers in exclude.items():
        keep &= ~((long["question"] == question) & long["observer"].isin(list(observers)))
    return long[keep]


def model_accuracy_table(items: pd.DataFrame, long: pd.DataFrame,
                         scales: Mapping[str, tuple[str, ...]]) -> pd.DataFrame:
    """Pearson r of mean Q1 per item vs model accuracy, and mean model accuracy per Q2 / Q3 answer."""
    data = long.merge(items[["trial", "fraction_correct"]], on="trial")
    rows = []
    q1 = data[data["question"] == "q1"]
    if not q1.empty:
        per_item = q1.assign(value=q1["answer"].astype(float)).groupby("trial").agg(
            q1=("value", "mean"), accuracy=("fraction_correct", "first"))
        r = stats.pearsonr(per_item["q1"], per_item["accuracy"]).statistic if len(per_item) > 2 else np.nan
        rows.append({"question": "q1", "statistic": "pearson_r_mean_answer_vs_model_accuracy", "answer": "",
                     "value": r, "n": len(per_item)})
    for question, answers in scales.items():
        part = data[data["question"] == question]
        for answer in answers:
            chosen = part.loc[part["answer"] == answer, "fraction_correct"]
            rows.append({"question": question, "statistic": "mean_model_accuracy", "answer": answer,
                         "value": chosen.mean() if len(chosen) else np.nan, "n": len(chosen)})
    return pd.DataFrame(rows, columns=["question", "statistic", "answer", "value", "n"])
