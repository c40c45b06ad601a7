"""SIS of a temperature-scaled (calibrated) model on one shard, for Table S5 (supplement S4.7).

Usage (what the ``overinterp_calibrated_sis`` rule runs)::

    python -m pathologies.overinterp.calibrated_sis --model results/models/<model>/seed<seed>/model.pt \
        --calibration results/overinterp/<experiment>/calibration/<model>/seed<seed>.json \
        --dataset results/data/<dataset>.h5 --spec '<SisJob JSON>' --shard 0 --num-shards 2 \
        --out <folder>/shard0of2.h5 --state-dir <resume folder>

Exactly :mod:`pathologies.sis.extract` (same settings, images, shards, resume and file layout), except
that f is the softmax of the logits divided by the fitted temperature, so fewer images reach a
threshold and their SIS grow. The file's root gains the attributes ``temperature`` and ``calibration``;
``python -m pathologies.sis.merge`` joins the shards.
"""

from __future__ import annotations

import torch

from ..cliargs import CommandParser, add_compute_options, json_object, positive_int
from ..errors import cli
from ..sis import extract
from ..sis.batch_size import add_cache_option
from .calibration import read_temperature


def run(model_path: str, calibration_path: str, dataset_path: str, spec: dict, out: str, *, shard: int = 0,
        num_shards: int = 1, device: str = "auto", progress: bool = False, state_dir: str | None = None,
        batch_size_cache: str | None = None) -> None:
    """Extract the SIS of the temperature-scaled model on shard ``shard`` of the images ``spec`` selects."""
    temperature = read_temperature(calibration_path)
    extract.run([model_path], dataset_path, spec, shard=shard, num_shards=num_shards, out=out, device=device,
                progress=progress, state_dir=state_dir, temperature=temperature,
                extra_attrs={"calibration": str(calibration_path)}, batch_size_cache=batch_size_cache)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pt checkpoint")
    parser.add_argument("--calibration", required=True, help="calibration JSON (pathologies.overinterp.calibration)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--spec", required=True, help="SIS job as JSON (pathologies.sis.jobs.SisJob.as_dict)")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--num-shards", type=positive_int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--state-dir", default=None,
                        help="save finished lockstep groups here and resume from them after a kill")
    add_cache_option(parser)
    add_compute_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.model, args.calibration, args.dataset, json_object(args.spec), args.out, shard=args.shard,
        num_shards=args.num_shards, device=args.device, progress=not args.no_progress, state_dir=args.state_dir,
        batch_size_cache=args.batch_size_cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
