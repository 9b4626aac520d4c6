"""Where a step runs and in what precision: the device, autocast, and the loss scaler.

One definition for the trainer, evaluation, the feature-cache fill and the memory simulator
(which runs the same autocast on fake CPU tensors, with CUDA's op lists on top).
"""

from __future__ import annotations

import contextlib

import torch

from snugtune.errors import ConfigError

__all__ = ["AUTOCAST_DTYPES", "autocast", "grad_scaler", "plan_device", "resolve_device"]

#: The autocast dtype of each low precision (fp32: no autocast).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU.

    Raises:
        ConfigError: ``cuda`` asked for where no GPU is visible.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def plan_device(name: str, gpu: str) -> str:
    """The device type a plan is for: ``auto`` is the visible GPU, or the card ``gpu`` names
    (planning for a card that is not here), else the CPU."""
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() or gpu != "auto" else "cpu"


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Autocast to ``precision`` (``fp32``: nothing) on ``device_type``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on CUDA (fp16 gradients underflow without one), else None."""
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
