"""Evaluate one trained model on the splits of several datasets: logits, predictions, accuracy.

Usage (what the ``overinterp_evaluate`` rule runs)::

    python -m pathologies.overinterp.evaluate --model results/models/<model>/seed<seed>/model.pt \
        --dataset digits=results/data/digits.h5 --dataset <name>=<file> ... \
        --out results/overinterp/<experiment>/eval/<model>/seed<seed>.h5

One job per model evaluates every dataset it needs: loading torch and the model once costs
more than evaluating a small dataset. Images are normalised with the *model's* training
statistics (its checkpoint), whatever dataset they come from. On a pixel-subset dataset
(:mod:`pathologies.overinterp.subsets`) every pixel outside the split's mask is then set to exactly 0, the
SIS masked value, for any model (not on subsets imputed with ``noisy_linear``: their stored pixels are
the input). Every split except ``train`` is evaluated unless ``--splits``
names others.

File layout::

    /                             attrs: model (checkpoint path), model_run (JSON run spec),
                                         datasets (JSON {name: path}), code_version
    /<dataset>/<split>/logits     float32 (n, K)  raw logits (temperature 1)
    /<dataset>/<split>/labels     int64 (n,)
    /<dataset>/<split>/ids        int64 (n,)      the dataset's image ids
    /<dataset>/<split>/pred       int32 (n,)      argmax of the logits (lowest class on ties)
    /<dataset>/<split>            attrs: accuracy (fraction correct), masked (bool: subset masks applied)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cliargs import CommandParser, add_compute_options, named_files
from ..data.layout import DatasetInfo, dataset_info, load_split, to_model_input
from ..device import resolve_device
from ..errors import UserError, cli
from ..io import atomic_output, create_dataset, h5py, provenance, read_h5, write_attrs, write_h5
from ..models.checkpoint import load_model
from .subsets import read_masks, zeroes_masked_pixels

BATCH = 1024


@dataclass(frozen=True)
class SplitEvaluation:
    """Logits (n, K) float32, labels and ids (n,) of one split; ``masked``: subset masks applied."""

    logits: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    masked: bool

    @property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1).astype(np.int32)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.pred == self.labels)) if len(self.labels) else float("nan")


def _batches(dataset_path: str | Path, info: DatasetInfo, split: str, mean, std, device: torch.device,
             batch_size: int, workers: int, masks: bool) -> Iterator[torch.Tensor]:
    """Normalised float batches (B, C, H, W) of a split; with ``masks`` (a pixel-subset dataset), every
    pixel outside the image's mask is set to exactly 0 after normalisation."""
    if info.storage == "index":
        from ..data.imagenet import ImageIndexDataset

        source = ImageIndexDataset(dataset_path, split, with_masks=masks)
        for batch in torch.utils.data.DataLoader(source, batch_size=batch_size, num_workers=workers):
            yield _masked(to_model_input(batch[0], mean, std, device), batch[2] if masks else None)
        return
    images = load_split(dataset_path, split).images
    stored = read_masks(dataset_path, split) if masks else None
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], mean, std, device)
        yield _masked(x, None if stored is None else torch.as_tensor(stored[start:start + batch_size]))


