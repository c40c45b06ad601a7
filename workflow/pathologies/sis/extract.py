"""Extract the SIS of one trained model on one shard of a dataset split into HDF5.

Usage (what the ``sis_extract`` rule runs)::

    python -m pathologies.sis.extract --model results/models/<model>/seed<seed>/model.pt \
        --dataset results/data/<dataset>.h5 --spec '<SisJob JSON>' --shard 0 --num-shards 2 \
        --out results/sis/<run>/<model>/seed<seed>/<dataset>/<split>/shard0of2.h5 --device auto --threads 1

``--spec`` is :meth:`pathologies.sis.jobs.SisJob.as_dict`: split, sample, seed, method, block,
patch, thresholds, tie_break, tie_break_seed, masked_value, softmax_dtype, batch_size,
lockstep_images, collection. Several ``--model`` files score as an ensemble (mean logits).
The images of the split (or a seeded sample of ``sample`` of them, in ascending row order) are
cut into ``num_shards`` contiguous parts; this job takes part ``shard``. Inputs are normalised with
the checkpoint's training statistics, so ``masked_value`` 0 is the training data's mean colour.
One backward selection per image serves every threshold; each stored SIS is verified
(f with only the SIS kept >= tau; :func:`pathologies.sis.engine.sufficient_subsets`).

File layout (n images in this file, p features, S steps, H x W images)::

    /            attrs: method ("exact"|"gradient"), thresholds, block (k; 1 for exact), patch, precision,
                        (precision verified only) screen (the screen used, "none" when none paid
                        off), candidates (evaluated by the screen or strict), rescored (of them,
                        scored in strict fp32), rescored_fraction, fallback_steps (image-steps redone
                        in strict fp32); merged files sum them over the shards,
                        tie_break ("index"|"random"), tie_break_seed, masked_value, softmax_dtype,
                        model (checkpoint path; JSON list for an ensemble), model_run (JSON list of
                        the checkpoints' run specs), dataset, split, shard, num_shards,
                        image_shape [H, W, C], sample, sample_seed, split_size, num_images (over all
                        shards), code_version, config (JSON of the spec)
    /index       int64 (n,)     row of the image in the dataset split
    /ids         int64 (n,)     the dataset's image ids
    /label       int64 (n,)     true label
    /class       int64 (n,)     explained class (predicted on the full image)
    /f_full      float64 (n,)   f on the full image
    /order       int32 (n, p)   features in removal order (first removed first); feature = flat
                                pixel index, or patch index (row-major patch grid) when patch > 1.
                                Gradient: root attr order_format "block", stored as uint8/uint16
                                when p <= 256/65536 (read with pathologies.sis.orders.read_orders)
    /curve       float64 (n, S) f after each step; curve[:, -1] = f of the fully masked image.
                                Exact: S = p, one feature per step
    /steps       int32 (n, S)   (gradient only) features removed after each step: min((j+1) k, p)
    /sis/<tau>/mask  bool (n, H, W)  the SIS at threshold tau (all False when there is none)
    /sis/<tau>/size  int32 (n,)      pixels in the SIS (0 when none)
    /sis/<tau>/none  bool (n,)       True when there is no SIS: f_full < tau, or no suffix of the order
                                     verifies at tau (not even the full image, f_full being borderline)
    /collection/<tau>/member  int32 (n, H, W)  (collection: true) 0 = in no SIS, k = in the k-th
                                               disjoint SIS of the image's SIS collection
    /collection/<tau>/count   int32 (n,)       SIS in the collection (an empty SIS counts too)

``<tau>`` is ``repr(float(tau))``, e.g. ``0.99``, ``0.9``, ``1.0`` (:func:`threshold_name`). The SIS is
a suffix of the order: the last ``len`` features removed for some ``len``.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..cliargs import CommandParser, add_compute_options, json_object, positive_int
from ..data.layout import DatasetInfo, Split, dataset_info, load_split, to_model_input
from ..device import resolve_device
from ..errors import UserError, cli
from ..io import atomic_output, create_dataset, fingerprint, provenance, read_h5, write_attrs, write_h5
from ..models.checkpoint import load_model
from . import orders, resume
from .batch_size import add_cache_option, cache_key, candidate_sample, tuned_batch_size
from .engine import (
    Masking,
    Scorer,
    backward_selection,
    check_threshold,
    sis_collection,
    sufficient_subsets,
    use_strict_fp32,
)
from .gradient import gradient_backward_selection
from .verified import VerifiedStats, Verifier, verified_backward_selection

SETTINGS_KEYS = ("split", "sample", "seed", "method", "block", "patch", "thresholds", "tie_break",
                 "tie_break_seed", "masked_value", "softmax_dtype", "batch_size", "lockstep_images",
                 "collection", "precision")
SOFTMAX_DTYPES = {"float64": torch.float64, "float32": torch.float32}
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "verified": None}


def threshold_name(threshold: float) -> str:
    """The HDF5 group name of a threshold: ``repr(float(threshold))``, e.g. ``"0.99"``."""
    return repr(float(threshold))


@dataclass(frozen=True)
class Settings:
    """Validated extraction settings (see the module docstring for their meaning)."""

    split: str
    sample: int | None
    seed: int
    method: str
    block: int
    patch: int
    thresholds: tuple[float, ...]
    tie_break: str
    tie_break_seed: int
    masked_value: float | tuple[float, ...]
    softmax_dtype: str
    batch_size: int
    lockstep_images: int
    collection: bool
    precision: str

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Settings:
        """Check every setting of ``spec`` and raise UserError naming the first bad key."""
        missing = [key for key in SETTINGS_KEYS if key not in spec]
        if missing:
            raise UserError(f"SIS spec lacks key(s) {', '.join(missing)}; pass a full spec "
                            "(pathologies.sis.jobs.SisJob.as_dict)")
        choices = {"method": ("exact", "gradient"), "tie_break": ("index", "random"),
                   "softmax_dtype": tuple(SOFTMAX_DTYPES), "precision": tuple(AMP_DTYPES)}
        for key, allowed in choices.items():
            if spec[key] not in allowed:
                raise UserError(f"SIS spec key {key}: {spec[key]!r} is not one of {', '.join(allowed)}")
        for key in ("block", "patch", "batch_size", "lockstep_images"):
            _check_int(key, spec[key], minimum=1)
        for key in ("seed", "tie_break_seed"):
            _check_int(key, spec[key], minimum=0)
        if spec["sample"] is not None:
            _check_int("sample", spec["sample"], minimum=1)
        if spec["method"] == "exact" and spec["block"] != 1:
            raise UserError(f"SIS spec key block: {spec['block']} applies to method gradient only; use 1 for exact")
        thresholds = spec["thresholds"]
        if not isinstance(thresholds, (list, tuple)) or not thresholds:
            raise UserError(f"SIS spec key thresholds: {thresholds!r} is not a non-empty list of probabilities")
        thresholds = tuple(check_threshold(t) for t in thresholds)
        if len(set(thresholds)) != len(thresholds):
            raise UserError(f"SIS spec key thresholds: {list(thresholds)} lists a threshold twice")
        value = spec["masked_value"]
        value = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)
        return cls(split=str(spec["split"]), sample=spec["sample"], seed=spec["seed"], method=spec["method"],
                   block=spec["block"], patch=spec["patch"], thresholds=thresholds, tie_break=spec["tie_break"],
                   tie_break_seed=spec["tie_break_seed"], masked_value=value,
                   softmax_dtype=spec["softmax_dtype"], batch_size=spec["batch_size"],
                   lockstep_images=spec["lockstep_images"], collection=bool(spec["collection"]),
                   precision=spec["precision"])

    @property
    def masking(self) -> Masking:
        return Masking(patch=self.patch, value=self.masked_value)


def make_scorer(models, info: DatasetInfo, settings: Settings, device: torch.device, *,
                temperature: float = 1.0) -> Scorer:
    """The scorer f of ``settings`` for images of dataset ``info``.

    ``precision`` fp32 is strict fp32 (TF32 off on CUDA); bf16 runs the models under autocast;
    verified scores in strict fp32 too (the screen lives in :class:`pathologies.sis.verified.Verifier`).
    """
    if settings.precision in ("fp32", "verified"):
        use_strict_fp32(device)
    height, width, channels = info.image_shape
    return Scorer(models, temperature=temperature, input_shape=(channels, height, width),
                  softmax_dtype=SOFTMAX_DTYPES[settings.softmax_dtype], amp_dtype=AMP_DTYPES[settings.precision])


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"SIS spec key {key}: {value!r} is not an integer >= {minimum}")


# ---------------------------------------------------------------------------------------------
# Which images, and their pixels


def shard_rows(split_size: int, sample: int | None, seed: int, shard: int, num_shards: int) -> np.ndarray:
    """Rows of the split that shard ``shard`` of ``num_shards`` holds, ascending (int64).

    The selection is every row, or a sample of ``sample`` rows drawn with ``seed``; shard i is
    the i-th of ``num_shards`` contiguous, near-equal parts of it (possibly empty), so the shards
    in order concatenate to the selection.
    """
    if sample is None:
        selection = np.arange(split_size, dtype=np.int64)
    else:
        if sample > split_size:
            raise UserError(f"SIS sample of {sample} images exceeds the {split_size} images of the split; "
                            "lower `sample` or set it to null (all images)")
        selection = np.sort(np.random.default_rng(seed).choice(split_size, size=sample, replace=False))
    return np.array_split(selection.astype(np.int64), num_shards)[shard]


def split_size(dataset_path: str | Path, split: str) -> int:
    """Number of images in ``split``; UserError naming the splits there are when it is missing."""
    with read_h5(dataset_path) as handle:
        if split not in handle:
            raise UserError(f"{dataset_path} has no split {split!r}; it has {sorted(handle.keys())} "
                            "(set `split` of the SIS run)")
        return len(handle[split]["labels"])


def load_rows(dataset_path: str | Path, info: DatasetInfo, split: str,
              rows: np.ndarray) -> Split:
    """The uint8 images (n, H, W, C), labels and ids of ``rows`` of a split (array or index storage)."""
    if info.storage == "index":
        from ..data.imagenet import ImageIndexDataset

        source = ImageIndexDataset(dataset_path, split)
        images = np.stack([source[int(row)][0].numpy() for row in rows]) if len(rows) else \
            np.zeros((0, *info.image_shape), dtype=np.uint8)
        return Split(images, source.labels[rows], source.ids[rows])
    data = load_split(dataset_path, split)
    return Split(data.images[rows], data.labels[rows], data.ids[rows])


# ---------------------------------------------------------------------------------------------
# Models


def load_models(paths: Sequence[str | Path], info: DatasetInfo, dataset_path: str | Path,
                device: torch.device) -> tuple[list[torch.nn.Module], list[dict]]:
    """Load the checkpoints in eval mode, checking they fit the dataset and share normalisation."""
    if not paths:
        raise UserError("no model checkpoint given; pass --model results/models/<model>/seed<seed>/model.pt")
    height, width, channels = info.image_shape
    models, metas = [], []
    for path in paths:
        model, meta = load_model(path, device)
        size, in_channels, classes = meta["image_size"], meta["in_channels"], meta["num_classes"]
        if (in_channels, size, size, classes) != (channels, height, width, info.num_classes):
            raise UserError(
                f"model {path} takes {in_channels}-channel {size}x{size} images with {classes} classes, "
                f"but dataset {dataset_path} has {channels}-channel {height}x{width} images with "
                f"{info.num_classes} classes; extract SIS on a dataset like the one the model was trained on"
            )
        if metas and (meta["mean"], meta["std"]) != (metas[0]["mean"], metas[0]["std"]):
            raise UserError(f"models {paths[0]} and {path} normalise their inputs differently; "
                            "an ensemble needs models trained on the same data")
        models.append(model)
        metas.append(meta)
    return models, metas


# ---------------------------------------------------------------------------------------------
# Extraction


@dataclass
class Extraction:
    """SIS results of n images, as stored in the file; ``members``/``counts``: collections (empty without)."""

    rows: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    f_full: np.ndarray
    order: np.ndarray
    curve: np.ndarray
    masks: dict[float, np.ndarray]
    members: dict[float, np.ndarray]
    counts: dict[float, np.ndarray]
    # True where no SIS verified (f_full < tau, or not even the full image verified at tau)
    none: dict[float, np.ndarray] = field(default_factory=dict)
    verified: VerifiedStats | None = None


def _selection(settings: Settings, scorer: Scorer, device: torch.device,
               batch_size: int) -> tuple[Callable, Verifier | None]:
    """The backward selection of the settings' method and precision (and its verifier, if verified)."""
    if settings.method == "exact" and settings.precision == "verified":
        verifier = Verifier(scorer, device, "auto", batch_size)
        return functools.partial(verified_backward_selection, verifier=verifier), verifier
    if settings.method == "exact":
        return backward_selection, None
    return functools.partial(gradient_backward_selection, block=settings.block), None


