"""The benchmarks' own logic: the GPU truth kit runs where no GPU is (``--dry-run`` simulates
its whole matrix), and the planner-accuracy rules that set measurements apart behave."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from snugtune.memory.guard import VirtualDeviceBudget
from snugtune.memory.simulator import StepConfig, run_steps

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_truth_dry_run_predicts_the_matrix(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_truth.py"), "--dry-run", "--models",
         "mobilenet_v2", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_truth_dry_run.json").read_text())
    assert report["dry_run"] and report["models"] == ["mobilenet_v2"]
    rows = {(r["precision"], r["trainable"], r["batch"], r["checkpointing"]): r
            for r in report["matrix"]}
    assert len(rows) == 14  # fp32 and bf16 x (head, top:2, all) x (16, 64), + checkpointed all
    context = report["gpu"]["context_bytes"]
    for (precision, trainable, batch, ckpt), r in rows.items():
        assert r["predicted_context_bytes"] >= context
        assert r["predicted_bytes"] > r["predicted_tensor_bytes"] > 0
        if batch == 16:
            assert rows[(precision, trainable, 64, ckpt)]["predicted_bytes"] > r["predicted_bytes"]
    full = rows[("fp32", "all", 64, False)]["predicted_bytes"]
    assert rows[("fp32", "all", 64, True)]["predicted_bytes"] < full  # checkpointing saves
    assert rows[("bf16", "all", 64, False)]["predicted_bytes"] < full  # so does autocast
    assert rows[("fp32", "head", 64, False)]["predicted_bytes"] < full


def _benchmark(name: str) -> ModuleType:
    """A benchmark script as a module (the scripts import their siblings, e.g. _machine)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_a_reading_above_a_larger_batch_less_its_tensors_growth_is_set_apart() -> None:
    pa = _benchmark("planner_accuracy")
    gib = 1024**3
    naive = {8: 4 * gib, 16: 7 * gib, 32: 14 * gib, 64: 27 * gib}  # the source's tensor count
    # dm_nfnet_f2's A100 readings (GiB): 16 and 32 hold ~8 GiB more than 8 and 64 allow
    readings = {8: 7.2 * gib, 16: 19.7 * gib, 32: 26.3 * gib, 64: 31.8 * gib}
    verdicts = {b: pa._inconsistent(readings, b, 40 * gib, naive) for b in readings}
    assert verdicts == {8: None, 16: pa.TOOK_FREE_MEMORY, 32: pa.TOOK_FREE_MEMORY, 64: None}
    # readings that grow at least as fast as the tensors are kept
    steady = {b: naive[b] + 3 * gib for b in naive}
    assert all(pa._inconsistent(steady, b, 40 * gib, naive) is None for b in steady)


def test_a_failure_that_ran_in_the_other_layout_is_not_a_known_failure() -> None:
    pa = _benchmark("planner_accuracy")
    nchw = {"layout": "nchw", "res": 256, "fits": 96, "fails": 128}
    nhwc = {"layout": "nhwc", "res": 256, "fits": 128, "fails": 192}
    assert pa._ran_in_other_layout(nchw, [nchw, nhwc])
    assert not pa._ran_in_other_layout(nhwc, [nchw, nhwc])
    row = {"fits_need_bytes": 10 * 2**30, "fails_need_bytes": 20 * 2**30,
           "fails_ran_in_other_layout": True}
    assert pa._verdicts(row, 0) == (True, None)
    assert pa._verdicts({**row, "fails_ran_in_other_layout": False}, 0) == (True, False)


def test_a_model_timm_has_redefined_since_the_benchmark_is_not_simulated() -> None:
    pa = _benchmark("planner_accuracy")
    model = torch.nn.Linear(1000, 1000)  # 1.001 M parameters
    pa._same_network(model, [{"param_count_m": 1.0}])
    with pytest.raises(ValueError, match="not the network that ran"):
        pa._same_network(model, [{"param_count_m": 1.5}])


