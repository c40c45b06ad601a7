"""Representational similarity of a DDD experiment's models (appendix A.4, Figure 7).

    python -m pathologies.ddd.rsa --experiment experiment.json --dataset results/data/X.h5 \\
        --out rsa.csv [--device auto]

For one fixed, seeded sample of ``rsa_images`` images of the split (all of it when smaller; never an
image of ``exclude_ids``), each
model's RDM (1 - Pearson correlation between the images' penultimate activations) is computed and
every pair of RDMs correlated (Pearson over the upper triangles, as thingsvision does), for each layer
of ``rsa_layers``: ``penultimate`` (input of the last linear layer) and/or ``logits`` (its output, the
"last fully connected layer" of the paper's Figure 7 caption). Models: the
first member of each condition, each at its epoch (the base run's checkpoint keeps snapshots of the
base and extra epochs); external CSV models have no weights and are left out. Rows: layer, model_a,
model_b, condition_a, condition_b, epoch_a, epoch_b, rsa, n_images.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch

from ..cliargs import CommandParser, add_compute_options
from ..data.layout import dataset_info
from ..errors import UserError, cli
from ..io import atomic_output, read_experiment, read_h5
from ..models.activations import checkpoint_activations, split_images
from .exclusion import excluded_ids
from .experiment import KEYS
from .measures import rsa_image_sample, rsa_table


def rsa_members(spec: dict) -> list[dict]:
    """The members whose checkpoints enter the RSA, in member order."""
    by_label = {member["label"]: member for member in spec["members"]}
    return [by_label[label] for label in spec["rsa_members"]]


def sample_rows(n_images: int, spec: dict) -> list[int]:
    """The seeded image sample: ``rsa_images`` of ``n_images`` (all when the split is smaller)."""
    size = min(spec["rsa_images"], n_images)
    return rsa_image_sample(n_images, size, spec["analysis_seed"]).tolist()


def build_table(spec: dict, dataset: str, device: str | torch.device = "cpu") -> pd.DataFrame:
    """The RSA table of the experiment described by ``spec``."""
    members = rsa_members(spec)
    if len(members) < 2:
        raise UserError(f"experiment {spec['name']!r}: RSA needs at least two trained conditions, got "
                        f"{len(members)}; set rsa_images: 0 to turn it off")
    info = dataset_info(dataset)
    if spec["split"] not in info.splits:
        raise UserError(f"{dataset} has no split {spec['split']!r}; it has {list(info.splits)}")
    ids = _split_ids(dataset, spec["split"])
    allowed = np.flatnonzero(~np.isin(ids, excluded_ids(spec)))  # exclude_ids never enter the sample
    images, _ = split_images(dataset, spec["split"], allowed[sample_rows(len(allowed), spec)])
    layers = spec.get("rsa_layers", ["penultimate"])
    activations: dict[str, dict[str, object]] = {layer: {} for layer in layers}
    for member in members:
        print(f"activations of {member['label']} ({member['checkpoint']})", file=sys.stderr)
        by_layer = checkpoint_activations(member["checkpoint"], images, device, epoch=member["epoch"], layers=layers)
        for layer in layers:
            activations[layer][member["label"]] = by_layer[layer]
    table = pd.concat([rsa_table(activations[layer]).assign(layer=layer) for layer in layers], ignore_index=True)
    table.insert(0, "layer", table.pop("layer"))
    conditions = {m["label"]: m["condition"] for m in members}
    epochs = {m["label"]: m["epoch"] for m in members}
    table.insert(3, "condition_a", table["model_a"].map(conditions))
    table.insert(4, "condition_b", table["model_b"].map(conditions))
    table.insert(5, "epoch_a", table["model_a"].map(epochs))
    table.insert(6, "epoch_b", table["model_b"].map(epochs))
    table["n_images"] = len(images)
    return table


def _split_ids(dataset: str, split: str) -> np.ndarray:
    with read_h5(dataset) as handle:
        return handle[split]["ids"][()]


@cli
def main(argv: list[str] | None = None) -> int:
    from ..device import resolve_device

    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    add_compute_options(parser, device="cpu", progress=False)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"RSA activations on {device}", file=sys.stderr)
    table = build_table(read_experiment(args.experiment, KEYS), args.dataset, device)
    with atomic_output(args.out) as tmp:
        table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
