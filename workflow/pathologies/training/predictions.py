"""Load which images each model classifies correctly: per-epoch dumps and external CSV files.

Per-epoch prediction dumps, ``results/models/<run>/seed<seed>/predictions.h5`` (written by
:mod:`pathologies.training.train`)::

    /                 attrs: model/run, seed, arch, dataset, epochs (int E), recipe (JSON), code_version
    /<split>/targets  int64 (N,)
    /<split>/ids      int64 (N,)        image id (index in the dataset source)
    /<split>/pred     int32 (E+1, N)    predicted class after epoch e; row 0 = untrained
    /<split>/conf     float32 (E+1, N)  softmax probability of the predicted class

External predictions (models trained elsewhere), CSV with one row per (model, image)::

    image_id,model,prediction,target

Epochs are chosen as ``"last"`` (each model's final epoch), ``"all"`` (0..E, every model needs
the same E) or a list of integers; negative integers count from each model's final epoch as in
Python indexing (-1 = last, so ``"last"`` is ``[-1]``). External predictions have only final
decisions, so they join an analysis at epoch -1 only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import h5py, read_h5

CSV_COLUMNS = ("image_id", "model", "prediction", "target")


@dataclass(frozen=True)
class Correctness:
    """Right/wrong of M models at E epochs on N images.

    ``epochs``: the requested epoch labels (negative = counted from each model's end);
    ``model_epochs`` (M, E): the epoch actually used per model (-1 where unknown: CSV models);
    ``correct`` (M, E, N) bool; ``predictions`` (M, E, N) int32 when loaded with predictions;
    ``sources``: the file each model came from.
    """

    models: list[str]
    epochs: list[int]
    ids: np.ndarray
    targets: np.ndarray
    correct: np.ndarray
    model_epochs: np.ndarray
    sources: list[str]
    predictions: np.ndarray | None = None

    def select(self, models: Sequence[str]) -> Correctness:
        """The same data restricted to (and ordered as) ``models``."""
        unknown = [name for name in models if name not in self.models]
        if unknown:
            raise UserError(f"unknown models {unknown}; available: {self.models}")
        rows = [self.models.index(name) for name in models]
        return replace(self, models=list(models), correct=self.correct[rows],
                       model_epochs=self.model_epochs[rows], sources=[self.sources[r] for r in rows],
                       predictions=None if self.predictions is None else self.predictions[rows])


def epoch_rows(epochs: str | Sequence[int], final: int, source: str | Path) -> tuple[list[int], list[int]]:
    """(labels, rows): requested epoch labels and the rows 0..``final`` of a dump they select."""
    if isinstance(epochs, str):
        if epochs == "last":
            return [-1], [final]
        if epochs == "all":
            return list(range(final + 1)), list(range(final + 1))
        raise UserError(f"epochs must be 'last', 'all' or a list of integers, got {epochs!r}")
    labels = [int(e) for e in epochs]
    if not labels:
        raise UserError("epochs is an empty list; give at least one epoch, 'last' or 'all'")
    rows = [e if e >= 0 else final + 1 + e for e in labels]
    bad = [label for label, row in zip(labels, rows, strict=True) if not 0 <= row <= final]
    if bad:
        raise UserError(f"{source} has epochs 0..{final} (or -{final + 1}..-1 from the end); "
                        f"epochs {bad} are out of range")
    return labels, rows


def read_dump(path: str | Path, split: str = "test", epochs: str | Sequence[int] = "last",
              with_predictions: bool = False) -> Correctness:
    """One model's correctness (1, E, N) from a per-epoch prediction dump; the model is named by the path."""
    path = Path(path)
    with read_h5(path, "prediction dump") as handle:
        if split not in handle:
            raise UserError(f"{path} has no split {split!r}; it has {sorted(handle.keys())}")
        group = handle[split]
        missing = [key for key in ("targets", "ids", "pred") if key not in group]
        if missing:
            raise UserError(f"{path}: split {split!r} lacks {missing}; delete the file and rebuild it")
        targets, ids, pred = group["targets"][()], group["ids"][()], group["pred"]
        if pred.ndim != 2 or targets.shape != ids.shape or pred.shape[1:] != targets.shape:
            raise UserError(f"{path}: split {split!r} has inconsistent shapes (pred {pred.shape}, "
                            f"targets {targets.shape}, ids {ids.shape}); delete the file and rebuild it")
        check_labels(path, split, {"targets": targets, "ids": ids, "pred": pred})
        final = pred.shape[0] - 1
        if "epochs" in handle.attrs and int(handle.attrs["epochs"]) != final:
            raise UserError(f"{path}: attribute epochs={int(handle.attrs['epochs'])} but pred has "
                            f"{pred.shape[0]} rows (epochs 0..{final}); delete the file and rebuild it")
        labels, rows = epoch_rows(epochs, final, path)
        if rows == list(range(final + 1)):
            selected = pred[()]
        else:
            unique, inverse = np.unique(rows, return_inverse=True)
            selected = pred[unique.tolist()][inverse]  # h5py reads increasing, unique rows only
    return Correctness(
        models=[str(path)], epochs=labels, ids=ids.astype(np.int64), targets=targets.astype(np.int64),
        correct=(selected == targets[None, :])[None], model_epochs=np.asarray([rows]), sources=[str(path)],
        predictions=selected.astype(np.int32)[None] if with_predictions else None,
    )


def check_labels(path: Path, split: str, arrays: Mapping[str, np.ndarray | h5py.Dataset]) -> None:
    """Class indices and image ids of a dump must be non-negative integers, ids unique, N > 0:
    anything else (NaN, floats, strings, an empty split) is a damaged or foreign file."""
    for key, values in arrays.items():
        if values.dtype.kind not in "iu":
            raise UserError(f"{path}: {split}/{key} holds {values.dtype} values, not integer class indices or "
                            "ids; delete the file and rebuild it")
    if arrays["ids"].shape[0] == 0:
        raise UserError(f"{path}: split {split!r} has no images (N = 0); a dump needs at least one image: "
                        "check the dataset split, delete the file and rebuild it")
    for key in ("targets", "ids"):
        if int(np.min(arrays[key])) < 0:
            raise UserError(f"{path}: {split}/{key} has negative values; delete the file and rebuild it")
    pred = arrays["pred"]
    low = min(int(np.min(pred[start : start + 64])) for start in range(0, pred.shape[0], 64))
    if low < 0:
        raise UserError(f"{path}: {split}/pred has negative class indices; delete the file and rebuild it")
    ids = np.asarray(arrays["ids"])
    if len(np.unique(ids)) != len(ids):
        raise UserError(f"{path}: {split}/ids has duplicate image ids; delete the file and rebuild it")


def check_targets(correctness: Correctness, num_classes: int, dataset: str | Path) -> None:
    """Every target must be a class of ``dataset`` (0..num_classes-1): dumps of another dataset are refused."""
    if len(correctness.targets) and int(correctness.targets.max()) >= num_classes:
        raise UserError(f"{correctness.sources[0]}: target {int(correctness.targets.max())} but {dataset} has "
                        f"{num_classes} classes; the dumps belong to another dataset: rebuild them")


def load_correctness(paths: Mapping[str, str | Path], split: str = "test",
                     epochs: str | Sequence[int] = "last", with_predictions: bool = False) -> Correctness:
    """Correctness of several models from their prediction dumps; ``paths`` maps model name -> dump.

    All dumps must hold the same image ids (in the same order) and targets; with ``"all"``
    epochs every model needs the same number of epochs.
    """
    if not paths:
        raise UserError("no prediction dumps given; list at least one model")
    parts = []
    for name, path in paths.items():
        part = read_dump(path, split, epochs, with_predictions)
        parts.append(replace(part, models=[str(name)]))
    return merge(parts)


def _read_predictions_table(path: Path) -> pd.DataFrame:
    """The CSV's rows, checked one by one: columns, integer non-negative classes, one row per (model, image)."""
    if not path.exists():
        raise UserError(f"external predictions {path} do not exist; check the path in your config")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable CSV file ({err})") from None
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}; it needs {list(CSV_COLUMNS)}")
    if table.empty:
        raise UserError(f"{path} has no rows")
    for column in ("image_id", "prediction", "target"):
        if not pd.api.types.is_integer_dtype(table[column]):
            raise UserError(f"{path}: column {column!r} must hold integers only (found "
                            f"{table[column].dtype}, maybe empty cells)")
    negative = [column for column in ("prediction", "target") if (table[column] < 0).any()]
    if negative:
        raise UserError(f"{path}: column {negative[0]!r} has negative class indices; classes are 0..K-1")
    table["model"] = table["model"].astype(str)
    duplicated = table.duplicated(["model", "image_id"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise UserError(f"{path}: model {row['model']!r} has more than one row for image {row['image_id']}")
    return table


def load_predictions_csv(path: str | Path, ids: np.ndarray | None = None,
                         targets: np.ndarray | None = None) -> Correctness:
    """Import final predictions of models trained elsewhere (columns image_id, model, prediction, target).

    Every model must cover the same images, once each. With ``ids`` (e.g. those of the prediction
    dumps) the CSV must cover exactly those images and is put in their order; with ``targets``
    (aligned with ``ids``) its targets must agree. Returns epoch label -1 (final) for every model.
    """
    path = Path(path)
    table = _read_predictions_table(path)
    image_targets = table.drop_duplicates(["image_id", "target"])
    conflicting = image_targets["image_id"].duplicated()
    if conflicting.any():
        image = image_targets[conflicting]["image_id"].iloc[0]
        raise UserError(f"{path}: image {image} has different targets in different rows")
    csv_ids = np.sort(image_targets["image_id"].to_numpy())
    models = list(dict.fromkeys(table["model"]))
    counts = table.groupby("model", sort=False).size()
    incomplete = counts[counts != len(csv_ids)]
    if len(incomplete):
        raise UserError(f"{path}: model {incomplete.index[0]!r} has predictions for {incomplete.iloc[0]} "
                        f"images but the file covers {len(csv_ids)}; every model needs every image")

    order = csv_ids if ids is None else np.asarray(ids, dtype=np.int64)
    if ids is not None and not np.array_equal(np.sort(order), csv_ids):
        absent = np.setdiff1d(order, csv_ids)
        unknown = np.setdiff1d(csv_ids, order)
        raise UserError(f"{path}: image ids differ from the prediction dumps ({len(absent)} missing, "
                        f"e.g. {absent[:3].tolist()}; {len(unknown)} unknown, e.g. {unknown[:3].tolist()}); "
                        "external predictions must cover exactly the same split")
    wide = table.pivot(index="model", columns="image_id", values="prediction").loc[models, order]
    csv_targets = image_targets.set_index("image_id")["target"].loc[order].to_numpy(np.int64)
    if targets is not None:
        targets = np.asarray(targets, dtype=np.int64)
        differs = np.flatnonzero(targets != csv_targets)
        if len(differs):
            first = differs[0]
            raise UserError(f"{path}: targets disagree with the prediction dumps for {len(differs)} "
                            f"images (e.g. image {order[first]}: {csv_targets[first]} here, "
                            f"{targets[first]} there); check that both use the same class indices")
    predictions = wide.to_numpy(np.int32)[:, None, :]
    return Correctness(
        models=models, epochs=[-1], ids=order.astype(np.int64), targets=csv_targets,
        correct=predictions == csv_targets[None, None, :], model_epochs=np.full((len(models), 1), -1),
        sources=[str(path)] * len(models), predictions=predictions,
    )


def merge(parts: Sequence[Correctness]) -> Correctness:
    """Join models from several sources; ids, targets and epoch labels must agree."""
    if not parts:
        raise UserError("nothing to merge: no models given")
    first = parts[0]
    for part in parts[1:]:
        source, reference = part.sources[0], first.sources[0]
        if not np.array_equal(part.ids, first.ids):
            raise UserError(f"{source}: image ids differ from those in {reference}; "
                            "all models must be evaluated on the same split of the same prepared dataset")
        if not np.array_equal(part.targets, first.targets):
            raise UserError(f"{source}: targets differ from those in {reference} for "
                            f"{int(np.count_nonzero(part.targets != first.targets))} images")
        if part.epochs != first.epochs:
            raise UserError(f"{source} has epochs {_short(part.epochs)} but {reference} has "
                            f"{_short(first.epochs)}; choose epochs that every model has (e.g. 'last')")
    models = [name for part in parts for name in part.models]
    duplicates = sorted({name for name in models if models.count(name) > 1})
    if duplicates:
        raise UserError(f"model names {duplicates} occur more than once; give every model a unique name")
    with_predictions = all(part.predictions is not None for part in parts)
    return Correctness(
        models=models, epochs=list(first.epochs), ids=first.ids, targets=first.targets,
        correct=np.concatenate([part.correct for part in parts]),
        model_epochs=np.concatenate([part.model_epochs for part in parts]),
        sources=[source for part in parts for source in part.sources],
        predictions=np.concatenate([part.predictions for part in parts]) if with_predictions else None,
    )


def _short(epochs: list[int]) -> str:
    return str(epochs) if len(epochs) <= 6 else f"[{epochs[0]}, ..., {epochs[-1]}] ({len(epochs)})"
