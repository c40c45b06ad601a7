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
from .config import model_input_size, run_specs
from .data.splits import expected_splits
from .errors import UserError, cli
from .experiments import load
from .overinterp.derived_sis import derived_sis_jobs
from .overinterp.grid import experiments
from .sis.jobs import sis_jobs
from .sis.throughput import THROUGHPUT, read_throughput
from .training.throughput import TRAIN_THROUGHPUT, read_train_throughput

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


def image_source(name: str, datasets: Mapping[str, Mapping], config: Mapping) -> Mapping:
    """The dataset entry whose images a dataset entry holds: a pixel subset's is its experiment's source dataset."""
    spec = datasets[name]
    if spec["kind"] == "pixel_subset":
        source = config["overinterpretation"][spec["experiment"]]["source"]["model"]
        return image_source(config["models"][source]["dataset"], datasets, config)
    return spec


def dataset_sizes(name: str, datasets: Mapping[str, Mapping], config: Mapping) -> tuple[dict[str, int], int]:
    """({split: images}, image size) of a dataset entry; pixel subsets take their source dataset's."""
    spec = image_source(name, datasets, config)
    kind = spec["kind"]
    sizes = dict(expected_splits(spec) or {})
    nominal = NOMINAL_SIZES.get(kind, {})
    sizes = {split: n if n is not None else nominal.get(split, 0) for split, n in sizes.items()} or dict(nominal)
    if kind in ("mnist", "fashion_mnist"):
        sizes = {"train": spec.get("train_sample", sizes["train"]), "test": spec.get("test_sample", sizes["test"])}
    image_size = spec.get("image_size", IMAGE_SIZES.get(kind, 32))
    return sizes, image_size


def storage(name: str, datasets: Mapping[str, Mapping], config: Mapping) -> str:
    """The prepared layout's ``storage`` of a dataset entry: ImageNet is an index of JPEG files."""
    return "index" if image_source(name, datasets, config)["kind"] == "imagenet" else "array"


def sis_forwards(settings: Mapping[str, Any], image_size: int) -> int:
    """Forward passes of one image's backward selection."""
    p = math.ceil(image_size / settings["patch"]) ** 2
    if settings["method"] == "exact":
        return p * (p + 1) // 2
    return math.ceil(p / settings["block"]) * GRADIENT_FORWARDS


def bill(config: Mapping, rows: list[dict], device: str, train_rows: list[dict] = ()) -> list[dict]:
    """One row per (rule, arch, image size, precision): jobs, work, rate, hours and how the rate was found.

    Training lines come from :func:`train_jobs` (``train_rows``: the training throughput table)."""
    datasets, runs = config["datasets"], run_specs(config)
    lines: dict[tuple, dict] = {}

    def add(rule, arch, size, precision, jobs, forwards):
        rate = find_rate(rows, device, arch, size, "bf16" if precision == "bf16" else "fp32")
        line = lines.setdefault((rule, arch, size, precision), {
            "rule": rule, "arch": arch, "image_size": size, "precision": precision, "jobs": 0, "forwards": 0,
            "forward_per_s": rate.forward_per_s, "rate": rate.how})
        line["jobs"] += jobs
        line["forwards"] += forwards

    train_lines = {}
    for job in train_jobs(config, rows, device, train_rows):
        line = train_lines.setdefault((job["arch"], job["image_size"], job["precision"], job["gpus"]), {
            "rule": "train", "arch": job["arch"], "image_size": job["image_size"],
            "precision": job["precision"] + (f"x{job['gpus']}" if job["gpus"] > 1 else ""), "jobs": 0, "forwards": 0,
            "forward_per_s": job["images_per_s"] * TRAIN_FORWARDS, "rate": job["rate"], "hours": 0.0})
        line["jobs"] += job["jobs"]
        line["forwards"] += job["jobs"] * job["epochs"] * job["images"] * TRAIN_FORWARDS
        line["hours"] += job["jobs"] * job["gpu_hours"]
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
    for line in lines.values():
        line["hours"] = line["forwards"] / line["forward_per_s"] / 3600
    return sorted([*lines.values(), *train_lines.values()], key=lambda r: (r["rule"], r["arch"], r["image_size"]))


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


