"""The GPU a plan is for: asking the card (CUDA mocked), calibrations, offline profiles."""

from __future__ import annotations

import json
import os
import sys
import types
from types import SimpleNamespace

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
        fake_card, tmp_path, monkeypatch, caplog):
    """The README's flow: ``snugtune calibrate`` on the T4 saves ``t4-16gb``; later, with no
    GPU, ``--gpu t4-16gb`` plans with what was measured, not the built-in figures."""
    monkeypatch.setenv(gpus.CALIBRATION_DIR_ENV, str(tmp_path))
    save_calibration("t4-16gb", probe())  # the fake card: 8 GiB, context 280 MiB
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    profile, info = resolve_gpu("t4-16gb", "cuda")
    assert info is None and profile != PROFILES["t4-16gb"]
    assert (profile.memory_bytes, profile.context_bytes) == (8 * GIB, 280 * MIB)
    assert PROFILES["t4-16gb"].context_bytes != 280 * MIB  # the built-in one would differ
    (tmp_path / "t4-16gb.json").write_text("{not json", encoding="utf-8")
    assert get_gpu_profile("t4-16gb") == PROFILES["t4-16gb"]
    assert "ignoring unreadable calibration" in caplog.text
    with pytest.raises(ConfigError, match="snugtune calibrate"):
        get_gpu_profile("unknown-card")


def _fake_nvml(monkeypatch: pytest.MonkeyPatch, *, uuids: dict[str, int],
               processes: dict[int, list[tuple[int, int]]]) -> None:
    """``pynvml`` with devices (``uuids``: NVML index by UUID) and their processes."""
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def by_uuid(uuid: str) -> int:
        if uuid not in uuids:
            raise NVMLError(f"no device {uuid}")
        return uuids[uuid]

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByUUID = by_uuid  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in processes.get(h, [])]
    monkeypatch.setitem(sys.modules, "pynvml", mod)


def test_nvml_reads_the_device_torch_uses_under_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _i: SimpleNamespace(uuid=""))
    me = os.getpid()
    _fake_nvml(monkeypatch, uuids={}, processes={1: [(me, 1 * GIB)], 3: [(me, 300 * MIB)]})
    assert gpus.nvml_usage(1) == (300 * MIB, "NVML (this process)")  # cuda:1 is GPU 3


def test_nvml_finds_the_device_by_uuid_whatever_cuda_s_device_order(monkeypatch):
    # CUDA orders devices fastest first: cuda:0 may be NVML's device 5, which its UUID names
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda _i: SimpleNamespace(uuid="5d4e-ab"))
    me = os.getpid()
    _fake_nvml(monkeypatch, uuids={"GPU-5d4e-ab": 5}, processes={0: [(me, 1 * GIB)],
                                                                5: [(me, 250 * MIB)]})
    assert gpus.nvml_usage(0) == (250 * MIB, "NVML (this process)")


def test_nvml_finds_this_process_in_a_container_s_pid_namespace(tmp_path, monkeypatch):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nNSpid:\t4242\t7\n")  # host PID 4242, 7 in the container
    assert {4242, 7} <= gpus.own_pids(status)
    assert gpus.own_usage([(9999, 1 * GIB), (4242, 300 * MIB)], {7, 4242})[0] == 300 * MIB
    # a /proc that shows only the container's PID: the card's only process is this one
    only = gpus.own_usage([(4242, 300 * MIB)], {7})
    assert only is not None and only[0] == 300 * MIB and "only process" in only[1]
    # several processes, none of them known: NVML cannot say which, and probe says so
    assert gpus.own_usage([(4242, 300 * MIB), (5151, 2 * GIB)], {7}) is None
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _i: SimpleNamespace(uuid=""))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _fake_nvml(monkeypatch, uuids={}, processes={0: [(4242, 300 * MIB), (5151, 2 * GIB)]})
    monkeypatch.setattr(gpus, "own_pids", lambda: {7})
    assert gpus.nvml_usage(0) is None


def test_probe_says_which_reading_it_used(fake_card):
    assert probe().reading == "NVML (this process)"
    fake_card.nvml = None
    info = probe()
    assert info.reading == gpus.CARD_USED and not info.nvml


def test_probe_initialises_with_a_backward_even_under_no_grad(monkeypatch):
    """``snugtune.predict(..., gpu_memory=...)`` in ``torch.no_grad()`` probes the card: its
    convolution backward must run whatever the caller's grad mode (run here on the CPU)."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda _d=None: None)
    with torch.no_grad():
        gpus._initialise(torch.device("cpu"))
        assert not torch.is_grad_enabled()  # the caller's mode is back
