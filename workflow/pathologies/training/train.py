"""Train one model and dump its predictions after every epoch (epoch 0 = untrained).

Usage (what the ``train`` rule runs)::

    python -m pathologies.training.train --dataset results/data/digits.h5 --spec '<RunSpec JSON>' \
        --model-out .../model.pt --log-out .../train_log.csv --predictions-out .../predictions.h5 \
        --state-dir results/resume/<model>/seed<seed> --device auto --threads 2

Array-storage datasets live on the device as one tensor and batches are index slices, so there is
no per-sample Python work; ImageNet index datasets stream from disk through DataLoader workers
(``--threads`` of them), with the same order, augmentation and dumps. After every epoch the full training
state (weights, optimizer, scheduler, random generators, log rows, predictions so far) is saved to
``--state-dir``; a rerun continues from it and produces the same files as an uninterrupted run
(bit-identical on CPU with ``deterministic: true``). The state is deleted once the outputs are written.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cliargs import CommandParser, add_compute_options, json_object
from ..config import model_input_size
from ..data.layout import dataset_info, load_split, to_model_input
from ..device import resolve_device
from ..errors import UserError, cli
from ..io import (
    atomic_output,
    code_version,
    content_checksum,
    create_dataset,
    fingerprint,
    h5_fingerprint,
    provenance,
    read_h5,
    remove_stale_temporaries,
    write_attrs,
    write_h5,
)
from ..models.checkpoint import save_model
from ..models.foreign_checkpoints import set_data_normalisation
from ..models.registry import seed_eval_dropout
from ..models.weights import weights_file
from .budget import EXIT_CODE, BudgetReached, TimeBudget
from .distributed import World, finish, init_world, wrap
from .precision import Precision
from .step import optimizer_step
from .transforms import eval_generator, input_stats, random_resized_crop

EVAL_BATCH = 1024


def subset_indices(n: int, fraction: float, part: int, seed: int) -> np.ndarray:
    """Indices of disjoint part ``part`` of ``round(1/fraction)`` parts of ``range(n)`` (sorted)."""
    parts = round(1 / fraction)
    if parts == 1:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(np.array_split(perm, parts)[part])


def augment_batch(generator: torch.Generator, crop_padding: int, hflip: bool,
                  *tensors: torch.Tensor, fill: torch.Tensor | None = None, batch: int | None = None,
                  rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Random crop (zero padding) and horizontal flip, the same draw applied to every tensor.

    All tensors are (B, C, H, W) with equal B, H, W: pass an image batch and its masks together to
    keep them aligned. Padding value 0 is the mean colour after normalisation; ``fill`` (C,) pads the first
    tensor with another value (black: torchvision's RandomCrop pads the image before normalising). With
    ``rows`` the tensors are those rows of a batch of ``batch`` images (one data-parallel rank's share): the
    draws are made for the whole batch, as one process would, and the share's are applied.
    """
    first = tensors[0]
    n, _, height, width = first.shape
    batch = n if batch is None else batch
    device = first.device

    def mine(draw: torch.Tensor) -> torch.Tensor:
        return (draw if rows is None else draw[rows]).to(device)

    if crop_padding:
        pad = crop_padding
        dy = mine(torch.randint(0, 2 * pad + 1, (batch,), generator=generator))
        dx = mine(torch.randint(0, 2 * pad + 1, (batch,), generator=generator))
        rows_ = (torch.arange(height, device=device) + dy[:, None])[:, None, :, None]
        cols = (torch.arange(width, device=device) + dx[:, None])[:, None, None, :]
        bidx = torch.arange(n, device=device)[:, None, None, None]
        cropped = []
        for k, t in enumerate(tensors):
            shift = fill.view(1, -1, 1, 1).to(t) if fill is not None and k == 0 else None
            padded = F.pad(t, (pad, pad, pad, pad)) if shift is None else F.pad(t - shift, (pad, pad, pad, pad)) + shift
            cidx = torch.arange(t.shape[1], device=device)[None, :, None, None]
            cropped.append(padded[bidx, cidx, rows_, cols])
        tensors = tuple(cropped)
    if hflip:
        flip = mine(torch.rand(batch, generator=generator) < 0.5)[:, None, None, None]
        tensors = tuple(torch.where(flip, t.flip(3), t) for t in tensors)
    return tensors


