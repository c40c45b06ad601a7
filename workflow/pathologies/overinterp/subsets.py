"""Pixel-subset datasets (Carter et al. 2021, Section 4.2): backward-selection and random subsets.

A *k% backward-selection (BS) subset* of an image keeps the last ``round(k% * p)`` (``--rounding``: half
up, or ceil as the authors' code) of its p features in the stored backward-selection removal order (the
features that kept the model confident longest) and masks the rest. A *k% random subset* keeps as many features drawn
uniformly at random, one independent draw per image; draw ``d`` of seed ``s`` is reproducible and
differs between draws (``--random-draw reference``: the authors' draw instead, one per split, seeds 1234/5678,
the same for every draw number). A feature is a pixel, or a ``patch`` x ``patch`` block as in the SIS file.
A *k% mask-only* subset (``mask``) keeps the BS subset's mask and nothing of the image: kept pixels
white, the others the mean colour (the leakage floor of retraining on BS subsets).
With ``--masking noisy_linear`` the masked pixels of BS and random subsets hold ROAD's noisy linear
imputation instead of the mean colour (:func:`pathologies.data.fill.noisy_linear_impute`,
seeded by (seed, draw, stream)); evaluation then leaves them as stored (attribute ``masking``).
An *augmented* subset (``--augmented-subset``, ``retrain.augment_mode: reference``) is the "(+)" dataset of the
authors' code: its train images are cropped and flipped once (:mod:`pathologies.overinterp.augment_once`, draw
DRAW, ``--crop-padding``, ``--hflip``) and then masked with the mask of the *un-augmented* image (BS, or random
draw DRAW); its test split is the un-augmented subset's.

Usage (what the ``overinterp_subsets_<experiment>`` rule runs: every subset of an experiment in one job)::

    python -m pathologies.overinterp.subsets --dataset results/data/digits.h5 \
        --sis train=results/sis/digits_train/digits_cnn/seed0/digits/train.h5 --sis test=.../test.h5 --seed 0 \
        --subset bs 0.1 -1 exp.bs10 results/overinterp/exp/subsets/bs10.h5 \
        --subset random 0.1 2 exp.random10.d2 results/overinterp/exp/subsets/random10_d2.h5 \
        --augmented-subset bs 0.1 0 exp.bs10.d0.aug results/overinterp/exp/subsets/bs10_d0_aug.h5

The output is an ordinary prepared dataset (:mod:`pathologies.data.layout`) holding, per split, the
images the SIS file covers with every masked pixel set to the mean colour, so the ``train`` rule
trains on it like on any dataset and its random crops and flips move the image and its mask
together. To make a masked pixel *exactly* 0 after normalisation (the SIS masked value), the
file's ``mean`` is the source mean rounded to the uint8 grid, ``round(255 mean) / 255``, and masked
pixels hold that uint8 colour; ``std`` is the source's. Extra content beyond the standard layout::

    /                attrs: subset_kind ("bs"|"random"|"mask"), masking ("mean"|"noisy_linear"), fraction,
                            features_kept, feature_count, patch, rounding ("half_up"|"ceil"),
                            random_seed, random_stream, random_draw ("project"|"reference"),
                            draw (random only; -1 for bs), source_dataset, source_mean,
                            source_sis (JSON {split: path}), source_model_run (JSON), augmented_once (bool);
                            augmented subsets also crop_padding, hflip, augment_draw
    /<split>/masks   bool (n, H, W)  True = pixel kept (of the un-augmented image)
    /<split>/rows    int64 (n,)      row of the image in the source dataset's split
    /train/crop_offsets  int64 (n, 2)  augmented subsets: top, left of each crop in the black-padded image
    /train/flipped       bool (n,)     augmented subsets: image flipped left-right after the crop

An ImageNet index (``storage = "index"``) gets an index of the same images instead, with the masked
pixels filled (mean colour, noisy linear imputation, or the mask alone) as the images stream from disk
(:mod:`pathologies.overinterp.index_subsets`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cliargs import CommandParser, named_files
from ..data.fill import apply_masks, noisy_linear_impute, render_masks
from ..data.layout import Split, dataset_info, load_split, mask_colour, write_dataset
from ..errors import UserError, cli
from ..io import atomic_output, create_dataset, h5py, read_json_attr, write_attrs, write_h5
from ..sis.engine import Masking
from ..sis.orders import read_orders
from .augment_once import OnceAugmentation, draw_once_augmentation
from .subset_masks import (
    KINDS,
    MASKINGS,
    RANDOM_DRAWS,
    ROUNDINGS,
    SubsetRequest,
    backward_selection_features,
    feature_masks,
    random_features,
    random_stream,
    reference_random_features,
    stream_key,
    subset_size,
)


@dataclass(frozen=True)
class SisOrders:
    """What a subset needs from one SIS file: rows, removal orders, patch and image shape."""

    path: str
    rows: np.ndarray
    order: np.ndarray
    patch: int
    image_shape: tuple[int, int, int]
    model_run: object


def read_sis_orders(path: str | Path) -> SisOrders:
    """Read /index, /order and the layout attributes of an SIS file (clear error when unusable)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"SIS file {path} does not exist; build it with `snakemake {path}`")
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in ("index", "order") if key not in handle]
            if missing:
                raise UserError(f"SIS file {path} lacks {', '.join(missing)}; rebuild it with the sis rules")
            return SisOrders(path=str(path), rows=handle["index"][()].astype(np.int64),
                             order=read_orders(handle, path=path), patch=int(handle.attrs.get("patch", 1)),
                             image_shape=tuple(int(v) for v in handle.attrs["image_shape"]),
                             model_run=read_json_attr(handle, "model_run") if "model_run" in handle.attrs else None)
    except OSError as err:
        raise UserError(f"{path} is not a readable HDF5 file ({err}); delete it and rebuild it") from None


