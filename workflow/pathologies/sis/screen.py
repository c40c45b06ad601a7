"""Fast *screens* of a :class:`~pathologies.sis.engine.Scorer`: approximate logits, cheaper than strict fp32.

A screen never decides anything stored: :func:`pathologies.sis.verified.verified_backward_selection`
uses it to rule out candidates that cannot be the strict-fp32 argmax and re-scores the rest in the
canonical path. Every screen runs a channels_last copy of the models with batch norms folded into
the convolutions (where torch.fx can trace the model). Screens (``SCREENS``):

- ``bf16``: bf16 autocast (CUDA, or CPUs with bf16 units; folding measured 2.7x -> 3.2x eager fp32
  for ResNet20 at 32x32 on 2 cores); 8 bits of mantissa: errors ~0.1 in log-odds;
- ``fp16``: fp16 autocast (CUDA, or CPUs with fp16 units): as fast as bf16 where the units exist,
  11 bits of mantissa (errors ~8x smaller than bf16's, so fewer near-ties to re-score), but a
  range of +-65504: candidates whose screen logits overflow are re-scored in strict fp32;
- ``tf32``: fp32 with TF32 tensor-core convolutions and matmuls (CUDA GPUs of compute capability
  8.0 or newer), switched on only while the screen runs: the strict path keeps TF32 off;
- ``channels_last``: fp32 (another convolution kernel, errors ~1e-5);
- ``compile``: ``torch.compile`` of the fp32 copy (compiles for tens of seconds on a small CPU, so
  ``auto`` does not try it there; batches are padded to a few shapes to avoid recompiles).

The canonical models are never touched (the screen works on deep copies), so the strict path keeps
its memory format, kernels and TF32 setting.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys

import torch

from ..errors import UserError

SCREENS = ("bf16", "fp16", "tf32", "channels_last", "compile")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
PAD_STEP = 32


def _onednn_has(probe: str) -> bool:
    """oneDNN's answer to ``torch.ops.mkldnn.<probe>()`` (False where this build lacks the probe)."""
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def bf16_supported(device: torch.device) -> bool:
    """True when bf16 autocast has hardware support on ``device`` (CUDA bf16, or oneDNN bf16 on CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _onednn_has("_is_mkldnn_bf16_supported")


def fp16_supported(device: torch.device) -> bool:
    """True when fp16 autocast has hardware support on ``device`` (CUDA, or oneDNN fp16 on CPU)."""
    return device.type == "cuda" or (device.type == "cpu" and _onednn_has("_is_mkldnn_fp16_supported"))


def tf32_supported(device: torch.device) -> bool:
    """True on CUDA GPUs with TF32 tensor cores (compute capability 8.0 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def supported_screens(device: torch.device) -> list[str]:
    """The screens ``auto`` measures on ``device`` (compile only on CUDA: its compile time dominates on CPUs)."""
    checks = {"bf16": bf16_supported, "fp16": fp16_supported, "tf32": tf32_supported,
              "channels_last": lambda _: True, "compile": lambda d: d.type == "cuda"}
    return [name for name in SCREENS if checks[name](device)]


@contextlib.contextmanager
def tf32_enabled():
    """TF32 on for cuDNN convolutions and cuBLAS matmuls inside the block; the previous setting after it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    """A channels_last eval copy of ``model``, batch norms folded into convolutions when traceable."""
    model = copy.deepcopy(model).eval()
    try:
        from torch.fx.experimental.optimization import fuse

        model = fuse(model)
    except Exception:  # an untraceable model keeps its batch norms (only slower)
        pass
    return model.to(memory_format=torch.channels_last)


def check_screen(name: str, device: torch.device) -> None:
    """Raise UserError (one line) when screen ``name`` is unknown or cannot run on ``device``."""
    if name not in SCREENS:
        raise UserError(f"SIS screen {name!r} is unknown; use auto or one of {', '.join(SCREENS)}")
    if name == "bf16" and not bf16_supported(device):
        raise UserError(f"SIS screen bf16 needs bf16 units ({device.type} here has none: no avx512_bf16/AMX "
                        "or CUDA bf16); use screen auto or channels_last")
    if name == "fp16" and not fp16_supported(device):
        raise UserError(f"SIS screen fp16 needs fp16 units ({device.type} here has none: no avx512_fp16/AMX-FP16 "
                        "or CUDA); use screen auto or channels_last")
    if name == "tf32" and not tf32_supported(device):
        raise UserError(f"SIS screen tf32 needs a CUDA GPU of compute capability 8.0 or newer ({device.type} here); "
                        "use screen auto or channels_last")
    if name == "compile" and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        raise UserError("SIS screen compile needs a C++ compiler (g++) on the CPU; use screen auto or channels_last")


class Screen:
    """Approximate ensemble-mean, temperature-scaled logits of a Scorer's models (float32, (B, K); may hold inf/nan).

    ``pad_to``: the largest batch; smaller batches are padded to the next multiple of ``PAD_STEP``
    (at most ``pad_to``): a few shapes, so oneDNN/cuDNN (and torch.compile) build their kernels a
    few times instead of once per size of a step's last batch, without running many padding rows.
    A ``compile`` screen that fails at its first call falls back to ``channels_last`` and says so
    on stderr (results are unaffected: screens only rule candidates out).
    """

    def __init__(self, name: str, scorer, device: torch.device, pad_to: int | None = None):
        check_screen(name, device)
        self.name, self.scorer, self.pad_to = name, scorer, pad_to
        self.models = [_copy(m) for m in scorer.models]
        self.runners = [torch.compile(m, dynamic=False) for m in self.models] if name == "compile" else self.models

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Screen logits of ``x`` (B, C, H, W) under inference mode."""
        size = len(x)
        padded = min(self.pad_to, -(-size // PAD_STEP) * PAD_STEP) if self.pad_to else size
        if padded > size:
            x = torch.cat([x, x[-1:].expand(padded - size, -1, -1, -1)])
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._precision(x.device.type):
            try:
                total = sum(run(x).float() for run in self.runners)
            except Exception as err:  # any compiler failure: named fallback below
                if self.name != "compile":
                    raise
                print(f"SIS screen compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      "falling back to screen channels_last", file=sys.stderr)
                self.name, self.runners = "channels_last", self.models
                return self.logits(x[:size])
        return (total / (len(self.runners) * self.scorer.temperature))[:size]

    def _precision(self, device_type: str):
        if self.name in AUTOCAST:
            return torch.autocast(device_type, dtype=AUTOCAST[self.name])
        return tf32_enabled() if self.name == "tf32" else contextlib.nullcontext()
