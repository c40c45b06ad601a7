"""Drawing plumbing shared by the figure modules: an atomic save and an image panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .io import atomic_output


def save(figure, out: str | Path, *, dpi: int = 120, tight: bool = False) -> None:
    """Write ``figure`` to ``out`` (format from the suffix, PNG without one) atomically and close it."""
    with atomic_output(out) as tmp:
        figure.savefig(tmp, dpi=dpi, format=Path(out).suffix.lstrip(".") or "png",
                       **({"bbox_inches": "tight"} if tight else {}))
    plt.close(figure)


def show(axis, image: np.ndarray) -> None:
    """A uint8 image (H, W, C) on ``axis`` without ticks (grey for one channel)."""
    axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
