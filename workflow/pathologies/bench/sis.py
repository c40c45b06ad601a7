"""Benchmark of exact SIS backward selection against the model's raw forward throughput.

For one randomly initialised (seeded, eval-mode) model, in the same run: images/s of a plain
loop of forward passes on pre-built batches of ``--batch-size``, and candidate evaluations/s of
:func:`pathologies.sis.engine.backward_selection` on ``--images`` images in lockstep. The two are
interleaved step by step (after every lockstep step, as many raw batches as the step needed), so
that load from other processes hits both alike. Their ratio is the engine's efficiency (1.0 = no
overhead beyond the forward passes). Exact backward selection costs p(p+1)/2 evaluations per
image (p = H*W pixels), so the wall time per image at 16x16 and 32x32 is extrapolated from the
measured rate. Last line: ``sis_efficiency=<ratio>``.

``--precision verified`` instead compares the verified engine (fast screen, strict fp32 decisions)
with the strict engine on a trained model: :mod:`pathologies.bench.sis_verified`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import time

import torch

from ..errors import cli
from ..models.registry import build_model
from ..sis.engine import Scorer, backward_selection, use_strict_fp32
from ..sis.throughput import record

NUM_CLASSES = 10
PER_IMAGE_SIZES = (16, 32)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pathologies.bench sis", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--images", type=positive_int, default=None,
                        help="images run in lockstep (default 1; verified: images compared, default 8)")
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--batches", type=positive_int, default=16,
                        help="measure lockstep steps until at least this many batches of candidates")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", choices=["none", "bf16"], default="none",
                        help="run the model under bf16 autocast (CUDA); fp32 by default")
    parser.add_argument("--precision", choices=["fp32", "verified"], default="fp32",
                        help="verified: strict vs verified engine on a trained model (bench.sis_verified)")
    parser.add_argument("--screen", default="auto",
                        help="(verified) screen: auto, bf16, fp16, tf32, channels_last, compile")
    parser.add_argument("--patch", type=positive_int, default=4,
                        help="(verified) feature = patch x patch pixels (4 at 32x32: 64 features)")
    parser.add_argument("--lockstep", type=positive_int, default=4, help="(verified) images in lockstep")
    parser.add_argument("--epochs", type=positive_int, default=2, help="(verified) training epochs")
    parser.add_argument("--train-images", type=positive_int, default=600, help="(verified) training images")
    parser.add_argument("--threads", type=int, default=0, help="(verified) torch threads (0: torch default)")
    parser.add_argument("--no-tune-batch-size", dest="tune_batch_size", action="store_false",
                        help="(verified) run the verified engine at --batch-size instead of the measured best size")
    parser.add_argument("--record", metavar="CSV", help="write the engine's measured rate at --image-size into this "
                        "throughput table (e.g. config/throughput.csv, read by python -m pathologies.cost)")
    parser.add_argument("--device-label", help="with --record: the device's name in the table (e.g. h200, cpu2)")
    parser.add_argument("--run-to-end", action="store_true",
                        help="also run the full selection on --images images and print the measured "
                             "seconds per image (not extrapolated)")
    args = parser.parse_args(argv)
    if args.record and not args.device_label:
        parser.error("--record needs --device-label (the device's name in the throughput table, e.g. h200)")
    if args.images is None:
        args.images = 8 if args.precision == "verified" else 1
    return args


def amp_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """bf16 autocast, or None for strict fp32 (TF32 off, as the extraction stage runs it)."""
    if args.amp == "bf16":
        return torch.bfloat16
    use_strict_fp32(torch.device(args.device))
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RawForwardLoop:
    """A plain loop of forward passes over pre-built batches, run in slices and timed."""

    def __init__(self, model: torch.nn.Module, batches: list[torch.Tensor], amp: torch.dtype | None = None):
        self.model, self.batches, self.amp = model, batches, amp
        self.images, self.seconds, self._next = 0, 0.0, 0

    def run(self, num_batches: int) -> None:
        """Run ``num_batches`` forward passes and add them to the totals."""
        device = self.batches[0].device
        begin = time.perf_counter()
        autocast = torch.autocast(device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for _ in range(num_batches):
                batch = self.batches[self._next % len(self.batches)]
                self.model(batch)
                self.images += len(batch)
                self._next += 1
        _sync(device)
        self.seconds += time.perf_counter() - begin


def candidate_like_batch(image: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``batch_size`` copies of ``image`` (C, H, W), copy i with pixel i (mod H*W) set to 0.

    The raw loop runs on inputs like the engine's candidates rather than on independent random
    images: CPU throughput depends measurably on the data (several per cent faster on near-identical
    images), and the comparison should measure the engine's overhead, not that.
    """
    batch = image.expand(batch_size, -1, -1, -1).clone()
    pixels = torch.arange(batch_size, device=image.device) % (image.shape[1] * image.shape[2])
    batch.view(batch_size, image.shape[0], -1)[torch.arange(batch_size, device=image.device), :, pixels] = 0.0
    return batch