def subset_split(source: Split, sis: SisOrders, kind: str, fraction: float, seed: int, draw: int,
                 split: str, colour: np.ndarray, stream: str = "", masking: str = "mean",
                 rounding: str = "half_up", random_draw: str = "project",
                 augment: OnceAugmentation | None = None) -> tuple[Split, np.ndarray, int]:
    """The masked split of the images ``sis`` covers: (split, masks (n, H, W), features kept).

    ``rounding``: :func:`subset_size`'s; ``random_draw``: ``project`` (seeded by (seed, draw, stream)) or
    ``reference`` (the authors' per-split draw over every image of the split, :func:`reference_random_features`).
    ``augment``: crop and flip the images once, then mask them with the masks of the un-augmented images.
    """
    height, width = source.images.shape[1:3]
    count = Masking(patch=sis.patch).feature_count(height, width)
    if sis.order.shape[1] != count:
        raise UserError(f"SIS file {sis.path} orders {sis.order.shape[1]} features, but {height}x{width} images "
                        f"with patch {sis.patch} have {count}; it belongs to a different dataset")
    if len(sis.rows) and (sis.rows.min() < 0 or sis.rows.max() >= len(source)):
        raise UserError(f"SIS file {sis.path} indexes rows beyond the {len(source)} images of split {split!r}; "
                        "it belongs to a different dataset")
    size = subset_size(fraction, count, rounding)
    if kind in ("bs", "mask"):
        features = backward_selection_features(sis.order, size)
    elif random_draw == "reference":
        if sis.patch != 1:
            raise UserError(f"SIS file {sis.path} has patch {sis.patch}: random_draw 'reference' draws pixels "
                            "(patch 1) as the authors' code; use random_draw 'project'")
        features = reference_random_features(len(source), count, size, split)[sis.rows]
    else:
        features = random_features(len(sis.rows), count, size, seed, draw, stream_key(stream, split))
    masks = feature_masks(features, Masking(patch=sis.patch), height, width)
    if kind == "mask":  # the keep-mask alone: no pixel of the source is read
        images = render_masks(masks, colour, source.images.shape[-1])
    else:
        images = source.images[sis.rows]
        if augment is not None:  # as the authors' "(+)": the mask stays that of the un-augmented image
            images = augment.apply(images)
        if masking == "noisy_linear":
            rng = random_stream(seed, draw + 1, f"impute/{kind}/{stream_key(stream, split)}")  # BS: draw -1
            images = noisy_linear_impute(images, masks, rng, colour)
        else:
            images = apply_masks(images, masks, colour)
    return Split(images, source.labels[sis.rows], source.ids[sis.rows]), masks, size


def _check_requests(sis_files: Mapping, requests: Sequence[SubsetRequest], masking: str, rounding: str,
                    random_draw: str) -> None:
    """One-line errors for options and requests :func:`build_subset_datasets` cannot serve."""
    if masking not in MASKINGS:
        raise UserError(f"--masking {masking!r} is not one of {', '.join(MASKINGS)}")
    if random_draw not in RANDOM_DRAWS:
        raise UserError(f"--random-draw {random_draw!r} is not one of {', '.join(RANDOM_DRAWS)}")
    subset_size(0.5, 1, rounding)  # checks the rounding
    if not sis_files:
        raise UserError("no SIS file given; pass --sis <split>=<file> for every split of the subset dataset")
    for request in requests:
        if request.kind not in KINDS:
            raise UserError(f"pixel-subset kind {request.kind!r} is not one of {', '.join(KINDS)}")
        subset_size(request.fraction, 1)  # checks the fraction
        if request.augment and request.kind == "mask":
            raise UserError(f"augmented subset {request.name!r}: a mask-only subset has no image to augment; "
                            "augment bs or random subsets")
        if request.augment and "train" not in sis_files:
            raise UserError(f"augmented subset {request.name!r} augments the train split, but no train SIS file "
                            "is given; pass --sis train=<file>")


