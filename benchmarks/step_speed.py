"""snugtune's training step against the plain mixed-precision loop of the same model, on one device.

Part of the GPU truth kit (``gpu_truth.py`` runs :func:`compare` in a child process on the
card, for each model), and usable on the CPU (the test suite runs it tiny). Both sides train
every layer of the same model (``build_classifier``, random weights, BatchNorm training) on
the same fixed random batch, with fused AdamW:

* ``plain``: what the PyTorch AMP recipe writes: ``torch.autocast`` (and ``GradScaler`` for
  fp16), ``loss.backward()``, ``optimizer.step()``, contiguous (NCHW) tensors;
* ``snugtune``: ``snugtune.step.train_step`` with the layout and precision a plan picks for
  the device (channels_last where autocast runs, the same precision).

Each side runs ``warmup`` steps, then ``steps`` timed steps (the device synchronised before and
after); the sides alternate ``repeats`` times and the medians and their ratio are reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from snugtune.models import build_classifier
from snugtune.step import MicroBatch, StepContext, train_step

__all__ = ["compare"]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
           dev: torch.device) -> Any:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    return step


def _snugtune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
              dev: torch.device, classes: int) -> Any:
    channels_last = precision != "fp32" or dev.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    ctx = StepContext(device=dev, num_classes=classes, precision=precision,
                      channels_last=channels_last)
    micro = MicroBatch(x.shape[0])
    host_x, host_y = x.cpu(), y.cpu()  # the loader hands the step host batches

    def step() -> None:
        train_step(model, optimizer, host_x, host_y, ctx, micro, step=0, scaler=scaler)

    return step


def _rate(step: Any, dev: torch.device, batch: int, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return batch * steps / (time.perf_counter() - t0)


def compare(model_name: str, precision: str, device: str = "cuda", *, batch: int = 64,
            res: int = 224, classes: int = 1000, warmup: int = 5, steps: int = 20,
            repeats: int = 3) -> dict[str, Any]:
    """Images/s of the plain AMP loop and of snugtune's step, and the median ratio."""
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, res, res, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    sides: dict[str, Any] = {}
    for name in ("plain", "snugtune"):
        model = build_classifier(model_name, classes, weights="none").to(dev)
        model.train()
        sides[name] = (_plain(model, x, y, precision, dev) if name == "plain"
                       else _snugtune(model, x, y, precision, dev, classes))
    rates: dict[str, list[float]] = {"plain": [], "snugtune": []}
    for r in range(repeats):
        for name in (("plain", "snugtune") if r % 2 == 0 else ("snugtune", "plain")):
            rates[name].append(round(_rate(sides[name], dev, batch, warmup, steps), 1))
    ratios = [round(s / p, 3) for p, s in zip(rates["plain"], rates["snugtune"], strict=True)]
    return {"model": model_name, "precision": precision, "device": device, "batch": batch,
            "res": res, "images_per_s": rates, "paired_ratios": ratios,
            "median_ratio": statistics.median(ratios)}
