"""The GPU a plan is for: asking the card (CUDA mocked), calibrations, offline profiles."""

from __future__ import annotations

import json

import pytest
import torch

from snugtune.errors import ConfigError
from snugtune.memory import gpus
from snugtune.memory.gpus import (
    CONV_KERNELS_BYTES,
    PROFILES,
    get_gpu_profile,
    probe,
    resolve_gpu,
    save_calibration,
)
from snugtune.units import GIB, MIB


def test_probe_reads_the_card_and_the_context_outside_the_allocator(fake_card):
    info = probe()
    assert fake_card.initialised == 1  # cuBLAS and cuDNN loaded before anything is read
    assert (info.name, info.index, info.total_bytes, info.free_bytes) == (
        "NVIDIA GeForce RTX 3070", 0, 8 * GIB, 7 * GIB)
    assert info.context_bytes == 280 * MIB and info.nvml  # NVML's 300 MiB less the 20 reserved
    assert info.compute_capability == (8, 6) and info.bf16
    profile = info.profile()
    assert profile.source == "measured" and profile.context_bytes == 280 * MIB
    assert profile.available_bytes == 7 * GIB + 300 * MIB  # free memory and what it holds
    assert profile.conv_kernels_bytes == CONV_KERNELS_BYTES  # kernels a real network loads later
    assert json.loads(json.dumps(info.to_dict()))["name"] == info.name


def test_probe_without_nvml_counts_the_cards_used_memory(fake_card):
    fake_card.nvml, fake_card.major, fake_card.minor = None, 7, 5
    info = probe()
    assert not info.nvml and not info.bf16
    assert info.process_bytes == 1 * GIB  # total - free: other processes count as context
    assert info.context_bytes == 1 * GIB - 20 * MIB


def test_probe_without_cuda_names_the_profiles(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="t4-16gb"):
        probe()


def test_resolve_gpu_asks_the_card_only_for_auto_on_cuda(fake_card):
    profile, info = resolve_gpu("auto", "cuda")
    assert info is not None and profile.source == "measured"
    assert resolve_gpu("auto", "cpu") == (PROFILES["generic"], None)
    assert resolve_gpu("t4-16gb", "cuda") == (PROFILES["t4-16gb"], None)
    assert fake_card.initialised == 1


def test_a_calibration_is_the_profile_of_later_offline_plans(fake_card, tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.CALIBRATION_DIR_ENV, str(tmp_path))
    path = save_calibration("my-3070", probe())
    assert path == tmp_path / "my-3070.json"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # later, on a laptop
    profile, info = resolve_gpu("MY-3070", "cuda")
    assert info is None and profile.name == "my-3070"
    assert profile.context_bytes == 280 * MIB and profile.memory_bytes == 8 * GIB
    assert profile.available_bytes is None  # free memory was the card's then, not later
    assert profile.compute_capability == (8, 6) and "RTX 3070" in profile.source


def test_a_calibration_overrides_a_built_in_name_and_a_broken_one_is_ignored(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(gpus.CALIBRATION_DIR_ENV, str(tmp_path))
    (tmp_path / "t4-16gb.json").write_text("{not json", encoding="utf-8")
    assert get_gpu_profile("t4-16gb") == PROFILES["t4-16gb"]
    assert "ignoring unreadable calibration" in caplog.text
    with pytest.raises(ConfigError, match="snugtune calibrate"):
        get_gpu_profile("unknown-card")
