"""Verified exact SIS against strict exact SIS, on a model trained to real decisions, in the same run.

    python -m pathologies.bench sis --precision verified [--images 8] [--lockstep 4] [--patch 4] [--screen auto]
        [--no-tune-batch-size]

Trains ``--arch`` (ResNet20) for ``--epochs`` epochs on ``--train-images`` of scikit-learn's bundled
digits, upsampled to ``--image-size`` (32) and copied to 3 channels (a minute on a CPU), then runs,
group by group of ``--lockstep`` images and alternating, the strict engine and the verified engine
(one :class:`Verifier` for the whole run, as an extraction shard uses it) on the same correctly
classified test images. Prints the screen chosen,
the fraction re-scored, ``orders_identical=<k>/<n>`` (orders *and* values equal bit for bit) and as
last line ``sis_verified_speedup=<wall strict / wall verified>``; the verified wall includes the
screen choice and the screen's set-up.

The strict engine runs at the declared ``--batch-size``, as extraction did before the batch size was
measured; the verified engine runs as an extraction job now does: at the batch size
:mod:`pathologies.sis.batch_size` measures for the model (measured once per model and device and
cached, as jobs do, so its seconds are printed but not counted in the verified wall). A third arm, the
strict engine at that measured size, shows how much of the speed-up the batch size alone gives
(``strict_tuned_speedup``); ``--no-tune-batch-size`` leaves it out and runs the verified engine at the
declared size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..models.registry import build_model
from ..sis.batch_size import cache_key, candidate_sample, tuned_batch_size
from ..sis.engine import Masking, Scorer, backward_selection, use_strict_fp32
from ..sis.verified import Verifier, verified_backward_selection


def digits_tensors(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 1,797 digits as normalised (N, 3, S, S) float images and labels (bundled: no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = ((x - x.mean()) / x.std()).expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(digits.target, dtype=torch.long)


def train(arch: str, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """A few epochs of Adam on (x, y); returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, 10, in_channels=x.shape[1], image_size=x.shape[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), 64):
            idx = order[begin:begin + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def run(args: argparse.Namespace) -> int:
    """The benchmark; prints its lines and returns 0."""
    torch.set_num_threads(args.threads) if args.threads else None
    device = torch.device(args.device)
    use_strict_fp32(device)
    x, y = digits_tensors(args.image_size)
    cut = len(x) * 4 // 5
    begin = time.perf_counter()
    model = train(args.arch, x[:args.train_images], y[:args.train_images], args.epochs, args.seed).to(device)
    scorer = Scorer(model)
    test_x, test_y = x[cut:].to(device), y[cut:].to(device)
    predicted, f = scorer.predict(test_x)
    accuracy = float((predicted == test_y).double().mean())
    print(f"trained {args.arch} on digits upsampled to {args.image_size}x{args.image_size}, {args.epochs} epochs "
          f"in {time.perf_counter() - begin:.1f} s: test accuracy {accuracy:.3f}", flush=True)
    correct = (predicted == test_y).nonzero(as_tuple=True)[0][:args.images]
    masking = Masking(patch=args.patch)
    p = masking.feature_count(args.image_size, args.image_size)
    print(f"{len(correct)} correctly classified test image(s), f = {[round(float(v), 4) for v in f[correct]]}, "
          f"{p} features (patch {args.patch}), batch size {args.batch_size}, device {args.device}, "
          f"{args.lockstep} in lockstep, torch threads {torch.get_num_threads()}", flush=True)
    clocks = {arm: [0.0, 0.0] for arm in ("strict", "verified", "strict_tuned")}  # wall, process CPU seconds

    def timed(arm: str, work, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = work(*args, **kwargs)
        clocks[arm][0] += time.perf_counter() - wall
        clocks[arm][1] += time.process_time() - cpu
        return result

    batch_size, tuning = args.batch_size, time.perf_counter()
    if args.tune_batch_size:  # once per model and device (jobs cache it), so outside the timed arms
        sample = candidate_sample(test_x[correct[:args.lockstep]], masking, args.batch_size)
        key = cache_key(scorer.models, sample.shape[1:], "verified", device)
        batch_size = tuned_batch_size(scorer.logits, sample, args.batch_size, None, key)
    tuning = time.perf_counter() - tuning
    verifier = Verifier(scorer, device, args.screen, batch_size)
    identical = 0
    for first in range(0, len(correct), args.lockstep):  # alternate: load from other processes hits all alike
        image = test_x[correct[first:first + args.lockstep]]
        runs = [timed("strict", backward_selection, scorer, image, masking=masking, batch_size=args.batch_size),
                timed("verified", verified_backward_selection, scorer, image, masking=masking,
                      batch_size=batch_size, verifier=verifier)]
        if args.tune_batch_size:
            runs.append(timed("strict_tuned", backward_selection, scorer, image, masking=masking,
                              batch_size=batch_size))
        same = [all(np.array_equal(a.order, b.order) and np.array_equal(a.values, b.values) for a in others)
                for others, b in zip(zip(*runs[1:], strict=True), runs[0], strict=True)]
        identical += sum(same)
        print(f"images {correct[first:first + args.lockstep].tolist()}: "
              + ", ".join(f"{arm} {wall:.1f} s" for arm, (wall, _) in clocks.items() if wall)
              + f" so far; all identical={all(same)}; {verifier.stats.summary()}", flush=True)
    stats = verifier.stats
    timings = ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in stats.timings.items())
    (strict_wall, strict_cpu), (verified_wall, verified_cpu), (tuned_wall, tuned_cpu) = clocks.values()
    shares = ", ".join(f"{name} {share:.3f}" for name, share in stats.shares.items())
    print(f"screens used: {stats.history} (measured per candidate: {timings or 'not measured'}; first-step share "
          f"within the bound: {shares or 'not measured'})")
    print(f"fraction re-scored in strict fp32: {stats.rescored_fraction:.4f}; {stats.summary()}")
    print(f"wall strict {strict_wall:.1f} s (batch {args.batch_size}), verified {verified_wall:.1f} s "
          f"(batch {batch_size}; measuring the batch size took {tuning:.1f} s more, once per model and device)")
    print(f"per image ({p} features): strict {strict_wall / len(correct):.2f} s, verified "
          f"{verified_wall / len(correct):.2f} s (MEASURED, whole selections)")
    if args.tune_batch_size:
        print(f"strict_tuned_speedup={strict_wall / tuned_wall:.3f} (strict engine at batch {batch_size}: "
              f"{tuned_wall:.1f} s; CPU-time ratio {strict_cpu / tuned_cpu:.3f})")
    print(f"cpu_time_speedup={strict_cpu / verified_cpu:.3f} (process CPU seconds strict {strict_cpu:.1f} / verified "
          f"{verified_cpu:.1f}: less sensitive than wall time to other processes sharing the cores)")
    print(f"orders_identical={identical}/{len(correct)}")
    print(f"sis_verified_speedup={strict_wall / verified_wall:.3f}")
    return 0
