"""Pixel-subset datasets of an ImageNet index: the source's image paths plus a mask per image.

The array-storage subsets of :mod:`pathologies.overinterp.subsets` store masked pixels; an index stores no
pixels, so its subset file is an index (:mod:`pathologies.data.imagenet` layout) of the images the SIS
file covers, with the same extra content as an array subset::

    /                attrs: the index's (image_root, resize, ...) with ``mean`` the source mean rounded
                            to the uint8 grid, plus the subset attributes of pathologies.overinterp.subsets
                            (subset_kind, masking, random_seed, draw, ...)
    /<split>/masks   bool (n, H, W)  True = pixel kept; chunked one image per chunk
    /<split>/rows    int64 (n,)      row of the image in the source index's split
    /<split>         attrs: impute_stream  the noise stream of noisy_linear imputation
                                           ("impute/<kind>/<stream key>", as array subsets)

:class:`pathologies.data.imagenet.ImageIndexDataset` fills every masked pixel as it streams an image, as
an array subset stores it: the mean colour; with ``masking`` ``noisy_linear`` ROAD's imputation, its noise
seeded by (seed, draw, impute_stream, row), so every epoch and rerun sees the same image; for a mask-only
subset (``mask``) the BS keep-mask alone, kept pixels white, the image file unread. Removal
orders are read and masks written in chunks of ``CHUNK`` images: memory stays bounded by the chunk
whatever the number of images (1.28 M ImageNet train images, 50,176 features each at 224 x 224).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.imagenet import IndexSplit, write_index
from ..data.layout import DatasetInfo, mask_colour
from ..errors import UserError
from ..io import COMPRESSION, atomic_output, read_h5, read_json_attr, write_attrs, write_h5
from ..sis.engine import Masking
from ..sis.orders import read_orders
from .subset_masks import (
    SubsetRequest,
    backward_selection_features,
    feature_masks,
    random_stream,
    stream_key,
    subset_size,
    uniform_features,
)

CHUNK = 256


def _sis_layout(path: Path, info: DatasetInfo, split_size: int) -> tuple[int, np.ndarray, object]:
    """(patch, rows, model_run) of an SIS file, checked against the source index split."""
    if not path.exists():
        raise UserError(f"SIS file {path} does not exist; build it with `snakemake {path}`")
    with read_h5(path) as handle:
        if "index" not in handle or "order" not in handle:
            raise UserError(f"SIS file {path} lacks index or order; rebuild it with the sis rules")
        shape = tuple(int(v) for v in handle.attrs["image_shape"])
        patch = int(handle.attrs.get("patch", 1))
        rows = handle["index"][()].astype(np.int64)
        width = handle["order"].shape[1]
        model_run = read_json_attr(handle, "model_run") if "model_run" in handle.attrs else None
    height, wide, _ = info.image_shape
    if shape != tuple(info.image_shape) or width != Masking(patch=patch).feature_count(height, wide):
        raise UserError(f"SIS file {path} is for {shape} images with {width} features, not the {info.image_shape} "
                        "images of the index; pass the dataset the SIS was extracted on")
    if len(rows) and (rows.min() < 0 or rows.max() >= split_size):
        raise UserError(f"SIS file {path} indexes rows beyond the {split_size} images of the split; "
                        "it belongs to a different dataset")
    return patch, rows, model_run


def build_index_subsets(dataset_path: str | Path, info: DatasetInfo, sis_files: Mapping[str, str | Path],
                        requests: Sequence[SubsetRequest], *, seed: int = 0, stream: str = "",
                        masking: str = "mean", rounding: str = "half_up") -> None:
    """Write every requested subset of an ImageNet index, each file atomically (see the module docstring)."""
    with read_h5(dataset_path) as handle:
        image_root, resize = str(read_json_attr(handle, "image_root")), int(handle.attrs["resize"])
        sources = {split: IndexSplit(list(handle[split]["paths"].asstr()[()]), handle[split]["labels"][()],
                                     handle[split]["ids"][()]) for split in sis_files}
    layouts = {split: _sis_layout(Path(path), info, len(sources[split])) for split, path in sis_files.items()}
    patches = {patch for patch, _, _ in layouts.values()}
    if len(patches) != 1:
        raise UserError(f"SIS files {', '.join(map(str, sis_files.values()))} use different patch sizes "
                        f"{sorted(patches)}; extract every split with the same `patch`")
    features = Masking(patch=patches.pop())
    height, width, _ = info.image_shape
    count = features.feature_count(height, width)
    colour = mask_colour(info.mean)
    sizes = [subset_size(request.fraction, count, rounding) for request in requests]
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(atomic_output(request.out)) for request in requests]
        for request, tmp in zip(requests, outputs, strict=True):
            splits = {split: IndexSplit([sources[split].paths[r] for r in rows], sources[split].labels[rows],
                                        sources[split].ids[rows]) for split, (_, rows, _) in layouts.items()}
            write_index(tmp, name=request.name, kind="pixel_subset", splits=splits, class_names=info.class_names,
                        image_root=image_root, image_size=height, resize=resize, mean=colour / 255.0, std=info.std,
                        spec={"kind": request.kind, "fraction": request.fraction, "seed": seed, "draw": request.draw})
        handles = [stack.enter_context(write_h5(tmp, "a")) for tmp in outputs]
        for split, path in sis_files.items():
            _, rows, _ = layouts[split]
            rngs = [random_stream(seed, r.draw, stream_key(stream, split)) if r.kind == "random" else None
                    for r in requests]
            masks = [out.require_group(split).create_dataset(
                "masks", shape=(len(rows), height, width), dtype=bool, chunks=(1, height, width), **COMPRESSION)
                for out in handles]
            with read_h5(path) as sis:
                for start in range(0, len(rows), CHUNK):
                    order = read_orders(sis, slice(start, start + CHUNK), path)
                    for size, rng, dataset in zip(sizes, rngs, masks, strict=True):
                        kept = backward_selection_features(order, size) if rng is None else \
                            uniform_features(rng, len(order), count, size)
                        dataset[start:start + len(order)] = feature_masks(kept, features, height, width)
            for request, out in zip(requests, handles, strict=True):
                out[split].create_dataset("rows", data=rows)
                out[split].attrs["impute_stream"] = f"impute/{request.kind}/{stream_key(stream, split)}"
        for request, size, out in zip(requests, sizes, handles, strict=True):
            write_attrs(out, {
                "subset_kind": request.kind, "fraction": float(request.fraction),
                "features_kept": size, "feature_count": count, "rounding": rounding, "random_draw": "project",
                "masking": "mean" if request.kind == "mask" else masking,
                "patch": features.patch, "random_seed": seed, "random_stream": stream,
                "draw": request.draw if request.kind == "random" else -1,
                "source_dataset": str(dataset_path), "source_mean": np.asarray(info.mean, dtype=np.float64),
                "source_sis": json.dumps({split: str(path) for split, path in sis_files.items()}),
                "source_model_run": json.dumps(next(iter(layouts.values()))[2], sort_keys=True),
            })
