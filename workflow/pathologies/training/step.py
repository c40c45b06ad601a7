"""One optimizer step on one batch, split over data-parallel ranks and accumulated micro-batches.

The loss of a step is the mean cross-entropy over the whole (global) batch, whatever the number of
ranks and micro-batches: each micro-batch contributes its summed loss divided by the global batch
size (times the world size, since DDP averages the ranks' gradients). Only batch-norm layers see
the smaller batches (their statistics are computed per micro-batch and per rank).
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F

from .distributed import World
from .precision import Precision


def micro_slices(n: int, parts: int) -> list[slice]:
    """``n`` rows cut into at most ``parts`` contiguous non-empty slices (sizes differ by at most one)."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (i < extra))
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                   total: int, precision: Precision, world: World, accumulation: int = 1
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on this rank's share ``xb, yb`` of a batch of ``total`` images; returns (summed loss, correct).

    With one rank and one micro-batch this is the plain loop (mean loss, backward, step).
    """
    optimizer.zero_grad(set_to_none=True)
    plain = world.size == 1 and accumulation == 1
    pieces = micro_slices(len(xb), accumulation)
    loss_sum = torch.zeros((), device=xb.device)
    correct = torch.zeros((), dtype=torch.long, device=xb.device)
    if not pieces:  # a last batch smaller than the world: join the gradient average with zero
        with precision.autocast():
            dummy = model(precision.prepare_input(torch.zeros((1, *xb.shape[1:]), dtype=xb.dtype, device=xb.device)))
        precision.backward(dummy.float().sum() * 0)
    for i, part in enumerate(pieces):
        last = i == len(pieces) - 1
        sync = contextlib.nullcontext() if last or world.size == 1 else model.no_sync()
        with sync:
            with precision.autocast():
                logits = model(precision.prepare_input(xb[part]))
            if plain:
                loss = F.cross_entropy(logits.float(), yb[part])
                summed = loss.detach() * logits.shape[0]
            else:
                summed = F.cross_entropy(logits.float(), yb[part], reduction="sum")
                loss = summed * (world.size / total)
                summed = summed.detach()
            precision.backward(loss)
        loss_sum += summed
        correct += (logits.argmax(1) == yb[part]).sum()
    precision.step(optimizer)
    return loss_sum, correct
