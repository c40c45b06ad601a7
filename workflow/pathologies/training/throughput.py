"""The training throughput table: images per second of one training run per GPU, as measured.

``config/train_throughput.csv``, one row per (device, arch, image_size, precision, channels_last, data):
``python -m pathologies.bench train --record FILE --device-label NAME`` measures rows (the GPU checks
do it for ResNet-18/50 at 224 px). ``python -m pathologies.cost`` bills training from a row when
one exists, else from the inference table (a training step ~ 3 forward passes). Rows are checked on
reading (:class:`pathologies.rate_table.RateTable`).
"""

from __future__ import annotations

from pathlib import Path

from ..rate_table import RateTable

TRAIN_THROUGHPUT = Path(__file__).resolve().parents[3] / "config" / "train_throughput.csv"
TABLE = RateTable(
    name="training throughput table",
    columns=("device", "arch", "image_size", "precision", "channels_last", "data", "images_per_s", "measured", "how"),
    key=("device", "arch", "image_size", "precision", "channels_last", "data"),
    rate="images_per_s",
    unit="training images per second",
    measure="`python -m pathologies.bench train --record`",
    choices={"channels_last": ("true", "false"), "data": ("synthetic", "jpeg")},
)
COLUMNS = TABLE.columns


def read_train_throughput(path: str | Path = TRAIN_THROUGHPUT) -> list[dict]:
    """Rows of the table (an absent file has none); a bad row is one UserError line naming it."""
    return TABLE.read(path, missing_ok=True)


def record(path: str | Path, row: dict) -> None:
    """Write ``row`` (all :data:`COLUMNS`) into the table at ``path``, replacing a row with the same key."""
    TABLE.record(path, row)
