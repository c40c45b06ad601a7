"""Difficulty tables of one DDD experiment: per image, fractions, histograms, A.9 models, classes, epochs.

    python -m pathologies.ddd.difficulty --experiment experiment.json --dataset results/data/X.h5 \\
        --members-out members.csv --difficulty-out difficulty.csv \\
        --difficulty-excluded-out difficulty_excluded.csv --fractions-out fractions.csv \\
        --histogram-out histogram.csv --profiles-out difficulty_profiles.csv \\
        --histograms-out difficulty_histograms.csv --class-accuracy-out class_accuracy.csv \\
        --changes-out decision_changes.csv

Everything is at the comparison epoch E except ``decision_changes.csv`` (every epoch of every run).
Images of ``exclude_ids`` are left out of every table; ``histogram.csv`` counts them separately
(``excluded_images``, ``excluded``: their share per k) for the overlay of Figure 2, and
``difficulty_excluded.csv`` holds their rows of ``difficulty.csv`` (same columns, categories by the same
difficulty set) for the stimuli of human experiment 2, which draw from every image (Meding et al., A.10).
"Models correct" counts the difficulty set: the last member of each condition (or every member
with ``models_per_condition: all``); ``members.csv`` flags it. Published per-image results
(``per_image_results``) count the models right per image from the published array: one member
``published`` (their mean accuracy), no per-model columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

from ..cliargs import CommandParser
from ..data.layout import dataset_info
from ..errors import cli
from ..io import atomic_output, read_experiment
from ..training.predictions import Correctness, check_targets, read_dump
from .exclusion import excluded_ids, split_excluded
from .experiment import KEYS, PER_IMAGE, check_exceptions, difficulty_rows, in_between_mask, load_final
from .measures import (
    class_accuracy,
    classify_images,
    correct_histogram,
    decision_changes,
    difficulty_fractions,
    difficulty_grid,
    difficulty_models,
)

SIGMOID_WIDTH = 0.1  # A.9 sigmoid step width; narrowed when the mean accuracy needs a steeper step


def members_table(final: Correctness, members: list[dict], rows: list[int]) -> pd.DataFrame:
    """One row per member: who it is, where its decisions come from, accuracy at E, difficulty set."""
    table = pd.DataFrame([{key: member[key] for key in ("label", "condition", "model", "seed", "epoch",
                                                        "compare", "arch", "source")} for member in members])
    table["accuracy"] = final.correct[:, 0].mean(axis=1)
    table["in_difficulty_set"] = np.isin(np.arange(len(members)), rows)
    return table


def difficulty_table(final: Correctness, rows: list[int], spec: dict, class_names: list[str]) -> pd.DataFrame:
    """Per image: id, target, models correct (of the difficulty set), categories, and each model's decision.

    Columns ``correct.<label>`` (0/1) hold the decisions of the difficulty set at epoch E.
    """
    correct = final.correct[rows, 0]
    n_models = len(rows)
    n_correct = correct.sum(axis=0)
    table = pd.DataFrame({
        "image_id": final.ids,
        "target": final.targets,
        "class_name": np.asarray(class_names, dtype=object)[final.targets],
        "n_correct": n_correct,
        "n_models": n_models,
        "fraction_correct": n_correct / n_models,
        "strict": classify_images(n_correct, n_models, 0),
        "loose": classify_images(n_correct, n_models, spec["loose_max_exceptions"]),
        "in_between": in_between_mask(correct, spec),
    })
    decisions = pd.DataFrame(correct.T.astype(np.int8), columns=[f"correct.{final.models[i]}" for i in rows])
    return pd.concat([table, decisions], axis=1)


def sigmoid_width(mean_accuracy: float, n_bins: int = 100, width: float = SIGMOID_WIDTH) -> float:
    """``width``, halved until a sigmoid difficulty profile of that width can reach ``mean_accuracy``."""
    p = difficulty_grid(n_bins)
    target = max(mean_accuracy, 1 - mean_accuracy)
    while target >= p @ special.softmax(p / width):
        width /= 2
    return width


def difficulty_model_tables(n_correct: np.ndarray, n_models: int, seed: int,
                            n_bins: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A.9 (profiles, histograms) as :func:`pathologies.ddd.measures.difficulty_models` returns them.

    The profiles table gets a ``sigmoid_width`` column. When the mean accuracy lies outside the
    bin centres (almost every image right, or wrong) no profile can match it: then only the
    observed and uniform (binomial) histograms are returned.
    """
    n_correct = np.asarray(n_correct)
    mean_accuracy = float(n_correct.mean() / n_models)
    grid = difficulty_grid(n_bins)
    if grid[0] < mean_accuracy < grid[-1]:
        width = sigmoid_width(mean_accuracy, n_bins)
        profiles, histograms = difficulty_models(n_correct, n_models, seed=seed, n_bins=n_bins, sigmoid_width=width)
        return profiles.assign(sigmoid_width=width), histograms
    k = np.arange(n_models + 1)
    histograms = pd.concat([
        pd.DataFrame({"model": "observed", "statistic": "observed", "k": k,
                      "fraction": np.bincount(n_correct, minlength=n_models + 1) / n_correct.size}),
        pd.DataFrame({"model": "uniform", "statistic": "expected", "k": k,
                      "fraction": stats.binom.pmf(k, n_models, mean_accuracy)}),
    ], ignore_index=True)
    return pd.DataFrame(columns=["model", "p", "weight", "sigmoid_width"]), histograms


