"""SIS of a temperature-scaled (calibrated) model, for Table S5 (supplement S4.7).

Usage (what the ``overinterp_calibrated_sis`` rule runs)::

    python -m pathologies.overinterp.calibrated_sis --model results/models/<model>/seed<seed>/model.pt \
        --calibration results/overinterp/<experiment>/calibration/<model>/seed<seed>.json \
        --dataset results/data/<dataset>.h5 --spec '<SisJob JSON>' --out <file>.h5

Exactly :mod:`pathologies.sis.extract` (same settings, images and file layout; one shard), except
that f is the softmax of the logits divided by the fitted temperature, so fewer images reach a
threshold and their SIS grow. The file's root gains the attribute ``temperature``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..cliargs import add_compute_options, json_object
from ..data.layout import dataset_info
from ..device import resolve_device
from ..errors import cli
from ..io import provenance
from ..sis.extract import Settings, extract, load_models, load_rows, make_scorer, shard_rows, split_size, \
    write_extraction
from .calibration import read_temperature


def run(model_path: str, calibration_path: str, dataset_path: str, spec: dict, out: str, *,
        device: str = "auto", progress: bool = False) -> None:
    """Extract the SIS of the temperature-scaled model on the images the SIS ``spec`` selects."""
    settings = Settings.from_spec(spec)
    temperature = read_temperature(calibration_path)
    torch_device = resolve_device(device)
    print(f"SIS of the temperature-scaled model on {torch_device}", file=sys.stderr)
    info = dataset_info(dataset_path)
    models, metas = load_models([model_path], info, dataset_path, torch_device)
    scorer = make_scorer(models, info, settings, torch_device, temperature=temperature)
    size = split_size(dataset_path, settings.split)
    rows = shard_rows(size, settings.sample, settings.seed, 0, 1)
    images, labels, ids = load_rows(dataset_path, info, settings.split, rows)
    result = extract(scorer, images, rows, labels, ids, settings, metas[0]["mean"], metas[0]["std"], torch_device,
                     progress=progress)
    attrs = {"model": str(model_path), "model_run": json.dumps([metas[0].get("run", {})], sort_keys=True),
             "dataset": str(dataset_path), "split": settings.split, "shard": 0, "num_shards": 1,
             "image_shape": list(info.image_shape), "sample": -1 if settings.sample is None else settings.sample,
             "sample_seed": settings.seed, "split_size": size, "num_images": len(rows),
             "temperature": temperature, "calibration": str(calibration_path), **provenance(config=dict(spec))}
    write_extraction(out, result, settings, attrs)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pt checkpoint")
    parser.add_argument("--calibration", required=True, help="calibration JSON (pathologies.overinterp.calibration)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--spec", required=True, help="SIS job as JSON (pathologies.sis.jobs.SisJob.as_dict)")
    parser.add_argument("--out", required=True)
    add_compute_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = json_object(args.spec)
    run(args.model, args.calibration, args.dataset, spec, args.out, device=args.device,
        progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
