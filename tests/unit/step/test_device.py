"""Where a step runs: --deterministic on CUDA sets cuBLAS's workspace before its first handle."""

from __future__ import annotations

import os

import pytest
import torch

from snugtune.step import CUBLAS_DETERMINISTIC, deterministic


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    seen: list[tuple[bool, bool]] = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda on, warn_only=False: seen.append((on, warn_only)))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return seen


def test_deterministic_on_cuda_sets_the_cublas_workspace(calls: list[tuple[bool, bool]]) -> None:
    deterministic(torch.device("cuda", 0))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC
    assert calls == [(True, True)]


def test_deterministic_keeps_a_user_setting_and_leaves_the_cpu_alone(
    calls: list[tuple[bool, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deterministic(torch.device("cpu"))
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    deterministic(torch.device("cuda", 0))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert calls == [(True, True), (True, True)]