def changes_table(spec: dict) -> pd.DataFrame:
    """Decisions that change between consecutive epochs, for every trained run (Figure 17).

    The base run is listed once (as ``base``, over all of its epochs); ``plus<k>ep`` members are
    later epochs of it and add nothing.
    """
    frames = [pd.DataFrame(columns=["model", "condition", "epoch", "next_epoch", "changed", "fraction"])]
    seen = set()
    excluded = excluded_ids(spec)
    for member in spec["members"]:
        run = (member["model"], member["seed"])
        if run in seen:
            continue
        seen.add(run)
        dump = split_excluded(read_dump(member["predictions"], spec["split"], "all", with_predictions=True),
                              spec, excluded)[0]
        table = decision_changes(dump.predictions, [member["label"]], dump.epochs)
        table.insert(1, "condition", member["condition"])
        frames.append(table)
    return pd.concat(frames[1:] or frames, ignore_index=True).rename(columns={"model": "member"})


def build_tables(spec: dict, dataset: str) -> dict[str, pd.DataFrame]:
    """Every table of this module by output name (members, difficulty, fractions, ...)."""
    everything, members = load_final(spec, keep_excluded=True)
    final, excluded = split_excluded(everything, spec)
    rows = difficulty_rows(members, spec["models_per_condition"])
    check_exceptions(spec, len(rows))
    class_names = dataset_info(dataset).class_names
    check_targets(final, len(class_names), dataset)
    n_correct = final.correct[rows, 0].sum(axis=0)
    n_models = len(rows)
    fractions = difficulty_fractions(n_correct, n_models, {"strict": 0, "loose": spec["loose_max_exceptions"]})
    histogram = correct_histogram(n_correct, n_models).assign(n_images=len(n_correct), n_models=n_models)
    # The excluded images (e.g. label errors) as the paper's red overlay of Figures 2 / 22.
    excluded_counts = np.bincount(excluded.correct[rows, 0].sum(axis=0), minlength=n_models + 1)
    histogram["excluded_images"] = excluded_counts
    histogram["excluded"] = excluded_counts / max(1, excluded_counts.sum())
    histogram = histogram.join(all_images_columns(n_correct, excluded_counts, n_models))
    profiles, histograms = difficulty_model_tables(n_correct, n_models, spec["analysis_seed"])
    classes = class_accuracy(final.correct[:, 0], final.targets, final.models)
    classes.insert(1, "condition", classes["model"].map({m["label"]: m["condition"] for m in members}))
    classes.insert(3, "class_name", np.asarray(class_names, dtype=object)[classes["class"].to_numpy()])
    tables = {
        "members": members_table(final, members, rows),
        "difficulty": difficulty_table(final, rows, spec, class_names),
        "difficulty_excluded": difficulty_table(excluded, rows, spec, class_names),
        "fractions": fractions.assign(n_models=n_models),
        "histogram": histogram,
        "profiles": profiles,
        "histograms": histograms,
        "class_accuracy": classes.rename(columns={"model": "member"}),
        "changes": changes_table(spec),
    }
    return per_image_tables(tables, spec) if spec.get("per_image_results") else tables


def all_images_columns(n_correct: np.ndarray, excluded_counts: np.ndarray, n_models: int) -> pd.DataFrame:
    """Figure 2a as the paper draws it: every image (kept and excluded) as a share of all images (``all``,
    its binomial ``binomial_all``), and the excluded ones as a share of all images too (``excluded_of_all``)."""
    counts = np.bincount(n_correct, minlength=n_models + 1) + excluded_counts
    total = max(1, int(counts.sum()))
    mean_accuracy = (counts * np.arange(n_models + 1)).sum() / total / n_models
    return pd.DataFrame({"all_images": counts, "all": counts / total,
                         "binomial_all": stats.binom.pmf(np.arange(n_models + 1), n_models, mean_accuracy),
                         "excluded_of_all": excluded_counts / total})


def per_image_tables(tables: dict[str, pd.DataFrame], spec: dict) -> dict[str, pd.DataFrame]:
    """Tables of published per-image results: their stand-in models (:func:`experiment._per_image`) mean
    nothing one by one, so members.csv and class_accuracy.csv hold their mean as one member ``published``
    and difficulty.csv (and difficulty_excluded.csv) has no ``correct.<label>`` columns."""
    members = tables["members"]
    row = {**members.iloc[0].to_dict(), "label": PER_IMAGE, "condition": PER_IMAGE,
           "accuracy": members["accuracy"].mean(), "in_difficulty_set": True}
    classes = tables["class_accuracy"]
    mean = classes.groupby(["class", "class_name", "n_images"], sort=True, as_index=False)["accuracy"].mean()
    mean.insert(0, "member", PER_IMAGE)
    mean.insert(1, "condition", PER_IMAGE)
    per_image = {name: tables[name].drop(columns=[c for c in tables[name].columns if c.startswith("correct.")])
                 for name in ("difficulty", "difficulty_excluded")}
    return {**tables, "members": pd.DataFrame([row], columns=members.columns),
            "class_accuracy": mean[classes.columns], **per_image}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--dataset", required=True, help="the prepared dataset (class names)")
    outputs = ("members", "difficulty", "difficulty_excluded", "fractions", "histogram", "profiles", "histograms",
               "class_accuracy", "changes")
    for name in outputs:
        parser.add_argument(f"--{name.replace('_', '-')}-out", required=True)
    args = parser.parse_args(argv)
    tables = build_tables(read_experiment(args.experiment, KEYS), args.dataset)
    for name in outputs:
        with atomic_output(getattr(args, f"{name}_out")) as tmp:
            tables[name].to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
