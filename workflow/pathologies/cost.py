"""The bill of a config before it runs: expected device-hours of its SIS extraction and training jobs.

Usage::

    python -m pathologies.cost --configfile config/cifar10_overinterpretation.yaml --device h200

Every SIS job costs (images) x (forward passes per image) / (forward passes per second of its model at
its image size on ``--device``); every training run costs epochs x training images x 3 forward passes
(forward + backward ~ 3 forwards) / the same rate. Rates come from ``config/throughput.csv``
(``python -m pathologies.bench sis --record config/throughput.csv --device-label NAME`` adds a row): a
rate measured for the model's architecture and image size is *measured*; one scaled from another
image size of the same architecture (by pixel count) or from another architecture at that size
(by forward FLOPs, counted on a CPU forward pass of a randomly initialised model) is *extrapolated*, and
the table says which. The SIS of a calibrated model (``overinterp_calibrated_sis``) costs what its source
SIS job costs (one model; the temperature is free); that of an ensemble of m models
(``overinterp_ensemble_sis``) costs m forward passes per candidate, each billed at its member's rate (its
jobs count on its first member's line). Jobs of other rules (evaluation, subsets, merges, analyses,
figures) are minutes each and are not billed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .cliargs import CommandParser
from .config import run_specs
from .data.splits import expected_splits
from .errors import UserError, cli
from .experiments import load
from .overinterp.derived_sis import derived_sis_jobs
from .overinterp.grid import experiments
from .sis.jobs import sis_jobs
from .sis.throughput import THROUGHPUT, read_throughput

TRAIN_FORWARDS = 3  # one training step ~ a forward and a backward pass ~ 3 forward passes
GRADIENT_FORWARDS = 3  # Batched Gradient SIS: a forward and a backward pass per block
# Sizes the config alone does not fix (the files tell): the standard releases.
NOMINAL_SIZES = {"cifar10.1": {"test": 2_000}, "imagenet": {"train": 1_281_167, "test": 50_000},
                 "mnist": {"train": 60_000, "test": 10_000}, "fashion_mnist": {"train": 60_000, "test": 10_000}}
IMAGE_SIZES = {"digits": 8, "cifar10": 32, "cifar100": 32, "cifar10c": 32, "cifar10.1": 32, "mnist": 28,
               "fashion_mnist": 28}


@dataclass(frozen=True)
class Rate:
    """Forward passes per second of one architecture at one image size on one device."""

    forward_per_s: float
    how: str  # "measured (<date>)" or "extrapolated from ..."


@functools.cache
def forward_flops(arch: str, image_size: int, channels: int = 3) -> float:
    """FLOPs of one forward pass of a randomly initialised ``arch`` on one image (counted on the CPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models.registry import build_model

    model = build_model(arch, num_classes=10, in_channels=channels, image_size=image_size).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, image_size, image_size))
    return float(counter.get_total_flops())


def find_rate(rows: list[dict], device: str, arch: str, image_size: int, precision: str) -> Rate:
    """The measured rate, else one extrapolated from the nearest measured size or from another architecture."""
    mine = [r for r in rows if r["device"] == device and r["precision"] == precision]
    if not mine:
        have = sorted({(r["device"], r["precision"]) for r in rows})
        raise UserError(f"throughput table has no rate for device {device!r} at precision {precision!r} "
                        f"(have: {have}); measure one with `python -m pathologies.bench sis --record ...`")
    exact = [r for r in mine if r["arch"] == arch and r["image_size"] == image_size]
    if exact:
        return Rate(exact[0]["forward_per_s"], f"measured ({exact[0]['measured']})")
    same_arch = [r for r in mine if r["arch"] == arch]
    if same_arch:
        ref = min(same_arch, key=lambda r: abs(math.log(r["image_size"] / image_size)))
        scale = (ref["image_size"] / image_size) ** 2
        return Rate(ref["forward_per_s"] * scale, f"extrapolated from {arch} at {ref['image_size']}px by pixel count")
    # the nearest measured size, then the architecture nearest in FLOPs (small models underuse a GPU)
    nearest = min(abs(math.log(r["image_size"] / image_size)) for r in mine)
    flops = forward_flops(arch, image_size)
    ref = min((r for r in mine if abs(math.log(r["image_size"] / image_size)) == nearest),
              key=lambda r: abs(math.log(forward_flops(r["arch"], r["image_size"]) / flops)))
    ratio = forward_flops(ref["arch"], ref["image_size"]) / flops
    return Rate(ref["forward_per_s"] * ratio,
                f"extrapolated from {ref['arch']} at {ref['image_size']}px by forward FLOPs")