def _tie_break_seeds(settings: Settings, rows: np.ndarray) -> list[int] | None:
    """One seed per image from (tie_break_seed, row) for random tie-breaking; None otherwise."""
    if settings.tie_break != "random":
        return None
    return [int(np.random.SeedSequence([settings.tie_break_seed, int(row)]).generate_state(1)[0]) for row in rows]


def extract(scorer: Scorer, shard: Split, rows: np.ndarray, settings: Settings, *,
            normalisation: Mapping[str, Sequence[float]], device: torch.device, progress: bool = False,
            state_dir: str | Path | None = None, identity: str = "",
            batch_size_cache: str | Path | None = None, model_name: str = "the model") -> Extraction:
    """Backward selection, verified SIS per threshold and optional SIS collections of the images of ``shard``.

    ``shard``: the images (uint8 (n, H, W, C)), labels and ids of the split's ``rows``; images are
    normalised with the model's ``normalisation`` (``mean``, ``std``: its checkpoint metadata) group by
    group (``lockstep_images`` at a time).
    Random tie-breaking seeds each image from (tie_break_seed, row), so results do not depend on
    how the split is sharded. ``precision`` verified (exact method) runs
    :func:`pathologies.sis.verified.verified_backward_selection` with one screen for the whole shard:
    the same orders and curves as fp32, bit for bit. ``state_dir``: save the results after every
    lockstep group and resume from them (:mod:`pathologies.sis.resume`; ``identity`` names the job).
    ``batch_size_cache``: score exact candidates at the fastest batch size up to ``batch_size`` for this
    model and device, measured once and cached in that JSON file (:mod:`pathologies.sis.batch_size`;
    results are the same at every size, or the declared size is kept). A non-finite f (a diverged
    model) stops the job with one line naming ``model_name`` and the image.
    """
    images, mean, std = shard.images, normalisation["mean"], normalisation["std"]
    n, height, width = len(images), images.shape[1], images.shape[2]
    masking = settings.masking
    p = masking.feature_count(height, width)
    batch_size = settings.batch_size
    if batch_size_cache is not None and settings.method == "exact" and n:
        first = to_model_input(images[:settings.lockstep_images], mean, std, device)
        batch_size = tuned_batch_size(scorer.logits, candidate_sample(first, masking, batch_size), batch_size,
                                      batch_size_cache, cache_key(scorer.models, first.shape[1:], settings.precision,
                                                                  device),
                                      log=lambda line: print(line, file=sys.stderr))
    select, verifier = _selection(settings, scorer, device, batch_size)
    total = n * p * (p + 1) // 2 if settings.method == "exact" else n * math.ceil(p / settings.block)
    seeds = _tie_break_seeds(settings, rows)
    steps = p if settings.method == "exact" else math.ceil(p / settings.block)
    collected = settings.thresholds if settings.collection else ()
    out = Extraction(rows=rows, ids=shard.ids, labels=shard.labels, classes=np.zeros(n, np.int64),
                     f_full=np.zeros(n), order=np.zeros((n, p), np.int32), curve=np.zeros((n, steps)),
                     masks={t: np.zeros((n, height, width), bool) for t in settings.thresholds},
                     members={t: np.zeros((n, height, width), np.int32) for t in collected},
                     counts={t: np.zeros(n, np.int32) for t in collected},
                     none={t: np.ones(n, bool) for t in settings.thresholds},
                     verified=None if verifier is None else verifier.stats)
    done = resume.load(state_dir, identity, out, out.verified)
    bar = tqdm(total=total, disable=not progress, file=sys.stderr, mininterval=5,
               unit="eval" if settings.method == "exact" else "pass")
    for begin in range(done, n, settings.lockstep_images):
        part = slice(begin, begin + settings.lockstep_images)
        x = to_model_input(images[part], mean, std, device)
        part_seeds = None if seeds is None else seeds[part]
        selections = select(scorer, x, masking=masking, batch_size=batch_size,
                            tie_break_seeds=part_seeds, progress=bar.update)
        for i, selection in enumerate(selections, start=begin):
            out.classes[i], out.f_full[i] = selection.class_index, selection.f_start
            out.order[i], out.curve[i] = selection.order, selection.values
        check_finite_scores(out, part, model_name, settings.split)
        for threshold in settings.thresholds:
            found = sufficient_subsets(scorer, x, selections, threshold, masking=masking,
                                       batch_size=batch_size)
            for i, sis in enumerate(found, start=begin):
                if sis is not None:
                    out.masks[threshold][i] = masking.pixel_mask(sis, height, width)
                    out.none[threshold][i] = False
            if settings.collection:
                collections = sis_collection(scorer, x, threshold, classes=out.classes[part], masking=masking,
                                             batch_size=batch_size, tie_break_seeds=part_seeds,
                                             select=select)
                for i, collection in enumerate(collections, start=begin):
                    out.counts[threshold][i] = len(collection)
                    for k, sis in enumerate(collection, start=1):
                        out.members[threshold][i][masking.pixel_mask(sis, height, width)] = k
        if state_dir is not None:
            resume.save(state_dir, identity, min(begin + settings.lockstep_images, n), out, out.verified)
    bar.close()
    return out


