"""Human-readable summary of one DDD experiment, from its tables.

    python -m pathologies.ddd.summary --experiment experiment.json --members members.csv \\
        --difficulty difficulty.csv --kappa kappa.csv --conditions conditions.csv \\
        --histograms difficulty_histograms.csv [--rsa rsa.csv] [--histogram histogram.csv] --out summary.txt
"""

from __future__ import annotations

import pandas as pd

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_experiment
from .exclusion import excluded_ids
from .experiment import KEYS
from .measures import histogram_distances, summary_text


def _interval(group: pd.DataFrame) -> str:
    """One condition's kappa: the value with its bootstrap interval, or mean and range of several."""
    kappa = group["kappa"]
    if len(group) == 1:
        row = group.iloc[0]
        ci = f" [{row.ci_low:.3f}, {row.ci_high:.3f}]" if pd.notna(row.ci_low) else ""
        return f"{row.kappa:.3f}{ci}"
    if kappa.isna().all():
        return "undefined"
    return f"{kappa.mean():.3f} ({kappa.min():.3f}..{kappa.max():.3f})"


def condition_lines(conditions: pd.DataFrame) -> list[str]:
    """Per condition: pairs compared and kappa on all images and on the in-between images."""
    lines = [f"  {'condition':<28} {'pairs':>5}  {'kappa, all images':<26} kappa, in-between images"]
    for condition, group in conditions.groupby("condition", sort=False):
        by_set = {name: rows for name, rows in group.groupby("set", sort=False)}
        first = by_set.get("all", group)
        versus = "within" if (first["reference"] != "base").all() else "base"
        between = _interval(by_set["in_between"]) if "in_between" in by_set else "-"
        lines.append(f"  {condition + (' (within)' if versus == 'within' else ''):<28} {len(first):>5}  "
                     f"{_interval(first):<26} {between}")
    return lines


def exclusion_line(spec: dict, histogram: pd.DataFrame | None) -> list[str]:
    """How many images ``exclude_ids`` removed (from the excluded counts of ``histogram.csv``)."""
    if not spec.get("exclude_ids"):
        return []
    listed = len(excluded_ids(spec))
    removed = int(histogram["excluded_images"].sum()) if histogram is not None else listed
    return [f"excluded before every table and figure: {removed} images of the split listed in "
            f"{spec['exclude_ids']} ({listed} ids listed, {listed - removed} of them not in the split)"]


def summary(spec: dict, members: pd.DataFrame, difficulty: pd.DataFrame, kappa: pd.DataFrame,
            conditions: pd.DataFrame, histograms: pd.DataFrame, rsa: pd.DataFrame | None = None,
            histogram: pd.DataFrame | None = None) -> str:
    """The text of ``summary.txt``."""
    n_models = int(difficulty["n_models"].iloc[0])
    epoch = spec["epochs"]
    final = kappa[(kappa["epoch"] == epoch) & (kappa["set"] == "all")]
    in_between = int(difficulty["in_between"].sum())
    lines = [f"DDD experiment {spec['name']!r}: {len(difficulty)} {spec['split']} images, {len(members)} models, "
             f"compared at epoch {epoch}; {n_models} of them define image difficulty "
             f"({'one per condition' if spec['models_per_condition'] == 'last' else 'all'})",
             *exclusion_line(spec, histogram),
             summary_text(difficulty["n_correct"].to_numpy(), n_models,
                          max_exceptions=spec["loose_max_exceptions"], kappa_table=final),
             f"in-between images ({spec['in_between_rule']} rule), the 'in_between' set of kappa.csv: "
             f"{in_between} ({100 * in_between / len(difficulty):.1f}%)",
             f"undefined kappa (c_exp = 1): {int(kappa['kappa'].isna().sum())} of {len(kappa)} rows of kappa.csv",
             *([f"error consistency at epoch {epoch}, each condition vs base (within: pairs inside the condition):",
                *condition_lines(conditions)] if len(conditions) else
               ["no base run (external models only): the error consistency above is over every pair"])]
    if len(histograms):
        distances = histogram_distances(histograms)
        expected = distances[distances["statistic"] == "expected"]
        lines.append("A.9 difficulty models, total-variation distance of the expected histogram from the observed: "
                     + ", ".join(f"{row.model} {row.tv_distance:.3f}" for row in expected.itertuples()))
    if rsa is not None and len(rsa):
        label, run_epoch, versus = rsa_reference(rsa, members)
        layer = f"{versus['layer'].iloc[0]} layer, " if "layer" in versus else ""
        lines.append(f"RSA with the base run ({layer}{label}, epoch {run_epoch}) on {int(rsa['n_images'].iloc[0])} "
                     f"images: mean {versus['rsa'].mean():.3f} over {len(versus)} conditions "
                     f"(range {versus['rsa'].min():.3f} to {versus['rsa'].max():.3f})")
    return "\n".join(lines) + "\n"


def rsa_reference(rsa: pd.DataFrame, members: pd.DataFrame) -> tuple[str, int, pd.DataFrame]:
    """(label, epoch, rows) of the base run's checkpoint in an RSA table: its pairs with every other model.

    With several layers (column ``layer``) the penultimate layer's rows are used, else the first layer's.
    """
    if "layer" in rsa:
        layers = list(dict.fromkeys(rsa["layer"]))
        rsa = rsa[rsa["layer"] == ("penultimate" if "penultimate" in layers else layers[0])]
    base_model = members.loc[members["label"] == "base", "model"].iloc[0]
    base_labels = set(members.loc[members["model"] == base_model, "label"])
    for side in ("a", "b"):
        hits = rsa[rsa[f"model_{side}"].isin(base_labels)]
        if len(hits):
            label, epoch = hits[f"model_{side}"].iloc[0], int(hits[f"epoch_{side}"].iloc[0])
            return label, epoch, rsa[(rsa["model_a"] == label) | (rsa["model_b"] == label)]
    raise UserError("the RSA table has no model of the base run; rebuild it with pathologies.ddd.rsa")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    for name in ("members", "difficulty", "kappa", "conditions", "histograms", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--rsa", help="rsa.csv (optional)")
    parser.add_argument("--histogram", help="histogram.csv (optional: counts of excluded images)")
    args = parser.parse_args(argv)
    tables = {}
    for name in ("members", "difficulty", "kappa", "conditions", "histograms", "rsa", "histogram"):
        path = getattr(args, name)
        if path is None:
            continue
        try:
            tables[name] = pd.read_csv(path)
        except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read table {path} ({err}); rebuild it with snakemake") from None
    with atomic_output(args.out) as tmp:
        tmp.write_text(summary(read_experiment(args.experiment, KEYS), **tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
