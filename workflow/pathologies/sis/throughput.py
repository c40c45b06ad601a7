"""The throughput table: forward passes per second of a model architecture at an image size on a device.

``config/throughput.csv``, one row per (device, arch, image_size, precision): what
``python -m pathologies.cost`` bills a config from. ``python -m pathologies.bench sis --record FILE
--device-label NAME`` measures a row and writes it (replacing the row of the same key).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import UserError
from ..io import atomic_output

THROUGHPUT = Path(__file__).resolve().parents[3] / "config" / "throughput.csv"
COLUMNS = ("device", "arch", "image_size", "precision", "forward_per_s", "measured", "how")
KEY = ("device", "arch", "image_size", "precision")


def read_throughput(path: str | Path = THROUGHPUT) -> list[dict]:
    """Rows of the throughput table (columns :data:`COLUMNS`); a row with an empty column, an image size
    below 1, a rate that is not a positive finite number, or a key given twice is one UserError line
    naming the file, the line and the value."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"throughput table {path} does not exist; pass --throughput or record one with "
                        "`python -m pathologies.bench sis --record`")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"throughput table {path} is not a CSV text file ({str(err).splitlines()[0]}); "
                        f"restore it (columns {', '.join(COLUMNS)})") from None
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if not row.get(c)]
        if missing:
            raise UserError(f"{path} line {i}: empty or missing column(s) {missing}; columns are {', '.join(COLUMNS)}")
        try:
            row["image_size"], row["forward_per_s"] = int(row["image_size"]), float(row["forward_per_s"])
        except ValueError:
            raise UserError(f"{path} line {i}: image_size must be an integer and forward_per_s a number") from None
        if row["image_size"] < 1:
            raise UserError(f"{path} line {i}: image_size {row['image_size']} must be at least 1 (pixels per side)")
        if not (math.isfinite(row["forward_per_s"]) and row["forward_per_s"] > 0):
            raise UserError(f"{path} line {i}: forward_per_s {row['forward_per_s']} is not a positive finite rate "
                            "(forward passes per second); fix the row or measure it again with "
                            "`python -m pathologies.bench sis --record`")
        key = tuple(row[k] for k in KEY)
        if key in seen:
            named = dict(zip(KEY, key, strict=True))
            raise UserError(f"{path} line {i}: {named} is already on line {seen[key]}; keep one row per "
                            "(device, arch, image_size, precision)")
        seen[key] = i
    return rows


def record(path: str | Path, row: dict) -> None:
    """Write ``row`` (all :data:`COLUMNS`) into the table at ``path``, replacing a row with the same key."""
    path = Path(path)
    rows = read_throughput(path) if path.exists() else []
    rows = [r for r in rows if tuple(str(r[k]) for k in KEY) != tuple(str(row[k]) for k in KEY)] + [row]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
