"""Numerical precision of a training run: fp32, or mixed precision (bf16 / fp16 autocast) and memory format.

A recipe's ``precision`` picks the autocast dtype of forward passes (weights, optimizer state and the
loss reduction stay fp32); fp16 adds a gradient scaler against underflow. ``channels_last`` stores
activations NHWC, which tensor-core convolutions want. Both change the floating-point results (not the
data order nor the recipe), so they are part of the run spec and recorded in its provenance.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import UserError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device, where: str = "recipe key precision") -> None:
    """Refuse, in one line, a precision that ``device`` cannot run (before any work is done)."""
    if precision not in DTYPES:
        raise UserError(f"{where}: {precision!r} is not one of {', '.join(DTYPES)}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{where}: fp16 mixed precision needs a CUDA GPU and this job runs on {device.type}; "
                        "use bf16 or fp32 here (config key device, or the recipe's precision)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise UserError(f"{where}: bf16 mixed precision is not supported by {name}; use fp16 or fp32 on this GPU "
                        "(bf16 needs compute capability 8.0 or newer)")


class Precision:
    """Autocast context and gradient scaler of one run (both inert at fp32)."""

    def __init__(self, precision: str, device: torch.device, channels_last: bool = False):
        check_precision(precision, device)
        self.name, self.device, self.channels_last = precision, device, channels_last
        self.dtype = DTYPES[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        """The context forward passes (and the loss) run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimizer step (skipped by the fp16 scaler when gradients overflowed) and scaler update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
