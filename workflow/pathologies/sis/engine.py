"""Sufficient Input Subsets (Carter et al. 2019): exact backward selection, FindSIS, SIS collections.

A *feature* is a pixel with all its channels (or a ``patch`` x ``patch`` block of pixels); masking
a feature sets it to the masked value (default 0, the dataset mean colour after normalisation).
``f(x)`` is the softmax probability of one class per image: the class predicted on the full
image unless given. Only images with ``f(x) >= tau`` have an SIS.

Backward selection removes, one at a time, the feature whose masking keeps ``f`` highest (ties:
lowest flat feature index, or random with seeded Gaussian noise of variance 1e-12 added to the
scores, supplement S4.8) and records the removal order and ``f`` after every removal. FindSIS at
any threshold is a suffix of that order, so one backward selection serves every threshold.

Many images run in *lockstep*: at every step the candidates of all images (each image with one
more remaining feature masked) form one flat list evaluated in batches of ``batch_size``, built on
the images' device. Memory is bounded by the batch size; nothing of size p x p is built. The
gradient approximation (Batched Gradient SIS) lives in :mod:`pathologies.sis.gradient` and returns
the same :class:`BackSelection` records, so :func:`find_sis` and :func:`sis_collection` serve both.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.registry import PixelDropout

TIE_BREAK_STD = 1e-6  # standard deviation of the tie-breaking noise (variance 1e-12, supplement S4.8)


# ---------------------------------------------------------------------------------------------
# f: the scorers


def use_strict_fp32(device: torch.device) -> None:
    """Turn off TF32 on CUDA: its 10-bit mantissa reorders near-ties just as bf16 does."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


# Smallest batch a CPU scores at: below it oneDNN takes other kernels (seen: batches 1-2 for ResNet20 and
# 1-15 for ResNet18 / VGG16-BN on an Intel Xeon with AMX, batch 1 on an AMD EPYC), whose bits differ.
CPU_MIN_BATCH = 16


def padded_size(n: int, device_type: str) -> int:
    """The batch size ``n`` candidates are scored at: at least :data:`CPU_MIN_BATCH` on CPUs; elsewhere a
    lone candidate runs padded to two (unmeasured on GPUs: kept as the CPU rule was before)."""
    if n == 0:
        return 0
    return max(n, CPU_MIN_BATCH if device_type == "cpu" else 2)


