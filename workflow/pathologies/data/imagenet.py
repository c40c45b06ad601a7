"""ImageNet as an index: image paths and labels in HDF5, pixels streamed from disk on demand.

Copying 1.28 M JPEGs into HDF5 buys nothing, so the prepared file for an ImageFolder source
(``<root>/train/<class>/<image>``, ``<root>/val/<class>/<image>``) follows the layout of
:mod:`pathologies.data.layout` with ``storage = "index"``::

    /                 attrs: as for every prepared dataset, plus
                             image_root  the folder the paths are relative to, as given when the
                                         index was built (a relative root is relative to the
                                         working directory, i.e. the Snakemake workdir)
                             resize      shorter image side after resizing, in pixels
    /<split>/paths    UTF-8 str (N,)  path relative to image_root, e.g. "train/n01440764/x.JPEG"
    /<split>/labels   int64 (N,)      index into class_names (sorted class folder names)
    /<split>/ids      int64 (N,)      position in the sorted folder listing

Splits: ``train`` (the train folder) and ``test`` (the val folder). :class:`ImageIndexDataset`
streams one split as uint8 HWC tensors: resize the shorter side to ``resize``, centre-crop to
``image_shape``, exactly as every image is seen at evaluation time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import functional as TF

from ..errors import UserError
from ..io import atomic_output, create_dataset, h5py, read_h5, read_json_attr, unreadable, write_h5
from .fill import apply_masks, image_noise, noisy_linear_impute, render_masks
from .layout import block_channel_stats, mask_colour, write_root_attrs

# Standard ImageNet train statistics (0-1 scale) used by torchvision's pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLIT_FOLDERS = {"train": "train", "test": "val"}


@dataclass(frozen=True)
class IndexSplit:
    """One split of an index: paths relative to the image root, int64 labels and ids."""

    paths: list[str]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def index_image_folder(root: Path) -> tuple[dict[str, IndexSplit], list[str]]:
    """List ``root/train`` and ``root/val`` (class folders of images) as index splits.

    Classes are the sorted folder names of ``train``; ``val`` must have the same folders.
    """
    class_names: list[str] | None = None
    splits = {}
    for split, folder_name in SPLIT_FOLDERS.items():
        folder = root / folder_name
        if not folder.is_dir():
            raise UserError(
                f"ImageNet folder {folder}/ is missing; place the ImageNet {folder_name} images there "
                f"as class folders ({folder}/<wnid>/<image>.JPEG)"
            )
        try:
            names, class_to_idx = find_classes(folder)
            if class_names is not None and names != class_names:
                differing = sorted(set(names) ^ set(class_names))
                raise UserError(
                    f"{folder}/ and {root / 'train'}/ must contain the same class folders; "
                    f"they differ in {differing[:5]}{' ...' if len(differing) > 5 else ''}"
                )
            samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as err:
            raise UserError(f"{folder}/: {err} Place images in every class folder.") from None
        class_names = names
        splits[split] = IndexSplit(
            paths=[os.path.relpath(path, root) for path, _ in samples],
            labels=np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples)),
            ids=np.arange(len(samples), dtype=np.int64),
        )
    assert class_names is not None
    return splits, class_names


def open_rgb(path: str | Path) -> Image.Image:
    """An image file of the index as RGB; a missing file, or one that does not decode (text, truncated),
    is one line saying what to do."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(
            f"image {path} listed in the ImageNet index is missing; restore it or rebuild the index"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # PIL: UnidentifiedImageError (not an image), "image file is truncated", SyntaxError for a broken header
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"image {path} listed in the ImageNet index cannot be decoded ({detail}): it is damaged "
                        "or not an image; replace it with a good copy, or remove it and rebuild the index") from None


def load_image(path: str | Path, resize: int, image_size: int) -> np.ndarray:
    """Read an image as RGB, resize its shorter side to ``resize``, centre-crop to ``image_size``.

    Returns uint8 (image_size, image_size, 3).
    """
    image = TF.center_crop(TF.resize(open_rgb(path), resize), image_size)
    return np.array(image, dtype=np.uint8)


