"""plan_run(): fits the budget, uses it, keeps the effective batch, explains failures."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from snugtune.cli import main
from snugtune.config import build_config
from snugtune.data.synthetic import make_image_folder
from snugtune.errors import BudgetError
from snugtune.memory import PROFILES
from snugtune.planner import Plan, plan_run
from snugtune.units import GIB, MIB


def tiny() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
        )


MODEL = tiny()


def cfg(**kw):
    base = {"data": "unused", "model": "tiny", "batch_size": 256}
    return build_config(overrides={**base, **kw})


def plan(c, device="cpu", num_train=10_000, resolution=32):
    return plan_run(c, num_classes=4, num_train=num_train, resolution=resolution, device=device,
                    model=MODEL)


def test_no_budget_predicts_the_whole_batch():
    p = plan(cfg())
    assert [ph.phase for ph in p.phases] == ["head", "finetune"]
    for ph in p.phases:
        assert (ph.micro_batch, ph.accumulation, ph.limited_by) == (256, 1, "no budget")
        assert ph.budget_bytes is None and ph.utilisation is None
    assert p.phase("head").feature_cache and not p.phase("finetune").feature_cache


def test_budget_fits_and_is_used():
    full = plan(cfg()).phase("finetune").predicted_peak_bytes
    budget = full // 2
    p = plan(cfg(gpu_memory=budget))
    ft = p.phase("finetune")
    assert ft.limited_by == "budget" and ft.micro_batch < 256
    assert ft.predicted_peak_bytes <= budget
    assert ft.utilisation is not None and ft.utilisation >= 0.85
    assert ft.accumulation == math.ceil(256 / ft.micro_batch)  # effective batch kept


def test_dataset_and_user_caps():
    assert plan(cfg(gpu_memory="8GiB"), num_train=40).phase("head").limited_by == "dataset"
    ph = plan(cfg(gpu_memory="8GiB", micro_batch=16)).phase("finetune")
    assert (ph.micro_batch, ph.accumulation, ph.limited_by) == (16, 16, "micro_batch")


def test_cuda_plan_counts_the_context_and_picks_mixed_precision():
    p = plan(cfg(gpu_memory=2 * GIB, gpu="a100-40gb"), device="cuda")
    ft = p.phase("finetune")
    assert ft.precision == "bf16" and ft.channels_last
    assert ft.breakdown["cuda_context"] > 0 and ft.predicted_peak_bytes <= 2 * GIB
    t4 = plan(cfg(gpu_memory=2 * GIB, gpu="t4-16gb"), device="cuda")
    assert t4.phase("finetune").precision == "fp16"


def test_budget_error_says_need_and_what_would_fit():
    with pytest.raises(BudgetError) as e:
        plan(cfg(gpu_memory=64 * 1024))
    msg = str(e.value)
    assert msg.startswith("Budget 64 KiB < ")
    assert "needed at batch 1" in msg and "weights" in msg and "Try" in msg
    assert "--gpu-memory" in msg


def test_budget_error_suggests_a_smaller_resolution():
    need = plan(cfg(batch_size=1, precision="fp32"), resolution=64).phase("head").predicted_peak_bytes
    with pytest.raises(BudgetError, match="--resolution (48|32)"):  # the head phase cannot freeze more
        plan(cfg(gpu_memory=int(need * 0.9), batch_size=1, precision="fp32"), resolution=64)


def test_plan_round_trip(tmp_path):
    p = plan(cfg(gpu_memory=512 * MIB))
    path = p.save(tmp_path)
    assert path.name == "plan.json"
    assert Plan.load(tmp_path) == p
    assert Plan.from_dict(json.loads(path.read_text())) == p


def test_plan_cli_json(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=6, size=32)
    code = main(["plan", str(data), "--model", "resnet10t", "--gpu-memory", "1GiB", "--res",
                 "32", "--batch-size", "8", "--device", "cpu", "--json", "--out",
                 str(tmp_path / "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_classes"] == 2 and out["resolution"] == 32
    ph = out["phases"][0]
    for key in ("micro_batch", "accumulation", "precision", "checkpointing",
                "predicted_peak_bytes", "budget_bytes", "utilisation", "breakdown"):
        assert key in ph
    assert (tmp_path / "run" / "plan.json").exists()


def _heavy_middle() -> nn.Module:
    """A block whose weights (9.4 MB) and their gradients and Adam state dominate the step."""
    with torch.device("meta"):
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Sequential(nn.Conv2d(8, 512, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(512, 512, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(512, 8, 1), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        )


def _finetune_plan(model: nn.Module, trainable: str, budget: int | None):
    """The plan of one fine-tuning phase of ``model`` at ``trainable`` under ``budget``."""
    phases = [{"name": "finetune", "epochs": 1, "lr": 1e-3, "trainable": trainable}]
    return plan_run(cfg(gpu_memory=budget, batch_size=8, phases=phases), num_classes=4,
                    num_train=100, resolution=16, device="cpu", model=model).phase("finetune")


def test_a_budget_too_small_for_the_asked_depth_freezes_more():
    model = _heavy_middle()

    def run(budget):
        return _finetune_plan(model, "top:2", budget)

    free = run(None)
    assert free.trainable == "top:2" and free.limited_by == "no budget"
    ft = run(25 * MIB)  # top:2 needs its 9.4 MB of weights 4x (weights, gradients, 2 Adam moments)
    assert free.predicted_peak_bytes > 25 * MIB
    assert (ft.trainable, ft.limited_by) == ("top:1", "frozen depth")
    assert ft.predicted_peak_bytes <= 25 * MIB
    with pytest.raises(BudgetError):
        run(4 * MIB)  # below the weights alone: no depth fits


def _heavy_top() -> nn.Module:
    """The last block's weights (9.4 MB), gradients and Adam state dominate the step."""
    with torch.device("meta"):
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 512, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(512, 512, 3, padding=1), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 4),
        )


