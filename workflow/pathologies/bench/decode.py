"""JPEG decoding paths that feed ImageNet training, measured on generated ImageNet-like files.

Used by ``python -m pathologies.bench train`` (decode section): the workflow's PIL path
(:func:`pathologies.data.imagenet.load_image_random_resized_crop`, PIL decode + torchvision
RandomResizedCrop on the PIL image) against ``torchvision.io.decode_jpeg`` with the same transform on
uint8 tensors, and on CUDA, batched GPU decoding. Rates are images/s of one core (one thread).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

WIDTH, HEIGHT, QUALITY = 500, 375, 90  # a typical ImageNet photo


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields plus fine noise), 500x375, quality 90."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((WIDTH, HEIGHT),
                                                                                          Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (HEIGHT, WIDTH, 3))
        path = folder / f"{i:05d}.JPEG"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=QUALITY)
        paths.append(path)
    return paths


def pil_path(path: Path, image_size: int, resize: int) -> torch.Tensor:
    """The workflow's path: PIL decode, resize the shorter side, centre crop -> uint8 HWC."""
    from ..data.imagenet import load_image

    return torch.from_numpy(load_image(path, resize, image_size))


def tensor_path(path: Path, image_size: int, resize: int) -> torch.Tensor:
    """torchvision.io.decode_jpeg and the same resize + centre crop on the uint8 tensor -> uint8 HWC."""
    import torchvision.transforms.functional as TF
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    image = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    return TF.center_crop(TF.resize(image, resize, antialias=True), image_size).permute(1, 2, 0).contiguous()


def pil_train_path(path: Path, image_size: int, resize: int) -> torch.Tensor:
    from ..data.imagenet import load_image_random_resized_crop

    return torch.from_numpy(load_image_random_resized_crop(path, image_size))


def tensor_train_path(path: Path, image_size: int, resize: int) -> torch.Tensor:
    from torchvision import transforms
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    image = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    return transforms.RandomResizedCrop(image_size, antialias=True)(image).permute(1, 2, 0).contiguous()


PATHS = {"PIL (workflow), resize+crop": pil_path, "decode_jpeg + tensor ops, resize+crop": tensor_path,
         "PIL (workflow), RandomResizedCrop": pil_train_path,
         "decode_jpeg + tensor ops, RandomResizedCrop": tensor_train_path}


def per_core_rates(paths: list[Path], image_size: int = 224, resize: int = 256, repeats: int = 2) -> dict[str, float]:
    """Images/s of each decode path on one thread (best of ``repeats`` passes over ``paths``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = {}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit every path alike
            for name, fn in PATHS.items():
                began = time.perf_counter()
                for path in paths:
                    fn(path, image_size, resize)
                rates[name] = max(rates.get(name, 0.0), len(paths) / (time.perf_counter() - began))
        return rates
    finally:
        torch.set_num_threads(threads)


def difference(paths: list[Path], image_size: int = 224, resize: int = 256) -> tuple[int, float]:
    """(max, mean) absolute difference in uint8 levels between the PIL and the tensor path's images."""
    worst, total = 0, 0.0
    for path in paths:
        a, b = pil_path(path, image_size, resize).int(), tensor_path(path, image_size, resize).int()
        worst = max(worst, int((a - b).abs().max()))
        total += float((a - b).abs().float().mean())
    return worst, total / len(paths)


def gpu_batched_rate(paths: list[Path], image_size: int = 224, resize: int = 256, batch: int = 64) -> float:
    """Images/s of batched nvjpeg decoding plus resize + crop on the GPU (CUDA only)."""
    import torchvision.transforms.functional as TF
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    chunks = [data[i : i + batch] for i in range(0, len(data), batch)]

    def one_pass() -> None:
        for chunk in chunks:
            for image in decode_jpeg(chunk, mode=ImageReadMode.RGB, device="cuda"):
                TF.center_crop(TF.resize(image, resize, antialias=True), image_size)
        torch.cuda.synchronize()

    one_pass()  # warm-up: nvjpeg handles, kernels
    began = time.perf_counter()
    one_pass()
    return len(paths) / (time.perf_counter() - began)