def build_subset_datasets(dataset_path: str | Path, sis_files: Mapping[str, str | Path],
                          requests: Sequence[SubsetRequest], *, seed: int = 0, stream: str = "",
                          masking: str = "mean", rounding: str = "half_up", random_draw: str = "project",
                          crop_padding: int = 4, hflip: bool = True) -> None:
    """Write every requested subset dataset, with the splits of ``sis_files``, each file atomically.

    The SIS files and the source splits are read once for all requests (one job per experiment).
    ``stream`` prefixes the random streams (:func:`stream_key`); ``masking``: what masked pixels of BS
    and random subsets hold (``mean`` colour or ``noisy_linear`` imputation); ``rounding`` and
    ``random_draw``: see :func:`subset_split`; ``crop_padding`` and ``hflip``: the one crop and flip of the
    train images of ``augment`` requests (:func:`draw_once_augmentation`, draw = the request's draw).
    """
    _check_requests(sis_files, requests, masking, rounding, random_draw)
    info = dataset_info(dataset_path)
    if info.storage == "index":
        from .index_subsets import build_index_subsets

        if random_draw != "project":
            raise UserError(f"{dataset_path} is an image index: random_draw {random_draw!r} is for in-memory "
                            "datasets (the authors' CIFAR draw); use random_draw 'project'")
        if any(request.augment for request in requests):
            raise UserError(f"{dataset_path} is an image index: augmented subsets (augment_mode 'reference') "
                            "are for in-memory datasets; use augment_mode 'aligned'")
        build_index_subsets(dataset_path, info, sis_files, requests, seed=seed, stream=stream, masking=masking,
                            rounding=rounding)
        return
    orders = {split: read_sis_orders(path) for split, path in sis_files.items()}
    for sis in orders.values():
        if tuple(sis.image_shape) != tuple(info.image_shape):
            raise UserError(f"SIS file {sis.path} is for {sis.image_shape} images but {dataset_path} holds "
                            f"{info.image_shape}; pass the dataset the SIS was extracted on")
    patches = {sis.patch for sis in orders.values()}
    if len(patches) != 1:
        raise UserError(f"SIS files {', '.join(map(str, sis_files.values()))} use different patch sizes "
                        f"{sorted(patches)}; extract every split with the same `patch`")
    patch = patches.pop()
    sources = {split: load_split(dataset_path, split) for split in orders}
    colour = mask_colour(info.mean)
    height, width, _ = info.image_shape
    for request in requests:
        splits, masks, size = {}, {}, 0
        augment = draw_once_augmentation(len(orders["train"].rows), crop_padding, hflip, seed, request.draw,
                                         stream_key(stream, "train")) if request.augment else None
        # an augmented BS subset's draw is its augmentation's: masks and imputation stay the plain BS subset's
        draw = -1 if request.augment and request.kind == "bs" else request.draw
        for split, sis in orders.items():
            splits[split], masks[split], size = subset_split(
                sources[split], sis, request.kind, request.fraction, seed, draw, split, colour, stream,
                masking, rounding, random_draw, augment if split == "train" else None)
        with atomic_output(request.out) as tmp:
            write_dataset(tmp, name=request.name, kind="pixel_subset", splits=splits, class_names=info.class_names,
                          mean=colour / 255.0, std=info.std,
                          spec={"kind": request.kind, "fraction": request.fraction, "seed": seed,
                                "draw": request.draw})
            with write_h5(tmp, "a") as handle:
                write_attrs(handle, {
                    "subset_kind": request.kind, "fraction": float(request.fraction), "features_kept": size,
                    "masking": "mean" if request.kind == "mask" else masking,
                    "feature_count": Masking(patch=patch).feature_count(height, width), "patch": patch,
                    "random_seed": seed, "random_stream": stream, "random_draw": random_draw,
                    "rounding": rounding, "draw": request.draw if request.kind == "random" else -1,
                    "source_dataset": str(dataset_path), "source_mean": np.asarray(info.mean, dtype=np.float64),
                    "source_sis": json.dumps({split: str(path) for split, path in sis_files.items()}),
                    "source_model_run": json.dumps(next(iter(orders.values())).model_run, sort_keys=True),
                    "augmented_once": bool(request.augment),
                })
                for split in splits:
                    create_dataset(handle[split], "masks", masks[split])
                    create_dataset(handle[split], "rows", orders[split].rows)
                if augment is not None:
                    write_attrs(handle, {"crop_padding": augment.padding, "hflip": bool(hflip),
                                         "augment_draw": request.draw})
                    create_dataset(handle["train"], "crop_offsets", augment.offsets)
                    create_dataset(handle["train"], "flipped", augment.flips)


