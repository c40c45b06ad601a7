"""The throughput table: forward passes per second of a model architecture at an image size on a device.

``config/throughput.csv``, one row per (device, arch, image_size, precision): what
``python -m pathologies.cost`` bills a config from. ``python -m pathologies.bench sis --record FILE
--device-label NAME`` measures a row and writes it (replacing the row of the same key). Rows are checked
on reading (:class:`pathologies.rate_table.RateTable`).
"""

from __future__ import annotations

from pathlib import Path

from ..rate_table import RateTable

THROUGHPUT = Path(__file__).resolve().parents[3] / "config" / "throughput.csv"
TABLE = RateTable(
    name="throughput table",
    columns=("device", "arch", "image_size", "precision", "forward_per_s", "measured", "how"),
    key=("device", "arch", "image_size", "precision"),
    rate="forward_per_s",
    unit="forward passes per second",
    measure="`python -m pathologies.bench sis --record`",
)
COLUMNS = TABLE.columns


def read_throughput(path: str | Path = THROUGHPUT) -> list[dict]:
    """Rows of the throughput table; a missing file or a bad row is one UserError line naming it."""
    return TABLE.read(path)


def record(path: str | Path, row: dict) -> None:
    """Write ``row`` (all :data:`COLUMNS`) into the table at ``path``, replacing a row with the same key."""
    TABLE.record(path, row)
