"""Shared fixtures: small prepared datasets and run specs built the same way the workflow builds them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))  # this checkout's package first
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

from pathologies.config import run_specs
from pathologies.data.layout import Split, write_dataset
from pathologies.experiments import validate

ROOT = Path(__file__).resolve().parents[1]


def make_quadrant_dataset(path: Path, n_train: int = 256, n_test: int = 64, size: int = 8,
                          channels: int = 1, seed: int = 0) -> Path:
    """A learnable 4-class dataset: the class is the brightest image quadrant."""
    rng = np.random.default_rng(seed)

    def split(n: int, offset: int) -> Split:
        labels = rng.integers(0, 4, n)
        images = rng.integers(0, 100, (n, size, size, channels))
        half = size // 2
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 120
        return Split(images.astype(np.uint8), labels, np.arange(offset, offset + n))

    write_dataset(path, name=path.stem, kind="test-quadrants", splits={"train": split(n_train, 0),
                  "test": split(n_test, n_train)}, class_names=["tl", "tr", "bl", "br"])
    return path


def make_imagenet_index(root: Path, counts: dict[str, int], size: int, *, noise: int, step: int,
                        wnids: tuple[str, ...] = ("n001", "n002")) -> Path:
    """An 8x8 ImageNet index (``root/imagenet.h5``) of :func:`make_imagenet_folder`."""
    from pathologies.data.prepare import prepare_dataset

    make_imagenet_folder(root, counts, size, noise=noise, step=step, wnids=wnids)
    index = root / "imagenet.h5"
    prepare_dataset("imagenet", {"kind": "imagenet", "image_size": 8, "resize": 8}, root / "resources", index)
    return index


def make_imagenet_folder(root: Path, counts: dict[str, int], size: int, *, noise: int, step: int,
                         wnids: tuple[str, ...] = ("n001", "n002")) -> None:
    """A real ImageNet folder ``root/resources/imagenet/<split>/<wnid>`` of ``size`` x ``size`` PNGs:
    ``counts[split]`` noise images (0..``noise``) per class, class k brighter by k ``step`` (mod 256)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for label, wnid in enumerate(wnids):
            folder = root / "resources" / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (rng.integers(0, noise, (size, size, 3)) + step * label) % 256
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture
def quadrant_dataset(tmp_path: Path) -> Path:
    return make_quadrant_dataset(tmp_path / "quadrants.h5")


def make_spec(epochs: int = 3, arch: str = "small_cnn", seed: int = 0, **overrides) -> dict:
    """A RunSpec dict produced through the real config validation and expansion."""
    config = validate({
        "datasets": {"quadrants": {"kind": "digits"}},
        "recipes": {"tiny": {"lr": 0.05, "batch_size": 32, "epochs": epochs, **overrides}},
        "models": {"m": {"dataset": "quadrants", "arch": arch, "recipe": "tiny", "seeds": [seed]}},
    })
    return run_specs(config)[("m", seed)].as_dict()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors run faster and steadier on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def experiment(tmp_path: Path) -> dict:
    """The planted toy DDD experiment of :func:`ddd_fixtures.make_experiment` (spec, dumps, dataset)."""
    from ddd_fixtures import make_experiment

    return make_experiment(tmp_path)


class Tripwire:
    """Counts the calls of a patched function and raises KeyboardInterrupt at call ``call`` (None: only counts)."""

    def __init__(self, call: int | None):
        self.call, self.calls = call, 0


def kill_at_call(monkeypatch, module, name: str, call: int | None) -> Tripwire:
    """Make ``module.name`` raise KeyboardInterrupt at its ``call``-th call, as a killed job would.

    Reset ``calls`` to re-arm it for the next run; set ``call`` to None to count calls only.
    """
    real, wire = getattr(module, name), Tripwire(call)

    def counted(*args, **kwargs):
        wire.calls += 1
        if wire.calls == wire.call:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return wire
