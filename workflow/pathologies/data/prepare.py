"""Dataset preparation: a raw source under ``resources/`` -> one prepared HDF5 file.

``prepare_dataset(name, spec, resources, out_path)`` reads the source selected by
``spec["kind"]`` and writes the layout documented in :mod:`pathologies.data.layout`. The other keys of
``spec`` are the kind's options; missing ones take the defaults in :data:`DEFAULTS`, unknown
ones are an error. Kinds:

``digits``     scikit-learn's bundled 8x8 handwritten digits (no download), values 0..16 scaled
               to uint8 0..255, one channel; seeded stratified ``train``/``test`` split
               (``test_fraction``, ``seed``). ids: index in ``load_digits`` order.
``gaussian``   the noise dataset of Meding et al. (appendix A.2/A.7): class i has pixelwise,
               channelwise independent N(mean, (std_step * (i + 1))^2) noise, rounded and
               clipped to 0..255. Class names are zero-padded std indices ("001".."100"), so
               sorted order is class order. Each split is shuffled (seeded); ids: position.
``cifar10``, ``cifar100``  torchvision's loaders on ``resources/<kind>/`` (the python pickle
               layout, or its .tar.gz which is extracted there); ``download: true`` lets
               torchvision fetch it. ids: index in torchvision order.
``cifar10c``   ``resources/CIFAR-10-C/<corruption>.npy`` (5 severities x n images, severity 1
               first) and ``labels.npy``; one split ``<corruption>_s<severity>`` each. ids: index
               of the image within its severity block, which is its CIFAR-10 test index.
               ``sample`` keeps a seeded random subset of the n images, the same for every split.
               ``mixed_sample`` adds split ``mixed``: that many images drawn (seeded, without
               replacement) across every listed corruption, severity and image, so one sample
               stands for the whole set; its ids are (corruption, severity, index) encoded as
               ``(c * 5 + severity - 1) * n + index`` (c: position in the 19 known corruptions).
               ``mixed_draw``: ``sorted`` (default) draws over the listed corruptions and severities with
               ``default_rng([seed, 1])`` and keeps the rows in ascending (corruption, severity, index)
               order; ``reference`` draws as Carter et al.'s code (:func:`reference_mixed_draw`): all 19
               corruption files (listed or not) x 5 severities concatenated in alphabetical order,
               ``np.random.seed(seed); np.random.choice(total, size, replace=False)``, rows in draw
               order (seed 1234 and 2,000 images: the paper's sample).
``cifar10.1``  ``resources/CIFAR-10.1/cifar10.1_<version>_{data,labels}.npy``; split ``test``.
``mnist``, ``fashion_mnist``  the four IDX files in torchvision's raw layout under
               ``resources/<kind>/`` (or its legacy processed .pt files; Fashion-MNIST also from the
               Debian package's folder), grey
               28x28 images (C = 1); ``download: true`` lets torchvision fetch them;
               ``train_sample`` / ``test_sample`` keep a seeded subset. See :mod:`pathologies.data.mnist`.
``imagenet``   an index of ``resources/imagenet/{train,val}`` class folders; see
               :mod:`pathologies.data.imagenet`.

``cifar10c`` and ``cifar10.1`` have no train split: their mean/std are those of the CIFAR-10
train split, read from the prepared cifar10 file named by ``stats_from`` when given, otherwise the
constants :data:`CIFAR10_TRAIN_MEAN`/:data:`CIFAR10_TRAIN_STD` (the same statistics, computed
over all 50,000 x 1024 train pixels by :func:`pathologies.data.layout.channel_stats`).

CLI (what the ``prepare_dataset`` rule calls)::

    python -m pathologies.data.prepare --name NAME --spec '{"kind": "digits"}' \\
        --resources resources --out results/data/NAME.h5
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cliargs import CommandParser, json_object
from ..errors import UserError, cli
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, prepare_imagenet
from .layout import Split, dataset_info, write_dataset
from .mnist import load_mnist
from .splits import CIFAR10C_CORRUPTIONS, CIFAR10C_EXTRA_CORRUPTIONS, CIFAR10C_SEVERITIES, MIXED_SPLIT

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and std (0-1 scale) of all CIFAR-10 train pixels. Not the often-quoted
# (0.2023, 0.1994, 0.2010), which averages per-image stds.
CIFAR10_TRAIN_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_TRAIN_STD = (0.24703223, 0.24348513, 0.26158784)

CIFAR10_1_VERSIONS = ("v4", "v6")
MIXED_DRAWS = ("sorted", "reference")

DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"test_fraction": 0.25, "seed": 0},
    "gaussian": {
        "num_classes": 10, "image_size": 8, "train_per_class": 200, "test_per_class": 50,
        "std_step": 1.0, "mean": 128.0, "seed": 0,
    },
    "cifar10": {"download": False},
    "cifar100": {"download": False},
    "cifar10c": {
        "corruptions": list(CIFAR10C_CORRUPTIONS), "severities": list(CIFAR10C_SEVERITIES),
        "sample": None, "seed": 0, "stats_from": None, "mixed_sample": None, "mixed_draw": "sorted",
    },
    "cifar10.1": {"version": "v6", "stats_from": None},
    "mnist": {"download": False, "train_sample": None, "test_sample": None, "seed": 0},
    "fashion_mnist": {"download": False, "train_sample": None, "test_sample": None, "seed": 0},
    "imagenet": {
        "image_size": 224, "resize": 256, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "stats_sample": None, "seed": 0,
    },
}
# Types of the options whose default is None (the others take the type of their default).
_OPTIONAL_TYPES = {"sample": int, "stats_sample": int, "stats_from": str, "mixed_sample": int,
                   "train_sample": int, "test_sample": int}
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

Prepared = tuple[dict[str, Split], list[str], Any, Any]  # splits, class names, mean, std (None: from train)


def resolve_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a dataset spec and return it with every option of its kind filled in.

    Raises :class:`UserError` for an unknown kind, an unknown option or a value of the wrong type.
    """
    if not isinstance(spec, Mapping):
        raise UserError(f"dataset {name!r}: the spec must be a mapping with a 'kind' key, got {spec!r}")
    kind = spec.get("kind")
    if kind not in DEFAULTS:
        raise UserError(f"dataset {name!r}: unknown kind {kind!r}; choose one of {sorted(DEFAULTS)}")
    defaults = DEFAULTS[kind]
    unknown = sorted(set(spec) - set(defaults) - {"kind"})
    if unknown:
        raise UserError(
            f"dataset {name!r}: unknown option(s) {unknown} for kind {kind!r}; valid options: {sorted(defaults)}"
        )
    resolved: dict[str, Any] = {"kind": kind}
    for key, default in defaults.items():
        value = spec[key] if key in spec else copy.deepcopy(default)
        _check_type(name, key, value, default)
        resolved[key] = value
    if "seed" in resolved and not 0 <= resolved["seed"] < 2**32:
        raise UserError(f"dataset {name!r}: option 'seed' must be between 0 and 2**32 - 1, got {resolved['seed']}")
    return resolved


