"""The decisions of a DDD experiment's members, from per-epoch dumps and external CSV predictions.

    python -m pathologies.ddd.experiment --spec-json '<Experiment.as_dict JSON>' --out results/ddd/X/experiment.json

Analysis modules read an experiment from ``experiment.json`` (written by the command above from
:meth:`pathologies.ddd.grid.Experiment.as_dict`): ``name``, ``dataset``, ``split``, ``epochs`` (the
comparison epoch E), ``members`` (label, condition, model, seed, epoch, compare, arch, predictions,
checkpoint), ``rsa_members`` and the analysis options (``n_boot``, ``ci_level``, ``analysis_seed``,
``loose_max_exceptions``, ``in_between_rule``, ``models_per_condition``, ``rsa_images``, ``rsa_layers``,
``predictions_csv``, ``exclude_ids``).

Epochs are counted on the base run's clock: "epoch e" means epoch e of every trained member, and
epoch e + k of the member ``plus<k>ep`` (each member's ``epoch`` is its state at e = E). Models
from ``predictions_csv`` have final decisions only; each joins at e = E as a condition of its own.
An experiment of external models only (no ``members``) has E = 0. Images listed in ``exclude_ids``
are dropped from every table (:mod:`pathologies.ddd.exclusion`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UserError, cli
from ..io import atomic_output
from ..training.predictions import Correctness, load_predictions_csv, merge, read_dump
from .consistency import image_subset
from .exclusion import excluded_ids, split_excluded


def check_spec(spec: object, source: str) -> dict:
    """``spec`` if it looks like an experiment description, else a UserError naming ``source``."""
    if not isinstance(spec, dict):
        raise UserError(f"{source} is not an experiment description (not a JSON object); rebuild it with snakemake")
    missing = {"name", "split", "epochs", "members"} - set(spec)
    if missing:
        raise UserError(f"{source} is not an experiment description (lacks {sorted(missing)}); "
                        "rebuild it with snakemake")
    return spec


def read_spec(path: str | Path) -> dict:
    """The experiment description in ``path`` (JSON), with clear errors for a missing or broken file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"experiment description {path} does not exist; build it with `snakemake {path}`") from None
    try:
        return check_spec(json.loads(text), str(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and rebuild it") from None


def load_epochs(spec: dict, epochs: Sequence[int] | None = None, with_predictions: bool = False,
                keep_excluded: bool = False) -> Correctness:
    """Trained members at base-clock ``epochs`` (default 0..E): correct (M, len(epochs), N).

    Images of ``exclude_ids`` are left out unless ``keep_excluded``.
    """
    if not spec["members"]:
        raise UserError(f"experiment {spec['name']!r} has no trained models (only predictions_csv); "
                        "per-epoch analyses need a base run")
    clock = list(range(spec["epochs"] + 1)) if epochs is None else [int(e) for e in epochs]
    parts = []
    for member in spec["members"]:
        offset = member["epoch"] - spec["epochs"]
        part = read_dump(member["predictions"], spec["split"], [e + offset for e in clock], with_predictions)
        parts.append(replace(part, models=[member["label"]], epochs=clock))
    merged = merge(parts)
    return merged if keep_excluded else split_excluded(merged, excluded_ids(spec))[0]


def load_final(spec: dict, keep_excluded: bool = False) -> tuple[Correctness, list[dict]]:
    """Every member, external CSV models included, at the comparison epoch E: (correctness, members).

    The returned member list is aligned with ``correctness.models``; an external model becomes
    ``{label: name, condition: name, compare: "base", source: csv}``. Without trained members the
    first CSV fixes the images and their order. Images of ``exclude_ids`` are left out unless
    ``keep_excluded``.
    """
    members = [dict(member, source=member["predictions"]) for member in spec["members"]]
    parts, labels = [], set()
    ids = targets = None
    if members:
        trained = load_epochs(spec, [spec["epochs"]], keep_excluded=True)
        parts, labels, ids, targets = [trained], set(trained.models), trained.ids, trained.targets
    if not members and not spec.get("predictions_csv"):
        raise UserError(f"experiment {spec['name']!r} has neither trained models nor predictions_csv")
    for path in spec.get("predictions_csv", []):
        external = load_predictions_csv(path, ids, targets)
        ids, targets = external.ids, external.targets
        clash = sorted(labels.intersection(external.models))
        if clash:
            raise UserError(f"{path}: model names {clash} are already used by members of experiment "
                            f"{spec['name']!r}; rename them in the CSV")
        labels.update(external.models)
        parts.append(replace(external, epochs=[spec["epochs"]]))
        members += [{"label": name, "condition": name, "model": name, "seed": None, "epoch": None,
                     "compare": "base", "arch": None, "source": str(path)} for name in external.models]
    merged = merge(parts)
    return (merged if keep_excluded else split_excluded(merged, excluded_ids(spec))[0]), members


def difficulty_rows(members: Sequence[dict], per_condition: str = "last") -> list[int]:
    """Indices of the members whose decisions define trivial / in-between / impossible images.

    ``"last"``: the last member of each condition (the paper: one model per condition); ``"all"``:
    every member.
    """
    if per_condition == "all":
        return list(range(len(members)))
    if per_condition != "last":
        raise ValueError(f"per_condition must be 'last' or 'all', got {per_condition!r}")
    last = {member["condition"]: i for i, member in enumerate(members)}
    return sorted(last.values())


def check_exceptions(spec: dict, n_models: int) -> None:
    """``loose_max_exceptions`` must stay below half of the models that define difficulty."""
    m = spec["loose_max_exceptions"]
    if 2 * m >= n_models:
        raise UserError(f"config key ddd.{spec['name']}.loose_max_exceptions: {m} must be less than half of the "
                        f"{n_models} models whose decisions define trivial / impossible images; lower it")


def in_between_mask(correct: np.ndarray, spec: dict) -> np.ndarray:
    """Images that are neither trivial nor impossible for the difficulty set (N,) bool.

    ``correct``: (difficulty-set models, N) at epoch E; the rule is ``in_between_rule`` (strict:
    all / none right; loose: all but ``loose_max_exceptions``).
    """
    check_exceptions(spec, len(correct))
    exceptions = spec["loose_max_exceptions"] if spec["in_between_rule"] == "loose" else 0
    return image_subset(correct, "in_between", max_exceptions=exceptions)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathologies.ddd.experiment",
                                     description="Write the experiment description the DDD analysis modules read.")
    parser.add_argument("--spec-json", required=True, help="grid.Experiment.as_dict as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        spec = check_spec(json.loads(args.spec_json), "--spec-json")
    except json.JSONDecodeError as err:
        raise UserError(f"--spec-json is not valid JSON ({err})") from None
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