def _gpu_truth(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """gpu_truth with the device stood in for by the CPU's virtual budget."""
    gt = _benchmark("gpu_truth")

    class Held(VirtualDeviceBudget):
        reserved_bytes = 0

    monkeypatch.setattr(gt, "_process_context", lambda dev: 0)
    monkeypatch.setattr(gt, "CudaBudget", lambda budget, dev, context_bytes: Held(budget))
    return gt


def test_gpu_truth_capped_run_reports_where_the_step_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(16, 5))

    cfg, cpu = StepConfig(batch=16, res=32, device="cpu", eval_step=False), torch.device("cpu")
    with VirtualDeviceBudget(None) as free:
        run_steps(model(), cfg, classes=5)
    gt = _gpu_truth(monkeypatch)
    assert gt._capped(model(), cfg, cpu, 2 * free.peak_bytes) == {
        "capped_budget_bytes": int(2 * free.peak_bytes / (1 - gt.SAFETY_MARGIN)),
        "capped_micro_batch": 16, "capped_error": None, "capped_reserved_bytes": 0}
    tight = gt._capped(model(), cfg, cpu, free.peak_bytes // 3)
    assert tight["capped_error"] is None and tight["capped_micro_batch"] < 16  # it halved
    none = gt._capped(model(), cfg, cpu, 1000)  # not even the weights
    assert none["capped_micro_batch"] is None and none["capped_error"].startswith("BudgetError")


def test_data_scale_finds_the_planted_copies_and_measures_each_process(tmp_path: Path) -> None:
    ds = _benchmark("data_scale")
    out = ds.measure_small(tmp_path, 600)
    assert out["files"] == 600 + 3 + 3 + 1 and out["planted_groups"] == 7
    assert out["doctor"]["planted_found"] == 7 and out["doctor"]["extra_groups"] == 0
    assert out["cold_scan"]["output"]["images"] == out["files"]
    for step in ("cold_scan", "warm_scan", "grouping", "doctor", "plan"):
        assert out[step]["exit_code"] == 0, out[step].get("stderr_tail")
        assert 50 * 2**20 < out[step]["peak_rss_bytes"] < 8 * 2**30  # its own, not this process's
    assert out["grouping"]["output"]["groups"] == 7
    assert not (tmp_path / "small_600").exists()  # the generated data is deleted


def test_gpu_truth_child_records_each_row_with_its_micro_batch_and_its_own_error(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kit's child path on a CPU stand-in: a row whose step halved is recorded at the
    micro-batch it ran at and left out of the error figures; a row that fails costs that row."""
    gt = _gpu_truth(monkeypatch)
    monkeypatch.setattr(gt, "RES", 32)
    monkeypatch.setattr(gt, "CLASSES", 5)
    monkeypatch.setattr(gt, "configs", lambda low: [
        {"precision": "fp32", "trainable": "all", "batch": b, "checkpointing": False}
        for b in (4, 8, 16)])
    monkeypatch.setattr(gt, "_peaks", lambda dev: (3_000_000, 2_000_000))
    build, steps = gt.build_classifier, gt.run_steps

    def building(name: str, classes: int, **kw: object) -> torch.nn.Module:
        if building.calls == 2:  # the third configuration's model cannot be built
            raise RuntimeError("boom")
        building.calls += 1
        return build(name, classes, **kw)

    building.calls = 0  # type: ignore[attr-defined]

    def stepping(model: torch.nn.Module, cfg: StepConfig, **kw: object) -> int:
        ran = steps(model, cfg, **kw)
        return ran // 2 if cfg.batch == 8 else ran  # as if this step had halved on the card

    monkeypatch.setattr(gt, "build_classifier", building)
    monkeypatch.setattr(gt, "run_steps", stepping)
    predicted = {f"all/{b}/False": 1 << 30 for b in (4, 8, 16)}  # a cap that does not bind
    rows = gt.child_matrix("timm:test_resnet", "fp32", predicted, device="cpu")
    assert [r["batch"] for r in rows] == [4, 8, 16]
    four, eight, sixteen = rows
    assert four["error"] is None and four["ran_micro_batch"] == 4
    assert four["measured_bytes"] == 3_000_000 and four["capped_micro_batch"] == 4
    assert eight["error"] is None and eight["ran_micro_batch"] == 4  # halved: not scored at 8
    assert sixteen["error"] == "RuntimeError: boom" and sixteen["ran_micro_batch"] is None
    errors = gt._errors([{**r, "predicted_bytes": 3_100_000} for r in rows])
    assert errors["n"] == 1  # only the row that ran at its batch, without an error


def test_gpu_truth_parent_never_touches_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every CUDA measurement runs in a child; the parent's own context would sit on the card
    beside each child's (counted as the child's context, shrinking its cap)."""
    gt = _benchmark("gpu_truth")

    def no_cuda(*a: object, **k: object) -> None:
        raise AssertionError("the parent initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_cuda)
    monkeypatch.setattr(torch.cuda, "init", no_cuda)
    monkeypatch.setattr(gt, "probe", no_cuda)
    card = {"name": "NVIDIA H100 80GB HBM3", "index": 0, "total_bytes": 85 * 2**30,
            "free_bytes": 84 * 2**30, "reserved_bytes": 2**21, "process_bytes": 500 * 2**20,
            "context_bytes": 498 * 2**20, "compute_capability": [9, 0], "bf16": True,
            "torch": torch.__version__, "cuda": "13.0", "module_loading": "LAZY", "nvml": True,
            "reading": "NVML (this process)", "seconds": 1.0}
    calls: list[str] = []

    def child(call: str, env: dict[str, str] | None = None, timeout: float = 300) -> object:
        calls.append(call.split("(")[0])
        if call.startswith("child_context"):
            return card
        if call.startswith("child_matrix"):
            return {"error": "a child that failed"}  # kept as a failure, the kit goes on
        return {"stood_in": True}

    monkeypatch.setattr(gt, "_in_child", child)
    monkeypatch.setattr(gt, "configs", lambda low: [
        {"precision": p, "trainable": "head", "batch": 16, "checkpointing": False}
        for p in ("fp32", low)])
    assert gt.main(["--models", "timm:test_resnet", "--out", str(tmp_path / "truth.json")]) == 0
    report = json.loads((tmp_path / "truth.json").read_text())
    assert report["gpu"]["device"]["name"] == card["name"]
    assert report["gpu"]["context_bytes"] == card["context_bytes"]
    assert calls == ["child_context", "child_context", "child_matrix", "child_matrix",
                     "budget_run", "oom_recovery", "child_step_speed"]
    assert len(report["failures"]) == 2 and report["budget_run"] == {"stood_in": True}


def test_step_speed_times_both_sides_of_the_same_model(tmp_path: Path) -> None:
    # on the CPU, tiny: the comparison gpu_truth runs on a card (the rates are not checked)
    result = _benchmark("step_speed").compare("mobilenet_v2", "bf16", "cpu", batch=2, res=32,
                                             classes=3, warmup=1, steps=1, repeats=2)
    assert [len(v) for v in result["images_per_s"].values()] == [2, 2]
    assert all(r > 0 for r in result["paired_ratios"]) and result["median_ratio"] > 0
