"""Tables of measured rates (CSV, one row per key) that the bill reads: one reader checks every row.

``config/throughput.csv`` (forward passes per second, :mod:`pathologies.sis.throughput`) and
``config/train_throughput.csv`` (training images per second, :mod:`pathologies.training.throughput`) are
both :class:`RateTable` files: a row with an empty column, an image size below 1, a rate that is not a
positive finite number, a value outside its column's choices or a key given twice is one UserError line
naming the file, the line and the value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .io import atomic_output


@dataclass(frozen=True)
class RateTable:
    """The layout of one rate table: its ``columns``, the ``key`` columns that name a row, the ``rate``
    column (``unit`` says what it counts), allowed values per column (``choices``) and the command that
    measures a row (``measure``)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    rate: str
    unit: str
    measure: str
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def read(self, path: str | Path, *, missing_ok: bool = False) -> list[dict]:
        """The rows of the table at ``path`` (``image_size`` int, the rate float); an absent file has none
        when ``missing_ok``, else is an error."""
        path = Path(path)
        if not path.exists():
            if missing_ok:
                return []
            raise UserError(f"{self.name} {path} does not exist; name another or record one with {self.measure}")
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{self.name} {path} is not a CSV text file ({str(err).splitlines()[0]}); "
                            f"restore it (columns {', '.join(self.columns)})") from None
        seen: dict[tuple, int] = {}
        for line, row in enumerate(rows, start=2):
            self._check(path, line, row)
            key = tuple(row[k] for k in self.key)
            if key in seen:
                named = dict(zip(self.key, key, strict=True))
                raise UserError(f"{path} line {line}: {named} is already on line {seen[key]}; keep one row per "
                                f"({', '.join(self.key)})")
            seen[key] = line
        return rows

    def _check(self, path: Path, line: int, row: dict) -> None:
        """Parse ``row`` in place; one line naming the file, line and value where it is wrong."""
        missing = [c for c in self.columns if not row.get(c)]
        if missing:
            raise UserError(f"{path} line {line}: empty or missing column(s) {missing}; "
                            f"columns are {', '.join(self.columns)}")
        try:
            row["image_size"], row[self.rate] = int(row["image_size"]), float(row[self.rate])
        except ValueError:
            raise UserError(f"{path} line {line}: image_size must be an integer and {self.rate} a number") from None
        if row["image_size"] < 1:
            raise UserError(f"{path} line {line}: image_size {row['image_size']} must be at least 1 (pixels per side)")
        if not (math.isfinite(row[self.rate]) and row[self.rate] > 0):
            raise UserError(f"{path} line {line}: {self.rate} {row[self.rate]} is not a positive finite rate "
                            f"({self.unit}); fix the row or measure it again with {self.measure}")
        for column, allowed in self.choices.items():
            if row[column] not in allowed:
                raise UserError(f"{path} line {line}: {column} {row[column]!r} is not one of {', '.join(allowed)}")

    def record(self, path: str | Path, row: dict) -> None:
        """Write ``row`` (every column) into the table at ``path``, replacing the row with the same key."""
        path = Path(path)
        rows = self.read(path, missing_ok=True)
        rows = [r for r in rows if tuple(str(r[k]) for k in self.key) != tuple(str(row[k]) for k in self.key)]
        with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows({k: r[k] for k in self.columns} for r in [*rows, row])
