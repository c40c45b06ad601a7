"""Penultimate-layer activations of trained models: the input of their last ``nn.Linear``.

Every classifier in :mod:`pathologies.models.registry` ends in a linear layer (the last one registered), so
a forward hook on its input gives the representation the paper's RSA compares (appendix A.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.layout import dataset_info, load_split, to_model_input
from ..errors import UserError
from .checkpoint import load_model


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (its classifier head)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no nn.Linear layer; cannot take penultimate activations")
    return linears[-1]


LAYERS = ("penultimate", "logits")


@torch.inference_mode()
def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 256, layer: str = "penultimate") -> np.ndarray:
    """Inputs of the last linear layer for normalised images ``x`` (N, C, H, W): (N, features) float32.

    ``layer="logits"`` takes that layer's output instead (the last fully connected layer's activations).
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    captured: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(
        lambda module, args, output: captured.append(args[0] if layer == "penultimate" else output))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat([c.flatten(1) for c in captured]).float().cpu().numpy()


def split_images(dataset: str | Path, split: str, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (len(rows), H, W, C) and ids of rows of a split; ImageNet indexes are decoded."""
    rows = np.asarray(rows, dtype=np.int64)
    if dataset_info(dataset).storage == "index":
        from ..data.imagenet import ImageIndexDataset

        index = ImageIndexDataset(dataset, split)
        return np.stack([index[int(i)][0].numpy() for i in rows]), index.ids[rows]
    data = load_split(dataset, split)
    return data.images[rows], data.ids[rows]


def checkpoint_activations(checkpoint: str | Path, images: np.ndarray, device: str | torch.device = "cpu",
                           batch_size: int = 256, epoch: int | None = None,
                           layers: Sequence[str] = ("penultimate",)) -> dict[str, np.ndarray]:
    """Activations of the model in ``checkpoint`` (after ``epoch``; None = the final weights) per layer of
    ``layers`` (:data:`LAYERS`) for uint8 images (N, H, W, C), normalised with the checkpoint's mean and std."""
    model, meta = load_model(checkpoint, device, epoch=epoch)
    x = to_model_input(images, meta["mean"], meta["std"], device)
    return {layer: penultimate(model, x, batch_size, layer) for layer in layers}
