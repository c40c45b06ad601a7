"""The planted DDD experiment shared by the DDD table tests (fixture ``experiment`` in conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathologies.data.layout import Split, write_dataset
from pathologies.ddd.grid import experiments
from pathologies.experiments import validate
from pathologies.io import atomic_output, create_dataset, h5py

N_IMAGES, N_CLASSES, E = 240, 3, 3


def experiment_config(**options) -> dict:
    """A tiny grid: base (+1 epoch), two init seeds, two disjoint halves compared within."""
    return validate({
        "datasets": {"toy": {"kind": "gaussian", "num_classes": N_CLASSES}},
        "recipes": {"r": {"epochs": E}},
        "ddd": {"toy": {"dataset": "toy", "base": {"arch": "mlp", "recipe": "r"}, "extra_epochs": [1],
                        "conditions": {"init": {"overrides": {"order_seed": 0}, "seeds": [1, 2]},
                                       "halves": {"compare": "within", "variants": [
                                           {"data_fraction": 0.5, "data_part": 0},
                                           {"data_fraction": 0.5, "data_part": 1}]}},
                        "n_boot": 30, **options}},
    })


def write_dump(path: Path, pred: np.ndarray, targets: np.ndarray, ids: np.ndarray) -> None:
    """A prediction dump in the layout of pathologies.training.train: pred (E+1, N)."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["epochs"] = len(pred) - 1
        group = handle.create_group("test")
        create_dataset(group, "targets", targets)
        create_dataset(group, "ids", ids)
        create_dataset(group, "pred", pred.astype(np.int32))
        create_dataset(group, "conf", np.full(pred.shape, 0.5, dtype=np.float32))


def make_experiment(tmp_path: Path) -> dict:
    """The toy experiment's spec with dumps whose correctness is planted: trivial, impossible, coin flips.

    Returns {"spec", "correct": {(model, seed): (E'+1, N) bool}, "pred", "targets", "ids", "dataset"}.
    """
    rng = np.random.default_rng(0)
    targets = rng.integers(0, N_CLASSES, N_IMAGES)
    ids = np.arange(N_IMAGES) * 3 + 1000
    p = rng.choice([1.0, 0.0, 0.5], size=N_IMAGES, p=[0.5, 0.2, 0.3])
    spec = experiments(experiment_config())["toy"].as_dict(lambda m, s: str(tmp_path / m / f"seed{s}"))
    correct, preds = {}, {}
    for member in spec["members"]:
        run = (member["model"], member["seed"])
        if run in correct:
            continue
        epochs = E + 1 if member["model"] == "toy.base" else E
        right = rng.random((epochs + 1, N_IMAGES)) < p
        right[0] = rng.random(N_IMAGES) < 0.3  # untrained: independent of difficulty
        pred = np.where(right, targets, (targets + 1 + rng.integers(0, 2, N_IMAGES)) % N_CLASSES)
        write_dump(Path(member["predictions"]), pred, targets, ids)
        correct[run], preds[run] = right, pred
    dataset = tmp_path / "toy.h5"
    images = np.zeros((N_IMAGES, 2, 2, 3), dtype=np.uint8)
    write_dataset(dataset, name="toy", kind="gaussian", splits={"test": Split(images, targets, ids)},
                  class_names=["c0", "c1", "c2"], mean=[0.5] * 3, std=[0.2] * 3)
    return {"spec": spec, "correct": correct, "pred": preds, "targets": targets, "ids": ids, "dataset": str(dataset)}


def member_correct(experiment: dict, label: str, epoch: int) -> np.ndarray:
    """Correctness of member ``label`` at base-clock ``epoch``, straight from the planted arrays."""
    member = next(m for m in experiment["spec"]["members"] if m["label"] == label)
    offset = member["epoch"] - experiment["spec"]["epochs"]
    return experiment["correct"][(member["model"], member["seed"])][epoch + offset]