# --- training jobs: wall time at the recipe's precision and GPU count, attempts within a time limit ---

DDP_EFFICIENCY = 0.9  # assumed (not measured here): each GPU beyond the first adds 90% of one GPU's rate


def train_rate(rows: list[dict], train_rows: list[dict], device: str, arch: str, image_size: int,
               precision: str, channels_last: bool) -> Rate:
    """Training images/s of one GPU (returned in ``forward_per_s``): a measured training row (real JPEG data
    path first, matching memory format first), else the inference rate / 3 (a step ~ 3 forward passes)."""
    mine = [r for r in train_rows if (r["device"], r["arch"], r["image_size"], r["precision"]) ==
            (device, arch, image_size, precision)]
    if mine:
        best = max(mine, key=lambda r: (r["data"] == "jpeg", (r["channels_last"] == "true") == channels_last))
        layout = ", channels_last" if best["channels_last"] == "true" else ""
        return Rate(best["images_per_s"], f"measured training ({best['data']} data{layout}, {best['measured']})")
    forward = find_rate(rows, device, arch, image_size, "bf16" if precision == "bf16" else "fp32")
    return Rate(forward.forward_per_s / TRAIN_FORWARDS, f"inference rate / {TRAIN_FORWARDS}, {forward.how}")


def speedup(gpus: int) -> float:
    return 1 + (gpus - 1) * DDP_EFFICIENCY


def train_jobs(config: Mapping, rows: list[dict], device: str, train_rows: list[dict] = (),
               precision: str | None = None) -> list[dict]:
    """One entry per model entry (its seeds cost alike): per job, epochs x images at the training rate on
    its GPUs, plus the per-epoch dumps (epochs + 1 evaluations of the dumped splits at the fp32 forward rate).
    ``precision`` prices every run at that precision (with channels_last) instead of its recipe's."""
    datasets, entries = config["datasets"], {}
    for (model, _seed), spec in run_specs(config).items():
        recipe = spec.recipe
        if recipe["epochs"] == 0:
            continue
        if model in entries:
            entries[model]["jobs"] += 1
            continue
        sizes, stored = dataset_sizes(spec.dataset, datasets, config)
        size = model_input_size(recipe, storage(spec.dataset, datasets, config), stored)
        images = math.ceil(sizes.get("train", 0) * recipe["data_fraction"])
        dumped = sum(sizes.get(split, 0) for split in spec.dump_splits)
        if precision is not None:
            recipe = {**recipe, "precision": precision, "channels_last": True}
        rate = train_rate(rows, list(train_rows), device, spec.arch, size, recipe["precision"], recipe["channels_last"])
        evaluate = find_rate(rows, device, spec.arch, size, "fp32").forward_per_s
        gpus = recipe["gpus"]
        train_s = recipe["epochs"] * images / (rate.forward_per_s * speedup(gpus))
        dump_s = (recipe["epochs"] + 1) * dumped / evaluate
        wall_h = (train_s + dump_s) / 3600
        entries[model] = {"model": model, "jobs": 1, "arch": spec.arch, "image_size": size,
                          "precision": recipe["precision"], "gpus": gpus, "epochs": recipe["epochs"], "images": images,
                          "images_per_s": rate.forward_per_s, "rate": rate.how + (
                              f"; x{speedup(gpus):.2f} on {gpus} GPUs (DDP scaling {DDP_EFFICIENCY:.0%}, assumed)"
                              if gpus > 1 else ""),
                          "wall_hours": wall_h, "epoch_minutes": wall_h * 60 / recipe["epochs"],
                          "gpu_hours": wall_h * gpus}
    return sorted(entries.values(), key=lambda e: e["model"])


