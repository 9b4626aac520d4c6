"""Tables fit an 80-column terminal without cutting a header or a value."""

from __future__ import annotations

import io

from rich.console import Console

from snugtune.cli import render
from snugtune.memory import estimate_memory
from snugtune.planner import PhasePlan, Plan
from snugtune.report import classification_report
from snugtune.units import GIB, MIB


def _render(draw, obj) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    draw(obj, console)
    return console.export_text()


def _phase(name: str, limited_by: str) -> PhasePlan:
    return PhasePlan(phase=name, trainable="top:2", optimizer="adamw", micro_batch=12,
                     accumulation=3, precision="bf16", checkpointing=(10, 11, 12),
                     channels_last=True, feature_cache=False, predicted_peak_bytes=3 * GIB,
                     tensor_peak_bytes=2 * GIB, budget_bytes=4 * GIB, utilisation=0.75,
                     breakdown={"activations": GIB}, limited_by=limited_by)


def test_the_plan_fits_80_columns() -> None:
    plan = Plan(model="timm:tf_efficientnet_lite0", device="cuda", gpu="rtx2070-8gb",
                resolution=224, num_classes=102, num_train=6552, batch_size=32,
                budget_bytes=4 * GIB, phases=(_phase("head", "batch_size"),
                                              _phase("finetune", "frozen depth")))
    text = _render(render.plan, plan)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text
    for word in ("setting", "head", "finetune", "limited by", "frozen depth", "10,11,12", "75%"):
        assert word in text, word


def test_the_memory_breakdown_and_an_evaluation_fit_80_columns() -> None:
    report = estimate_memory("timm:test_resnet", batch=4, res=32, device="cpu")
    text = _render(render.memory, report)
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    assert "predicted peak" in text and "activations saved for backward" in text
    names = ["a_rather_long_class_name_for_a_flower_" + str(i) for i in range(3)]
    evaluation = classification_report([0, 1, 2, 2], [0, 1, 1, 2], names)
    text = _render(render.evaluation, evaluation)
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    assert "precision" in text and "support" in text and MIB > 0
