"""Fast *screens* of a :class:`~pathologies.sis.engine.Scorer`: approximate logits, cheaper than strict fp32.

A screen never decides anything stored: :func:`pathologies.sis.verified.verified_backward_selection`
uses it to rule out candidates that cannot be the strict-fp32 argmax and re-scores the rest in the
canonical path. Screens (``SCREENS``):

- ``bf16``: a channels_last copy of the models, batch norms folded into the convolutions where
  torch.fx can trace the model, under bf16 autocast (CUDA, or CPUs with bf16 units; eager batch
  norm and ReLU on bf16 channels_last tensors are slow on CPUs: folding measured 2.7x -> 3.2x
  eager fp32 for ResNet20 at 32x32 on 2 cores);
- ``channels_last``: a channels_last fp32 copy (a different convolution kernel, errors ~1e-5);
- ``compile``: ``torch.compile`` of the channels_last fp32 copy (compiles for tens of seconds on a
  small CPU, so ``auto`` does not try it there; batches are padded to one shape to avoid recompiles).

The canonical models are never touched (the screen works on deep copies), so the strict path keeps
its memory format and kernels.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys

import torch

from ..errors import UserError

SCREENS = ("bf16", "channels_last", "compile")
PAD_STEP = 32


def bf16_supported(device: torch.device) -> bool:
    """True when bf16 autocast has hardware support on ``device`` (CUDA bf16, or oneDNN bf16 on CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def supported_screens(device: torch.device) -> list[str]:
    """The screens ``auto`` measures on ``device`` (compile only on CUDA: its compile time dominates on CPUs)."""
    screens = ["channels_last"]
    if bf16_supported(device):
        screens.insert(0, "bf16")
    if device.type == "cuda":
        screens.append("compile")
    return screens


def _copy(model: torch.nn.Module, fold: bool) -> torch.nn.Module:
    """A channels_last eval copy of ``model``; with ``fold``, batch norms folded into convolutions when traceable."""
    model = copy.deepcopy(model).eval()
    if fold:
        try:
            from torch.fx.experimental.optimization import fuse

            model = fuse(model)
        except Exception:  # noqa: BLE001 - an untraceable model keeps its batch norms (only slower)
            pass
    return model.to(memory_format=torch.channels_last)


def check_screen(name: str, device: torch.device) -> None:
    """Raise UserError (one line) when screen ``name`` is unknown or cannot run on ``device``."""
    if name not in SCREENS:
        raise UserError(f"SIS screen {name!r} is unknown; use auto or one of {', '.join(SCREENS)}")
    if name == "bf16" and not bf16_supported(device):
        raise UserError(f"SIS screen bf16 needs bf16 units ({device.type} here has none: no avx512_bf16/AMX "
                        "or CUDA bf16); use screen auto or channels_last")
    if name == "compile" and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        raise UserError("SIS screen compile needs a C++ compiler (g++) on the CPU; use screen auto or channels_last")


class Screen:
    """Approximate ensemble-mean, temperature-scaled logits of a Scorer's models (float32, (B, K)).

    ``pad_to``: the largest batch; smaller batches are padded to the next multiple of ``PAD_STEP``
    (at most ``pad_to``): a few shapes, so oneDNN/cuDNN (and torch.compile) build their kernels a
    few times instead of once per size of a step's last batch, without running many padding rows.
    A ``compile`` screen that fails at its first call falls back to ``channels_last`` and says so
    on stderr (results are unaffected: screens only rule candidates out).
    """

    def __init__(self, name: str, scorer, device: torch.device, pad_to: int | None = None):
        check_screen(name, device)
        self.name, self.scorer, self.pad_to = name, scorer, pad_to
        self.models = [_copy(m, fold=name == "bf16") for m in scorer.models]
        self.runners = [torch.compile(m, dynamic=False) for m in self.models] if name == "compile" else self.models

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Screen logits of ``x`` (B, C, H, W) under inference mode."""
        size = len(x)
        padded = min(self.pad_to, -(-size // PAD_STEP) * PAD_STEP) if self.pad_to else size
        if padded > size:
            x = torch.cat([x, x[-1:].expand(padded - size, -1, -1, -1)])
        x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.name == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            try:
                total = sum(run(x).float() for run in self.runners)
            except Exception as err:  # noqa: BLE001 - any compiler failure: named fallback below
                if self.name != "compile":
                    raise
                print(f"SIS screen compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      "falling back to screen channels_last", file=sys.stderr)
                self.name, self.runners = "channels_last", self.models
                return self.logits(x[:size])
        return (total / (len(self.runners) * self.scorer.temperature))[:size]