def _masked(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``x`` (B, C, H, W) with every pixel outside ``keep`` (B, H, W) set to exactly 0."""
    if keep is None:
        return x
    keep = keep.to(x.device)[:, None]
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def split_labels(dataset_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with read_h5(dataset_path) as handle:
        return handle[split]["labels"][()], handle[split]["ids"][()]


@torch.inference_mode()
def evaluate_split(model: torch.nn.Module, meta: dict, dataset_path: str | Path, split: str, *,
                   device: torch.device | str = "cpu", batch_size: int = BATCH, workers: int = 0) -> SplitEvaluation:
    """Logits of ``model`` (eval mode; ``meta``: its checkpoint metadata) on one split."""
    info = dataset_info(dataset_path)
    if split not in info.splits:
        raise UserError(f"{dataset_path} has no split {split!r}; it has {list(info.splits)}")
    height, width, channels = info.image_shape
    if (meta["in_channels"], meta["image_size"], meta["image_size"]) != (channels, height, width) \
            or meta["num_classes"] != info.num_classes:
        raise UserError(f"the model takes {meta['in_channels']}-channel {meta['image_size']}x{meta['image_size']} "
                        f"images of {meta['num_classes']} classes, but {dataset_path} holds {channels}-channel "
                        f"{height}x{width} images of {info.num_classes} classes; evaluate it on a matching dataset")
    model.eval()
    masked = zeroes_masked_pixels(dataset_path, split)
    batches = _batches(dataset_path, info, split, meta["mean"], meta["std"], torch.device(device), batch_size,
                       workers, masked)
    logits = [model(x).float().cpu() for x in batches]
    labels, ids = split_labels(dataset_path, split)
    out = torch.cat(logits).numpy() if logits else np.zeros((0, info.num_classes), np.float32)
    return SplitEvaluation(out, labels.astype(np.int64), ids.astype(np.int64), masked=masked)


def evaluate(model_path: str | Path, datasets: Mapping[str, str | Path], out: str | Path, *,
             splits: Sequence[str] | None = None, device: str = "auto", batch_size: int = BATCH,
             workers: int = 0) -> dict[tuple[str, str], SplitEvaluation]:
    """Evaluate the checkpoint on ``splits`` (default: all but ``train``) of every dataset
    (``{name: path}``) and write ``out`` atomically; returns {(dataset, split): evaluation}."""
    if not datasets:
        raise UserError("no dataset to evaluate on; pass --dataset <name>=<file>")
    torch_device = resolve_device(device)
    print(f"evaluating {model_path} on {torch_device}", file=sys.stderr)
    model, meta = load_model(model_path, torch_device)
    results = {}
    for name, path in datasets.items():
        info = dataset_info(path)
        chosen = [s for s in info.splits if s != "train"] if splits is None else list(splits)
        if not chosen:
            raise UserError(f"{path} has no split to evaluate besides 'train'; pass --splits train")
        for split in chosen:
            results[(name, split)] = evaluate_split(model, meta, path, split, device=torch_device,
                                                    batch_size=batch_size, workers=workers)
    with atomic_output(out) as tmp, write_h5(tmp) as handle:
        write_attrs(handle, {"model": str(model_path), "datasets": {k: str(v) for k, v in datasets.items()},
                             **provenance(model_run=meta.get("run", {}))})
        for (name, split), result in results.items():
            group = handle.create_group(f"{name}/{split}")
            create_dataset(group, "logits", result.logits.astype(np.float32))
            create_dataset(group, "labels", result.labels)
            create_dataset(group, "ids", result.ids)
            create_dataset(group, "pred", result.pred)
            write_attrs(group, {"accuracy": result.accuracy, "masked": result.masked})
    return results


def read_evaluation(path: str | Path, dataset: str, split: str) -> SplitEvaluation:
    """Read one dataset split of an evaluation file; a clear error when the file or group is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"evaluation file {path} does not exist; build it with `snakemake {path}`")
    with read_h5(path) as handle:
        if f"{dataset}/{split}" not in handle:
            raise UserError(f"evaluation file {path} has no {dataset}/{split}; it has "
                            f"{', '.join(evaluation_groups(handle))}; rebuild it")
        group = handle[f"{dataset}/{split}"]
        return SplitEvaluation(group["logits"][()], group["labels"][()], group["ids"][()],
                               bool(group.attrs["masked"]))


def evaluation_groups(handle: h5py.File) -> list[str]:
    return [f"{d}/{s}" for d in handle for s in handle[d]]


def evaluation_splits(path: str | Path, dataset: str) -> list[str]:
    """The splits of ``dataset`` stored in an evaluation file, in file order."""
    with read_h5(path) as handle:
        if dataset not in handle:
            raise UserError(f"evaluation file {path} has no dataset {dataset!r}; rebuild it")
        return list(handle[dataset].keys())


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pt checkpoint")
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=FILE",
                        help="prepared dataset (pixel-subset datasets included); repeat for more")
    parser.add_argument("--splits", nargs="+", help="splits to evaluate (default: all but train)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    add_compute_options(parser, progress=False)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    torch.set_num_threads(args.threads)
    datasets = named_files(args.dataset, "--dataset", "name", "digits=results/data/digits.h5")
    results = evaluate(args.model, datasets, args.out, splits=args.splits,
                       device=args.device, batch_size=args.batch_size, workers=args.threads)
    for (name, split), result in results.items():
        print(f"{name}/{split}: accuracy {result.accuracy:.4f} on {len(result.labels)} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
