"""Batched Gradient BackSelect (Carter et al. 2021, supplement S1, Algorithm 2).

Instead of trying every remaining feature, each iteration takes the gradient of f with respect
to the mask M (1 = masked) at the current input ``x * (1 - M) + masked_value * M`` and masks the
``block`` remaining features with the LARGEST gradient: those whose masking raises f most, or
lowers it least. The result is a :class:`pathologies.sis.engine.BackSelection` with ``block`` features
per step, so :func:`pathologies.sis.engine.find_sis` (Algorithm 3: pop blocks until f >= tau),
:func:`pathologies.sis.engine.sufficient_subsets` (verified SIS) and
:func:`pathologies.sis.engine.sis_collection` (Algorithm 1) work on it unchanged. ``p / block``
gradient evaluations per image instead of p(p+1)/2 forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .engine import (
    BackSelection,
    FeatureLayout,
    Masking,
    TieBreakNoise,
    check_images,
    check_positive_int,
    classes_and_f,
    evaluate,
    remaining_features,
)


def gradient_backward_selection(scorer, images: torch.Tensor, *, block: int = 1, classes=None,
                                masking: Masking = Masking(), masked=None, batch_size: int = 64,
                                tie_break_seeds: Sequence[int] | None = None,
                                progress: Callable[[int], object] | None = None) -> list[BackSelection]:
    """Batched Gradient BackSelect of N images in lockstep, ``block`` features per step.

    Arguments as for :func:`pathologies.sis.engine.backward_selection`; ``batch_size`` bounds the
    images per forward/backward pass. Ties in the gradient go to the lowest feature index (or
    to seeded noise). ``values[j]`` is f after step j, read from the next step's forward pass;
    the last value is f of the fully masked input. ``progress`` receives the gradient passes of
    each step. Needs autograd: do not call it under ``torch.inference_mode``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Batched Gradient SIS needs autograd; call it outside torch.inference_mode")
    images = check_images(images)
    check_positive_int("block", block)
    check_positive_int("batch_size", batch_size)
    layout = FeatureLayout(masking, images)
    n, p, device = len(images), layout.count, images.device
    remaining = remaining_features(masked, n, p, device)
    classes, f_start = classes_and_f(scorer, layout.apply(images, remaining), classes)
    noise = TieBreakNoise(tie_break_seeds, n, p, device)

    counts = remaining.sum(dim=1)
    steps = (counts + block - 1) // block
    total_steps = int(steps.max()) if n else 0
    order = torch.full((n, p), -1, dtype=torch.long, device=device)
    removed = torch.zeros(n, dtype=torch.long, device=device)
    f_before = torch.full((n, total_steps), math.nan, dtype=torch.float64, device=device)
    width = min(block, p)
    slots = torch.arange(width, device=device)
    for step in range(total_steps):
        active = (steps > step).nonzero(as_tuple=True)[0]
        ranking = torch.full((n, p), -math.inf, dtype=torch.float64, device=device)
        for begin in range(0, len(active), batch_size):
            rows = active[begin:begin + batch_size]
            f, grad = _f_and_mask_gradient(scorer, layout, images[rows], remaining[rows], classes[rows])
            f_before[rows, step] = f
            ranking[rows] = grad.double().masked_fill(~remaining[rows], -math.inf)
        ranking = noise.add(ranking, active)
        best = torch.sort(ranking[active], dim=1, descending=True, stable=True).indices[:, :width]
        take = torch.clamp(counts[active] - removed[active], max=block)
        chosen = slots < take[:, None]
        rows = active[:, None].expand(-1, width)[chosen]
        features = best[chosen]
        order[rows, (removed[active][:, None] + slots)[chosen]] = features
        remaining[rows, features] = False
        removed[active] += take
        if progress is not None:
            progress(len(active))

    nothing_kept = torch.zeros(n, p, dtype=torch.bool, device=device)
    f_all_masked = evaluate(scorer, layout, images, nothing_kept, classes, batch_size)
    counts, steps, classes, f_start = counts.tolist(), steps.tolist(), classes.tolist(), f_start.tolist()
    order, f_before, f_all_masked = order.cpu().numpy(), f_before.cpu().numpy(), f_all_masked.cpu().numpy()
    selections = []
    for i in range(n):
        values = list(f_before[i, 1:steps[i]]) + ([float(f_all_masked[i])] if steps[i] else [])
        selections.append(BackSelection(
            class_index=classes[i], f_start=f_start[i], order=order[i, :counts[i]].copy(),
            values=np.asarray(values, dtype=np.float64), remaining=counts[i],
            block=block, evaluations=steps[i] + 1,
        ))
    return selections


def _f_and_mask_gradient(scorer, layout: FeatureLayout, images: torch.Tensor, remaining: torch.Tensor,
                         classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f (B,) at the current mask and its gradient with respect to the feature mask (B, p)."""
    mask = (~remaining).to(images.dtype).requires_grad_(True)
    with torch.enable_grad():
        pixel_mask = mask[:, layout.feature_of_pixel].view(-1, 1, layout.height, layout.width)
        f = scorer.probability(images * (1 - pixel_mask) + layout.baseline * pixel_mask, classes)
        (grad,) = torch.autograd.grad(f.sum(), mask)
    return f.detach(), grad
