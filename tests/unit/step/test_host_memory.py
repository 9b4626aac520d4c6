"""A CPU step keeps its freed memory: the next step reuses it instead of faulting pages in."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from snugtune.step import host_memory, keep_freed_memory

# Three steps of a small conv net whose activations (33.5 MB a layer) are above the largest mmap
# threshold glibc adapts to by default (32 MiB), then the minor page faults of three more, per
# step.
FAULTS_PER_STEP = textwrap.dedent("""
    import resource, sys, torch
    from torch import nn
    from snugtune.step import keep_freed_memory
    if sys.argv[1] == "kept":
        assert keep_freed_memory(torch.device("cpu"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
    x = torch.randn(8, 3, 256, 256)
    def step():
        net(x).square().mean().backward()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
""")


def faults_per_step(mode: str) -> int:
    p = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True,
                       text=True, check=True)
    return int(p.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_a_cpu_step_reuses_the_memory_the_last_one_freed() -> None:
    default, kept = faults_per_step("default"), faults_per_step("kept")
    # measured: 196,634 faults a step with glibc's defaults every time, 0-2,731 kept
    assert default > 100_000
    assert kept < default / 20


def test_nothing_changes_for_a_gpu_step_or_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(host_memory, "_set_thresholds", lambda: calls.append("set") or True)
    assert not keep_freed_memory(torch.device("cuda", 0))
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert not keep_freed_memory(torch.device("cpu"))
    assert calls == []
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert keep_freed_memory(torch.device("cpu"))
    assert calls == ["set"]