def test_freezing_goes_down_to_the_head_before_refusing():
    model = _heavy_top()

    def run(budget):
        return _finetune_plan(model, "all", budget)

    ft = run(25 * MIB)  # any trainable block brings its 9.4 MB four times over
    assert (ft.trainable, ft.limited_by, ft.feature_cache) == ("head", "frozen depth", True)
    assert ft.predicted_peak_bytes <= 25 * MIB
    with pytest.raises(BudgetError, match="training head"):
        run(8 * MIB)  # below the frozen weights alone: the error is about the head


def test_a_card_without_a_budget_is_planned_to_its_room():
    free = plan(cfg(gpu="t4-16gb"), device="cuda")
    assert free.budget_bytes == PROFILES["t4-16gb"].memory_bytes  # offline: its capacity
    measured = dataclasses.replace(PROFILES["t4-16gb"], source="measured",
                                   available_bytes=3 * GIB)
    p = plan_run(cfg(gpu_memory=4 * GIB), num_classes=4, num_train=10_000, resolution=32,
                 device="cuda", model=MODEL, gpu=measured, device_info={"name": "Tesla T4"})
    assert p.budget_bytes == 3 * GIB  # the budget, at most the card's free room
    assert p.device_info == {"name": "Tesla T4"} and p.gpu_profile is not None
    assert p.context_bytes == PROFILES["t4-16gb"].context_bytes
    assert plan(cfg()).budget_bytes is None  # the CPU without a budget: none


@pytest.mark.parametrize("name", ["vgg16", "timm:vgg16"])
def test_vgg16_at_224_fits_a_4gib_card(name):
    c = cfg(model=name, gpu_memory=4 * GIB, gpu="gtx1650-4gb", batch_size=32)
    p = plan_run(c, num_classes=5, num_train=1000, resolution=224, device="cuda")
    for ph in p.phases:
        assert ph.predicted_peak_bytes <= PROFILES["gtx1650-4gb"].memory_bytes
    assert p.budget_bytes == PROFILES["gtx1650-4gb"].memory_bytes  # 3.81 GiB, not the 4 asked
    assert p.phase("finetune").precision == "fp16"


def test_plan_on_cuda_asks_the_card_and_records_it(fake_card, tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=6, size=32)
    code = main(["plan", str(data), "--model", "resnet10t", "--res", "32", "--batch-size", "8",
                 "--json", "--out", str(tmp_path / "run")])  # --device auto, --gpu auto
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cuda" and out["device_info"]["name"] == "NVIDIA GeForce RTX 3070"
    assert out["budget_bytes"] == 7 * GIB + 300 * MIB  # no --gpu-memory: the card's room
    assert out["gpu_profile"]["context_bytes"] == 280 * MIB
    assert {ph["precision"] for ph in out["phases"]} == {"bf16"}  # sm86
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["device_info"] == out["device_info"]
