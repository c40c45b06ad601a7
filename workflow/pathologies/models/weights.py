"""Where a model's initial weights come from: a placed file (optionally with its SHA-256) or torchvision.

A model's ``weights`` (config key ``models.<name>.weights``) is one of::

    weights: resources/resnet50.pth                                   # a placed file, as before
    weights: {file: resources/resnet50.pth, sha256: 3b1c...}          # a placed file, checked before loading
    weights: {torchvision: IMAGENET1K_V1}                             # torchvision's own weights of a tv_* arch

A torchvision weights name is resolved against the architecture's torchvision weights enum (``tv_resnet50``
-> ``ResNet50_Weights``) when the config is read, and loaded through torchvision's API
(``Weights.get_state_dict``: downloaded into torch hub's cache, ``$TORCH_HOME``, the first time; offline
it works once the file is in that cache) with ``weights_only=True``, so nothing read executes code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError

SHA256 = re.compile(r"[0-9a-f]{64}")


def normalise(weights: Any, where: str) -> dict | None:
    """The ``weights`` declaration as ``{"file": path, "sha256": hex | None}`` or ``{"torchvision": name}``
    (None when there is none); one-line UserError naming ``where`` otherwise."""
    if weights is None:
        return None
    if isinstance(weights, (str, Path)):
        return {"file": str(weights), "sha256": None}
    if isinstance(weights, Mapping) and set(weights) in ({"file"}, {"file", "sha256"}):
        digest = weights.get("sha256")
        if digest is not None and not (isinstance(digest, str) and SHA256.fullmatch(digest.lower())):
            raise UserError(f"config key {where}.sha256: {digest!r} is not a SHA-256 digest; give the 64 hex "
                            "digits `sha256sum <file>` prints")
        return {"file": str(weights["file"]), "sha256": None if digest is None else digest.lower()}
    if isinstance(weights, Mapping) and set(weights) == {"torchvision"}:
        return {"torchvision": str(weights["torchvision"])}
    raise UserError(f"config key {where}: {weights!r} is not a weights source; give a file path, "
                    "{file: <path>, sha256: <hex>} or {torchvision: <weights name, e.g. IMAGENET1K_V1>}")


def torchvision_weights(arch: str, model: str | None, name: str, where: str = "weights"):
    """The weights enum member ``name`` of torchvision model ``model`` (registry architecture ``arch``; None
    when it has no torchvision weights), e.g. ``ResNet18_Weights.IMAGENET1K_V1``; one-line UserError otherwise."""
    if model is None:
        raise UserError(f"config key {where}.torchvision: architecture {arch!r} is not built as a torchvision "
                        "model, so torchvision's weights do not fit it; use a tv_* architecture or place a file")
    import torchvision

    enum = torchvision.models.get_model_weights(model)
    if name not in enum.__members__:
        raise UserError(f"config key {where}.torchvision: {name!r} is not a weights name of torchvision's "
                        f"{model} (have: {', '.join(enum.__members__)})")
    return enum[name]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str | None) -> None:
    """UserError naming the file unless its SHA-256 is ``expected`` (no check when None)."""
    if expected is None:
        return
    if not Path(path).is_file():
        raise UserError(f"weights file {path} does not exist; place it there or fix the model's weights.file")
    actual = file_sha256(path)
    if actual != expected:
        raise UserError(f"weights file {path} has SHA-256 {actual}, not the declared {expected}; "
                        "place the right file (or correct weights.sha256)")


def weights_file(weights: Any) -> str | None:
    """The placed file of a weights declaration (an input of the training job), None for none / torchvision."""
    source = normalise(weights, "weights")
    return None if source is None else source.get("file")


def fetch_torchvision(member, arch: str) -> dict:
    """torchvision's state dict of weights enum ``member`` (through its API, ``weights_only=True``)."""
    try:
        return member.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # no network and no cached copy, a corrupt download, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"torchvision weights {member} of {arch} could not be loaded ({reason[:160]}); without "
                        f"network, put {Path(member.url).name} into torch hub's cache ($TORCH_HOME/hub/checkpoints) "
                        "or declare the placed file with {file: <path>, sha256: <hex>}") from None
