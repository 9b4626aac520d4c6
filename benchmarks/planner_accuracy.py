"""How accurate is the memory model? Predictions against measurements, as JSON.

Part A (``cpu``): for each configuration (model, batch, resolution, precision, trainable set,
checkpointing, optimizer, memory format), the predicted ``tensor_peak_bytes`` on the CPU
device (``snugtune.memory.estimate_memory(..., device="cpu")``: fake tensors, nothing
allocated) is compared with the peak measured while the same two training steps and eval step
run on real tensors. The measurement is independent of the tracker: the bytes of the model's
parameters and buffers, plus the highest running sum of the CPU allocator's allocation and
free events recorded by ``torch.profiler`` (``profile_memory=True``), oneDNN's buffers
included. Targets: median |error| <= 3%, worst <= 8%.

Part B (``calibration``): every row of ``../shared/calibration/gpumemnet_timm_train_peaks.csv``
(timm models measured on an A100 40 GB with nvidia-smi: fp32, Adam, every layer trainable,
the model's default input size, 1000 classes) that can be simulated within ``--time-box``
seconds, models in a seeded random order, is predicted with ``--device cuda --gpu a100-40gb``
and compared on ``predicted_peak_bytes``. Targets: median |error| <= 5%, 90th percentile
<= 12%. Rows are reported in three groups: predicted to run out of memory (prediction above
the card), measurements inconsistent with the physics (a peak that does not grow with the
batch: the run failed or another process shared the GPU), and the rest, on which the
statistics are computed (statistics over all rows are given too).

Usage: ``python benchmarks/planner_accuracy.py --out benchmarks/results/planner_accuracy.json``
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import timm
import torch

from _machine import emit  # benchmarks/_machine.py (scripts run from here)
from snugtune.memory import BatchSweep, StepConfig, estimate_memory, get_gpu_profile, run_steps
from snugtune.memory.modules import configured
from snugtune.models import build_classifier
from snugtune.units import MIB

log = logging.getLogger("benchmarks.planner_accuracy")

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT.parent / "shared" / "calibration" / "gpumemnet_timm_train_peaks.csv"
TARGETS = {"cpu_median": 0.03, "cpu_worst": 0.08, "calibration_median": 0.05,
           "calibration_p90": 0.12}

# name, batch, res, and the options that differ from fp32 / adamw / all / none / NCHW
CPU_CONFIGS: list[tuple[str, int, int, dict[str, Any]]] = [
    ("vgg16", 4, 64, {}),
    ("vgg16", 4, 64, {"precision": "bf16"}),
    ("vgg16", 4, 64, {"trainable": "head"}),
    ("vgg16", 4, 64, {"trainable": "top:3", "optimizer": "sgd"}),
    ("vgg16", 4, 64, {"checkpointing": True}),
    ("vgg16", 8, 32, {"channels_last": True}),
    ("vgg16", 8, 96, {"trainable": "top:4", "precision": "bf16"}),
    ("efficientnet_b0", 8, 64, {}),
    ("efficientnet_b0", 8, 64, {"precision": "bf16"}),
    ("efficientnet_b0", 8, 64, {"trainable": "head"}),
    ("efficientnet_b0", 8, 64, {"trainable": "top:2", "optimizer": "sgd"}),
    ("efficientnet_b0", 8, 64, {"checkpointing": True}),
    ("mobilenet_v2", 8, 64, {}),
    ("mobilenet_v2", 8, 64, {"precision": "bf16", "checkpointing": True}),
    ("mobilenet_v2", 8, 64, {"trainable": "top:3"}),
    ("mobilenet_v2", 16, 64, {"optimizer": "sgd", "channels_last": True}),
    ("mobilenetv2_100", 8, 64, {"trainable": "head", "precision": "bf16"}),
    ("resnet50", 4, 64, {}),
    ("resnet50", 4, 64, {"precision": "bf16"}),
    ("resnet50", 4, 64, {"trainable": "head"}),
    ("resnet50", 4, 64, {"trainable": "top:2", "checkpointing": True}),
    ("resnet50", 4, 64, {"optimizer": "sgd", "channels_last": True}),
    ("resnet50", 8, 96, {"optimizer": "sgd"}),
    ("convnext_atto", 8, 64, {}),
    ("convnext_atto", 8, 64, {"precision": "bf16", "trainable": "top:2"}),
    ("regnetx_002", 8, 64, {"optimizer": "sgd"}),
    ("regnety_002", 8, 64, {"checkpointing": True}),
    ("tf_efficientnet_lite0", 8, 64, {"trainable": "head"}),
    ("vit_tiny_patch16_224", 2, 224, {}),
    ("vit_tiny_patch16_224", 2, 224, {"precision": "bf16", "trainable": "top:4"}),
]


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "load_average": list(os.getloadavg()),
        "onednn_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def _storage_bytes(model: torch.nn.Module) -> int:
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def measure_cpu(model: torch.nn.Module, cfg: StepConfig, classes: int) -> int:
    """Peak CPU bytes of the step on real tensors, from the profiler's allocator events."""
    from torch.profiler import ProfilerActivity, profile

    base = _storage_bytes(model)
    with (
        configured(model, cfg.trainable, cfg.checkpointing),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        run_steps(model, cfg, classes=classes)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return base + peak


def part_a(classes: int = 10) -> dict[str, Any]:
    """Predicted vs measured tensor peak on the CPU for every ``CPU_CONFIGS`` entry."""
    rows = []
    for name, batch, res, opts in CPU_CONFIGS:
        torch.manual_seed(0)
        model = build_classifier(name, classes, weights="none")
        t0 = time.perf_counter()
        report = estimate_memory(model, batch=batch, res=res, classes=classes, device="cpu",
                                 **opts)
        predict_s = time.perf_counter() - t0
        cfg = StepConfig(batch=batch, res=res, precision=report.precision,
                         optimizer=report.optimizer, trainable=report.trainable,
                         checkpointing=report.checkpointing, channels_last=report.channels_last,
                         device="cpu")
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        measured = measure_cpu(model, cfg, classes)
        row = {"model": name, "batch": batch, "res": res, **{k: v for k, v in opts.items()},
               "predicted_tensor_peak_bytes": report.tensor_peak_bytes,
               "measured_peak_bytes": measured,
               "error": (report.tensor_peak_bytes - measured) / measured,
               "peak_phase": report.peak_phase, "predict_s": round(predict_s, 2),
               "measure_s": round(time.perf_counter() - t0, 2)}
        rows.append(row)
        log.info("A %-22s b%-3d %3dpx %-45s pred %8.1f MiB meas %8.1f MiB err %+.2f%%", name,
                 batch, res, json.dumps(opts), row["predicted_tensor_peak_bytes"] / MIB,
                 measured / MIB, 100 * row["error"])
    errs = [abs(r["error"]) for r in rows]
    return {"configs": rows, "n": len(rows), "median_abs_error": statistics.median(errs),
            "worst_abs_error": max(errs), "mean_error": statistics.mean(r["error"] for r in rows),
            "targets": {"median": TARGETS["cpu_median"], "worst": TARGETS["cpu_worst"]},
            "meets_targets": statistics.median(errs) <= TARGETS["cpu_median"]
            and max(errs) <= TARGETS["cpu_worst"]}


def _calibration_rows(path: Path) -> dict[str, dict[int, float]]:
    rows: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            rows[r["model"]][int(r["batch"])] = float(r["measured_peak_mib"]) * MIB
    return rows


def _failed(series: dict[int, float], batch: int, capacity: int) -> str | None:
    """Why a reading is not a completed run's peak on its own evidence, or None."""
    meas = series[batch]
    if meas >= 0.97 * capacity:
        return "at the card's capacity (out of memory)"
    if max(series.values()) < 1.05 * min(series.values()):
        return "does not grow with the batch (failed runs)"
    if any(abs(series[b] - meas) <= 0.002 * meas for b in series if b != batch):
        return "same reading as at another batch (failed run)"
    return None


def _monotone(readings: dict[int, float]) -> set[int]:
    """Batches of the largest subset of readings that grows with the batch (2% noise).

    Between equally large subsets the one with the lower readings wins: a reading too high
    for its batch (another process on the GPU) is more common than one too low that still
    grows with the batch.
    """
    batches = sorted(readings)
    best: tuple[int, float, set[int]] = (0, 0.0, set())
    for mask in range(1 << len(batches)):
        chosen = [b for i, b in enumerate(batches) if mask >> i & 1]
        values = [readings[b] for b in chosen]
        if not all(b >= a / 1.02 for a, b in zip(values, values[1:], strict=False)):
            continue
        if (len(chosen), -sum(values)) > (best[0], -best[1]):
            best = (len(chosen), sum(values), set(chosen))
    return best[2]


def _inconsistent(series: dict[int, float], batch: int, capacity: int) -> str | None:
    """Why a measured peak cannot be a complete run's peak, or None.

    A training step's memory grows with the batch: a reading at the card's capacity is an
    out-of-memory run, a reading repeated at another batch a run that stopped before training;
    of the rest, those outside the largest subset that grows with the batch (2% noise allowed)
    are spikes or failed runs.
    """
    if reason := _failed(series, batch, capacity):
        return reason
    rest = {b: m for b, m in series.items() if _failed(series, b, capacity) is None}
    if batch not in _monotone(rest):
        return "not growing with the batch (spike or failed run)"
    return None


def _predict_model(name: str, series: dict[int, float], gpu: Any) -> list[dict[str, Any]]:
    with torch.device("meta"):
        model = timm.create_model(name)
    res = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    sweep = BatchSweep(model, StepConfig(batch=1, res=res, optimizer="adam", device="cuda"),
                       classes=1000, name=name)
    out = []
    for batch, meas in sorted(series.items()):
        est = sweep.estimate(batch, gpu)
        pred = est.predicted_peak_bytes
        row = {"model": name, "batch": batch, "res": res, "measured_bytes": int(meas),
               "predicted_peak_bytes": pred, "tensor_peak_bytes": est.tensor_peak_bytes,
               "reserved_bytes": est.reserved_bytes, "error": (pred - meas) / meas}
        if pred > (gpu.memory_bytes or 0):
            row["excluded"] = "predicted out of memory"
        elif reason := _inconsistent(series, batch, gpu.memory_bytes or 0):
            row["excluded"] = f"measurement {reason}"
        out.append(row)
    return out


def _stats(errors: list[float]) -> dict[str, float | int]:
    if not errors:
        return {"n": 0}
    abs_err = sorted(abs(e) for e in errors)
    p90 = abs_err[min(len(abs_err) - 1, int(round(0.9 * (len(abs_err) - 1))))]
    return {"n": len(errors), "median_abs_error": statistics.median(abs_err),
            "p90_abs_error": p90, "mean_error": statistics.mean(errors),
            "median_error": statistics.median(errors)}


def part_b(path: Path, time_box: float, seed: int) -> dict[str, Any]:
    """Predicted vs measured A100 peaks for as many calibration models as the time box allows."""
    gpu = get_gpu_profile("a100-40gb")
    series = _calibration_rows(path)
    models = sorted(series)
    random.Random(seed).shuffle(models)
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    started = time.perf_counter()
    for name in models:
        if time.perf_counter() - started > time_box:
            break
        try:
            new = _predict_model(name, series[name], gpu)
        except Exception as e:  # noqa: BLE001 - a model timm cannot build or trace is reported
            failed[name] = f"{type(e).__name__}: {str(e)[:160]}"
            continue
        rows.extend(new)
        kept = [r for r in new if "excluded" not in r]
        log.info("B %-40s %d rows, errors %s", name, len(new),
                 " ".join(f"{100 * r['error']:+.1f}%" for r in kept))
    valid = [r["error"] for r in rows if "excluded" not in r]
    main_stats = _stats(valid)
    return {
        "csv": str(path), "gpu": gpu.name, "time_box_s": time_box, "seed": seed,
        "models_tried": len({r["model"] for r in rows}) + len(failed),
        "models_simulated": len({r["model"] for r in rows}), "models_total": len(series),
        "rows": rows, "failed_models": failed,
        "excluded": {k: sum(1 for r in rows if r.get("excluded", "").startswith(k))
                     for k in ("predicted out of memory", "measurement")},
        **main_stats,
        "all_rows": _stats([r["error"] for r in rows
                            if r.get("excluded") != "predicted out of memory"]),
        "targets": {"median": TARGETS["calibration_median"], "p90": TARGETS["calibration_p90"]},
        "meets_targets": bool(valid) and main_stats["median_abs_error"]
        <= TARGETS["calibration_median"] and main_stats["p90_abs_error"]
        <= TARGETS["calibration_p90"],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for, print the JSON, write it to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--part", choices=["a", "b", "all"], default="all")
    ap.add_argument("--time-box", type=float, default=600.0,
                    help="seconds for part B (models are simulated until it is spent)")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION)
    ap.add_argument("--seed", type=int, default=0, help="order of the calibration models")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "planner_accuracy", "machine": machine(),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if a.part in ("a", "all"):
        result["cpu"] = part_a()
    if a.part in ("b", "all"):
        result["calibration"] = part_b(a.calibration, a.time_box, a.seed)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    emit(result, a.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
