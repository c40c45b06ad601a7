"""Tables of an overinterpretation experiment (Table 1, S1-S5, S7, ensembles) as tidy CSV + Markdown.

Usage (what the ``overinterp_tables`` rule runs)::

    python -m pathologies.overinterp.tables --experiment results/overinterp/<exp>/experiment.json \
        --sis-summary results/overinterp/<exp>/sis_sizes/summary.csv --out-dir results/overinterp/<exp>/tables

Every number is recomputed from the stored evaluation files (argmax of the stored logits against
the stored labels) and calibration files. Accuracies are percentages; "mean ± std" is over the
runs of a row (seeds, and random draws), std with ddof=1. A run's accuracy on a dataset with
several splits (CIFAR-10-C) is the mean over its splits. Files written to ``--out-dir``:

- ``accuracy_by_split.csv``: one row per evaluation file and split (n, correct, accuracy, and agreement
  with the source run's prediction on the same images, full: agree_source, n_source_wrong,
  agree_source_wrong = agreement on the images the source got wrong, NaN when there are none).
- ``accuracy.csv``: role, condition, arch, source_arch, train_on, train_fraction, augment, test_set,
  eval_on, eval_fraction, topk, n_runs, accuracy_mean, accuracy_std, agree_source_mean,
  agree_source_wrong_mean. ``topk``: the label among the k largest logits (the experiment's ``topk``,
  default [1]; ImageNet: [1, 5]); one row per k.
  ``test_set`` is the dataset the images come from (a pixel subset: the dataset it is cut from);
  ``train_on``/``eval_on`` ``mask``: the mask-only control (the BS keep-mask without pixel values).
  ``split_set``: ``all`` (a run's accuracy on a multi-split test set is the mean over its splits) or
  ``mixed`` (CIFAR-10-C's seeded sample across all corruptions and severities, split ``mixed``: the images
  its pixel subsets are cut from, so full-image and subset rows of that set are on the same images).
- ``leakage.csv``: every BS-subset retraining row beside its mask-only control and random subsets, with
  agreement with the source (:mod:`pathologies.overinterp.leakage`).
- ``ensembles.csv``: ensemble, test_set, split_set, eval_on, eval_fraction, topk, n_members, n_runs, ensemble
  accuracy (logits averaged over the members, as pathologies.sis.engine.Scorer; top-k: the label among the k
  largest mean logits) and the members' mean ± std at the same k. One row per k of the experiment's ``topk``.
- ``calibration.csv``: model, seed, temperature, ECE before/after (%), NLL on the fitting half
  before/after, and SIS size (% of image) at the experiment threshold before/after calibration.
- ``sis_summary.csv``: SIS size at the experiment threshold of every SIS file (input dropout,
  ensembles, calibrated models, shifted test sets).
- ``tables.md``: the tables above rendered for reading (Table 1 layout: one column per test set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..data.prepare import MIXED_SPLIT
from ..errors import UserError, cli
from ..io import atomic_output, read_csv, read_experiment
from .evaluate import evaluation_splits, read_evaluation
from .leakage import leakage_table

# Keys of the expanded experiment (OverinterpExperiment.as_dict) the tables read.
KEYS = ("name", "dataset", "source_model", "source_seed", "evaluations", "options")
ROW_KEYS = ["role", "condition", "arch", "train_on", "train_fraction", "augment", "test_set", "split_set",
            "eval_on", "eval_fraction", "topk"]


def split_set(split: str) -> str:
    """The image set a split's rows stand for: ``mixed`` (CIFAR-10-C's sample across all corruptions and
    severities, on which its pixel subsets are cut) or ``all`` (every other split, averaged per run)."""
    return MIXED_SPLIT if split == MIXED_SPLIT else "all"


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether the label is among the ``k`` largest logits (ties: the lower class first, as argmax)."""
    if k == 1:
        return logits.argmax(axis=1) == labels
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def _source_predictions(spec: dict):
    """{(test set, split): {image id: the source run's prediction on the full image}}, read on demand."""
    paths = {e["eval_dataset"]: e["path"] for e in spec["evaluations"]
             if (e["model"], e["seed"], e["role"], e["eval_on"]) == (spec["source_model"], spec["source_seed"],
                                                                     "pretrained", "full")}
    cache: dict = {}

    def lookup(test_set: str, split: str) -> dict | None:
        if (test_set, split) not in cache:
            path = paths.get(test_set)
            if path is None:
                cache[(test_set, split)] = None
            else:
                source = read_evaluation(path, test_set, split)
                cache[(test_set, split)] = dict(zip(source.ids.tolist(), source.pred.tolist(), strict=True))
        return cache[(test_set, split)]
    return lookup


