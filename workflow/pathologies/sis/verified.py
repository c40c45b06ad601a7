"""Verified exact backward selection: screen every candidate fast, decide in strict fp32.

Same results as :func:`pathologies.sis.engine.backward_selection`, bit for bit (orders and
values), for less work. Each step of each image:

1. every candidate is scored by a fast :class:`~pathologies.sis.screen.Screen`, as log-odds
   ``s = z_c - logsumexp(z_other)`` (monotone in f, and not saturating for confident models);
2. ``ref`` = the screen's best candidate; every candidate with ``s >= s_ref - bound`` could be the
   strict argmax, and is re-scored in the canonical strict fp32 path (the Scorer), as are the
   screen's best ``MIN_RESCORED`` (so that every step measures the screen's error on a few), and
   every candidate whose screen score is not finite (fp16 overflow);
3. a rounding/noise guard: a candidate left out is certainly below ``ref`` in log-odds, but its f
   could still round to the same float (saturated f near 1) or win through the tie-break noise;
   every such candidate is re-scored too, until none is left;
4. the usual rule picks among the re-scored: highest f (plus noise), lowest feature index on ties.

``bound`` (per image, in log-odds) is measured, not assumed: step 1 of an image re-scores all its
candidates and sets ``bound = safety * max |e_j - e_ref|`` with ``e = s - t`` the screen error
(``t``: strict log-odds), i.e. the spread of the screen error around the reference candidate (a
common offset cancels). Every later step measures the same spread on its re-scored candidates and
widens the bound with it; when a re-scored candidate lies outside the bound, the bound could not be
trusted, so the step is redone with every candidate of that image in strict fp32 (*fallback*) and
the bound widened. ``screen="auto"`` times every supported screen and the strict path on the first
step's candidates and keeps the cheapest (screen time + strict time of the fraction it would
re-score), or no screen at all when none pays off (estimated cost above ``PAYS_OFF`` of strict);
as the run goes on, :class:`Clock` drops an auto-chosen screen that turns out slower than strict.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .engine import (
    BackSelection,
    FeatureLayout,
    Masking,
    Scorer,
    TieBreakNoise,
    backward_selection,
    check_images,
    check_positive_int,
    classes_and_f,
    collect_selections,
    remaining_features,
    step_count,
)
from .screen import Screen, check_screen, supported_screens

SAFETY = 4.0  # bound = SAFETY x the largest screen-error spread seen
MIN_BOUND = 1e-6  # log-odds; a screen that happened to agree exactly still gets a margin
PAYS_OFF = 0.8  # auto keeps a screen only if its estimated cost is below this share of strict's
REVIEW_STEPS = 16  # screened steps between reviews of whether the screen still pays off
MIN_RESCORED = 2  # per image and step: the screen's best few are always re-scored, to measure its error
ROUNDING_ULPS = 16  # f of a ruled-out candidate may round up by this many ulps of the softmax dtype


@dataclass
class VerifiedStats:
    """What verified selection did: screen used, candidates screened / re-scored, fallbacks.

    One object may be passed to several calls (lockstep groups, SIS collection rounds) and sums them.
    ``timings``: seconds per candidate of each screen and of the strict path, as measured by auto;
    ``shares``: the share of the first step's candidates each screen would have re-scored;
    ``dropped``: the screens used before the current one (auto switches when one stops paying).
    """

    screen: str = "none"
    candidates: int = 0
    rescored: int = 0
    fallback_steps: int = 0
    calibration_steps: int = 0
    dropped: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    shares: dict = field(default_factory=dict)

    @property
    def rescored_fraction(self) -> float:
        """Share of candidates scored in strict fp32 (1.0 = no saving)."""
        return self.rescored / self.candidates if self.candidates else 0.0

    @property
    def history(self) -> str:
        """The screens used, in order (``bf16 -> fp16``), as extraction files record them."""
        return " -> ".join([*self.dropped, self.screen])

    def summary(self) -> str:
        """One line for logs and the benchmark."""
        return (f"screen={self.screen} rescored_fraction={self.rescored_fraction:.4f} "
                f"({self.rescored:,} of {self.candidates:,} candidates) fallback_steps={self.fallback_steps} "
                f"calibration_steps={self.calibration_steps}"
                + (f" (dropped before: {', '.join(self.dropped)})" if self.dropped else ""))


class Verifier:
    """The screen of one scorer on one device, chosen once (``auto``) and reused across calls."""

    def __init__(self, scorer, device: torch.device, screen: str = "auto", batch_size: int = 256,
                 safety: float = SAFETY):
        if screen != "auto":
            check_screen(screen, device)
        if not safety >= 1.0:
            raise UserError(f"verified SIS safety factor {safety!r} is invalid; use a number >= 1")
        self.scorer, self.device, self.batch_size, self.safety = scorer, device, batch_size, safety
        self.requested = screen
        self.screen: Screen | None = None if screen == "auto" else Screen(screen, scorer, device, batch_size)
        self.decided = screen != "auto"
        self.stats = VerifiedStats(screen=screen)
        self.clock = Clock()

    def switch(self, name: str | None) -> None:
        """Use screen ``name`` from now on (None: strict fp32 only); the current one goes to ``stats.dropped``."""
        self.stats.dropped.append(self.stats.screen)
        self.screen = Screen(name, self.scorer, self.device, self.batch_size) if name else None
        self.stats.screen = name or "none"


class Clock:
    """Keeps a screen only while it pays: screened steps' wall time against the alternatives'.

    Strict's time per candidate is auto's measurement on full batches when there is one (re-scoring
    runs small batches, whose per-candidate time would flatter the screen), else measured live on
    the re-scored candidates. Every ``REVIEW_STEPS`` screened steps (calibration steps excluded), the
    current screen's cost per candidate is compared with strict's and with each screen not tried
    yet, estimated as its measured time plus strict's time for its first-step share of re-scored
    candidates, scaled by how much the current screen's share has grown since its first step (later
    steps have more near-ties). The screen switches to the cheapest (strict fp32 when it is cheaper;
    another screen only when estimated below ``PAYS_OFF`` of the current cost). Results are the
    same whichever screen runs; the bound is measured anew after a switch.
    """

    def __init__(self):
        self.strict_seconds = self.strict_candidates = 0.0
        self.spent = self.candidates = self.rescored = 0.0
        self.steps = 0

    def strict(self, seconds: float, count: int) -> None:
        self.strict_seconds += seconds
        self.strict_candidates += count

    def step(self, seconds: float, count: int, rescored: int, verifier: Verifier) -> None:
        """Add one screened step (``count`` candidates, ``rescored`` of them in strict fp32); review when due."""
        self.spent += seconds
        self.candidates += count
        self.rescored += rescored
        self.steps += 1
        if self.steps < REVIEW_STEPS or not self.strict_candidates:
            return
        stats = verifier.stats
        strict_pc = stats.timings.get("strict") or self.strict_seconds / self.strict_candidates
        live_pc = self.spent / self.candidates
        options = {None: strict_pc} if strict_pc < live_pc else {}
        expected = stats.shares.get(stats.screen)
        drift = self.rescored / self.candidates / expected if expected else 1.0
        tried = {stats.screen, *stats.dropped}
        for name, share in stats.shares.items():
            cost = stats.timings[name] + strict_pc * min(1.0, share * drift)
            if name not in tried and cost < PAYS_OFF * live_pc:
                options[name] = cost
        if options:
            choice = min(options, key=options.get)
            if choice is None:
                print(f"verified SIS: screen {stats.screen} costs {self.spent:.1f} s where strict fp32 "
                      f"would take ~{strict_pc * self.candidates:.1f} s; dropping it", file=sys.stderr)
            else:
                print(f"verified SIS: screen {stats.screen} costs {self.spent:.1f} s (re-scoring "
                      f"{self.rescored / self.candidates:.0%}); screen {choice} would take "
                      f"~{options[choice] * self.candidates:.1f} s; switching to it", file=sys.stderr)
            verifier.switch(choice)
        self.spent = self.candidates = self.rescored = 0.0
        self.steps = 0


def log_odds(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """float64 (B,): ``z_c - logsumexp(z_j, j != c)`` of float32 logits (B, K)."""
    z = logits.double()
    own = z.gather(1, classes.view(-1, 1)).squeeze(1)
    others = z.scatter(1, classes.view(-1, 1), -math.inf)
    return own - others.logsumexp(dim=1)


@dataclass
class Selection:
    """The loop state of one verified backward selection (a batch of images in lockstep)."""

    scorer: Scorer
    verifier: Verifier
    layout: FeatureLayout
    current: torch.Tensor  # the images with the features removed so far
    classes: torch.Tensor  # int64 (n,): the class each image's f explains
    bound: torch.Tensor  # float64 (n,): per image, the screen-error bound in log-odds (nan: not calibrated yet)
    eps: float  # machine epsilon of the scorer's softmax dtype
    batch_size: int

    def candidates(self, rows: torch.Tensor, features: torch.Tensor):
        """Candidate images (one per (row, feature)) in batches of ``batch_size``: (begin, rows, batch)."""
        for begin in range(0, len(rows), self.batch_size):
            r, f = rows[begin:begin + self.batch_size], features[begin:begin + self.batch_size]
            batch = self.current[r]
            self.layout.mask_features(batch, torch.arange(len(r), device=batch.device), f)
            yield begin, r, batch

    def strict(self, rows: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical f (float64, as the Scorer computes it) and log-odds of the candidates."""
        device = self.current.device
        f = torch.empty(len(rows), dtype=torch.float64, device=device)
        t = torch.empty(len(rows), dtype=torch.float64, device=device)
        start = time.perf_counter()
        with torch.inference_mode():
            for begin, r, batch in self.candidates(rows, features):
                logits = self.scorer.logits(batch)
                f[begin:begin + len(r)] = self.scorer.probability_of_logits(logits, self.classes[r])
                t[begin:begin + len(r)] = log_odds(logits, self.classes[r])
        self.verifier.clock.strict(_synced(device, start), len(rows))
        return f, t

    def screened(self, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Log-odds of the candidates under the verifier's current screen."""
        s = torch.empty(len(rows), dtype=torch.float64, device=self.current.device)
        for begin, r, batch in self.candidates(rows, features):
            s[begin:begin + len(r)] = log_odds(self.verifier.screen.logits(batch), self.classes[r])
        return s


@dataclass
class Step:
    """One step's candidates (every remaining (image, feature) pair) and the strict f filled in for them."""

    image_of: torch.Tensor  # int64 (m,): image of each candidate
    feature_of: torch.Tensor  # int64 (m,): feature it removes (ascending per image)
    scores: torch.Tensor  # float64 (n, p): strict f where re-scored, -inf elsewhere
    jitter: torch.Tensor | None  # float64 (n, p): random tie-breaking noise, or None


@dataclass
class Screened:
    """The screen's log-odds of a step's candidates and, per image, its best candidate."""

    s: torch.Tensor  # float64 (m,): screen log-odds (-inf where it overflowed)
    s_ref: torch.Tensor  # float64 (n,): the best screen score per image
    ref: torch.Tensor  # int64 (n,): the feature with that score


def verified_backward_selection(scorer, images: torch.Tensor, *, classes=None, masking: Masking = Masking(),
                                masked=None, batch_size: int = 256, tie_break_seeds: Sequence[int] | None = None,
                                max_steps: int | None = None, progress: Callable[[int], object] | None = None,
                                verifier: Verifier | None = None, screen: str = "auto",
                                safety: float = SAFETY) -> list[BackSelection]:
    """Exact backward selection with a fast screen; equal to :func:`backward_selection`, bit for bit.

    Arguments as :func:`pathologies.sis.engine.backward_selection`, plus ``verifier`` (reuse one
    across calls: keeps the chosen screen and sums :class:`VerifiedStats`) or ``screen`` ("auto",
    or a name of :data:`pathologies.sis.screen.SCREENS`) and ``safety``. A scorer that is not a
    deterministic :class:`Scorer` (dropout on, or a plain function) runs the strict engine, and
    says so on stderr.
    """
    images = check_images(images)
    check_positive_int("batch_size", batch_size)
    if not isinstance(scorer, Scorer) or scorer.dropout:
        print("verified SIS: the scorer is not a deterministic model (dropout or a function); "
              "falling back to strict fp32 selection", file=sys.stderr)
        return backward_selection(scorer, images, classes=classes, masking=masking, masked=masked,
                                  batch_size=batch_size, tie_break_seeds=tie_break_seeds, max_steps=max_steps,
                                  progress=progress)
    device = images.device
    verifier = verifier or Verifier(scorer, device, screen, batch_size, safety)
    layout = FeatureLayout(masking, images)
    n, p = len(images), layout.count
    remaining = remaining_features(masked, n, p, device)
    classes, f_start = classes_and_f(scorer, layout.apply(images, remaining), classes)
    noise = TieBreakNoise(tie_break_seeds, n, p, device)
    counts = remaining.sum(dim=1)
    steps = step_count(counts, max_steps)
    order = torch.full((n, steps), -1, dtype=torch.long, device=device)
    values = torch.full((n, steps), math.nan, dtype=torch.float64, device=device)
    state = Selection(scorer, verifier, layout, layout.apply(images, remaining), classes,
                      torch.full((n,), math.nan, dtype=torch.float64, device=device),
                      torch.finfo(scorer.softmax_dtype).eps, batch_size)
    for index in range(steps):
        image_of, feature_of = remaining.nonzero(as_tuple=True)  # per image, ascending features
        active = (counts > index).nonzero(as_tuple=True)[0]
        step = Step(image_of, feature_of, torch.full((n, p), -math.inf, dtype=torch.float64, device=device),
                    noise.draw(n, active))
        score_step(state, step)
        decision = step.scores if step.jitter is None else step.scores + step.jitter
        choice = decision.argmax(dim=1)[active]  # argmax: first (lowest) index on ties
        order[active, index] = choice
        values[active, index] = step.scores[active, choice]
        remaining[active, choice] = False
        layout.mask_features(state.current, active, choice)
        if progress is not None:
            progress(len(image_of))

    return collect_selections(counts, order, values, f_start, classes, steps)


def score_step(state: Selection, step: Step) -> None:
    """Fill ``step.scores`` with strict f wherever a candidate could win: every candidate when no screen
    pays off, else those the screen cannot rule out (and keep reviewing the screen under ``auto``)."""
    verifier, stats = state.verifier, state.verifier.stats
    stats.candidates += len(step.image_of)
    if not verifier.decided:
        choose_screen(verifier, state, step)
    if verifier.screen is None:  # no screen pays off: the strict engine's step
        f, _ = state.strict(step.image_of, step.feature_of)
        step.scores[step.image_of, step.feature_of] = f
        stats.rescored += len(step.image_of)
        return
    start, calibrating = time.perf_counter(), bool(state.bound.isnan()[step.image_of].any())
    screen, rescored = verifier.screen, stats.rescored
    select_step(state, step)
    if not calibrating and verifier.requested == "auto":
        verifier.clock.step(_synced(state.current.device, start), len(step.image_of), stats.rescored - rescored,
                            verifier)
        if verifier.screen is not screen:  # switched: the bound belongs to the old screen
            state.bound.fill_(math.nan)


def select_step(state: Selection, step: Step) -> None:
    """Fill ``step.scores`` (n, p) with strict f for every candidate that could win this step (-inf elsewhere)."""
    verifier, stats, bound = state.verifier, state.verifier.stats, state.bound
    image_of, feature_of, scores = step.image_of, step.feature_of, step.scores
    n = len(scores)
    s = state.screened(image_of, feature_of)
    finite = s.isfinite()  # an overflowed screen score (fp16) is re-scored and measures nothing
    blind = torch.ones(n, dtype=torch.bool, device=s.device)  # images without any finite screen score
    blind[image_of[finite]] = False
    s = torch.where(finite, s, -math.inf)
    s_mat = torch.full_like(scores, -math.inf)
    s_mat[image_of, feature_of] = s
    s_ref, ref = s_mat.max(dim=1)
    screened = Screened(s, s_ref, ref)
    uncalibrated = bound.isnan()
    has_candidates = torch.zeros(n, dtype=torch.bool, device=s.device)
    has_candidates[image_of] = True
    stats.calibration_steps += int((uncalibrated & has_candidates).sum())
    # candidates to re-score: every one of an uncalibrated image, ref, and those within the bound
    within = uncalibrated[image_of] | ~finite | (s >= s_ref[image_of] - bound[image_of].nan_to_num(0.0))
    top = torch.zeros_like(uncalibrated.new_zeros(scores.shape))
    best_few = s_mat.topk(min(MIN_RESCORED, s_mat.shape[1]), dim=1)
    top.scatter_(1, best_few.indices, best_few.values > -math.inf)
    within |= top[image_of, feature_of] | (feature_of == ref[image_of])
    done = torch.zeros(len(image_of), dtype=torch.bool, device=s.device)
    t_all = torch.full_like(s, math.nan)
    todo = within
    while bool(todo.any()):
        idx = todo.nonzero(as_tuple=True)[0]
        f, t = state.strict(image_of[idx], feature_of[idx])
        scores[image_of[idx], feature_of[idx]] = f
        t_all[idx] = t
        done |= todo
        stats.rescored += len(idx)
        # screen-error spread around ref, per image, over what was re-scored
        e = s - t_all
        e_ref = torch.full((n,), math.nan, dtype=torch.float64, device=s.device)
        is_ref = done & (feature_of == ref[image_of])
        e_ref[image_of[is_ref]] = e[is_ref]
        spread = torch.zeros(n, dtype=torch.float64, device=s.device)
        measured = done & finite
        spread.scatter_reduce_(0, image_of[measured], (e - e_ref[image_of]).abs()[measured], reduce="amax")
        calibrated_now = uncalibrated.clone()
        violated = ~uncalibrated & (spread > bound)
        if bool(violated.any()):  # the bound failed: redo these images' step in strict fp32, widen it
            stats.fallback_steps += int(violated.sum())
            todo = violated[image_of] & ~done
            uncalibrated = uncalibrated | violated
            if bool(todo.any()):
                continue
        widened = (verifier.safety * spread).clamp(min=MIN_BOUND)
        widened = torch.where(calibrated_now | violated, widened, torch.fmax(bound, widened))
        bound.copy_(torch.where(blind, bound, widened))  # nothing measured: the bound stays (or uncalibrated)
        todo = guard(state, step, screened, t_all, done)


def guard(state: Selection, step: Step, screened: Screened, t_all: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Candidates not yet re-scored whose f could still tie or beat the best after rounding or noise.

    ``t_all``: strict log-odds of the re-scored candidates (``done``). A left-out candidate j has strict
    log-odds ``t_j <= t_ref - (s_ref - s_j - bound)``, so its f is at most the sigmoid of that, plus
    rounding of the softmax dtype.
    """
    image_of, feature_of, s = step.image_of, step.feature_of, screened.s
    n = len(step.scores)
    decision = step.scores if step.jitter is None else step.scores + step.jitter
    best = decision.max(dim=1).values  # over re-scored candidates (others are -inf)
    t_ref = torch.full((n,), math.nan, dtype=torch.float64, device=s.device)
    is_ref = feature_of == screened.ref[image_of]
    t_ref[image_of[is_ref]] = t_all[is_ref]
    gap = (screened.s_ref[image_of] - s - state.bound[image_of]).clamp(min=0.0)
    f_up = torch.sigmoid(t_ref[image_of] - gap) * (1 + ROUNDING_ULPS * state.eps)
    if step.jitter is not None:
        f_up = f_up + step.jitter[image_of, feature_of]
    return ~done & (f_up >= best[image_of])


def choose_screen(verifier: Verifier, state: Selection, step: Step) -> None:
    """``auto``: time each supported screen and the strict path on this step's candidates; keep the cheapest.

    The estimated cost of a screen is its time plus the strict time of the share it would re-score
    (within ``safety`` x its measured error spread of the best candidate, per image).
    """
    stats, device = verifier.stats, verifier.device
    verifier.decided = True
    if len(step.image_of) == 0:
        return
    limit = max(1, min(len(step.image_of), 4 * verifier.batch_size))  # a sample of whole batches is enough
    rows, features = step.image_of[:limit], step.feature_of[:limit]
    state.strict(rows, features)  # warm-up on the timed shapes: oneDNN builds its kernels per shape
    begin = time.perf_counter()
    _, t = state.strict(rows, features)
    strict_seconds = _synced(device, begin)
    stats.timings["strict"] = strict_seconds / limit
    best_name, best_cost = None, PAYS_OFF * strict_seconds  # margin: the estimate omits per-call overheads
    for name in supported_screens(device):
        screen = Screen(name, verifier.scorer, device, verifier.batch_size)
        with torch.inference_mode():
            for _, _, batch in state.candidates(rows, features):
                screen.logits(batch)  # warm-up on the timed shapes
            begin = time.perf_counter()
            s = torch.cat([log_odds(screen.logits(batch), state.classes[r])
                           for _, r, batch in state.candidates(rows, features)])
            seconds = _synced(device, begin)
        stats.timings[name] = seconds / limit
        if not bool(s.isfinite().all()):  # overflows already on the first step: not worth it
            continue
        e = s - t
        share = 0.0  # candidates within the bound (the re-scored share, floor excluded)
        for image in rows.unique():
            mine = rows == image
            ref = int(s[mine].argmax())
            spread = float((e[mine] - e[mine][ref]).abs().max())
            bound = max(verifier.safety * spread, MIN_BOUND)
            share += float((s[mine] >= s[mine][ref] - bound).sum())
        stats.shares[name] = share / limit
        cost = seconds + strict_seconds * share / limit
        if cost < best_cost:
            best_name, best_cost = name, cost
    if best_name is not None:
        verifier.screen = Screen(best_name, verifier.scorer, device, verifier.batch_size)
    stats.screen = best_name or "none"


def _synced(device: torch.device, begin: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - begin
