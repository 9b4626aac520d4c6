"""Fixtures shared by the unit tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from snugtune.memory import gpus
from snugtune.units import GIB, MIB


@pytest.fixture
def fake_card(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An 8 GiB sm86 card on which this process reserved 20 MiB and holds 300 MiB in all."""
    card = SimpleNamespace(total=8 * GIB, free=7 * GIB, reserved=20 * MIB, nvml=300 * MIB,
                           major=8, minor=6, initialised=0)

    def initialise(_dev: torch.device) -> None:
        card.initialised += 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _d: (card.free, card.total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda _d: card.reserved)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _d: SimpleNamespace(
        name="NVIDIA GeForce RTX 3070", major=card.major, minor=card.minor))
    # the optimizers' CUDA-graph check asks the (absent) driver for its stream
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda **_kw: None)
    monkeypatch.setattr(gpus, "_initialise", initialise)
    monkeypatch.setattr(gpus, "nvml_usage", lambda _i: None if card.nvml is None
                        else (card.nvml, "NVML (this process)"))
    return card