class Scorer:
    """f(x, classes): softmax probability of ``classes`` under one model or an ensemble.

    ``models``: one ``nn.Module`` or several (ensemble: mean of their logits), each mapping
    normalised float images (B, C, H, W) to logits (B, K). Logits are divided by
    ``temperature``. Models are put in eval mode; ``dropout=True`` keeps their dropout layers
    (including input dropout) active, drawing from torch's global generator. ``amp_dtype`` (e.g.
    ``torch.bfloat16``) runs the models under autocast; the default fp32 keeps near-ties in order.
    ``input_shape`` (C, H, W), when given, is the only image shape accepted.
    ``softmax_dtype``: float64 (default) keeps confident predictions from all rounding to 1.0,
    which would turn real differences into ties; float32 reproduces the reference code's ties.
    Small batches run padded (:func:`padded_size`): oneDNN picks its convolution kernel by batch size on
    CPUs, and the same candidate must score the same bits whichever batch it lands in (verified SIS relies
    on it).
    """

    def __init__(self, models: nn.Module | Sequence[nn.Module], *, temperature: float = 1.0,
                 dropout: bool = False, amp_dtype: torch.dtype | None = None,
                 input_shape: Sequence[int] | None = None, softmax_dtype: torch.dtype = torch.float64):
        self.models = [models] if isinstance(models, nn.Module) else list(models)
        if not self.models or not all(isinstance(m, nn.Module) for m in self.models):
            raise UserError(f"Scorer needs one or more torch models, got {models!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
            raise UserError(f"temperature={temperature!r} is invalid; use a positive number (1 = unscaled)")
        self.temperature = float(temperature)
        self.amp_dtype = amp_dtype
        self.softmax_dtype = softmax_dtype
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self.dropout = bool(dropout)
        for model in self.models:
            model.eval()
            if dropout:
                for module in model.modules():
                    if isinstance(module, (nn.modules.dropout._DropoutNd, PixelDropout)):
                        module.train()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble-mean, temperature-scaled logits (B, K) in float32 (differentiable)."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise UserError(
                f"images of shape {tuple(x.shape[1:])} (C, H, W) do not fit the model, which takes "
                f"{self.input_shape}; use images of the size and channel count it was trained on"
            )
        autocast = (torch.autocast(x.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            total = None
            n = len(x)
            padded = padded_size(n, x.device.type)
            x = torch.cat([x, x[-1:].expand(padded - n, *x.shape[1:])]) if padded > n else x
            for model in self.models:
                out = model(x).float()[:n]
                total = out if total is None else total + out
        if total.ndim != 2:
            raise UserError(f"the model returned shape {tuple(total.shape)}, not logits (batch, classes)")
        return total / (len(self.models) * self.temperature)

    def probability(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """f as float64 (B,): the probability of ``classes`` (differentiable; no mode switch)."""
        return self.probability_of_logits(self.logits(x), classes)

    def probability_of_logits(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """f as float64 (B,) from :meth:`logits` (the same bits as :meth:`probability`)."""
        probs = logits.to(self.softmax_dtype).softmax(dim=1)
        return probs.gather(1, classes.view(-1, 1)).squeeze(1).double()

    def __call__(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """f as float64 (B,) under ``torch.inference_mode``."""
        with torch.inference_mode():
            return self.probability(x, classes)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted classes (B,) and their probability f (B,) under ``torch.inference_mode``."""
        with torch.inference_mode():
            probs = self.logits(x).to(self.softmax_dtype).softmax(dim=1)
            f, classes = probs.max(dim=1)  # ties: lowest class index
            return classes, f.double()

    def num_classes(self, x: torch.Tensor) -> int:
        """Number of classes K, from one forward pass of the first image."""
        with torch.inference_mode():
            return int(self.logits(x[:1]).shape[1])


class FunctionScorer:
    """f given directly as a differentiable callable ``fn(x) -> (B,)``; classes are ignored.

    For black-box functions and hand-checkable tests (sum, L2 norm, linear maps). ``predict``
    reports class 0 for every image.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def probability(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.fn(x).double().reshape(len(x))

    def __call__(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.probability(x, classes)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self(x, torch.zeros(len(x), dtype=torch.long, device=x.device))
        return torch.zeros(len(x), dtype=torch.long, device=x.device), f

    def num_classes(self, x: torch.Tensor) -> int:
        return 1


# ---------------------------------------------------------------------------------------------
# Features and masking


@dataclass(frozen=True)
class Masking:
    """What a feature is and what masking it means.

    ``patch``: features are ``patch`` x ``patch`` pixel blocks in row-major order (edge blocks
    are cut off at the image border); 1 = single pixels. ``value``: the masked value, one number
    or one per channel, in the normalised input space (0 = the dataset mean colour).
    """

    patch: int = 1
    value: float | tuple[float, ...] = 0.0

    def __post_init__(self):
        if isinstance(self.patch, bool) or not isinstance(self.patch, numbers.Integral) or self.patch < 1:
            raise UserError(f"SIS patch size {self.patch!r} is invalid; use an integer >= 1 (1 = pixels)")

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Shape (rows, columns) of the feature grid for an image of ``height`` x ``width``."""
        return math.ceil(height / self.patch), math.ceil(width / self.patch)

    def feature_count(self, height: int, width: int) -> int:
        """Number of features p of an image of ``height`` x ``width``."""
        rows, cols = self.grid(height, width)
        return rows * cols

    def feature_of_pixel(self, height: int, width: int) -> np.ndarray:
        """Feature index of every pixel, int64 (H, W)."""
        rows = np.arange(height) // self.patch
        cols = np.arange(width) // self.patch
        return rows[:, None] * self.grid(height, width)[1] + cols[None, :]

    def pixel_mask(self, features: np.ndarray, height: int, width: int) -> np.ndarray:
        """Boolean (H, W) mask of the pixels covered by the feature indices ``features``."""
        chosen = np.zeros(self.feature_count(height, width), dtype=bool)
        chosen[np.asarray(features, dtype=np.int64)] = True
        return chosen[self.feature_of_pixel(height, width)]

    def feature_map(self, per_feature: np.ndarray, height: int, width: int) -> np.ndarray:
        """Spread one value per feature (p,) onto the pixels: (H, W), e.g. a removal-step map."""
        return np.asarray(per_feature)[self.feature_of_pixel(height, width)]


class FeatureLayout:
    """A :class:`Masking` bound to one image shape and device: index tables and the masked image.

    ``count``: features p; ``feature_of_pixel`` (H*W,); ``pixels`` (p, patch*patch) pixel
    indices per feature; ``baseline`` (1, C, H, W): the fully masked image.
    """

    def __init__(self, masking: Masking, images: torch.Tensor):
        _, channels, height, width = images.shape
        self.channels, self.height, self.width = channels, height, width
        self.count = masking.feature_count(height, width)
        device = images.device
        of_pixel = torch.as_tensor(masking.feature_of_pixel(height, width).ravel(), device=device)
        self.feature_of_pixel = of_pixel  # (H*W,)
        # pixels of each feature, (p, patch*patch); cut-off edge features repeat their first pixel
        order = torch.argsort(of_pixel, stable=True)
        sizes = torch.bincount(of_pixel, minlength=self.count)
        starts = torch.cumsum(sizes, 0) - sizes
        slots = torch.arange(masking.patch**2, device=device)
        self.pixels = order[starts[:, None] + torch.where(slots < sizes[:, None], slots, 0)]
        value = torch.as_tensor(masking.value, dtype=images.dtype, device=device).flatten()
        if value.numel() not in (1, channels):
            raise UserError(
                f"SIS mask value {masking.value!r} has {value.numel()} entries for {channels}-channel "
                "images; give one number or one per channel"
            )
        self.baseline = value.expand(channels).reshape(1, channels, 1, 1).expand(1, channels, height, width)
        self.baseline_by_pixel = value.expand(channels).expand(height * width, channels)  # (H*W, C)

    def apply(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Copy of ``images`` with every feature where ``keep`` (N, p) is False masked."""
        keep_pixels = keep[:, self.feature_of_pixel].view(-1, 1, self.height, self.width)
        return torch.where(keep_pixels, images, self.baseline)

    def mask_features(self, batch: torch.Tensor, rows: torch.Tensor, features: torch.Tensor) -> None:
        """In place: mask feature ``features[i]`` of image ``batch[rows[i]]`` for every i."""
        pixels = self.pixels[features]  # (n, patch*patch)
        flat = batch.view(batch.shape[0], self.channels, -1)
        flat[rows[:, None], :, pixels] = self.baseline_by_pixel[pixels]


# ---------------------------------------------------------------------------------------------
# Backward selection


@dataclass(frozen=True)
class BackSelection:
    """Backward selection on one image.

    ``order``: feature indices in removal order (int64). Step ``j`` removes the ``block``
    features ``order[j*block:(j+1)*block]`` and ``values[j]`` (float64) is f after that step; the
    last value is f of the input with every feature masked. ``f_start``: f before any removal.
    ``remaining``: features present before the first step (p, minus any masked beforehand).
    ``evaluations``: model evaluations spent (candidates for exact selection; gradient passes
    plus one for the fully masked input for Batched Gradient).
    """

    class_index: int
    f_start: float
    order: np.ndarray
    values: np.ndarray
    remaining: int
    block: int = 1
    evaluations: int = 0

    @property
    def complete(self) -> bool:
        """True when every remaining feature was removed (False after ``max_steps``)."""
        return len(self.order) == self.remaining

    def removal_steps(self, feature_count: int) -> np.ndarray:
        """Step at which each feature was removed, int64 (feature_count,); -1: not removed here.

        For Batched Gradient this is the block index (the paper's removal-order heatmaps);
        spread it onto pixels with :meth:`Masking.feature_map`.
        """
        steps = np.full(feature_count, -1, dtype=np.int64)
        steps[self.order] = np.arange(len(self.order)) // self.block
        return steps


def backward_selection(scorer, images: torch.Tensor, *, classes=None, masking: Masking = Masking(),
                       masked=None, batch_size: int = 256, tie_break_seeds: Sequence[int] | None = None,
                       max_steps: int | None = None,
                       progress: Callable[[int], object] | None = None) -> list[BackSelection]:
    """Exact backward selection (Carter et al. 2019) of N images in lockstep.

    ``images``: normalised float (N, C, H, W) on the models' device. ``classes``: the class
    explained per image (default: the class predicted on the input). ``masked``: bool (N, p),
    features masked before the start (for SIS collections). ``tie_break_seeds``: None breaks
    ties by lowest feature index; otherwise one seed per image for noise of variance 1e-12 added
    to its scores (drawn per image, so results do not depend on which images share a batch).
    ``max_steps`` stops early (for benchmarks; the result then is not ``complete``).
    ``progress`` (e.g. a tqdm bar's ``update``) receives the evaluations of each step.
    An image with r features costs r(r+1)/2 candidate evaluations.
    """
    images = check_images(images)
    check_positive_int("batch_size", batch_size)
    layout = FeatureLayout(masking, images)
    n, device = len(images), images.device
    remaining = remaining_features(masked, n, layout.count, device)
    classes, f_start = classes_and_f(scorer, layout.apply(images, remaining), classes)
    noise = TieBreakNoise(tie_break_seeds, n, layout.count, device)

    counts = remaining.sum(dim=1)
    steps = step_count(counts, max_steps)
    order = torch.full((n, steps), -1, dtype=torch.long, device=device)
    values = torch.full((n, steps), math.nan, dtype=torch.float64, device=device)
    current = layout.apply(images, remaining)
    for step in range(steps):
        image_of, feature_of = remaining.nonzero(as_tuple=True)  # per image, ascending features
        scores = torch.full((n, layout.count), -math.inf, dtype=torch.float64, device=device)
        for begin in range(0, len(image_of), batch_size):
            rows = image_of[begin:begin + batch_size]
            features = feature_of[begin:begin + batch_size]
            candidates = current[rows]
            layout.mask_features(candidates, torch.arange(len(rows), device=device), features)
            scores[rows, features] = scorer(candidates, classes[rows])
        active = (counts > step).nonzero(as_tuple=True)[0]
        choice = noise.add(scores, active).argmax(dim=1)[active]  # argmax: first (lowest) index on ties
        order[active, step] = choice
        values[active, step] = scores[active, choice]
        remaining[active, choice] = False
        layout.mask_features(current, active, choice)
        if progress is not None:
            progress(len(image_of))

    return collect_selections(counts, order, values, f_start, classes, steps)


def collect_selections(counts: torch.Tensor, order: torch.Tensor, values: torch.Tensor, f_start: torch.Tensor,
                       classes: torch.Tensor, steps: int) -> list[BackSelection]:
    """One :class:`BackSelection` per image from the lockstep tensors (``counts``: features per image;
    ``order``/``values``: (n, steps) removal order and f after each removal)."""
    counts, order, values = counts.tolist(), order.cpu().numpy(), values.cpu().numpy()
    f_start, classes = f_start.tolist(), classes.tolist()
    selections = []
    for i in range(len(counts)):
        done = min(counts[i], steps)
        selections.append(BackSelection(
            class_index=classes[i], f_start=f_start[i], order=order[i, :done].copy(),
            values=values[i, :done].copy(), remaining=counts[i],
            evaluations=done * counts[i] - done * (done - 1) // 2,
        ))
    return selections


class TieBreakNoise:
    """Per-image Gaussian noise (std 1e-6) for random tie-breaking; a no-op without seeds.

    Image i draws p values per step from its own generator seeded with ``seeds[i]``, so its
    noise does not depend on which other images share the lockstep batch.
    """

    def __init__(self, seeds: Sequence[int] | None, n: int, count: int, device: torch.device):
        self.count, self.device = count, device
        self.generators = None
        if seeds is not None:
            seeds = list(seeds)
            if len(seeds) != n:
                raise UserError(f"got {len(seeds)} tie-break seeds for {n} images; give one per image")
            self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def add(self, scores: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """``scores`` (N, p) plus fresh noise on the rows ``active`` (returns ``scores`` without seeds)."""
        noise = self.draw(len(scores), active)
        return scores if noise is None else scores + noise

    def draw(self, n: int, active: torch.Tensor) -> torch.Tensor | None:
        """Fresh scaled noise (n, p), zero outside the rows ``active``; None without seeds."""
        if self.generators is None:
            return None
        noise = torch.zeros((n, self.count), dtype=torch.float64)
        for row in active.tolist():
            noise[row] = torch.randn(self.count, generator=self.generators[row], dtype=torch.float64)
        return TIE_BREAK_STD * noise.to(self.device)


# ---------------------------------------------------------------------------------------------
# FindSIS and SIS collections


def find_sis(selection: BackSelection, threshold: float) -> np.ndarray | None:
    """FindSIS from a stored backward selection: the features of the SIS at ``threshold``.

    The SIS is the shortest suffix of the removal order (whole steps) on which f >= threshold:
    walk back from the end until f >= threshold. Returns None when f_start < threshold (no SIS)
    and an empty array when f of the fully masked input already reaches the threshold. A larger
    threshold gives a superset.
    """
    check_threshold(threshold)
    if selection.f_start < threshold:
        return None
    if not selection.complete:
        raise ValueError("FindSIS needs a complete backward selection (this one stopped at max_steps)")
    return selection.order[_suffix_start(selection, threshold):]


def _suffix_start(selection: BackSelection, threshold: float) -> int:
    above = np.flatnonzero(selection.values >= threshold)
    return int(above[-1] + 1) * selection.block if above.size else 0


def sufficient_subsets(scorer, images: torch.Tensor, selections: Sequence[BackSelection],
                       threshold: float, *, masking: Masking = Masking(),
                       batch_size: int = 256) -> list[np.ndarray | None]:
    """FindSIS for every image, each SIS verified: f(only the SIS kept) >= threshold.

    Should a stored value not reproduce (numerical noise across batch compositions), the SIS is
    extended step by step along the order until it verifies. None: no SIS (f_start < threshold).
    """
    images = check_images(images)
    check_threshold(threshold)
    layout = FeatureLayout(masking, images)
    starts = {i: _suffix_start(s, threshold) for i, s in enumerate(selections)
              if find_sis(s, threshold) is not None}
    pending = sorted(starts)
    while pending:
        keep = torch.zeros(len(pending), layout.count, dtype=torch.bool, device=images.device)
        for row, i in enumerate(pending):
            keep[row, torch.as_tensor(selections[i].order[starts[i]:], device=images.device)] = True
        classes = torch.tensor([selections[i].class_index for i in pending], device=images.device)
        f = evaluate(scorer, layout, images[pending], keep, classes, batch_size)
        failed = [i for i, value in zip(pending, f.tolist(), strict=True) if value < threshold]
        for i in failed:
            starts[i] -= selections[i].block
            if starts[i] < 0:
                del starts[i]  # not even all features verify: f_start itself was borderline
        pending = [i for i in failed if i in starts]
    return [selections[i].order[max(starts[i], 0):] if i in starts else None for i in range(len(selections))]


def sis_collection(scorer, images: torch.Tensor, threshold: float, *, classes=None,
                   masking: Masking = Masking(), batch_size: int = 256,
                   tie_break_seeds: Sequence[int] | None = None,
                   select: Callable[..., list[BackSelection]] = backward_selection) -> list[list[np.ndarray]]:
    """SIScollection: disjoint SIS per image, each found with the earlier ones masked.

    Rounds repeat (in lockstep over the images still going) while f on what is left stays
    >= threshold: backward selection on the remaining features, FindSIS (verified), then mask the
    new SIS. An empty SIS (the fully masked input is already sufficient) ends an image's
    collection, as nothing further can be removed. Images with f < threshold get an empty list.
    ``select``: :func:`backward_selection` (exact) or e.g.
    ``functools.partial(pathologies.sis.gradient.gradient_backward_selection, block=k)``.
    With ``tie_break_seeds``, round j of image i draws from the seed pair (seeds[i], j).
    """
    images = check_images(images)
    check_threshold(threshold)
    layout = FeatureLayout(masking, images)
    n = len(images)
    if tie_break_seeds is not None and len(tie_break_seeds) != n:
        raise UserError(f"got {len(tie_break_seeds)} tie-break seeds for {n} images; give one per image")
    classes, _ = classes_and_f(scorer, images, classes)
    masked = torch.zeros(n, layout.count, dtype=torch.bool, device=images.device)
    collections: list[list[np.ndarray]] = [[] for _ in range(n)]
    going = list(range(n))
    for round_index in range(layout.count + 1):
        if not going:
            break
        idx = torch.as_tensor(going, device=images.device)
        f = evaluate(scorer, layout, images[idx], ~masked[idx], classes[idx], batch_size)
        going = [i for i, value in zip(going, f.tolist(), strict=True)
                 if value >= threshold and not bool(masked[i].all())]
        if not going:
            break
        idx = torch.as_tensor(going, device=images.device)
        seeds = None if tie_break_seeds is None else [
            int(np.random.SeedSequence([int(tie_break_seeds[i]), round_index]).generate_state(1)[0])
            for i in going]
        selections = select(scorer, images[idx], classes=classes[idx], masking=masking,
                            masked=masked[idx], batch_size=batch_size, tie_break_seeds=seeds)
        found = sufficient_subsets(scorer, images[idx], selections, threshold, masking=masking,
                                   batch_size=batch_size)
        still_going = []
        for i, sis in zip(going, found, strict=True):
            if sis is None:
                continue
            collections[i].append(sis)
            if len(sis):
                masked[i, torch.as_tensor(sis, device=images.device)] = True
                still_going.append(i)
        going = still_going
    return collections


# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by pathologies.sis.gradient)


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise UserError unless it lies in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < threshold <= 1.0:
        raise UserError(f"SIS threshold {threshold!r} is outside (0, 1]; use a probability such as 0.99")
    return float(threshold)


def check_images(images) -> torch.Tensor:
    """Return ``images`` if it is a float tensor (N, C, H, W); raise UserError otherwise."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise UserError(
            f"SIS expects normalised float images (N, C, H, W) as a torch tensor, got {shape}; "
            "convert with pathologies.data.layout.to_model_input"
        )
    return images


def check_positive_int(name: str, value: int) -> None:
    """Raise UserError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UserError(f"{name}={value!r} is invalid; use an integer >= 1")


def remaining_features(masked, n: int, count: int, device: torch.device) -> torch.Tensor:
    """Bool (n, count): True where a feature is present (not in ``masked``, which may be None)."""
    if masked is None:
        return torch.ones(n, count, dtype=torch.bool, device=device)
    masked = torch.as_tensor(masked, device=device)
    if masked.shape != (n, count) or masked.dtype != torch.bool:
        raise UserError(f"masked features must be a bool array of shape {(n, count)}, got "
                        f"{masked.dtype} {tuple(masked.shape)}")
    return ~masked


def step_count(counts: torch.Tensor, max_steps: int | None) -> int:
    """Removal steps of a selection: the most features any image has, at most ``max_steps``."""
    steps = int(counts.max()) if len(counts) else 0
    return steps if max_steps is None else min(steps, max_steps)


def classes_and_f(scorer, images: torch.Tensor, classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The explained classes (given, or predicted) and f on ``images``; model errors -> UserError."""
    try:
        if classes is None:
            classes, f = scorer.predict(images)
        else:
            classes = torch.as_tensor(classes, dtype=torch.long, device=images.device).reshape(-1)
            if len(classes) != len(images):
                raise UserError(f"got {len(classes)} classes for {len(images)} images; give one per image")
            num_classes = scorer.num_classes(images)
            if len(classes) and not (0 <= int(classes.min()) and int(classes.max()) < num_classes):
                raise UserError(f"classes {classes.tolist()} out of range for a model with {num_classes} classes")
            f = scorer(images, classes)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"the model cannot take images of shape {tuple(images.shape)} (N, C, H, W) ({reason}); "
            "use images of the size and channel count it was built for"
        ) from None
    return classes.clone(), f.clone()


def evaluate(scorer, layout: FeatureLayout, images: torch.Tensor, keep: torch.Tensor, classes: torch.Tensor,
             batch_size: int) -> torch.Tensor:
    """f (float64) of each image with only the features in ``keep`` (N, p) present, in batches."""
    parts = [scorer(layout.apply(images[b:b + batch_size], keep[b:b + batch_size]), classes[b:b + batch_size])
             for b in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=images.device)