def agreement(pred: np.ndarray, labels: np.ndarray, ids: np.ndarray, source: dict | None) -> dict:
    """Agreement (%) of ``pred`` with the source's predictions ``source`` {id: class}, on all images and on
    those the source got wrong (NaN where undefined)."""
    if source is None or not len(ids):
        return {"agree_source": np.nan, "n_source_wrong": 0, "agree_source_wrong": np.nan}
    try:
        src = np.array([source[i] for i in ids.tolist()])
    except KeyError as err:
        raise UserError(f"image id {err.args[0]} is evaluated but the source run's evaluation on the full test set "
                        "lacks it; rebuild the evaluations from the same dataset files") from None
    same, wrong = pred == src, src != labels
    return {"agree_source": 100.0 * float(same.mean()), "n_source_wrong": int(wrong.sum()),
            "agree_source_wrong": 100.0 * float(same[wrong].mean()) if wrong.any() else np.nan}


def accuracy_by_split(spec: dict) -> pd.DataFrame:
    """One row per (evaluation, split): the accuracy recomputed from the stored logits, and the agreement
    with the source run's prediction on the same images (full)."""
    rows = []
    source = _source_predictions(spec)
    for entry in spec["evaluations"]:
        path, dataset = entry["path"], entry["eval_dataset"]
        for split in evaluation_splits(path, dataset):
            result = read_evaluation(path, dataset, split)
            agree = agreement(result.pred, result.labels, result.ids, source(entry["test_set"], split))
            for k in spec.get("options", {}).get("topk", [1]):
                correct = int(np.sum(topk_correct(result.logits, result.labels, k)))
                rows.append({**{key: v for key, v in entry.items() if key != "path"},
                             "source_arch": spec["source_arch"], "eval_split": split,
                             "split_set": split_set(split), "topk": k,
                             "n": len(result.labels), "correct": correct,
                             "accuracy": 100.0 * correct / len(result.labels), **agree, "path": path})
    return pd.DataFrame(rows)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def accuracy_table(by_split: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over runs; a run's accuracy on a multi-split test set is the mean over splits."""
    keys = [*ROW_KEYS, "source_arch"]
    measures = ["accuracy", "agree_source", "agree_source_wrong"]
    per_run = (by_split.fillna({"train_fraction": -1, "eval_fraction": -1})
               .groupby([*keys, "model", "seed", "draw"], sort=False, dropna=False)[measures].mean().reset_index())
    rows = []
    for values, group in per_run.groupby(keys, sort=False, dropna=False):
        mean, std = _mean_std(group["accuracy"])
        rows.append({**dict(zip(keys, values, strict=True)), "n_runs": len(group),
                     "accuracy_mean": mean, "accuracy_std": std,
                     "agree_source_mean": float(group["agree_source"].mean()),
                     "agree_source_wrong_mean": float(group["agree_source_wrong"].mean())})
    table = pd.DataFrame(rows)
    return table.replace({"train_fraction": {-1: np.nan}, "eval_fraction": {-1: np.nan}})


def ensemble_table(spec: dict, by_split: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each ensemble (mean member logits) and of its members, per test set, subset and top-k."""
    rows = []
    pretrained = by_split[by_split["role"] == "pretrained"]
    for name, entry in spec["ensembles"].items():
        members = [tuple(m) for m in entry["members"]]
        mine = pretrained[[(m, s) in members for m, s in zip(pretrained["model"], pretrained["seed"], strict=True)]]
        for (test_set, sset, eval_on, fraction, k), group in mine.groupby(
                ["test_set", "split_set", "eval_on", "eval_fraction", "topk"], sort=False, dropna=False):
            runs, member_acc = [], []
            for _draw, by_draw in group.groupby("draw", sort=False):
                split_acc = []
                for (dataset, split), cell in by_draw.groupby(["eval_dataset", "eval_split"], sort=False):
                    if set(zip(cell["model"], cell["seed"], strict=True)) != set(members):
                        break
                    split_acc.append(_ensemble_accuracy(cell["path"].tolist(), dataset, split, k))
                else:
                    runs.append(float(np.mean(split_acc)))
                    member_acc += by_draw.groupby(["model", "seed"])["accuracy"].mean().tolist()
            if not runs:
                continue
            mean, std = _mean_std(runs)
            member_mean, member_std = _mean_std(member_acc)
            rows.append({"ensemble": name, "test_set": test_set, "split_set": sset, "eval_on": eval_on,
                         "eval_fraction": fraction, "topk": k,
                         "n_members": len(members), "n_runs": len(runs), "accuracy_mean": mean,
                         "accuracy_std": std, "members_mean": member_mean, "members_std": member_std})
    return pd.DataFrame(rows)


def _ensemble_accuracy(paths: Sequence[str], dataset: str, split: str, k: int = 1) -> float:
    """Top-``k`` accuracy (%) of the members' mean logits (the ranking the ensemble's top-1 uses)."""
    results = [read_evaluation(path, dataset, split) for path in paths]
    for other in results[1:]:
        if not np.array_equal(other.ids, results[0].ids):
            raise UserError(f"evaluation files {paths[0]} and {paths[1]} list different images of "
                            f"{dataset}/{split}; rebuild them from the same dataset file")
    logits = np.mean([r.logits.astype(np.float64) for r in results], axis=0)
    return 100.0 * float(np.mean(topk_correct(logits, results[0].labels, k)))


def calibration_table(spec: dict, sis_summary: pd.DataFrame) -> pd.DataFrame:
    """Table S5: temperature, ECE before/after (held-out half), SIS size before/after calibration.

    ``sis_summary``: the SIS summaries at the experiment's threshold (:func:`sis_summary_table`).
    """
    rows = []
    for entry in spec["calibrations"]:
        path = Path(entry["path"])
        if not path.exists():
            raise UserError(f"calibration file {path} does not exist; build it with `snakemake {path}`")
        cal = json.loads(path.read_text())
        row = {"model": entry["model"], "seed": entry["seed"], "temperature": cal["temperature"],
               "ece_before_pct": 100 * cal["ece_before"], "ece_after_pct": 100 * cal["ece_after"],
               "nll_fit_before": cal["nll_fit_before"], "nll_fit_after": cal["nll_fit_after"],
               "n_fit": cal["n_fit"], "n_held": cal["n_held"]}
        for variant in ("original", "calibrated"):
            match = sis_summary[(sis_summary["model"] == entry["model"]) & (sis_summary["seed"] == entry["seed"])
                                & (sis_summary["variant"] == variant) & (sis_summary["dataset"] == spec["dataset"])
                                & (sis_summary["split"] == "test")]
            first = match.iloc[0] if len(match) else None
            row[f"sis_{variant}_n"] = int(first["n_sis"]) if first is not None else np.nan
            row[f"sis_{variant}_mean_pct"] = first["mean_size_pct"] if first is not None else np.nan
            row[f"sis_{variant}_std_pct"] = first["std_size_pct"] if first is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def sis_summary_table(spec: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """SIS size of every SIS file at the experiment's threshold."""
    if summary.empty:
        return summary
    chosen = summary[np.isclose(summary["threshold"], spec["threshold"])]
    return chosen.reset_index(drop=True)


# ------------------------------------------------------------------------------------- Markdown


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (index dropped; NaN as an empty cell)."""
    if frame.empty:
        return "_(no rows)_\n"
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def mean_std_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


SUBSET_NAMES = {"bs": "BS subsets", "random": "Random", "mask": "BS masks only"}
AUGMENT_MODES = {"aligned": "image and mask cropped and flipped together every epoch",
                 "reference": "train images cropped and flipped once, before masking with the un-augmented "
                              "image's mask, as the authors' code"}


def _subset_label(on: str, fraction: float, augment: bool | None = None) -> str:
    text = "Full images" if on == "full" else f"{fraction * 100:g}% {SUBSET_NAMES[on]}"
    return text + (" (+)" if augment else "")


def table1(accuracy: pd.DataFrame, role: str, eval_on_full: bool | None = None) -> pd.DataFrame:
    """Table-1 layout: one row per (model, train on, evaluate on[, top-k]), one column per test set."""
    rows = accuracy[accuracy["role"] == role]
    several_k = rows["topk"].nunique() > 1 if "topk" in rows else False
    if eval_on_full is not None:
        rows = rows[(rows["eval_on"] == "full") == eval_on_full]
    if rows.empty:
        return pd.DataFrame()
    frame = rows.assign(
        model=[c if role == "pretrained" else a for c, a in zip(rows["condition"], rows["arch"], strict=True)],
        train=[_subset_label(t, f, g)
               for t, f, g in zip(rows["train_on"], rows["train_fraction"], rows["augment"], strict=True)],
        evaluate=[_subset_label(e, f) for e, f in zip(rows["eval_on"], rows["eval_fraction"], strict=True)],
        value=[mean_std_text(m, s) for m, s in zip(rows["accuracy_mean"], rows["accuracy_std"], strict=True)],
        test_set=[t if s != MIXED_SPLIT else f"{t} (mixed sample)" for t, s in
                  zip(rows["test_set"], rows.get("split_set", pd.Series("all", index=rows.index)), strict=True)])
    index = ["model", "train", "evaluate"] + (["topk"] if several_k else [])
    table = frame.pivot_table(index=index, columns="test_set", values="value",
                              aggfunc="first", sort=False).reset_index()
    table.columns.name = None
    return table.rename(columns={"model": "Model", "train": "Train on", "evaluate": "Evaluate on", "topk": "Top-k"})


def render(spec: dict, accuracy: pd.DataFrame, ensembles: pd.DataFrame, calibration: pd.DataFrame,
           sis: pd.DataFrame, leakage: pd.DataFrame | None = None) -> str:
    """All tables of the experiment as one Markdown document."""
    retrained = accuracy[accuracy["role"] == "retrained"]
    cross = retrained[retrained["arch"] != retrained["source_arch"]]
    parts = [f"# Overinterpretation experiment `{spec['name']}`\n",
             f"Source of the pixel subsets: `{spec['source_model']}` seed {spec['source_seed']} "
             f"({spec['source_arch']}) on `{spec['dataset']}`. Accuracy in %, mean ± std over runs.\n",
             "## Pretrained models on full images and pixel subsets (Table 1, S4, S7)\n",
             markdown(table1(accuracy, "pretrained")),
             "## Models trained on pixel subsets, evaluated on the matching test subsets (Table 1, S1: (+) = "
             f"augmentation, {AUGMENT_MODES[spec.get('options', {}).get('augment_mode', 'aligned')]})\n",
             markdown(table1(accuracy, "retrained", eval_on_full=False)),
             "## Models trained on pixel subsets, evaluated on full images (Table S3)\n",
             markdown(table1(accuracy, "retrained", eval_on_full=True)),
             "## Cross-architecture: subsets of the source trained into other architectures (Table S2)\n",
             markdown(table1(cross.assign(role="retrained"), "retrained", eval_on_full=False))
             if not cross.empty else "_(no other architecture trained)_\n",
             "## Pixels or pattern? BS subsets beside their leakage floor (mask only) and agreement with the "
             "source's prediction (%)\n",
             markdown(leakage) if leakage is not None else "_(not computed)_\n",
             "## Ensembles (mean of logits)\n", markdown(ensembles),
             "## Calibration by temperature scaling (Table S5)\n", markdown(calibration),
             f"## SIS size at threshold {spec['threshold']} (% of image)\n", markdown(sis)]
    return "\n".join(parts)


def build_tables(spec: dict, sis_summary: pd.DataFrame, out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Compute every table and write the CSV files and ``tables.md`` to ``out_dir`` (atomically)."""
    by_split = accuracy_by_split(spec)
    at_threshold = sis_summary_table(spec, sis_summary)
    tables = {"accuracy_by_split": by_split, "accuracy": accuracy_table(by_split),
              "ensembles": ensemble_table(spec, by_split), "calibration": calibration_table(spec, at_threshold),
              "sis_summary": at_threshold}
    tables["leakage"] = leakage_table(tables["accuracy"], spec.get("options", {}).get("augment_mode", "aligned"))
    out_dir = Path(out_dir)
    for name, frame in tables.items():
        with atomic_output(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    text = render(spec, tables["accuracy"], tables["ensembles"], tables["calibration"], tables["sis_summary"],
                  tables["leakage"])
    with atomic_output(out_dir / "tables.md") as tmp:
        tmp.write_text(text)
    return tables


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="the experiment's experiment.json")
    parser.add_argument("--sis-summary", required=True, help="summary.csv of pathologies.overinterp.sis_sizes")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    build_tables(read_experiment(args.experiment, KEYS), read_csv(args.sis_summary, "SIS summary table"), args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
