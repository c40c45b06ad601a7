"""Temperature scaling (Guo et al. 2017) and expected calibration error, as in supplement S4.7.

The test split is cut into two seeded random halves: the temperature is fitted on the first (by
minimising the negative log-likelihood), the ECE before and after scaling is measured on the
second. Usage (what the ``overinterp_calibrate`` rule runs)::

    python -m pathologies.overinterp.calibration \
        --evaluation results/overinterp/<experiment>/eval/<model>/seed<seed>.h5 \
        --dataset <dataset> --split test --seed 0 --bins 15 \
        --out results/overinterp/<experiment>/calibration/<model>/seed<seed>.json

The JSON holds temperature, ece_before, ece_after (held-out half, fractions), nll_fit_before,
nll_fit_after (fitting half), nll_held_before, nll_held_after, accuracy_held, n_fit, n_held,
bins, seed, evaluation, dataset, split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output
from .evaluate import read_evaluation

LOG_T_BOUNDS = (np.log(1e-3), np.log(1e3))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins (lo, hi] of |bin| / n * |accuracy - mean confidence|.

    ``probs`` (n, K) class probabilities; the confidence of an image is its largest probability and
    its prediction the first class reaching it (the binning of gpleiss/temperature_scaling).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or not len(labels):
        raise ValueError(f"need probabilities (n, K) and n labels, got {probs.shape} and {labels.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # bin b holds confidences in (b/bins, (b+1)/bins]
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in np.unique(which):
        members = which == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against ``labels`` (float64)."""
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in [1e-3, 1e3] minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in 1/T, hence unimodal in log T: a bounded scalar search finds its minimum
    deterministically.
    """
    if not len(labels):
        raise UserError("cannot fit a temperature on zero images; evaluate the model on a non-empty split")
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into a fitting half (first, n // 2) and a held-out half."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def calibrate(logits: np.ndarray, labels: np.ndarray, *, seed: int = 0, bins: int = 15) -> dict:
    """Fit on one half, measure on the other; returns the JSON fields of the module docstring."""
    if len(labels) < 2:
        raise UserError(f"calibration needs at least 2 images (one per half), got {len(labels)}")
    fit, held = halves(len(labels), seed)
    temperature = fit_temperature(logits[fit], labels[fit])
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(softmax(logits[held].astype(np.float64), axis=1), labels[held], bins),
        "ece_after": expected_calibration_error(softmax(logits[held].astype(np.float64) / temperature, axis=1),
                                                labels[held], bins),
        "nll_fit_before": negative_log_likelihood(logits[fit], labels[fit]),
        "nll_fit_after": negative_log_likelihood(logits[fit], labels[fit], temperature),
        "nll_held_before": negative_log_likelihood(logits[held], labels[held]),
        "nll_held_after": negative_log_likelihood(logits[held], labels[held], temperature),
        "accuracy_held": float(np.mean(logits[held].argmax(axis=1) == labels[held])),
        "n_fit": int(len(fit)), "n_held": int(len(held)), "bins": bins, "seed": seed,
    }


def read_temperature(path: str | Path) -> float:
    """The fitted temperature stored in a calibration JSON file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"calibration file {path} does not exist; build it with `snakemake {path}`")
    try:
        return float(json.loads(path.read_text())["temperature"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not a calibration file (no 'temperature'); delete it and rebuild it") from None


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", required=True, help="evaluation file (pathologies.overinterp.evaluate)")
    parser.add_argument("--dataset", required=True, help="dataset group of the evaluation file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split into halves")
    parser.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.bins < 1:
        raise UserError(f"--bins {args.bins} must be at least 1")
    result = read_evaluation(args.evaluation, args.dataset, args.split)
    summary = {**calibrate(result.logits, result.labels, seed=args.seed, bins=args.bins),
               "evaluation": args.evaluation, "dataset": args.dataset, "split": args.split}
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"temperature {summary['temperature']:.4f}: ECE {summary['ece_before']:.4f} -> {summary['ece_after']:.4f}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
