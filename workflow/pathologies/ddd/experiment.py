"""The decisions of a DDD experiment's members, from per-epoch dumps and external CSV predictions.

    python -m pathologies.ddd.experiment --spec '<Experiment.as_dict JSON>' --out results/ddd/X/experiment.json

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

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..cliargs import CommandParser, json_object
from ..errors import UserError, cli
from ..io import atomic_output, check_experiment
from ..training.predictions import Correctness, load_predictions_csv, merge, read_dump
from .consistency import image_subset
from .exclusion import split_excluded

# Keys every DDD experiment description holds (checked when one is read or written).
KEYS = ("name", "split", "epochs", "members")


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
    return merged if keep_excluded else split_excluded(merged, spec)[0]


def load_final(spec: dict, keep_excluded: bool = False) -> tuple[Correctness, list[dict]]:
    """Every member, external CSV models included, at the comparison epoch E: (correctness, members).

    The returned member list is aligned with ``correctness.models``; an external model becomes
    ``{label: name, condition: name, compare: "base", source: csv}``. Without trained members the
    first CSV fixes the images and their order. Images of ``exclude_ids`` are left out unless
    ``keep_excluded``.
    """
    if spec.get("per_image_results"):
        return _per_image(spec, keep_excluded)
    members = [dict(member, source=member["predictions"]) for member in spec["members"]]
    parts, labels = [], set()
    ids = targets = None
    if members:
        trained = load_epochs(spec, [spec["epochs"]], keep_excluded=True)
        parts, labels, ids, targets = [trained], set(trained.models), trained.ids, trained.targets
    for member in spec.get("pretrained", []):  # 0 epochs trained: the dump's only row
        part = read_dump(member["predictions"], spec["split"], "last")
        parts.append(replace(part, models=[member["label"]], epochs=[spec["epochs"]]))
        members.append(dict(member, source=member["predictions"]))
        labels.add(member["label"])
    if not members and not spec.get("predictions_csv"):
        raise UserError(f"experiment {spec['name']!r} has neither trained nor pretrained models nor predictions_csv")
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
    return (merged if keep_excluded else split_excluded(merged, spec)[0]), members


PER_IMAGE = "published"  # label prefix of the stand-in models of per_image_results


def read_per_image(path: str | Path, n_models: int, n_images: int) -> np.ndarray:
    """Models right per image, int (N,), from a (N,) or (N, 1) array of mean correctness k / ``n_models``;
    one-line errors for another length or values that are not multiples of 1 / ``n_models``."""
    where = f"per_image_results file {path}"
    try:
        values = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{where} does not exist; place it there or fix ddd.<experiment>.per_image_results.file"
                        ) from None
    except (ValueError, OSError) as err:
        raise UserError(f"{where} is not a plain .npy array ({err}); save it with np.save") from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "fiub":
        raise UserError(f"{where} must be a numeric (N,) or (N, 1) array, not {values.dtype} of shape {values.shape}")
    if len(values) != n_images:
        raise UserError(f"{where} has {len(values)} values, but the split has {n_images} images; it must hold one "
                        "value per image of the split, in the prepared split's order")
    counts = np.rint(values.astype(np.float64) * n_models)
    bad = ~np.isfinite(counts) | (counts < 0) | (counts > n_models) | (np.abs(counts - values * n_models) > 1e-6)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where}: {int(bad.sum())} values are not k / {n_models} for k = 0..{n_models} (e.g. "
                        f"{values[first].item()!r} at row {first}); check n_models")
    return counts.astype(np.int64)


def _per_image(spec: dict, keep_excluded: bool) -> tuple[Correctness, list[dict]]:
    """Published per-image results as ``n_models`` stand-in models: image i is right for the first k_i of
    them, so counts, fractions and histograms equal the published ones (single models mean nothing)."""
    from ..data.layout import load_labels

    source = spec["per_image_results"]
    ids, targets = load_labels(spec["dataset_file"], spec["split"])
    counts = read_per_image(source["file"], source["n_models"], len(ids))
    m = source["n_models"]
    correct = (np.arange(m)[:, None] < counts[None, :])[:, None, :]
    labels = [f"{PER_IMAGE}.{i + 1}" for i in range(m)]
    data = Correctness(models=labels, epochs=[spec["epochs"]], ids=ids, targets=targets, correct=correct,
                       model_epochs=np.full((m, 1), -1), sources=[str(source["file"])] * m)
    members = [{"label": label, "condition": label, "model": PER_IMAGE, "seed": None, "epoch": None,
                "compare": "base", "arch": None, "source": str(source["file"])} for label in labels]
    return (data if keep_excluded else split_excluded(data, spec)[0]), members


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
    parser = CommandParser(__spec__.name, description="Write the experiment description the DDD analysis modules read.")
    parser.add_argument("--spec", required=True, help="grid.Experiment.as_dict as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    spec = check_experiment(json_object(args.spec), "--spec", KEYS)
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
