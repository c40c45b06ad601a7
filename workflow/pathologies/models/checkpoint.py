"""Trained-model files (``model.pt``): weights plus everything needed to rebuild and feed the model.

A checkpoint is a dict saved with ``torch.save``::

    arch, num_classes, in_channels, image_size, input_dropout_keep, dropout_at_eval -> build_model(...)
    mean, std        per-channel normalisation of the training data (0-1 scale); inputs are
                     normalised with these before the model sees them
    state_dict       the weights after the last epoch (``epoch``)
    snapshots        {epoch: state_dict} kept after other epochs (recipe ``snapshot_epochs``)
    run              the RunSpec as a dict (model, seed, dataset, recipe, ...)
    code_version
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import code_version, save_torch


def save_model(path: str | Path, model: torch.nn.Module, *, arch: str, num_classes: int, in_channels: int,
               image_size: int, mean, std, input_dropout_keep: float = 1.0, dropout_at_eval: bool = False,
               run: dict | None = None, epoch: int | None = None,
               snapshots: dict[int, dict] | None = None) -> None:
    """Save a trained model (its weights after ``epoch``, plus ``snapshots`` of earlier ones) atomically."""
    payload = {
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "input_dropout_keep": float(input_dropout_keep),
        "dropout_at_eval": bool(dropout_at_eval),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "run": run or {},
        "epoch": epoch,
        "snapshots": {int(e): {k: v.detach().cpu() for k, v in sd.items()} for e, sd in (snapshots or {}).items()},
        "code_version": code_version(),
    }
    save_torch(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the checkpoint dict, with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model checkpoint {path} does not exist; train it with `snakemake {path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise UserError(f"{path} is not a readable model checkpoint ({type(err).__name__}); "
                        "delete it and rebuild it") from None
    missing = {"arch", "num_classes", "state_dict", "mean", "std"} - set(payload)
    if missing:
        raise UserError(f"{path} is not a pathologies checkpoint (missing {sorted(missing)})")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu",
               epoch: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model in eval mode on ``device``; returns (model, checkpoint metadata).

    ``epoch``: the weights after that epoch (the final ones, or a snapshot); None = the final ones.
    """
    from .registry import build_model, check_finite_weights

    payload = read_checkpoint(path)
    model = build_model(payload["arch"], payload["num_classes"], in_channels=payload["in_channels"],
                        image_size=payload["image_size"],
                        input_dropout_keep=payload.get("input_dropout_keep", 1.0),
                        dropout_at_eval=payload.get("dropout_at_eval", False))
    state, snapshots = payload.pop("state_dict"), payload.pop("snapshots", {}) or {}
    if epoch is not None and epoch != payload.get("epoch"):
        if epoch not in snapshots:
            raise UserError(f"{path} holds the weights after epoch {payload.get('epoch')} and snapshots "
                            f"{sorted(snapshots) or 'none'}, not epoch {epoch}; add it to the recipe's "
                            "snapshot_epochs and retrain")
        state = snapshots[epoch]
    check_finite_weights(state, f"model checkpoint {path}" + ("" if epoch is None else f" (epoch {epoch})"))
    model.load_state_dict(state)
    return model.to(device).eval(), payload