def load_image_random_resized_crop(path: str | Path, image_size: int) -> np.ndarray:
    """Read an image as RGB and take torchvision's RandomResizedCrop(image_size) of it (training only).

    The crop (scale 0.08-1, aspect 3/4-4/3, as pytorch/examples/imagenet) is drawn from torch's
    global generator: in DataLoader workers that is seeded from the loader's ``generator``.
    Returns uint8 (image_size, image_size, 3).
    """
    from torchvision import transforms

    return np.array(transforms.RandomResizedCrop(image_size, antialias=True)(open_rgb(path)), dtype=np.uint8)


def sample_channel_stats(
    root: Path, split: IndexSplit, resize: int, image_size: int, sample: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0-1 scale) over a seeded random sample of ``sample`` images."""
    if not 1 <= sample <= len(split):
        raise UserError(f"stats_sample must be between 1 and the {len(split)} train images, got {sample}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(split), size=sample, replace=False))

    def images():
        for count, index in enumerate(chosen, start=1):
            yield load_image(root / split.paths[index], resize, image_size)[None]
            if count % 1000 == 0:
                print(f"channel statistics: {count}/{sample} images", file=sys.stderr)

    return block_channel_stats(images())


def write_index(
    out_path: str | Path,
    *,
    name: str,
    kind: str,
    splits: Mapping[str, IndexSplit],
    class_names: Sequence[str],
    image_root: str | Path,
    image_size: int,
    resize: int,
    mean: Sequence[float],
    std: Sequence[float],
    spec: Mapping | None = None,
) -> None:
    """Write index splits in the ``storage = "index"`` layout, atomically."""
    with atomic_output(out_path) as tmp, write_h5(tmp) as handle:
        write_root_attrs(handle, name=name, kind=kind, class_names=class_names,
                         image_shape=[image_size, image_size, 3], mean=mean, std=std, storage="index",
                         spec=spec, image_root=str(image_root), resize=resize)
        for split_name, split in splits.items():
            group = handle.create_group(split_name)
            encoded = [path.encode() for path in split.paths]
            string_type = h5py.string_dtype("utf-8", max(1, max(map(len, encoded), default=1)))
            create_dataset(group, "paths", np.array(encoded, dtype=string_type))
            create_dataset(group, "labels", split.labels.astype(np.int64))
            create_dataset(group, "ids", split.ids.astype(np.int64))


def prepare_imagenet(name: str, spec: Mapping, resources: Path, out_path: Path) -> None:
    """Index ``resources/imagenet/{train,val}`` and write it to ``out_path``.

    ``spec``: the resolved spec with every option present (image_size, resize, mean, std,
    stats_sample, seed; see :mod:`pathologies.data.prepare`). ``stats_sample`` (when set) replaces
    mean/std by statistics of that many seeded-random train images.
    """
    root = resources / "imagenet"
    if spec["resize"] < spec["image_size"]:
        raise UserError(
            f"dataset {name!r}: resize ({spec['resize']}) must be at least image_size "
            f"({spec['image_size']}) so the centre crop lies inside the image"
        )
    if len(spec["mean"]) != 3 or len(spec["std"]) != 3 or min(spec["std"]) <= 0:
        raise UserError(f"dataset {name!r}: options 'mean' and 'std' must be 3 numbers each (RGB, 0-1 scale), std > 0")
    print(f"indexing {root}/ ...", file=sys.stderr)
    splits, class_names = index_image_folder(root)
    mean, std = spec["mean"], spec["std"]
    if spec["stats_sample"] is not None:
        mean, std = sample_channel_stats(
            root, splits["train"], spec["resize"], spec["image_size"], spec["stats_sample"], spec["seed"]
        )
    write_index(
        out_path, name=name, kind="imagenet", splits=splits, class_names=class_names, image_root=root,
        image_size=spec["image_size"], resize=spec["resize"], mean=mean, std=std, spec=spec,
    )


class ImageIndexDataset(torch.utils.data.Dataset):
    """Stream one split of an index file as ``(uint8 tensor (S, S, 3), label)`` pairs.

    ``image_root`` overrides the root stored in the file (e.g. when images live elsewhere on a
    cluster node). The paths are read once here, so the object pickles cheaply to workers. A
    pixel-subset index (:mod:`pathologies.overinterp.index_subsets`) has ``/<split>/masks``, read image by
    image from the file (opened lazily in each worker); each pixel outside an image's mask is filled as its
    array subset stores it (:mod:`pathologies.data.fill`): the file's mean colour, or with ``masking``
    ``noisy_linear`` ROAD's imputation with noise seeded per image; a mask-only subset (``subset_kind``
    ``mask``) renders the mask alone, without reading the image. With ``with_masks`` the mask (S, S) bool
    comes as a third item.
    """

    def __init__(self, index_path: str | Path, split: str, image_root: str | Path | None = None,
                 with_masks: bool = False, random_resized_crop: bool = False) -> None:
        index_path = Path(index_path)
        if not index_path.exists():
            raise UserError(f"ImageNet index {index_path} does not exist; build it with `snakemake {index_path}`")
        with read_h5(index_path) as handle:
            if read_json_attr(handle, "storage") != "index":
                raise UserError(f"{index_path} stores images, not an index; "
                                "load it with pathologies.data.layout.load_split")
            if split not in handle:
                raise UserError(f"{index_path} has no split {split!r}; it has {sorted(handle.keys())}")
            self.paths = list(handle[split]["paths"].asstr()[()])
            self.labels = handle[split]["labels"][()]
            self.ids = handle[split]["ids"][()]
            self.image_size = int(handle.attrs["image_shape"][0])
            self.resize = int(handle.attrs["resize"])
            self.image_root = Path(image_root if image_root is not None else str(read_json_attr(handle, "image_root")))
            self.masked = "masks" in handle[split]
            self.colour = mask_colour(handle.attrs["mean"])
            self.fill = _fill(handle, split) if self.masked else None
        if with_masks and not self.masked:
            raise UserError(f"{index_path} split {split!r} has no masks; it is not a pixel-subset index")
        if random_resized_crop and self.masked:
            raise UserError(f"{index_path}: random_resized_crop would move the pixel-subset masks; "
                            "turn it off for pixel-subset datasets")
        self.index_path, self.split, self.with_masks = index_path, split, with_masks
        self.random_resized_crop = random_resized_crop
        self._masks = None  # h5py dataset, opened in the process that reads

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_masks": None}

    def __len__(self) -> int:
        return len(self.paths)

    def mask(self, index: int) -> np.ndarray:
        """The pixel mask (S, S) bool of image ``index`` of a pixel-subset index."""
        try:
            if self._masks is None:
                self._masks = h5py.File(self.index_path, "r")[self.split]["masks"]
            return self._masks[index]
        except OSError as err:  # a damaged file met in a worker: the same line as io.read_h5's
            raise UserError(unreadable(self.index_path, err)) from None

    def __getitem__(self, index: int):
        if self.random_resized_crop:
            return (torch.from_numpy(load_image_random_resized_crop(self.image_root / self.paths[index],
                                                                    self.image_size)),
                    int(self.labels[index]))
        if not self.masked:
            image = load_image(self.image_root / self.paths[index], self.resize, self.image_size)
            return torch.from_numpy(image), int(self.labels[index])
        mask = self.mask(index)
        if self.fill.kind == "mask":  # the keep-mask alone: no pixel of the image
            image = render_masks(mask[None], self.colour, 3)[0]
        else:
            image = load_image(self.image_root / self.paths[index], self.resize, self.image_size)
            if self.fill.masking == "noisy_linear":
                rng = image_noise(self.fill.seed, self.fill.draw, self.fill.stream, int(self.fill.rows[index]))
                image = noisy_linear_impute(image[None], mask[None], rng, self.colour)[0]
            else:
                image = apply_masks(image[None], mask[None], self.colour)[0]
        if self.with_masks:
            return torch.from_numpy(image), int(self.labels[index]), torch.from_numpy(mask)
        return torch.from_numpy(image), int(self.labels[index])


@dataclass(frozen=True)
class SubsetFill:
    """How a pixel-subset index fills masked pixels: subset ``kind``, ``masking``, and the imputation
    noise's ``seed``, ``draw``, ``stream`` and the source ``rows`` of the split's images."""

    kind: str
    masking: str
    seed: int
    draw: int
    stream: str
    rows: np.ndarray


def _fill(handle, split: str) -> SubsetFill:
    attrs, group = handle.attrs, handle[split]
    return SubsetFill(kind=str(attrs.get("subset_kind", "bs")), masking=str(attrs.get("masking", "mean")),
                      seed=int(attrs.get("random_seed", 0)), draw=int(attrs.get("draw", -1)),
                      stream=str(group.attrs.get("impute_stream", "")),
                      rows=group["rows"][()] if "rows" in group else np.arange(len(group["labels"])))