def attempts_needed(job: Mapping, budget_minutes: float) -> int | None:
    """Submissions a job needs when each may train ``budget_minutes``, stopping between epochs; None = never
    (one epoch is longer than the budget)."""
    per_attempt = math.floor(budget_minutes / job["epoch_minutes"]) if job["epoch_minutes"] > 0 else job["epochs"]
    if per_attempt < 1:
        return None
    return math.ceil(job["epochs"] / per_attempt)


def render_train_jobs(jobs: list[dict], settings: Mapping, device: str) -> str:
    """Per training job: wall time at its precision and GPU count, and whether limit x attempts covers it."""
    limit, margin, attempts = settings["time_limit"], settings["save_margin"], settings["attempts"]
    out = [f"training jobs on {device} (per job; time limit "
           + (f"{limit:g} min, {margin:g} min kept to save" if limit else "none") + ")",
           (f"{'model':<40} {'jobs':>5} {'prec':<5} {'gpus':>4} {'epochs':>6} {'min/epoch':>10} {'wall h':>8} "
            f"{'attempts':>8}")]
    warnings = []
    for job in jobs:
        need = attempts_needed(job, limit - margin) if limit else 1
        out.append(f"{job['model']:<40} {job['jobs']:>5} {job['precision']:<5} {job['gpus']:>4} {job['epochs']:>6} "
                   f"{job['epoch_minutes']:>10,.1f} {job['wall_hours']:>8,.1f} {need if need else 'never':>8}")
        if limit and need is None:
            warnings.append(f"warning: {job['model']}: one epoch takes {job['epoch_minutes']:,.0f} min, longer than "
                            f"the {limit - margin:g} min a job may train (train_jobs.time_limit - save_margin); "
                            "use more gpus, bf16, or a longer time_limit")
        elif limit and attempts is not None and need > attempts:
            warnings.append(f"warning: {job['model']}: needs {need} attempts of {limit:g} min but train_jobs.attempts "
                            f"is {attempts}; it cannot finish within limit x attempts ({limit * attempts:g} min); "
                            "raise attempts (or set it to null: from the bill) or use more gpus / bf16")
    return "\n".join(out + warnings)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True,
                        help="a workflow config, e.g. config/cifar10_overinterpretation.yaml")
    parser.add_argument("--device", default="h200", help="device label of the throughput table (e.g. h200, cpu2)")
    parser.add_argument("--throughput", default=str(THROUGHPUT), help="throughput table (CSV)")
    parser.add_argument("--train-throughput", default=str(TRAIN_THROUGHPUT), help="training throughput table (CSV)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="minutes per training job (default: the config's train_jobs.time_limit)")
    args = parser.parse_args(argv)
    config, rows = load(args.configfile), read_throughput(args.throughput)
    train_rows = read_train_throughput(args.train_throughput)
    settings = dict(config["train_jobs"])
    if args.time_limit is not None:
        settings["time_limit"] = args.time_limit
    jobs = train_jobs(config, rows, args.device, train_rows)
    if jobs:
        print(render_train_jobs(jobs, settings, args.device))
        fp32 = [job for job in jobs if job["precision"] == "fp32"]
        try:
            as_bf16 = {j["model"]: j for j in train_jobs(config, rows, args.device, train_rows, precision="bf16")}
        except UserError:
            print(f"(no bf16 rates for {args.device}: the same jobs at bf16 are not priced)")
            fp32 = []
        if fp32:
            before = sum(j["jobs"] * j["gpu_hours"] for j in fp32)
            after = sum(j["jobs"] * as_bf16[j["model"]]["gpu_hours"] for j in fp32)
            print(f"the fp32 training jobs at bf16 + channels_last: {after:,.1f} instead of {before:,.1f} "
                  f"{args.device}-hours ({1 - after / before:.0%} less; rate {as_bf16[fp32[0]['model']]['rate']})")
            if not as_bf16[fp32[0]["model"]]["rate"].startswith("measured"):
                print("  (an estimate from inference rates: record training rows on the GPU with "
                      "`bash tests/gpu_checks.sh OUT scale` to replace it)")
        print()
    print(render(bill(config, rows, args.device, train_rows), args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
