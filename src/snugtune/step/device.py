"""Where a step runs and in what precision: the device, autocast, and the loss scaler.

One definition for the trainer, evaluation, the feature-cache fill and the memory simulator
(which runs the same autocast on fake CPU tensors, with CUDA's op lists on top).
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from snugtune.errors import ConfigError

__all__ = ["AUTOCAST_DTYPES", "CUBLAS_DETERMINISTIC", "autocast", "deterministic", "grad_scaler",
           "plan_device", "resolve_device"]

log = logging.getLogger(__name__)

#: The autocast dtype of each low precision (fp32: no autocast).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: cuBLAS's deterministic workspace setting (one of the two the CUDA docs name for
#: reproducible results, "Results reproducibility" in the cuBLAS guide); PyTorch's
#: ``use_deterministic_algorithms`` raises (or, with ``warn_only``, warns on every matmul)
#: without it.
CUBLAS_DETERMINISTIC = ":4096:8"


def deterministic(device: torch.device) -> None:
    """Deterministic algorithms from now on (``--deterministic``); on CUDA, cuBLAS's
    workspace setting too, set before its first handle unless the user set one."""
    if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
        log.info("--deterministic on CUDA: CUBLAS_WORKSPACE_CONFIG=%s", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True, warn_only=True)


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