def _check_type(name: str, key: str, value: Any, default: Any) -> None:
    if default is None:
        if value is None:
            return
        expected, what = _OPTIONAL_TYPES[key], f"{_TYPE_WORDS[_OPTIONAL_TYPES[key]]} or null"
        valid = _is_instance(value, expected)
    elif isinstance(default, list):
        element = type(default[0])
        what = f"a list of which each item is {_TYPE_WORDS[element]}"
        valid = isinstance(value, list) and all(_is_instance(item, element) for item in value)
    else:
        what = _TYPE_WORDS[type(default)]
        valid = _is_instance(value, type(default))
    if not valid:
        raise UserError(f"dataset {name!r}: option {key!r} must be {what}, got {value!r}")


def _is_instance(value: Any, expected: type) -> bool:
    if expected in (int, float) and isinstance(value, bool):
        return False
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def _require_positive(name: str, spec: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if spec[key] is not None and spec[key] <= 0:
            raise UserError(f"dataset {name!r}: option {key!r} must be positive, got {spec[key]}")


# ---------------------------------------------------------------------------------------- digits


def _digits(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < spec["test_fraction"] < 1:
        raise UserError(
            f"dataset {name!r}: option 'test_fraction' must lie strictly between 0 and 1, got {spec['test_fraction']}"
        )
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    try:
        train_ids, test_ids = train_test_split(
            np.arange(len(labels)), test_size=spec["test_fraction"], stratify=labels, random_state=spec["seed"]
        )
    except ValueError as err:
        raise UserError(
            f"dataset {name!r}: test_fraction {spec['test_fraction']} cannot split the 10 classes ({err})"
        ) from None
    splits = {}
    for split, ids in (("train", train_ids), ("test", test_ids)):
        ids = np.sort(ids)
        splits[split] = Split(images=images[ids], labels=labels[ids], ids=ids)
    return splits, [str(digit) for digit in range(10)], None, None


# -------------------------------------------------------------------------------------- gaussian


def gaussian_class_std(spec: Mapping[str, Any]) -> np.ndarray:
    """Nominal noise std of each class of a ``gaussian`` spec, on the 0-255 scale: std_step * (i + 1).

    This is the std before rounding and clipping; clipping to 0..255 shrinks it noticeably once it
    exceeds about a third of the distance from ``mean`` to 0 or 255.
    """
    spec = resolve_spec("gaussian", {"kind": "gaussian", **spec})
    if spec["kind"] != "gaussian":
        raise UserError(f"gaussian_class_std needs a spec of kind 'gaussian', got {spec['kind']!r}")
    return spec["std_step"] * np.arange(1, spec["num_classes"] + 1, dtype=np.float64)


def _gaussian(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    _require_positive(name, spec, "num_classes", "image_size", "train_per_class", "test_per_class", "std_step")
    if not 0 <= spec["mean"] <= 255:
        raise UserError(f"dataset {name!r}: option 'mean' must lie in 0..255, got {spec['mean']}")
    stds = gaussian_class_std(spec)
    # One independent stream per split: the test set does not change when train_per_class does.
    train_rng, test_rng = (np.random.default_rng(seq) for seq in np.random.SeedSequence(spec["seed"]).spawn(2))
    splits = {
        "train": _gaussian_split(train_rng, stds, spec["train_per_class"], spec["image_size"], spec["mean"]),
        "test": _gaussian_split(test_rng, stds, spec["test_per_class"], spec["image_size"], spec["mean"]),
    }
    width = len(str(spec["num_classes"]))
    return splits, [str(i + 1).zfill(width) for i in range(spec["num_classes"])], None, None


def _gaussian_split(rng: np.random.Generator, stds: np.ndarray, per_class: int, size: int, mean: float) -> Split:
    """``per_class`` shuffled RGB noise images per class; class i ~ N(mean, stds[i]^2) per value."""
    labels = rng.permutation(np.repeat(np.arange(len(stds), dtype=np.int64), per_class))
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    block = max(1, 2**24 // (size * size * 3))  # bounds the float32 scratch to 64 MiB
    for label, std in enumerate(stds):
        rows = np.flatnonzero(labels == label)
        for start in range(0, len(rows), block):
            chunk = rows[start : start + block]
            noise = rng.standard_normal((len(chunk), size, size, 3), dtype=np.float32)
            noise *= std
            noise += mean
            images[chunk] = np.clip(np.rint(noise), 0, 255).astype(np.uint8)
    return Split(images=images, labels=labels, ids=np.arange(len(labels), dtype=np.int64))


# ------------------------------------------------------------------------------- cifar10/cifar100


def _cifar(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    source = CIFAR10 if spec["kind"] == "cifar10" else CIFAR100
    root = resources / spec["kind"]
    if spec["download"]:
        try:
            if not (root / source.base_folder).is_dir():
                download_and_extract_archive(source.url, str(root), filename=source.filename, md5=source.tgz_md5)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise UserError(
                f"could not download {source.url} into {root}/ ({err}); fetch it elsewhere and place "
                f"{source.filename} under {root}/"
            ) from None
    _ensure_cifar_files(source, root)
    loaded = {split: source(root, train=(split == "train")) for split in ("train", "test")}
    splits = {
        split: Split(
            images=np.asarray(data.data, dtype=np.uint8),
            labels=np.asarray(data.targets, dtype=np.int64),
            ids=np.arange(len(data.targets), dtype=np.int64),
        )
        for split, data in loaded.items()
    }
    return splits, list(loaded["train"].classes), None, None


def _ensure_cifar_files(source: type, root: Path) -> None:
    """Check the extracted pickle files (extracting a placed archive first); name what is missing."""
    from torchvision.datasets.utils import check_integrity, extract_archive

    folder, archive = root / source.base_folder, root / source.filename
    how = f"place {source.filename} or the extracted {source.base_folder}/ under {root}/ (or set download: true)"
    if not folder.is_dir() and archive.is_file():
        if not check_integrity(str(archive), source.tgz_md5):
            raise UserError(
                f"{archive} fails its MD5 check (corrupted or incomplete); replace it with a fresh copy of {source.url}"
            )
        print(f"extracting {archive} ...", file=sys.stderr)
        extract_archive(str(archive), str(root))
    if not folder.is_dir():
        raise UserError(f"{folder}/ is missing: {how}")
    expected = source.train_list + source.test_list + [[source.meta["filename"], source.meta["md5"]]]
    for filename, md5 in expected:
        path = folder / filename
        if not path.is_file():
            raise UserError(f"{path} is missing: {how}")
        if not check_integrity(str(path), md5):
            raise UserError(f"{path} fails its MD5 check (corrupted or incomplete): delete {folder}/ and {how}")


# ------------------------------------------------------------------------ cifar10c and cifar10.1


def _cifar10_stats(name: str, spec: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CIFAR-10 train mean/std: from the prepared file ``stats_from`` if given, else the constants."""
    if spec["stats_from"] is None:
        return CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD
    info = dataset_info(spec["stats_from"])
    if info.kind != "cifar10":
        raise UserError(
            f"dataset {name!r}: stats_from {spec['stats_from']} is a {info.kind!r} dataset; "
            "point it at a prepared cifar10 file"
        )
    return info.mean, info.std


def _load_npy(path: Path, how: str) -> np.ndarray:
    """Memory-map a .npy file; a missing or unreadable file is a UserError saying ``how`` to fix it."""
    if not path.is_file():
        raise UserError(f"{path} is missing: {how}")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise UserError(f"{path} is not a readable .npy file ({err}): {how}") from None


def _check_images(path: Path, images: np.ndarray, count: int | None = None) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise UserError(f"{path} must hold uint8 images of shape (N, 32, 32, 3), got {images.dtype} {images.shape}")
    if count is not None and len(images) != count:
        raise UserError(f"{path} holds {len(images)} images but its labels file has {count} labels")


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    valid = labels.ndim == 1 and labels.dtype.kind in "iu"
    if not valid or (len(labels) and not 0 <= labels.min() <= labels.max() < num_classes):
        raise UserError(f"{path} must hold a 1-D array of integer labels in 0..{num_classes - 1}")
    return np.asarray(labels, dtype=np.int64)


def _check_choices(name: str, key: str, values: Sequence, allowed: Sequence) -> None:
    bad = [value for value in values if value not in allowed]
    if not values or bad or len(set(values)) != len(values):
        raise UserError(
            f"dataset {name!r}: option {key!r} must be a non-empty list of distinct items from "
            f"{list(allowed)}; got {values}"
        )


def _cifar10c_labels(labels_path: Path, how: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-C's labels and their (severity, image) blocks, checked to repeat per severity."""
    labels = _check_labels(labels_path, _load_npy(labels_path, how), len(CIFAR10_CLASSES))
    if len(labels) == 0 or len(labels) % len(CIFAR10C_SEVERITIES):
        raise UserError(f"{labels_path} must hold 5 severity blocks of equally many labels, got {len(labels)} labels")
    blocks = labels.reshape(len(CIFAR10C_SEVERITIES), len(labels) // len(CIFAR10C_SEVERITIES))
    if not (blocks == blocks[0]).all():
        raise UserError(f"{labels_path} must repeat the same labels for every severity; it does not")
    return labels, blocks


def _cifar10c(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    folder = resources / "CIFAR-10-C"
    how = f"place the extracted CIFAR-10-C .npy files (CIFAR-10-C.tar, zenodo.org/record/2535967) under {folder}/"
    known = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS
    corruptions, severities = spec["corruptions"], spec["severities"]
    for key, values, allowed in (("corruptions", corruptions, known), ("severities", severities, CIFAR10C_SEVERITIES)):
        _check_choices(name, key, values, allowed)
    labels, blocks = _cifar10c_labels(folder / "labels.npy", how)
    per_severity = blocks.shape[1]
    ids = np.arange(per_severity, dtype=np.int64)
    if spec["sample"] is not None:
        if not 1 <= spec["sample"] <= per_severity:
            raise UserError(f"dataset {name!r}: option 'sample' must lie in 1..{per_severity}, got {spec['sample']}")
        ids = np.sort(np.random.default_rng(spec["seed"]).choice(per_severity, size=spec["sample"], replace=False))
    mixed_from, mixed = _mixed_choice(name, spec, per_severity)
    splits = {}
    for corruption in dict.fromkeys([*corruptions, *mixed_from]):
        path = folder / f"{corruption}.npy"
        images = _load_npy(path, how)
        _check_images(path, images, len(labels))
        for severity in severities if corruption in corruptions else ():
            block = images[(severity - 1) * per_severity : severity * per_severity]  # still memory-mapped
            splits[f"{corruption}_s{severity}"] = Split(
                images=block if spec["sample"] is None else block[ids], labels=blocks[0][ids], ids=ids
            )
        if corruption in mixed_from:
            mine = np.flatnonzero(mixed["corruption"] == mixed_from.index(corruption))
            rows = (mixed["severity"][mine] - 1) * per_severity + mixed["index"][mine]
            if len(mine):  # memory-mapped reads in ascending order, placed at the rows' positions
                ascending = np.argsort(rows, kind="stable")
                mixed["images"][mine[ascending]] = np.asarray(images[rows[ascending]])
    if mixed is not None:
        known = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS
        code = np.array([known.index(mixed_from[c]) for c in mixed["corruption"]], dtype=np.int64)
        mixed_ids = (code * len(CIFAR10C_SEVERITIES) + mixed["severity"] - 1) * per_severity + mixed["index"]
        splits[MIXED_SPLIT] = Split(images=mixed["images"], labels=blocks[0][mixed["index"]],
                                    ids=mixed_ids.astype(np.int64))
    mean, std = _cifar10_stats(name, spec)
    return splits, list(CIFAR10_CLASSES), mean, std


def _mixed_choice(name: str, spec: Mapping[str, Any], per_severity: int) -> tuple[list[str], dict | None]:
    """(corruptions the ``mixed`` sample draws from, {corruption position, severity, index, images buffer})
    of a cifar10c spec; ([], None) without ``mixed_sample``."""
    if spec["mixed_draw"] not in MIXED_DRAWS:
        raise UserError(f"dataset {name!r}: option 'mixed_draw' must be one of {list(MIXED_DRAWS)}, "
                        f"got {spec['mixed_draw']!r}")
    if spec["mixed_sample"] is None:
        return [], None
    if spec["mixed_draw"] == "reference":  # over all 19 files and 5 severities, whatever is listed
        mixed_from = sorted(CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS)
        severities = list(CIFAR10C_SEVERITIES)
    else:
        mixed_from, severities = list(spec["corruptions"]), list(spec["severities"])
    total = len(mixed_from) * len(severities) * per_severity
    if not 1 <= spec["mixed_sample"] <= total:
        raise UserError(f"dataset {name!r}: option 'mixed_sample' must lie in 1..{total}, "
                        f"got {spec['mixed_sample']}")
    if spec["mixed_draw"] == "reference":
        drawn = reference_mixed_draw(len(mixed_from), per_severity, spec["mixed_sample"], spec["seed"])
        mixed = {"corruption": drawn[:, 0], "severity": drawn[:, 1], "index": drawn[:, 2]}
    else:
        # a separate stream from `sample`'s: (seed, 1)
        flat = np.sort(np.random.default_rng([spec["seed"], 1]).choice(total, size=spec["mixed_sample"],
                                                                         replace=False))
        mixed = {"corruption": flat // (len(severities) * per_severity),
                 "severity": np.asarray(severities)[(flat // per_severity) % len(severities)],
                 "index": flat % per_severity}
    mixed["images"] = np.zeros((spec["mixed_sample"], 32, 32, 3), dtype=np.uint8)
    return mixed_from, mixed


def reference_mixed_draw(corruptions: int, per_severity: int, size: int, seed: int) -> np.ndarray:
    """(corruption position, severity, index) of each image Carter et al.'s CIFAR-10-C SIS sample draws,
    in draw order, (size, 3) int64: ``corruptions`` files (alphabetical order) of 5 severities x
    ``per_severity`` images concatenated, ``np.random.seed(seed)``, ``np.random.choice(total, size,
    replace=False)`` (their ``CIFAR10C._get_sis_sample_idxs``; legacy ``RandomState`` = the seeded global)."""
    per_corruption = len(CIFAR10C_SEVERITIES) * per_severity
    flat = np.random.RandomState(seed).choice(corruptions * per_corruption, size=size, replace=False)
    flat = np.asarray(flat, dtype=np.int64)
    return np.stack([flat // per_corruption, (flat % per_corruption) // per_severity + 1, flat % per_severity], 1)


def _cifar10_1(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    version = spec["version"]
    if version not in CIFAR10_1_VERSIONS:
        raise UserError(
            f"dataset {name!r}: option 'version' must be one of {list(CIFAR10_1_VERSIONS)}, got {version!r}"
        )
    folder = resources / "CIFAR-10.1"
    data_path, labels_path = folder / f"cifar10.1_{version}_data.npy", folder / f"cifar10.1_{version}_labels.npy"
    how = (f"place {data_path.name} and {labels_path.name} (github.com/modestyachts/CIFAR-10.1, datasets/) "
           f"under {folder}/")
    labels = _check_labels(labels_path, _load_npy(labels_path, how), len(CIFAR10_CLASSES))
    images = _load_npy(data_path, how)
    _check_images(data_path, images, len(labels))
    split = Split(images=np.asarray(images), labels=labels, ids=np.arange(len(labels), dtype=np.int64))
    mean, std = _cifar10_stats(name, spec)
    return {"test": split}, list(CIFAR10_CLASSES), mean, std


# ------------------------------------------------------------------------- mnist / fashion_mnist


def _mnist(name: str, spec: Mapping[str, Any], resources: Path) -> Prepared:
    splits, class_names = load_mnist(name, spec, resources)
    return splits, class_names, None, None


# ---------------------------------------------------------------------------------- entry points

_ARRAY_BUILDERS: dict[str, Callable[[str, Mapping[str, Any], Path], Prepared]] = {
    "digits": _digits,
    "gaussian": _gaussian,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "cifar10c": _cifar10c,
    "cifar10.1": _cifar10_1,
    "mnist": _mnist,
    "fashion_mnist": _mnist,
}


def prepare_dataset(name: str, spec: Mapping[str, Any], resources: Path, out_path: Path) -> None:
    """Build the dataset described by ``spec`` from ``resources`` and write it to ``out_path``.

    The file's ``spec`` attribute records the resolved spec (every default filled in).
    """
    spec = resolve_spec(name, spec)
    resources, out_path = Path(resources), Path(out_path)
    if spec["kind"] == "imagenet":
        _require_positive(name, spec, "image_size", "resize", "stats_sample")
        prepare_imagenet(name, spec, resources, out_path)
        return
    splits, class_names, mean, std = _ARRAY_BUILDERS[spec["kind"]](name, spec, resources)
    write_dataset(out_path, name=name, kind=spec["kind"], splits=splits, class_names=class_names,
                  spec=spec, mean=mean, std=std)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="dataset name (recorded in the file)")
    parser.add_argument("--spec", required=True, help='the dataset spec as JSON, e.g. \'{"kind": "digits"}\'')
    parser.add_argument("--resources", type=Path, default=Path("resources"), help="folder of raw sources")
    parser.add_argument("--out", type=Path, required=True, help="prepared HDF5 file to write")
    args = parser.parse_args(argv)
    spec = json_object(args.spec)
    prepare_dataset(args.name, spec, args.resources, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
