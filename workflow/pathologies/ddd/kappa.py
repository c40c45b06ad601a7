"""Error-consistency tables of one DDD experiment: all pairs per epoch, conditions vs base, base over epochs.

    python -m pathologies.ddd.kappa --experiment experiment.json --kappa-out kappa.csv \\
        --conditions-out conditions.csv --epochs-out epoch_kappa.csv

``kappa.csv``: one row per (set, epoch, pair of members); ``set`` is ``all`` (every image) or
``in_between`` (images neither trivial nor impossible for the difficulty set at epoch E; the same
images at every epoch). Epochs 0..E on the base run's clock (see :mod:`pathologies.ddd.experiment`);
external CSV models appear at epoch E only. Bootstrap intervals (ci_low, ci_high) are computed at
epoch E only (NaN before). ``conditions.csv``: at epoch E, each member against the base member
(``compare: base``) or against the other members of its condition (``compare: within``).
``epoch_kappa.csv``: every pair of epochs of the base run (0..E + max extra), all images. Images of
``exclude_ids`` are left out of all three. An experiment of external models only has epoch E = 0 alone,
an empty ``conditions.csv`` (there is no base) and an empty ``epoch_kappa.csv``. Published per-image results
(``per_image_results``) hold no decisions of single models: all three tables are empty (header only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..errors import cli
from ..io import atomic_output, read_experiment
from ..training.predictions import Correctness, read_dump
from .consistency import COLUMNS, consistency_table, pair_stats
from .exclusion import split_excluded
from .experiment import KEYS, difficulty_rows, in_between_mask, load_epochs, load_final

STATISTICS = COLUMNS[3:]  # c_obs ... acc_b
CONDITION_COLUMNS = ["set", "condition", "member", "reference", "kappa", "ci_low", "ci_high", "kappa_min",
                     "kappa_max", "p_value", "c_obs", "c_exp", "acc_member", "acc_reference", "n_images"]


def kappa_table(per_epoch: Correctness | None, final: Correctness, conditions: dict[str, str],
                in_between: np.ndarray, *, n_boot: int = 0, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Every pair of members at every epoch, for all images and for the ``in_between`` images.

    ``per_epoch``: trained members at epochs 0..E (only 0..E-1 are used; None: no trained members);
    ``final``: all members at E (bootstrapped with ``n_boot`` resamples); ``conditions``: member label -> condition. The
    ``in_between`` set is left out when it holds no image.
    """
    frames = []
    for name, mask in (("all", None), ("in_between", in_between)):
        if mask is not None and not mask.any():
            continue
        last = consistency_table(final.correct, final.models, final.epochs, image_mask=mask,
                                 n_boot=n_boot, level=level, seed=seed)
        if per_epoch is not None and len(per_epoch.epochs) > 1:
            earlier = consistency_table(per_epoch.correct[:, :-1], per_epoch.models, per_epoch.epochs[:-1],
                                        image_mask=mask)
            last = pd.concat([earlier, last], ignore_index=True)
        frame = last
        frame.insert(0, "set", name)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.insert(3, "condition_a", table["model_a"].map(conditions))
    table.insert(5, "condition_b", table["model_b"].map(conditions))
    return table


def conditions_table(kappa: pd.DataFrame, members: list[dict], epoch: int) -> pd.DataFrame:
    """Rows of ``kappa`` at ``epoch`` that the paper plots: each member vs base, or within its condition."""
    final = kappa[kappa["epoch"] == epoch]
    rows = []
    if not any(member["condition"] == "base" for member in members):  # external models only: no reference
        return pd.DataFrame(rows, columns=CONDITION_COLUMNS)
    for set_name, group in final.groupby("set", sort=False):
        pairs = {(row.model_a, row.model_b): row for row in group.itertuples(index=False)}
        for i, member in enumerate(members):
            if member["condition"] == "base":
                continue
            if member["compare"] == "base":
                references = ["base"]
            else:  # each unordered pair of the condition once
                references = [other["label"] for other in members[i + 1:] if other["condition"] == member["condition"]]
            for reference in references:
                rows.append({"set": set_name, "condition": member["condition"], "member": member["label"],
                             "reference": reference, **_pair_statistics(pairs, member["label"], reference)})
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


def _pair_statistics(pairs: dict, member: str, reference: str) -> dict:
    if (member, reference) in pairs:
        row, acc_member, acc_reference = pairs[(member, reference)], "acc_a", "acc_b"
    else:
        row, acc_member, acc_reference = pairs[(reference, member)], "acc_b", "acc_a"
    values = row._asdict()
    return {**{key: values[key] for key in CONDITION_COLUMNS[4:-3]}, "acc_member": values[acc_member],
            "acc_reference": values[acc_reference], "n_images": values["n_images"]}


def epoch_table(correct: np.ndarray, epochs: list[int]) -> pd.DataFrame:
    """kappa between every pair of epochs of one run: (epochs, N) bool -> rows (epoch_a, epoch_b, ...)."""
    table = pair_stats(np.asarray(correct, dtype=bool)).to_frame(list(epochs))
    table = table.drop(columns="epoch").rename(columns={"model_a": "epoch_a", "model_b": "epoch_b"})
    return table.astype({"epoch_a": int, "epoch_b": int})


def build_tables(spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(kappa, conditions, epoch_kappa) tables of the experiment described by ``spec``."""
    if spec.get("per_image_results"):  # no decisions of single models: no pairs to compare
        kappa_columns = ["set", "epoch", "model_a", "condition_a", "model_b", "condition_b", *STATISTICS]
        return (pd.DataFrame(columns=kappa_columns), pd.DataFrame(columns=CONDITION_COLUMNS),
                pd.DataFrame(columns=["epoch_a", "epoch_b", *STATISTICS]))
    final, members = load_final(spec)
    per_epoch = load_epochs(spec) if spec["members"] else None
    rows = difficulty_rows(members, spec["models_per_condition"])
    mask = in_between_mask(final.correct[rows, 0], spec)
    conditions = {member["label"]: member["condition"] for member in members}
    kappa = kappa_table(per_epoch, final, conditions, mask, n_boot=spec["n_boot"], level=spec["ci_level"],
                        seed=spec["analysis_seed"])
    conditions_rows = conditions_table(kappa, members, spec["epochs"])
    if not spec["members"]:
        return kappa, conditions_rows, pd.DataFrame(columns=["epoch_a", "epoch_b", *STATISTICS])
    base = next(member for member in spec["members"] if member["label"] == "base")
    run = split_excluded(read_dump(base["predictions"], spec["split"], "all"), spec)[0]
    return kappa, conditions_rows, epoch_table(run.correct[0], run.epochs)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--kappa-out", required=True)
    parser.add_argument("--conditions-out", required=True)
    parser.add_argument("--epochs-out", required=True)
    args = parser.parse_args(argv)
    kappa, conditions, epochs = build_tables(read_experiment(args.experiment, KEYS))
    for table, path in ((kappa, args.kappa_out), (conditions, args.conditions_out), (epochs, args.epochs_out)):
        with atomic_output(path) as tmp:
            table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