def measure(arch: str, image_size: int, args: argparse.Namespace) -> tuple[float, float]:
    """(raw forward images/s, engine evaluations/s) for ``arch`` at ``image_size``, interleaved."""
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = build_model(arch, NUM_CLASSES, in_channels=3, image_size=image_size).to(device).eval()
    scorer = Scorer(model, amp_dtype=amp_dtype(args))
    shape = (3, image_size, image_size)
    images = torch.randn(args.images, *shape, generator=generator).to(device)
    raw = RawForwardLoop(model, [candidate_like_batch(images[i % len(images)], args.batch_size)
                                 for i in range(2)], amp=scorer.amp_dtype)
    per_step = args.images * image_size**2  # candidates in the first steps
    steps = min(image_size**2, math.ceil(args.batches * args.batch_size / per_step))
    backward_selection(scorer, images[:1], batch_size=args.batch_size, max_steps=1)  # warm-up
    raw.run(2)
    raw.images, raw.seconds = 0, 0.0

    def after_step(evaluations: int) -> None:
        raw.run(math.ceil(evaluations / args.batch_size))

    _sync(device)
    begin = time.perf_counter()
    selections = backward_selection(scorer, images, batch_size=args.batch_size, max_steps=steps,
                                    progress=after_step)
    _sync(device)
    engine_seconds = time.perf_counter() - begin - raw.seconds
    return raw.images / raw.seconds, sum(s.evaluations for s in selections) / engine_seconds


def seconds_per_image_to_end(arch: str, image_size: int, args: argparse.Namespace) -> float:
    """Measured wall time per image of a complete exact backward selection (``--images`` in lockstep)."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(arch, NUM_CLASSES, in_channels=3, image_size=image_size).to(device).eval()
    scorer = Scorer(model, amp_dtype=amp_dtype(args))
    images = torch.randn(args.images, 3, image_size, image_size,
                         generator=torch.Generator().manual_seed(args.seed)).to(device)
    backward_selection(scorer, images[:1], batch_size=args.batch_size, max_steps=1)  # warm-up
    _sync(device)
    begin = time.perf_counter()
    backward_selection(scorer, images, batch_size=args.batch_size)
    _sync(device)
    return (time.perf_counter() - begin) / args.images


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.precision == "verified":
        from .sis_verified import run

        return run(args)
    print(f"SIS exact backward selection: {args.arch}, {args.images} image(s) in lockstep, batch size "
          f"{args.batch_size}, >= {args.batches} batches interleaved with as many raw forward batches, "
          f"device {args.device}, precision {args.amp if args.amp != 'none' else 'fp32'}, "
          f"torch threads {torch.get_num_threads()}")
    rates = {}
    for size in sorted({args.image_size, *PER_IMAGE_SIZES}):
        rates[size] = measure(args.arch, size, args)
        raw, engine = rates[size]
        print(f"{size}x{size}: raw forward {raw:,.0f} images/s, engine {engine:,.0f} evaluations/s, "
              f"ratio {engine / raw:.3f}")
    for size in PER_IMAGE_SIZES:
        p = size * size
        evaluations = p * (p + 1) // 2
        seconds = evaluations / rates[size][1]
        print(f"{size}x{size}: exact backward selection {evaluations:,} evaluations per image -> "
              f"{seconds:,.1f} s per image (EXTRAPOLATED from the measured rate, not run to the end)")
    if args.run_to_end:
        seconds = seconds_per_image_to_end(args.arch, args.image_size, args)
        print(f"{args.image_size}x{args.image_size}: exact backward selection run to the end on {args.images} "
              f"image(s) in lockstep: {seconds:,.2f} s per image (MEASURED)")
    raw, engine = rates[args.image_size]
    if args.record:
        record(args.record, {"device": args.device_label, "arch": args.arch, "image_size": args.image_size,
                             "precision": "bf16" if args.amp == "bf16" else "fp32", "forward_per_s": round(engine),
                             "measured": datetime.date.today().isoformat(),
                             "how": f"bench sis engine evaluations/s ({args.images} images in lockstep; "
                                    f"batch {args.batch_size}; {torch.get_num_threads()} threads)"})
        print(f"recorded {engine:,.0f} evaluations/s for {args.device_label}/{args.arch}/{args.image_size}px "
              f"in {args.record}")
    print(f"sis_efficiency={engine / raw:.3f}")
    return 0
