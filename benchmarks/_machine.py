"""What benchmark numbers were measured on (the machine and its load), and how a result is
printed and saved: shared by the scripts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

__all__ = ["emit", "load", "machine"]


def load() -> list[float]:
    """1, 5 and 15 minute load averages (other work on a shared machine skews timings)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                   if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_tile" in flags,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


def emit(report: dict[str, Any], out: Path | None, indent: int = 2) -> None:
    """Print ``report`` as JSON, and write it to ``out`` too when given."""
    text = json.dumps(report, indent=indent, default=str)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
