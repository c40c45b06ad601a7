"""SIS size analyses: correct vs misclassified images (Figures 5, S3, S4), by class (S16), summaries.

An image is *correct* when the class its SIS explains (predicted on the full image) is its label.
Sizes are in % of the image's pixels; only images with an SIS at the threshold count. Confidence
intervals are 95% Student-t intervals of a mean; the increase of correct over wrong images uses
Welch's interval for the difference in means, divided by the wrong images' mean (as Figure S3).

Usage (what the ``overinterp_sis_sizes`` rule runs)::

    python -m pathologies.overinterp.sis_sizes --experiment results/overinterp/<experiment>/experiment.json \
        --correctness-out c.csv --increase-out i.csv --by-class-out k.csv --summary-out s.csv

``--experiment`` is a JSON file: a list of ``{"path": <SIS file>, <metadata>...}`` or an expanded experiment
(``experiment.json``) whose ``sis_files`` is such a list. Every key of an entry except ``path`` is copied into that
file's rows (tidy CSV). Columns:

- correctness: threshold, group (correct|wrong), n, mean_size_pct, ci_low, ci_high, mean_confidence,
  confidence_ci_low, confidence_ci_high
- increase: threshold, n_correct, n_wrong, mean_correct_pct, mean_wrong_pct, increase_pct, ci_low, ci_high
- by class: threshold, class, class_name (the dataset's; torchvision's category names for the 1,000 ImageNet
  WordNet ids), n, mean_size_pct, ci_low, ci_high
- summary: threshold, n_images, n_sis, mean_size_pct, std_size_pct (population std), accuracy
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..cliargs import CommandParser
from ..data.class_names import class_labels
from ..errors import UserError, cli
from ..io import atomic_output, read_h5, read_json_attr

LEVEL = 0.95


@dataclass(frozen=True)
class SisSizes:
    """Per image of one SIS file: SIS size (% of pixels) and presence per threshold, class, label, f."""

    thresholds: tuple[float, ...]
    size_pct: dict[float, np.ndarray]
    has_sis: dict[float, np.ndarray]
    classes: np.ndarray
    labels: np.ndarray
    f_full: np.ndarray
    class_names: tuple[str, ...] = ()

    def class_name(self, cls: int) -> str:
        """The readable name of class index ``cls`` ("" outside the dataset's classes)."""
        return self.class_names[cls] if 0 <= cls < len(self.class_names) else ""

    @property
    def correct(self) -> np.ndarray:
        return self.classes == self.labels


def read_sis_sizes(path: str | Path) -> SisSizes:
    """Read the sizes of every stored threshold of an SIS file (layout: pathologies.sis.extract), and the class
    names of its dataset (the file its ``dataset`` attribute names)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"SIS file {path} does not exist; build it with `snakemake {path}`")
    with read_h5(path) as handle:
        if "sis" not in handle:
            raise UserError(f"{path} holds no /sis group; it is not an SIS file: delete it and rebuild it")
        height, width = (int(v) for v in handle.attrs["image_shape"][:2])
        names = sorted(handle["sis"].keys(), key=float)
        thresholds = tuple(float(name) for name in names)
        size = {float(n): handle["sis"][n]["size"][()] * 100.0 / (height * width) for n in names}
        has = {float(n): ~handle["sis"][n]["none"][()] for n in names}
        dataset = str(read_json_attr(handle, "dataset"))
        names = tuple(class_labels(dataset))
        return SisSizes(thresholds, size, has, handle["class"][()], handle["label"][()], handle["f_full"][()], names)


def mean_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; NaN bounds below two values."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def welch_difference(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's interval for a difference of means."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return diff, diff - half, diff + half


def correctness_rows(sizes: SisSizes) -> list[dict]:
    """Mean SIS size and confidence of correct vs wrong images with an SIS, per threshold."""
    rows = []
    for t in sizes.thresholds:
        for group, chosen in (("correct", sizes.correct), ("wrong", ~sizes.correct)):
            members = chosen & sizes.has_sis[t]
            mean, low, high = mean_interval(sizes.size_pct[t][members])
            conf, conf_low, conf_high = mean_interval(sizes.f_full[members])
            rows.append({"threshold": t, "group": group, "n": int(members.sum()), "mean_size_pct": mean,
                         "ci_low": low, "ci_high": high, "mean_confidence": conf,
                         "confidence_ci_low": conf_low, "confidence_ci_high": conf_high})
    return rows


def increase_rows(sizes: SisSizes) -> list[dict]:
    """% increase of the mean SIS size of correct over wrong images, with Welch's 95% interval."""
    rows = []
    for t in sizes.thresholds:
        good = sizes.size_pct[t][sizes.correct & sizes.has_sis[t]]
        bad = sizes.size_pct[t][~sizes.correct & sizes.has_sis[t]]
        diff, low, high = welch_difference(good, bad)
        base = bad.mean() if len(bad) and bad.mean() > 0 else float("nan")
        rows.append({"threshold": t, "n_correct": len(good), "n_wrong": len(bad),
                     "mean_correct_pct": float(good.mean()) if len(good) else float("nan"),
                     "mean_wrong_pct": float(bad.mean()) if len(bad) else float("nan"),
                     "increase_pct": 100 * diff / base, "ci_low": 100 * low / base, "ci_high": 100 * high / base})
    return rows


def by_class_rows(sizes: SisSizes) -> list[dict]:
    """Mean SIS size per explained (predicted) class, per threshold."""
    rows = []
    for t in sizes.thresholds:
        for cls in np.unique(sizes.classes):
            members = (sizes.classes == cls) & sizes.has_sis[t]
            mean, low, high = mean_interval(sizes.size_pct[t][members])
            rows.append({"threshold": t, "class": int(cls), "class_name": sizes.class_name(int(cls)),
                         "n": int(members.sum()), "mean_size_pct": mean,
                         "ci_low": low, "ci_high": high})
    return rows


def summary_rows(sizes: SisSizes) -> list[dict]:
    """Per threshold: images, images with an SIS, mean and std SIS size, accuracy of the explained class."""
    rows = []
    for t in sizes.thresholds:
        chosen = sizes.size_pct[t][sizes.has_sis[t]]
        rows.append({"threshold": t, "n_images": len(sizes.classes), "n_sis": len(chosen),
                     "mean_size_pct": float(chosen.mean()) if len(chosen) else float("nan"),
                     "std_size_pct": float(chosen.std()) if len(chosen) else float("nan"),
                     "accuracy": float(sizes.correct.mean()) if len(sizes.classes) else float("nan")})
    return rows


ANALYSES = {"correctness": correctness_rows, "increase": increase_rows, "by_class": by_class_rows,
            "summary": summary_rows}


def analyse(spec: Sequence[dict]) -> dict[str, pd.DataFrame]:
    """Every analysis over every file of ``spec``; each row carries its entry's metadata."""
    tables: dict[str, list[dict]] = {name: [] for name in ANALYSES}
    for entry in spec:
        if "path" not in entry:
            raise UserError(f"SIS-size spec entry {entry!r} has no 'path'")
        meta = {key: value for key, value in entry.items() if key != "path"}
        sizes = read_sis_sizes(entry["path"])
        for name, analysis in ANALYSES.items():
            tables[name] += [{**meta, **row} for row in analysis(sizes)]
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a tidy CSV atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="JSON file: [{path, <metadata>...}] or {sis_files: [...]}")
    for name in ANALYSES:
        parser.add_argument(f"--{name.replace('_', '-')}-out", required=True)
    args = parser.parse_args(argv)
    try:
        spec = json.loads(Path(args.experiment).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--experiment {args.experiment} is not a readable JSON file ({err})") from None
    spec = spec.get("sis_files") if isinstance(spec, dict) else spec
    if not isinstance(spec, list):
        raise UserError(f"--experiment {args.experiment} must hold a list of {{path, ...}} objects or an "
                        "experiment (experiment.json)")
    for name, frame in analyse(spec).items():
        write_csv(frame, getattr(args, f"{name}_out"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
