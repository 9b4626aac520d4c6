"""estimate_memory(), MemoryReport and the ``snugtune memory`` command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from snugtune.cli import main
from snugtune.errors import ConfigError
from snugtune.memory import MemoryReport, estimate_memory


def tiny() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )


def test_report_terms_add_up_on_cuda():
    r = estimate_memory(tiny(), batch=8, res=32, classes=10, device="cuda", gpu="t4-16gb")
    assert isinstance(r, MemoryReport)
    assert sum(r.breakdown.values()) == r.predicted_peak_bytes
    assert r.breakdown["cuda_context"] > 0 and r.breakdown["allocator_reserve"] >= 0
    assert r.predicted_peak_bytes > r.tensor_peak_bytes >= r.eval_peak_bytes
    d = r.to_dict()
    assert json.loads(json.dumps(d))["gpu"] == "t4-16gb"
    assert {"tensor_peak_bytes", "predicted_peak_bytes", "breakdown", "top_layers"} <= set(d)


def test_cpu_report_has_no_allocator_terms():
    r = estimate_memory(tiny(), batch=8, res=32, device="cpu")
    assert r.breakdown["cuda_context"] == 0 and r.breakdown["allocator_reserve"] == 0
    assert r.predicted_peak_bytes == r.tensor_peak_bytes


def test_levers_reduce_memory():
    base = estimate_memory(tiny(), batch=64, res=64, device="cpu")
    head = estimate_memory(tiny(), batch=64, res=64, device="cpu", trainable="head")
    bf16 = estimate_memory(tiny(), batch=64, res=64, device="cpu", precision="bf16")
    sgd = estimate_memory(tiny(), batch=1, res=8, device="cpu", optimizer="sgd")
    adam = estimate_memory(tiny(), batch=1, res=8, device="cpu", optimizer="adam")
    assert head.tensor_peak_bytes < base.tensor_peak_bytes
    assert bf16.tensor_peak_bytes < base.tensor_peak_bytes
    assert sgd.breakdown["optimizer_state"] < adam.breakdown["optimizer_state"]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        estimate_memory(tiny(), batch=2, res=16, precision="fp8")
    with pytest.raises(ConfigError):
        estimate_memory(tiny(), batch=2, res=16, gpu="v100")


def test_cli_json(capsys):
    code = main(["memory", "resnet10t", "--batch", "2", "--res", "32", "--classes", "3",
                 "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"tensor_peak_bytes", "predicted_peak_bytes", "breakdown", "eval_peak_bytes"} <= set(out)
    assert out["model"] == "resnet10t" and out["batch"] == 2 and out["device"] == "cpu"
    assert out["breakdown"]["parameters"] > 0


def test_cli_bad_trainable_is_a_config_error(capsys):
    code = main(["memory", "resnet10t", "--batch", "2", "--res", "32", "--trainable", "top",
                 "--device", "cpu"])
    assert code == 2
    assert "top:N" in capsys.readouterr().err