def check_finite_scores(out: Extraction, part: slice, model_name: str, split: str) -> None:
    """UserError naming the model and the first image of ``part`` whose f (full or masked) is not finite:
    every comparison with tau would be meaningless, and a NaN f would pass as a full-image SIS."""
    finite = np.isfinite(out.f_full[part]) & np.isfinite(out.curve[part]).all(axis=1)
    if finite.all():
        return
    i = range(len(out.f_full))[part][int(np.argmin(finite))]
    if np.isfinite(out.f_full[i]):
        where, value = "a masked copy of ", out.curve[i][~np.isfinite(out.curve[i])][0]
    else:
        where, value = "", out.f_full[i]
    raise UserError(f"{model_name} gives a non-finite probability (f = {value}) on {where}image id {int(out.ids[i])} "
                    f"(row {int(out.rows[i])} of split {split}): its logits overflow or are nan; retrain it (e.g. "
                    "with a lower `lr`); no SIS written")


def write_extraction(path: str | Path, result: Extraction, settings: Settings, attrs: Mapping[str, Any], *,
                     order_format: str | None = None) -> None:
    """Write ``result`` in the layout of the module docstring, atomically.

    ``order_format``: layout of /order (:mod:`pathologies.sis.orders`); default ``block`` for
    Batched Gradient, ``full`` (no attribute, as before) for exact.
    """
    p = result.order.shape[1]
    if order_format is None:
        order_format = "block" if settings.method == "gradient" else "full"
    with atomic_output(path) as tmp, write_h5(tmp) as handle:
        write_attrs(handle, {
            "method": settings.method, "thresholds": np.asarray(settings.thresholds, dtype=np.float64),
            "block": settings.block, "patch": settings.patch, "tie_break": settings.tie_break,
            "tie_break_seed": settings.tie_break_seed,
            "masked_value": np.asarray(settings.masked_value, dtype=np.float64),
            "softmax_dtype": settings.softmax_dtype, "precision": settings.precision, **attrs,
        })
        if order_format != "full":
            write_attrs(handle, {"order_format": order_format})
        if settings.precision == "verified":
            stats = result.verified or VerifiedStats()
            write_attrs(handle, {"screen": stats.history, "candidates": stats.candidates, "rescored": stats.rescored,
                                 "rescored_fraction": stats.rescored_fraction,
                                 "fallback_steps": stats.fallback_steps})
        for name, data in (("index", result.rows), ("ids", result.ids), ("label", result.labels),
                           ("class", result.classes)):
            create_dataset(handle, name, np.asarray(data, dtype=np.int64))
        create_dataset(handle, "f_full", result.f_full.astype(np.float64))
        create_dataset(handle, "order", orders.encode(result.order, order_format))
        create_dataset(handle, "curve", result.curve.astype(np.float64))
        if settings.method == "gradient":
            per_step = np.minimum(np.arange(1, result.curve.shape[1] + 1) * settings.block, p)
            create_dataset(handle, "steps", np.broadcast_to(per_step, result.curve.shape).astype(np.int32))
        for threshold in settings.thresholds:
            group = handle.create_group(f"sis/{threshold_name(threshold)}")
            mask = result.masks[threshold]
            create_dataset(group, "mask", mask)
            create_dataset(group, "size", mask.sum(axis=(1, 2)).astype(np.int32))
            create_dataset(group, "none", result.none[threshold])
            if settings.collection:
                group = handle.create_group(f"collection/{threshold_name(threshold)}")
                create_dataset(group, "member", result.members[threshold])
                create_dataset(group, "count", result.counts[threshold])