def build_subset_dataset(out: str | Path, dataset_path: str | Path, sis_files: Mapping[str, str | Path], *,
                         kind: str, fraction: float, seed: int = 0, draw: int = 0, name: str | None = None,
                         stream: str = "", masking: str = "mean", rounding: str = "half_up",
                         random_draw: str = "project") -> None:
    """Write one ``kind`` pixel-subset dataset of ``fraction`` (see :func:`build_subset_datasets`)."""
    build_subset_datasets(dataset_path, sis_files,
                          [SubsetRequest(kind, fraction, draw, name or Path(out).stem, str(out))], seed=seed,
                          stream=stream, masking=masking, rounding=rounding, random_draw=random_draw)


def zeroes_masked_pixels(path: str | Path, split: str) -> bool:
    """Whether evaluation sets the pixels outside ``split``'s masks to exactly 0 (the mean colour): yes for
    subsets masked with the mean colour, no for imputed ones (their stored values are the input)."""
    with h5py.File(path, "r") as handle:
        if split not in handle or "masks" not in handle[split]:
            return False
        return str(handle.attrs.get("masking", "mean")) == "mean"


def read_masks(path: str | Path, split: str) -> np.ndarray | None:
    """Pixel masks (n, H, W) of ``split`` of a subset dataset; None for an ordinary dataset."""
    with h5py.File(path, "r") as handle:
        group = handle.get(split)
        return None if group is None or "masks" not in group else group["masks"][()]


def _request(values: Sequence[str], augment: bool = False) -> SubsetRequest:
    kind, fraction, draw, name, out = values
    try:
        return SubsetRequest(kind, float(fraction), int(draw), name, out, augment)
    except ValueError:
        option = "--augmented-subset" if augment else "--subset"
        raise UserError(f"{option} {' '.join(values)}: FRACTION must be a number and DRAW an integer") from None


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="the prepared dataset the SIS were extracted on")
    parser.add_argument("--sis", action="append", required=True, metavar="SPLIT=FILE",
                        help="merged SIS file of one split (repeat per split)")
    parser.add_argument("--subset", action="append", default=[], nargs=5,
                        metavar=("KIND", "FRACTION", "DRAW", "NAME", "OUT"),
                        help="one subset dataset to write: bs|random|mask, fraction kept, random draw, name, file")
    parser.add_argument("--augmented-subset", action="append", default=[], nargs=5,
                        metavar=("KIND", "FRACTION", "DRAW", "NAME", "OUT"),
                        help="a bs|random subset whose train images are cropped and flipped once (augmentation "
                             "draw DRAW) before masking with the un-augmented image's mask")
    parser.add_argument("--crop-padding", type=int, default=4, help="crop padding of --augmented-subset")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True,
                        help="horizontal flips of --augmented-subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of random subsets")
    parser.add_argument("--stream", default="", help="prefix of the random streams (a shifted test set's name)")
    parser.add_argument("--masking", default="mean", choices=MASKINGS,
                        help="masked pixels of BS and random subsets: mean colour or ROAD noisy linear imputation")
    parser.add_argument("--rounding", default="half_up", choices=ROUNDINGS,
                        help="features kept: fraction x features rounded half up, or ceil (the authors' code)")
    parser.add_argument("--random-draw", default="project", choices=RANDOM_DRAWS,
                        help="random subsets: seeded by (seed, draw, stream), or the authors' per-split draw")
    args = parser.parse_args(argv)
    if not args.subset and not args.augmented_subset:
        parser.error("give at least one --subset or --augmented-subset")
    if args.crop_padding < 0:
        parser.error(f"--crop-padding {args.crop_padding} is negative; use 0 or more")
    requests = [_request(values) for values in args.subset]
    requests += [_request(values, augment=True) for values in args.augmented_subset]
    sis_files = named_files(args.sis, "--sis", "split", "test=results/sis/m/seed0/d/test.h5")
    build_subset_datasets(args.dataset, sis_files, requests, seed=args.seed, stream=args.stream,
                          masking=args.masking, rounding=args.rounding, random_draw=args.random_draw,
                          crop_padding=args.crop_padding, hflip=args.hflip)
    for request in requests:
        print(f"wrote {request.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