class InMemorySplit:
    """A split held on the device as one normalised tensor; batches are index slices."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray, ids: np.ndarray):
        self.x, self.labels, self.ids = x, labels, ids
        self.y = torch.as_tensor(labels, device=x.device)

    @classmethod
    def load(cls, dataset_path: str | Path, split: str, mean, std, device: torch.device,
             keep: np.ndarray | None = None) -> InMemorySplit:
        data = load_split(dataset_path, split)
        rows = slice(None) if keep is None else keep
        split = cls(to_model_input(data.images[rows], mean, std, device), data.labels[rows], data.ids[rows])
        split.mean, split.std = mean, std  # what crop_fill needs
        return split

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, order: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                rows: Callable[[int], torch.Tensor] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in ``order`` (a permutation of row indices) or in stored order (``generator``: unused);
        with ``rows`` (see :func:`batch_rows`), only those rows of each batch."""
        for start in range(0, len(self), batch_size):
            if order is None:
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                if rows is not None:
                    idx = idx[rows(len(idx))]
                idx = idx.to(self.x.device)
                yield self.x[idx], self.y[idx]


class StreamedSplit:
    """A split of an ImageNet index, decoded from disk by DataLoader workers and normalised on the device."""

    def __init__(self, dataset_path: str | Path, split: str, mean, std, device: torch.device,
                 keep: np.ndarray | None = None, workers: int = 4, random_resized_crop: bool = False):
        from ..data.imagenet import ImageIndexDataset

        dataset = ImageIndexDataset(dataset_path, split, random_resized_crop=random_resized_crop)
        rows = np.arange(len(dataset)) if keep is None else keep
        self.dataset = torch.utils.data.Subset(dataset, rows.tolist())
        self.labels = dataset.labels[rows]
        self.ids = dataset.ids[rows]
        self.mean, self.std, self.device, self.workers = mean, std, device, workers
        self.random_resized_crop = random_resized_crop

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, order: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                rows: Callable[[int], torch.Tensor] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in ``order``; with random crops, ``generator`` seeds the workers (one draw per call);
        with ``rows`` (see :func:`batch_rows`), only those rows of each batch are decoded."""
        seed = None if generator is None or not self.random_resized_crop else torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,), generator=generator)))
        starts = range(0, 0 if order is None else len(order), batch_size)
        plan = None if order is None else [order[start : start + batch_size] for start in starts]
        if plan is not None and rows is not None:
            plan = [idx[rows(len(idx))] for idx in plan]
        batching = ({"batch_size": batch_size} if plan is None
                    else {"batch_sampler": [p.tolist() for p in plan if len(p)]})
        loader = iter(torch.utils.data.DataLoader(
            self.dataset, num_workers=self.workers, generator=seed, pin_memory=self.device.type == "cuda",
            **batching))
        for idx in plan or itertools.repeat(None):  # without a plan: every batch the loader gives
            if idx is not None and not len(idx):  # a data-parallel share of a batch smaller than the world
                yield self._empty(), torch.zeros(0, dtype=torch.long, device=self.device)
                continue
            try:
                images, labels = next(loader)
            except StopIteration:
                return
            yield (to_model_input(images, self.mean, self.std, self.device),
                   labels.to(self.device, non_blocking=True))

    def _empty(self) -> torch.Tensor:
        size = self.dataset.dataset.image_size
        return torch.zeros((0, 3, size, size), device=self.device)


Split = InMemorySplit | StreamedSplit


def open_split(dataset_path: str | Path, split: str, info, device: torch.device,
               keep: np.ndarray | None = None, workers: int = 4, random_resized_crop: bool = False) -> Split:
    """Hold array-storage splits in memory; stream index-storage (ImageNet) splits from disk.

    ``random_resized_crop`` (index storage only) crops every training image afresh from the original.
    """
    if info.storage == "index":
        return StreamedSplit(dataset_path, split, info.mean, info.std, device, keep, workers, random_resized_crop)
    return InMemorySplit.load(dataset_path, split, info.mean, info.std, device, keep)  # crops: train_epoch


@torch.inference_mode()
def predict_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its softmax probability for every image (model in eval mode)."""
    was_training = model.training
    model.eval()
    preds, confs = [], []
    for xb, _ in batches:
        conf, pred = torch.softmax(model(xb).float(), dim=1).max(dim=1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    model.train(was_training)
    return torch.cat(preds).numpy().astype(np.int32), torch.cat(confs).numpy().astype(np.float32)


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_batches` for one normalised tensor."""
    return predict_batches(model, ((x[i : i + batch_size], None) for i in range(0, len(x), batch_size)))


def predict_splits(model: torch.nn.Module, splits: dict, seed: int, epoch: int, crop: int | None = None) -> dict:
    """{split: (pred, conf)} of the dump of ``epoch``. Input dropout kept at evaluation and random resized crops
    (``crop``: their size, recipe ``eval_random_resized_crop``) draw from (seed, epoch, split) alone, so a
    resumed run dumps the same predictions as an uninterrupted one."""
    dumps = {}
    for name, split in splits.items():
        seed_eval_dropout(model, seed, epoch, name)
        batches = split.batches(EVAL_BATCH)
        if crop:
            generator = eval_generator(seed, epoch, name)
            batches = ((random_resized_crop(xb, crop, generator), yb) for xb, yb in batches)
        dumps[name] = predict_batches(model, batches)
    return dumps


def eval_crop(recipe: dict, image_size: int) -> int | None:
    """Size of the random resized crops at evaluation (None: the images as stored)."""
    return (recipe.get("crop_size") or image_size) if recipe.get("eval_random_resized_crop") else None


def model_image_size(recipe: dict, info) -> int:
    """The side of the images the model sees (config.model_input_size of the prepared dataset)."""
    return model_input_size(recipe, info.storage, info.image_shape[0])


def batch_rows(n: int, split_batch: bool, world: World) -> list[tuple[range, int]]:
    """(this rank's rows, global rows) of each optimizer step of a batch of ``n`` images: one step,
    or two halves with ``split_batch``."""
    parts = [(0, n // 2), (n // 2, n)] if split_batch and n > 1 else [(0, n)]
    return [(world.share(a, b), b - a) for a, b in parts]


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: Split,
                recipe: dict, generator: torch.Generator, progress: bool = False,
                precision: Precision | None = None, world: World | None = None) -> tuple[float, float]:
    """One pass over ``data`` in an order drawn from ``generator``; returns (mean loss, accuracy).

    Every rank draws the same order and augmentation and trains on its share of each batch: an
    in-memory batch is augmented whole and then cut, a streamed one is decoded for the share only.
    """
    model.train()
    precision = precision or Precision("fp32", torch.device("cpu"))
    world = world or World()
    order = torch.randperm(len(data), generator=generator)
    batch_size, split_batch = recipe["batch_size"], recipe["split_batch"]

    def rows(n: int) -> torch.Tensor:
        return torch.tensor([i for share, _ in batch_rows(n, split_batch, world) for i in share], dtype=torch.long)

    streamed_share = rows if world.size > 1 and not isinstance(data, InMemorySplit) else None
    fill = crop_fill(recipe, data)
    losses, corrects, steps = [], [], []  # kept on the device: no synchronisation per step
    starts = range(0, len(data), batch_size)
    batches = enumerate(zip(starts, data.batches(batch_size, order, generator, streamed_share), strict=True),
                        start=1)
    for batch, (start, (xb, yb)) in tqdm(batches, total=len(starts), disable=not progress, leave=False,
                                         file=sys.stderr, mininterval=5):
        n = min(batch_size, len(data) - start)
        if recipe["random_resized_crop"] and isinstance(data, InMemorySplit):  # index datasets crop when loading
            xb = random_resized_crop(xb, recipe.get("crop_size") or xb.shape[-1], generator)
        if recipe["crop_padding"] or recipe["hflip"]:
            (xb,) = augment_batch(generator, recipe["crop_padding"], recipe["hflip"], xb, fill=fill, batch=n,
                                  rows=None if streamed_share is None else rows(n))
        if world.size > 1 and streamed_share is None:  # the whole batch, augmented: keep this rank's share
            mine = rows(n).to(xb.device)
            xb, yb = xb[mine], yb[mine]
        offset = 0
        for share, total in batch_rows(n, split_batch, world):
            part = slice(offset, offset + len(share))
            offset += len(share)
            loss, correct = optimizer_step(model, optimizer, xb[part], yb[part], total, precision, world,
                                           recipe.get("grad_accumulation", 1))
            losses.append(loss)
            corrects.append(correct)
            steps.append(batch)
    losses = torch.stack(losses)
    loss_sum, correct_sum = world.sum(losses.sum()), world.sum(torch.stack(corrects).sum())
    check_finite(losses, steps, model)  # this rank's losses and the weights every rank shares
    if not bool(torch.isfinite(loss_sum)):  # another rank's loss (every rank sees the sum)
        raise Diverged(f"the loss of another data-parallel rank became {float(loss_sum)} in this epoch")
    return (loss_sum / len(data)).item(), (correct_sum / len(data)).item()


class Diverged(Exception):
    """Training produced a non-finite loss or weights; the message says where within the epoch."""


def check_finite(losses: torch.Tensor, steps: list[int], model: torch.nn.Module) -> None:
    """Raise :class:`Diverged` at the first non-finite loss of an epoch (``steps``: batch of each loss),
    or when the weights after it are not finite; one synchronisation per tensor, once per epoch."""
    bad = torch.nonzero(~torch.isfinite(losses)).flatten()
    if len(bad):
        first = int(bad[0])
        raise Diverged(f"the loss became {float(losses[first])} at batch {steps[first]} of {steps[-1]}")
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise Diverged(f"weights {name} are non-finite after the last batch ({steps[-1]})")


def crop_fill(recipe: dict, data) -> torch.Tensor | None:
    """What ``crop_padding`` pads with in normalised units: None (0, the mean colour) or black (``crop_fill: black``,
    as torchvision's RandomCrop pads the image before it is normalised)."""
    if recipe.get("crop_fill", "mean") != "black" or not hasattr(data, "mean"):
        return None
    return -torch.as_tensor(data.mean, dtype=torch.float32) / torch.as_tensor(data.std, dtype=torch.float32)


def make_optimizer(model: torch.nn.Module, recipe: dict):
    """SGD (optionally Nesterov) with multi-step learning-rate decay, stepped once per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe["nesterov"] and recipe["momentum"] > 0,
                                weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=recipe["lr_milestones"],
                                                     gamma=recipe["lr_gamma"])
    return optimizer, scheduler


def set_determinism(deterministic: bool) -> None:
    if deterministic:  # cuBLAS is deterministic only with a fixed workspace, set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_copy(state_dict: dict) -> dict:
    return {key: value.detach().to("cpu", copy=True) for key, value in state_dict.items()}


def _checksum_matches(state: dict) -> bool:
    """Whether a loaded state's stored checksum (removed from it) is that of the rest of its content."""
    stored = state.pop("checksum", None)
    try:
        return stored == content_checksum(state)
    except TypeError:  # something no training saves
        return False


class ResumeState:
    """Per-epoch training state in a folder that is not a declared Snakemake output.

    The file holds tensors and plain Python containers only, so it loads with
    ``torch.load(weights_only=True)``: a planted file cannot run code. It is keyed on the run spec,
    fingerprints of the dataset's and the initial ``weights`` file's content and the code version,
    and carries a checksum of its content; a state saved under another key, or edited or damaged
    since, is discarded with one log line (training then starts from epoch 0).
    """

    def __init__(self, folder: Path, spec: dict, dataset_fingerprint: str = "", version: str = "",
                 weights_fingerprint: str | None = None):
        self.path = Path(folder) / "state.pt"
        self.key = {"spec": spec, "dataset": dataset_fingerprint, "code_version": version,
                    "weights": weights_fingerprint}

    def load(self) -> dict | None:
        remove_stale_temporaries(self.path)
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a state that cannot be read (or is not plain data) is discarded
            print(f"ignoring unreadable resume state {self.path} ({type(err).__name__}); starting from epoch 0",
                  file=sys.stderr)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            print(f"ignoring resume state {self.path}: it was saved for another run spec, weights file content, "
                  "dataset content or code version; starting from epoch 0", file=sys.stderr)
            return None
        if not _checksum_matches(state):
            print(f"ignoring resume state {self.path}: it does not match its checksum (edited or damaged); "
                  "starting from epoch 0", file=sys.stderr)
            return None
        try:
            state["preds"] = {name: [(p.numpy(), c.numpy()) for p, c in rows] for name, rows in state["preds"].items()}
            missing = {"epoch", "model", "optimizer", "scheduler", "order_gen", "rng", "rows"} - set(state)
            if missing:
                raise KeyError(sorted(missing))
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            print(f"ignoring incomplete resume state {self.path} ({type(err).__name__}: {err}); starting from "
                  "epoch 0", file=sys.stderr)
            return None
        return state

    def save(self, **state) -> None:
        state["preds"] = {name: [(torch.from_numpy(p), torch.from_numpy(c)) for p, c in rows]
                          for name, rows in state["preds"].items()}
        try:
            payload = {"key": self.key, **state}
            with atomic_output(self.path) as tmp:
                torch.save({**payload, "checksum": content_checksum(payload)}, tmp)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as RuntimeError
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot write the resume state {self.path} ({detail[:160]}); is the disk full? "
                            "free space and rerun: training resumes from the last state saved") from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        remove_stale_temporaries(self.path)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


def train_run(spec: dict, dataset_path: str | Path, *, model_out: str | Path, log_out: str | Path,
              predictions_out: str | Path, state_dir: str | Path, device: str = "auto",
              progress: bool = True, workers: int = 4, stop_after: int | None = None,
              time_budget: float | None = None) -> None:
    """Train the run described by ``spec`` (a RunSpec dict) and write its three outputs.

    With ``stop_after`` = k, return after saving the resume state of epoch k without writing any
    output (as if the job had been killed then): a later call resumes from there. With
    ``time_budget`` (seconds), raise :class:`BudgetReached` after the epoch whose successor would
    end past the budget, its state saved. Under ``torchrun`` every rank calls this; rank 0 writes.
    """
    budget = TimeBudget(time_budget)
    recipe = spec["recipe"]
    device = resolve_device(device)
    precision_name = recipe.get("precision", "fp32")
    Precision(precision_name, device)  # refuse a precision the device lacks before any work
    world, device = init_world(device)
    try:
        precision = Precision(precision_name, device, recipe.get("channels_last", False))
        print(f"training {spec['model']} seed {spec['seed']} on {device}"
              + (f" (rank {world.rank} of {world.size})" if world.size > 1 else "")
              + (f" at {precision_name}" if precision_name != "fp32" else ""), file=sys.stderr)
        _train(spec, dataset_path, model_out, log_out, predictions_out, state_dir, device, progress, workers,
               stop_after, budget, world, precision)
    finally:
        finish(world)


def _train(spec, dataset_path, model_out, log_out, predictions_out, state_dir, device, progress, workers,
           stop_after, budget, world, precision) -> None:
    from ..models.registry import build_model

    recipe = spec["recipe"]
    set_determinism(recipe["deterministic"])
    info = input_stats(dataset_info(dataset_path), recipe)
    _, _, channels = info.image_shape
    height = model_image_size(recipe, info)
    crop = eval_crop(recipe, height)
    with read_h5(dataset_path, "prepared dataset") as handle:
        if "train" not in handle:
            raise UserError(f"{dataset_path} has no split 'train' (it has {sorted(handle)}); "
                            "a model trains on the train split")
        n_train = len(handle["train/labels"])
    keep = subset_indices(n_train, recipe["data_fraction"], recipe["data_part"], recipe["data_seed"])
    if len(keep) == 0:
        raise UserError(f"models.{spec['model']}: data_part {recipe['data_part']} of data_fraction "
                        f"{recipe['data_fraction']} has no images ({dataset_path} has {n_train} training images); "
                        "use a larger data_fraction")
    train = open_split(dataset_path, "train", info, device, keep, workers, recipe["random_resized_crop"])
    eval_splits = {name: open_split(dataset_path, name, info, device, workers=workers)
                   for name in spec["dump_splits"]} if world.main else {}

    torch.manual_seed(recipe["init_seed"])
    model = build_model(spec["arch"], info.num_classes, in_channels=channels, image_size=height,
                        input_dropout_keep=recipe["input_dropout_keep"], weights=spec.get("weights"),
                        dropout_at_eval=recipe["dropout_at_eval"]).to(device)
    set_data_normalisation(model, info.mean, info.std)  # models behind a library's own normalisation
    model = precision.prepare_model(model)
    optimizer, scheduler = make_optimizer(model, recipe)
    torch.manual_seed(recipe["order_seed"])  # global stream: input dropout
    order_gen = torch.Generator().manual_seed(recipe["order_seed"])

    weights = weights_file(spec.get("weights"))  # a placed file (torchvision weights: their name is in the spec)
    resume = ResumeState(Path(state_dir), resume_key_spec(spec), h5_fingerprint(dataset_path), code_version(),
                         fingerprint(weights) if weights else None)
    state = resume.load()
    if state is None:
        start_epoch, rows, snapshots, preds = _epoch_zero(model, optimizer, recipe, eval_splits, crop, world)
    else:
        start_epoch, rows, snapshots, preds = _restore(state, model, optimizer, scheduler, order_gen, precision)
        print(f"resuming {spec['model']} seed {spec['seed']} after epoch {state['epoch']}", file=sys.stderr)
    trained = wrap(model, world, device, recipe.get("sync_batchnorm", False))

    for epoch in range(start_epoch, recipe["epochs"] + 1):
        began = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        try:
            loss, acc = train_epoch(trained, optimizer, train, recipe, order_gen, progress=progress and world.main,
                                    precision=precision, world=world)
        except Diverged as err:  # nothing of this epoch is saved: no output, the state of the last good epoch
            raise UserError(f"models.{spec['model']} seed {spec['seed']}: training diverged at epoch {epoch}: {err} "
                            f"(lr {lr:g}); lower `lr` in its recipe or overrides (or check its `weights` file) "
                            "and rerun") from None
        scheduler.step()
        if epoch in recipe["snapshot_epochs"]:
            snapshots[epoch] = _cpu_copy(model.state_dict())
        if world.main:
            for name, dump in predict_splits(model, eval_splits, recipe["order_seed"], epoch, crop).items():
                preds[name].append(dump)
            rows.append(_log_row(epoch, loss, acc, preds, eval_splits, lr, time.perf_counter() - began))
            print(f"epoch {epoch}/{recipe['epochs']} loss {loss:.4f} train_acc {acc:.4f} "
                  + " ".join(f"{acc_column(k)} {rows[-1][acc_column(k)]:.4f}" for k in eval_splits), file=sys.stderr)
            resume.save(epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), order_gen=order_gen.get_state(), rng=_rng_state(),
                        rows=rows, preds=preds, snapshots=snapshots, scaler=precision.state_dict())
        world.barrier()  # the state of this epoch is on disk before any rank may stop
        budget.lap(time.perf_counter() - began)
        if stop_after is not None and epoch >= stop_after:
            return
        if epoch < recipe["epochs"] and world.any(budget.exhausted(), device):
            raise BudgetReached(epoch, recipe["epochs"], budget.used(), str(resume.path))

    if world.main:
        save_model(model_out, model, arch=spec["arch"], num_classes=info.num_classes, in_channels=channels,
                   image_size=height, mean=info.mean, std=info.std,
                   input_dropout_keep=recipe["input_dropout_keep"], dropout_at_eval=recipe["dropout_at_eval"],
                   run=spec, epoch=recipe["epochs"],
                   snapshots={e: w for e, w in snapshots.items() if e != recipe["epochs"]})
        with atomic_output(log_out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        write_predictions(predictions_out, spec, eval_splits, preds, info.name,
                          compute={"world_size": world.size, "device": _device_name(device),
                                   "precision": precision.name, "channels_last": precision.channels_last})
        resume.clear()
    world.barrier()


def _epoch_zero(model, optimizer, recipe, eval_splits, crop, world) -> tuple[int, list, dict, dict]:
    """(first epoch, log rows, snapshots, prediction dumps) of a fresh run: the untrained model's."""
    rows, snapshots, preds = [], {}, {}
    if 0 in recipe["snapshot_epochs"]:
        snapshots[0] = _cpu_copy(model.state_dict())
    if world.main:
        dumps = predict_splits(model, eval_splits, recipe["order_seed"], 0, crop)
        preds = {name: [dump] for name, dump in dumps.items()}
        rows.append(_log_row(0, math.nan, math.nan, preds, eval_splits, optimizer.param_groups[0]["lr"], 0.0))
    return 1, rows, snapshots, preds


def _restore(state, model, optimizer, scheduler, order_gen, precision) -> tuple[int, list, dict, dict]:
    """Load a resume state into the run's objects; (first epoch to train, log rows, snapshots, dumps)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    order_gen.set_state(state["order_gen"])
    _set_rng_state(state["rng"])
    precision.load_state_dict(state.get("scaler", {}))
    return state["epoch"] + 1, state["rows"], state.get("snapshots", {}), state["preds"]


def resume_key_spec(spec: dict) -> dict:
    """The run spec a resume state is keyed on: without ``gpus``, which changes neither the batches nor
    the order, so a run may resume on another number of GPUs."""
    return {**spec, "recipe": {k: v for k, v in spec["recipe"].items() if k != "gpus"}}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def acc_column(split: str) -> str:
    """The train_log.csv column of a dumped split's accuracy: ``<split>_acc``, but ``train_eval_acc``
    for the train split (``train_acc`` is the accuracy measured while training, with augmentation)."""
    return "train_eval_acc" if split == "train" else f"{split}_acc"


def _log_row(epoch: int, loss: float, acc: float, preds: dict, eval_splits: dict, lr: float,
             seconds: float) -> dict:
    row = {"epoch": epoch, "train_loss": loss, "train_acc": acc, "lr": lr, "seconds": round(seconds, 3)}
    for name, split in eval_splits.items():
        row[acc_column(name)] = float(np.mean(preds[name][-1][0] == split.labels))
    return row


def write_predictions(path, spec: dict, eval_splits: dict, preds: dict, dataset_name: str,
                      compute: dict | None = None) -> None:
    """Write the per-epoch prediction dump (layout in docs/file_formats.md); ``compute`` (ranks, device,
    precision) goes into its provenance."""
    extra = {} if compute is None else {"compute": compute}
    with atomic_output(path) as tmp, write_h5(tmp) as handle:
        write_attrs(handle, {"model": spec["model"], "seed": spec["seed"], "arch": spec["arch"],
                             "dataset": dataset_name, "epochs": spec["recipe"]["epochs"],
                             **provenance(recipe=spec["recipe"], **extra)})
        for name, split in eval_splits.items():
            group = handle.create_group(name)
            create_dataset(group, "targets", split.labels.astype(np.int64))
            create_dataset(group, "ids", split.ids.astype(np.int64))
            create_dataset(group, "pred", np.stack([p for p, _ in preds[name]]).astype(np.int32))
            create_dataset(group, "conf", np.stack([c for _, c in preds[name]]).astype(np.float32))


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="prepared dataset (.h5)")
    parser.add_argument("--spec", required=True, help="RunSpec as JSON (from the workflow config)")
    parser.add_argument("--model-out", required=True)
    parser.add_argument("--log-out", required=True)
    parser.add_argument("--predictions-out", required=True)
    parser.add_argument("--state-dir", required=True, help="resume state (not a workflow output)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds this job may train; then it saves its state and exits with code "
                             f"{EXIT_CODE} so that it is resubmitted (default: no limit)")
    add_compute_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = json_object(args.spec)
    try:
        train_run(spec, args.dataset, model_out=args.model_out, log_out=args.log_out,
                  predictions_out=args.predictions_out, state_dir=args.state_dir, device=args.device,
                  progress=not args.no_progress, workers=args.threads, time_budget=args.time_budget)
    except BudgetReached as stop:
        print(stop, file=sys.stderr)
        return EXIT_CODE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