def run(model_paths: Sequence[str | Path], dataset_path: str | Path, spec: Mapping[str, Any], *, shard: int = 0,
        num_shards: int = 1, out: str | Path, device: str = "auto", progress: bool = False,
        state_dir: str | Path | None = None, temperature: float | None = None,
        extra_attrs: Mapping[str, Any] | None = None, batch_size_cache: str | Path | None = None) -> None:
    """Check every input, extract the SIS of shard ``shard`` of ``num_shards`` and write ``out``.

    ``state_dir``: where a killed run left its finished lockstep groups (resumed, then removed).
    ``temperature``: f = softmax(logits / temperature) (a calibrated model); ``extra_attrs``: more root
    attributes (e.g. the calibration file). ``batch_size_cache``: tune the scoring batch size (see :func:`extract`).
    """
    settings = Settings.from_spec(spec)
    if isinstance(num_shards, bool) or not isinstance(num_shards, numbers.Integral) or num_shards < 1:
        raise UserError(f"--num-shards {num_shards!r} must be an integer >= 1")
    if isinstance(shard, bool) or not isinstance(shard, numbers.Integral) or not 0 <= shard < num_shards:
        raise UserError(f"shard {shard!r} is out of range for {num_shards} shards (0..{num_shards - 1})")
    torch_device = resolve_device(device)
    info = dataset_info(dataset_path)
    models, metas = load_models(model_paths, info, dataset_path, torch_device)
    scorer = make_scorer(models, info, settings, torch_device, temperature=1.0 if temperature is None else temperature)
    size = split_size(dataset_path, settings.split)
    rows = shard_rows(size, settings.sample, settings.seed, shard, num_shards)
    shard_images = load_rows(dataset_path, info, settings.split, rows)
    print(f"{settings.method} SIS of {len(rows)} images on {torch_device} ({settings.precision})", file=sys.stderr)
    scaled = {} if temperature is None else {"temperature": float(temperature)}
    identity = "" if state_dir is None else resume.identity(  # content, not paths: a retrained model is another job
        spec=dict(spec), models=[fingerprint(path) for path in model_paths], dataset=fingerprint(dataset_path),
        shard=shard, num_shards=num_shards, rows=rows, **scaled)
    result = extract(scorer, shard_images, rows, settings, normalisation=metas[0], device=torch_device,
                     progress=progress, state_dir=state_dir, identity=identity, batch_size_cache=batch_size_cache,
                     model_name=f"model {model_paths[0]}" if len(model_paths) == 1 else
                     f"ensemble of {', '.join(str(path) for path in model_paths)}")
    paths = [str(path) for path in model_paths]
    attrs = {
        "model": paths[0] if len(paths) == 1 else json.dumps(paths),
        "model_run": json.dumps([meta.get("run", {}) for meta in metas], sort_keys=True),
        "dataset": str(dataset_path), "split": settings.split, "shard": shard, "num_shards": num_shards,
        "image_shape": np.asarray(info.image_shape, dtype=np.int64),
        "sample": -1 if settings.sample is None else settings.sample, "sample_seed": settings.seed,
        "split_size": size, "num_images": size if settings.sample is None else settings.sample,
        **scaled, **(extra_attrs or {}), **provenance(config=dict(spec)),
    }
    if result.verified is not None:
        print(f"verified SIS: {result.verified.summary()}", file=sys.stderr)
    write_extraction(out, result, settings, attrs)
    resume.clear(state_dir)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="model.pt checkpoint (repeat for an ensemble)")
    parser.add_argument("--dataset", required=True, help="prepared dataset (.h5)")
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
    spec = json_object(args.spec)
    run(args.model, args.dataset, spec, shard=args.shard, num_shards=args.num_shards, out=args.out,
        device=args.device, progress=not args.no_progress, state_dir=args.state_dir,
        batch_size_cache=args.batch_size_cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
