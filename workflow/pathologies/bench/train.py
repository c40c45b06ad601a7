"""Training-step throughput: ``pathologies.training.train.train_epoch`` against a minimal reference loop.

    python -m pathologies.bench train [--arch small_cnn] [--image-size 8] [--images 8192]

Both loops train the same architecture from the same initial weights on the same in-memory tensors
with the same batch size and optimizer; the reference is the plainest PyTorch loop (random order,
slice, forward, loss, backward, step). Last line: ``train_ratio=<ours/reference>`` (images/s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..models.registry import build_model
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
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per loop (best is kept)")
    args = parser.parse_args(argv)

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
    print(f"train_ratio={rates['pathologies.training.train'] / rates['reference']:.3f}")
    return 0