def dataset_sizes(name: str, datasets: Mapping[str, Mapping], config: Mapping) -> tuple[dict[str, int], int]:
    """({split: images}, image size) of a dataset entry; pixel subsets take their source dataset's."""
    spec = datasets[name]
    kind = spec["kind"]
    if kind == "pixel_subset":
        source = config["overinterpretation"][spec["experiment"]]["source"]["model"]
        return dataset_sizes(config["models"][source]["dataset"], datasets, config)
    sizes = dict(expected_splits(spec) or {})
    nominal = NOMINAL_SIZES.get(kind, {})
    sizes = {split: n if n is not None else nominal.get(split, 0) for split, n in sizes.items()} or dict(nominal)
    if kind in ("mnist", "fashion_mnist"):
        sizes = {"train": spec.get("train_sample", sizes["train"]), "test": spec.get("test_sample", sizes["test"])}
    image_size = spec.get("image_size", IMAGE_SIZES.get(kind, 32))
    return sizes, image_size


def sis_forwards(settings: Mapping[str, Any], image_size: int) -> int:
    """Forward passes of one image's backward selection."""
    p = math.ceil(image_size / settings["patch"]) ** 2
    if settings["method"] == "exact":
        return p * (p + 1) // 2
    return math.ceil(p / settings["block"]) * GRADIENT_FORWARDS


def bill(config: Mapping, rows: list[dict], device: str) -> list[dict]:
    """One row per (rule, arch, image size, precision): jobs, work, rate, hours and how the rate was found."""
    datasets, runs = config["datasets"], run_specs(config)
    lines: dict[tuple, dict] = {}

    def add(rule, arch, size, precision, jobs, forwards):
        rate = find_rate(rows, device, arch, size, "bf16" if precision == "bf16" else "fp32")
        line = lines.setdefault((rule, arch, size, precision), {
            "rule": rule, "arch": arch, "image_size": size, "precision": precision, "jobs": 0, "forwards": 0,
            "forward_per_s": rate.forward_per_s, "rate": rate.how})
        line["jobs"] += jobs
        line["forwards"] += forwards

    for spec in runs.values():
        sizes, size = dataset_sizes(spec.dataset, datasets, config)
        recipe = spec.recipe
        images = math.ceil(sizes.get("train", 0) * recipe["data_fraction"])
        if recipe["epochs"] > 0:
            add("train", spec.arch, size, "fp32", 1, recipe["epochs"] * images * TRAIN_FORWARDS)
    jobs = sis_jobs(config, runs)
    for job in jobs.values():
        sizes, size = dataset_sizes(job.dataset, datasets, config)
        images = job.settings.get("sample") or sizes.get(job.split, 0)
        precision = job.settings.get("precision", "fp32")
        add("sis_extract", runs[(job.model, job.seed)].arch, size, precision, job.shards,
            images * sis_forwards(job.settings, size))
    for experiment in experiments(config, jobs).values():
        for derived in derived_sis_jobs(experiment).values():
            source = derived.source
            sizes, size = dataset_sizes(source.dataset, datasets, config)
            images = source.settings.get("sample") or sizes.get(source.split, 0)
            for i, member in enumerate(derived.members):  # one forward pass of each member per candidate
                add(f"overinterp_{derived.kind}_sis", runs[member].arch, size,
                    source.settings.get("precision", "fp32"), derived.shards if i == 0 else 0,
                    images * sis_forwards(source.settings, size))
    table = sorted(lines.values(), key=lambda r: (r["rule"], r["arch"], r["image_size"]))
    for line in table:
        line["hours"] = line["forwards"] / line["forward_per_s"] / 3600
    return table


def render(table: list[dict], device: str) -> str:
    """The bill as text: one line per group, totals per rule and overall."""
    width = max([12, *(len(r["rule"]) for r in table)])
    out = [f"{'rule':<{width}} {'arch':<16} {'px':>4} {'prec':<8} {'jobs':>6} {'forward passes':>16} {'/s':>10} "
           f"{device + '-hours':>14}  rate"]
    for r in table:
        out.append(f"{r['rule']:<{width}} {r['arch']:<16} {r['image_size']:>4} {r['precision']:<8} {r['jobs']:>6} "
                   f"{r['forwards']:>16,.0f} {r['forward_per_s']:>10,.0f} {r['hours']:>14,.1f}  {r['rate']}")
    for rule in sorted({r["rule"] for r in table}):
        out.append(f"total {rule}: {sum(r['hours'] for r in table if r['rule'] == rule):,.1f} {device}-hours")
    out.append(f"total: {sum(r['hours'] for r in table):,.1f} {device}-hours")
    return "\n".join(out)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True,
                        help="a workflow config, e.g. config/cifar10_overinterpretation.yaml")
    parser.add_argument("--device", default="h200", help="device label of the throughput table (e.g. h200, cpu2)")
    parser.add_argument("--throughput", default=str(THROUGHPUT), help="throughput table (CSV)")
    args = parser.parse_args(argv)
    print(render(bill(load(args.configfile), read_throughput(args.throughput), args.device), args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
