"""Resume a killed SIS extraction shard from its last finished lockstep group.

After every lockstep group, :mod:`pathologies.sis.extract` saves what it has so far (the arrays of
its :class:`~pathologies.sis.extract.Extraction`, the number of images done, the verified-screen
counts) to ``<state_dir>/state.npz``, atomically; this lies outside the rule's declared outputs
(``results/resume/sis/...``, as training's ``results/resume/``). A restarted job with the same
*identity* (spec, the *content* of the models and the dataset, shard and rows) continues after the
last finished group; every group depends only on its own images (random tie-breaks draw per dataset
row), so the file is bit-identical to an uninterrupted run. A state of another identity (e.g. the
model was retrained at the same path) is ignored with one log line, and overwritten. The state
carries a checksum of its content (:func:`pathologies.io.content_checksum`): an edited or damaged
state is ignored the same way and the shard is recomputed, since a state is only a shortcut.
The state is NumPy arrays only, read with ``allow_pickle=False``: loading it executes no code.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..io import atomic_output, content_checksum

STATE_NAME = "state.npz"
COUNTS = ("candidates", "rescored", "fallback_steps", "calibration_steps")


def identity(**parts) -> str:
    """A canonical JSON text of what determines the results (arrays as lists)."""
    return json.dumps({key: np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
                       for key, value in parts.items()}, sort_keys=True)


def save(state_dir: str | Path, ident: str, done: int, out, stats=None) -> None:
    """Write the first ``done`` images' results of ``out`` (an Extraction) atomically."""
    arrays = {"identity": np.asarray(ident), "done": np.asarray(done), "classes": out.classes,
              "f_full": out.f_full, "order": out.order, "curve": out.curve}
    for i, threshold in enumerate(sorted(out.masks)):
        arrays[f"mask{i}"] = out.masks[threshold]
        if threshold in out.members:
            arrays[f"member{i}"], arrays[f"count{i}"] = out.members[threshold], out.counts[threshold]
        if threshold in out.none:
            arrays[f"none{i}"] = out.none[threshold]
    if stats is not None:
        arrays.update({f"stats_{key}": np.asarray(getattr(stats, key)) for key in COUNTS})
    arrays["checksum"] = np.asarray(content_checksum(arrays))
    path = Path(state_dir) / STATE_NAME
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load(state_dir: str | Path | None, ident: str, out, stats=None) -> int:
    """Restore a matching state into ``out`` (and ``stats``); returns the images already done (0: none)."""
    if state_dir is None:
        return 0
    path = Path(state_dir) / STATE_NAME
    if not path.exists():
        return 0
    try:
        with np.load(path, allow_pickle=False) as state:
            if str(state["identity"]) != ident:
                print(f"{path} belongs to another extraction; starting from the first image", file=sys.stderr)
                return 0
            stored = str(state["checksum"]) if "checksum" in state else ""
            if stored != content_checksum({name: state[name] for name in state.files if name != "checksum"}):
                print(f"{path} does not match its checksum (edited or damaged); starting from the first image",
                      file=sys.stderr)
                return 0
            done = int(state["done"])
            # gather everything first: a state that fails half way must leave ``out`` untouched
            targets = [(getattr(out, name), state[name]) for name in ("classes", "f_full", "order", "curve")]
            for i, threshold in enumerate(sorted(out.masks)):
                targets.append((out.masks[threshold], state[f"mask{i}"]))
                if threshold in out.members:
                    targets += [(out.members[threshold], state[f"member{i}"]),
                                (out.counts[threshold], state[f"count{i}"])]
                if threshold in out.none:
                    targets.append((out.none[threshold], state[f"none{i}"]))
            counts = ({key: int(state[f"stats_{key}"]) for key in COUNTS}
                      if stats is not None and "stats_candidates" in state else {})
            if not 0 <= done <= len(out.f_full) or any(value.shape[1:] != target.shape[1:] or len(value) < done
                                                       for target, value in targets):
                raise ValueError("arrays of another shape")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        print(f"{path} is unreadable ({type(err).__name__}); starting from the first image", file=sys.stderr)
        return 0
    for target, value in targets:
        target[:done] = value[:done]
    for key, value in counts.items():
        setattr(stats, key, value)
    print(f"resuming from {path}: {done} images done", file=sys.stderr)
    return done


def clear(state_dir: str | Path | None) -> None:
    """Remove the state (and its folder, when empty) once the output is written."""
    if state_dir is not None:
        (Path(state_dir) / STATE_NAME).unlink(missing_ok=True)
        try:
            Path(state_dir).rmdir()
        except OSError:
            pass  # not empty, or already gone
