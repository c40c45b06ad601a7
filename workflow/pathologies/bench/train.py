"""Training throughput: our loop against a minimal one, precision, and the JPEG decoding that feeds ImageNet.

    python -m pathologies.bench train [--sections loop,precision,decode] [--device auto]

``loop``: ``pathologies.training.train.train_epoch`` against the plainest PyTorch loop (same
architecture, initial weights, in-memory tensors, batch size and optimizer); prints
``train_ratio=<ours/reference>`` (images/s). ``precision``: step time of one model on the same data at
fp32 and at bf16 + channels_last (``--precision-arch`` at ``--precision-size`` px), ``bf16_speedup=``.
``decode``: images/s per core of the PIL path against ``torchvision.io.decode_jpeg`` + tensor ops on
generated 500x375 quality-90 JPEGs (and batched GPU decoding on CUDA), their difference, and the cores
one GPU needs at the training rates recorded for ``--gpu-label`` in config/train_throughput.csv.
``--record FILE --device-label NAME`` measures training rows for the bill (synthetic data and the
real JPEG path, fp32 and bf16 + channels_last) and writes them into FILE.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..models.registry import build_model
from ..training.distributed import World
from ..training.precision import Precision
from ..training.step import optimizer_step
from ..training.train import InMemorySplit, make_optimizer, train_epoch


def reference_epoch(model, optimizer, x, y, batch_size, generator) -> None:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathologies.bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="loop,precision,decode", help="comma-separated: loop, precision, decode")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per loop (best is kept)")
    parser.add_argument("--precision-arch", default="tv_resnet18")
    parser.add_argument("--precision-size", type=int, default=64)
    parser.add_argument("--precision-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per precision (after one warm-up)")
    parser.add_argument("--jpegs", type=int, default=48, help="generated JPEGs of the decode section")
    parser.add_argument("--gpu-label", default="h200", help="device label whose recorded training rates size the cores")
    parser.add_argument("--record", default=None, help="training throughput table to write rows into")
    parser.add_argument("--device-label", default=None, help="device label of the recorded rows (with --record)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the JPEG path (--record)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    sections = set(args.sections.split(","))
    print(f"device {device_name(device)}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    if args.record and not args.device_label:
        parser.error("--record needs --device-label (the label the bill looks rows up by, e.g. h200)")
    results = {}  # key=value lines, printed last (train_ratio the very last)
    if "precision" in sections:
        results.update(precision_section(args, device))
    if args.record:
        record_section(args, device)
    if "decode" in sections:
        results.update(decode_section(args, device))
    if "loop" in sections:
        results.update(loop_section(args))
    for key, value in results.items():
        print(f"{key}={value}")
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor()
    if Path("/proc/cpuinfo").exists():
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    return f"cpu ({model}, {os.cpu_count()} cores)"


def loop_section(args) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, args.channels, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (args.images,), generator=gen)
    data = InMemorySplit(x, y.numpy(), np.arange(args.images))
    recipe = {"batch_size": args.batch_size, "crop_padding": 0, "hflip": False, "split_batch": False,
              "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "lr_milestones": [],
              "lr_gamma": 0.2}

    def fresh():
        torch.manual_seed(0)
        model = build_model(args.arch, 10, in_channels=args.channels, image_size=args.image_size)
        return model, make_optimizer(model, recipe)[0]

    timings = {}
    loops = {
        "reference": lambda m, o: reference_epoch(m, o, x, y, args.batch_size, torch.Generator().manual_seed(1)),
        "pathologies.training.train": lambda m, o: train_epoch(m, o, data, recipe, torch.Generator().manual_seed(1)),
    }
    for _ in range(args.repeats):  # interleave so drifts in machine load hit both loops alike
        for name, loop in loops.items():
            model, optimizer = fresh()
            began = time.perf_counter()
            loop(model, optimizer)
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - began)

    print(f"arch={args.arch} images={args.images} size={args.image_size}x{args.image_size} "
          f"batch={args.batch_size} threads={torch.get_num_threads()} (best of {args.repeats} epochs)")
    rates = {name: args.images / seconds for name, seconds in timings.items()}
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:10.0f} images/s")
    return {"train_ratio": f"{rates['pathologies.training.train'] / rates['reference']:.3f}"}


def step_rate(arch: str, size: int, batch: int, steps: int, device: torch.device, precision: str,
              channels_last: bool, batches=None) -> float:
    """Training images/s of ``arch`` (optimizer steps of ``batch`` images) at one precision; ``batches``
    (an iterator of (x, y) on ``device``) replaces the synthetic batch (the real data path)."""
    torch.manual_seed(0)
    model = build_model(arch, 1000 if arch.startswith("tv_") else 10, in_channels=3, image_size=size).to(device)
    mixed = Precision(precision, device, channels_last)
    model = mixed.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 1000 if arch.startswith("tv_") else 10, (batch,), generator=gen).to(device)
    world = World()

    def step() -> int:
        xb, yb = (x, y) if batches is None else next(batches)
        optimizer_step(model, optimizer, xb, yb, len(xb), mixed, world)
        return len(xb)

    step()  # warm-up: kernels, cuDNN autotuning, allocator
    sync(device)
    began, done = time.perf_counter(), 0
    for _ in range(steps):
        done += step()
    sync(device)
    return done / (time.perf_counter() - began)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_section(args, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rates = {}
    for _ in range(2):  # interleaved: best of two rounds each
        for name, (precision, channels_last) in {"fp32": ("fp32", False), "bf16+channels_last": ("bf16", True)}.items():
            rate = step_rate(args.precision_arch, args.precision_size, args.precision_batch, args.steps, device,
                             precision, channels_last)
            rates[name] = max(rates.get(name, 0.0), rate)
    print(f"precision: {args.precision_arch} at {args.precision_size}px, batch {args.precision_batch}, "
          f"{args.steps} steps on {device_name(device)}")
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:10.1f} images/s ({1000 * args.precision_batch / rate:8.1f} ms/step)")
    return {"bf16_speedup": f"{rates['bf16+channels_last'] / rates['fp32']:.3f}"}


def decode_section(args, device: torch.device) -> dict:
    import tempfile

    from ..training.throughput import TRAIN_THROUGHPUT, read_train_throughput
    from . import decode

    with tempfile.TemporaryDirectory() as tmp:
        paths = decode.make_jpegs(Path(tmp), args.jpegs)
        rates = decode.per_core_rates(paths)
        worst, mean = decode.difference(paths)
        print(f"decode: {len(paths)} generated {decode.WIDTH}x{decode.HEIGHT} JPEGs (quality {decode.QUALITY}), "
              f"to 224 px, one thread on {device_name(torch.device('cpu'))}")
        for name, rate in rates.items():
            print(f"{name:>46}: {rate:8.1f} images/s per core")
        print(f"PIL vs decode_jpeg resize+crop images: max |difference| {worst} levels, mean {mean:.3f}")
        if device.type == "cuda":
            print(f"{'nvjpeg batched on the GPU, resize+crop':>46}: {decode.gpu_batched_rate(paths):8.1f} images/s")
    train_rate = round(rates["PIL (workflow), RandomResizedCrop"], 1)  # the value printed: cores follow from it
    table = args.record or TRAIN_THROUGHPUT
    rows = [r for r in read_train_throughput(table) if r["device"] == args.gpu_label and r["image_size"] == 224]
    if not rows:
        print(f"no training rows for {args.gpu_label!r} at 224 px in {table}: record them on the "
              "GPU (bash tests/gpu_checks.sh OUT scale) to size cores per GPU")
    for row in rows:
        cl = " channels_last" if row["channels_last"] == "true" else ""
        print(f"cores_per_gpu {row['arch']} {row['precision']}{cl} {row['data']} ({row['images_per_s']:,.0f} images/s "
              f"on {args.gpu_label}): {math.ceil(row['images_per_s'] / train_rate)} at {train_rate:.0f} images/s "
              "per core")
    return {"decode_per_core": f"{train_rate:.1f}"}


def record_section(args, device: torch.device) -> None:
    """Rows of the training throughput table: synthetic batches and the JPEG path, fp32 and bf16 + channels_last."""
    import datetime
    import tempfile

    from ..training.throughput import record
    from . import decode

    today = datetime.date.today().isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        paths = decode.make_jpegs(Path(tmp), max(args.jpegs, args.precision_batch * 2))
        for precision, channels_last in (("fp32", False), ("bf16", True)):
            for data in ("synthetic", "jpeg"):
                batches = None if data == "synthetic" else jpeg_batches(paths, args, device)
                rate = step_rate(args.precision_arch, args.precision_size, args.precision_batch, args.steps, device,
                                 precision, channels_last, batches)
                how = (f"bench train --record: {args.steps} steps of batch {args.precision_batch}"
                       + (f", {args.workers} decode workers" if data == "jpeg" else ""))
                record(args.record, {"device": args.device_label, "arch": args.precision_arch,
                                     "image_size": args.precision_size, "precision": precision,
                                     "channels_last": "true" if channels_last else "false", "data": data,
                                     "images_per_s": f"{rate:.1f}", "measured": today, "how": how})
                print(f"recorded {args.precision_arch} {args.precision_size}px {precision}"
                      f"{' channels_last' if channels_last else ''} {data}: {rate:,.1f} images/s -> {args.record}")


class _Jpegs(torch.utils.data.Dataset):
    """The workflow's training decode (PIL + RandomResizedCrop) over generated JPEGs, cycled."""

    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int):
        from ..data.imagenet import load_image_random_resized_crop

        return torch.from_numpy(load_image_random_resized_crop(self.paths[index % len(self.paths)], self.size)), 0


def jpeg_batches(paths, args, device: torch.device):
    """(x, y) batches of the real data path: decode in DataLoader workers, normalise on the device."""
    from ..data.layout import to_model_input

    loader = torch.utils.data.DataLoader(_Jpegs(paths, args.precision_size), batch_size=args.precision_batch,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    for images, labels in loader:
        yield (to_model_input(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), device),
               labels.to(device, non_blocking=True))
