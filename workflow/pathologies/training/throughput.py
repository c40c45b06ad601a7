"""The training throughput table: images per second of one training run per GPU, as measured.

``config/train_throughput.csv``, one row per (device, arch, image_size, precision, channels_last):
``python -m pathologies.bench train --record FILE --device-label NAME`` measures rows (the GPU checks
do it for ResNet-18/50 at 224 px). ``python -m pathologies.cost`` bills training from a row when
one exists, else from the inference table (a training step ~ 3 forward passes).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UserError
from ..io import atomic_output

TRAIN_THROUGHPUT = Path(__file__).resolve().parents[3] / "config" / "train_throughput.csv"
COLUMNS = ("device", "arch", "image_size", "precision", "channels_last", "data", "images_per_s", "measured", "how")
KEY = ("device", "arch", "image_size", "precision", "channels_last", "data")


def read_train_throughput(path: str | Path = TRAIN_THROUGHPUT) -> list[dict]:
    """Rows of the table (an absent file has none); a bad row is one line naming it."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if not row.get(c)]
        if missing:
            raise UserError(f"{path} line {i}: empty or missing column(s) {missing}; columns are {', '.join(COLUMNS)}")
        try:
            row["image_size"], row["images_per_s"] = int(row["image_size"]), float(row["images_per_s"])
        except ValueError:
            raise UserError(f"{path} line {i}: image_size must be an integer and images_per_s a number") from None
        if row["channels_last"] not in ("true", "false") or row["data"] not in ("synthetic", "jpeg"):
            raise UserError(f"{path} line {i}: channels_last must be true or false and data synthetic or jpeg")
        if row["images_per_s"] <= 0:
            raise UserError(f"{path} line {i}: images_per_s must be positive")
    return rows


def record(path: str | Path, row: dict) -> None:
    """Write ``row`` (all :data:`COLUMNS`) into the table at ``path``, replacing a row with the same key."""
    path = Path(path)
    rows = read_train_throughput(path)
    rows = [r for r in rows if tuple(str(r[k]) for k in KEY) != tuple(str(row[k]) for k in KEY)] + [row]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
