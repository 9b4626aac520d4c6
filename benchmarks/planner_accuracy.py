"""How accurate is the memory model? Predictions against measurements, as JSON.

Part A (``cpu``): for each configuration (model, batch, resolution, precision, trainable set,
checkpointing, optimizer, memory format), the predicted ``tensor_peak_bytes`` on the CPU
device (``snugtune.memory.estimate_memory(..., device="cpu")``: fake tensors, nothing
allocated) is compared with the peak measured while the same two training steps and eval step
run on real tensors. The measurement is independent of the tracker: the bytes of the model's
parameters and buffers, plus the highest running sum of the CPU allocator's allocation and
free events recorded by ``torch.profiler`` (``profile_memory=True``), oneDNN's buffers
included. Targets: median |error| <= 3%, worst <= 8%.

Every GPU data set is one environment (a card, a driver, a PyTorch and CUDA, a way of
measuring); the memory a process holds outside PyTorch's allocator (the CUDA context and the
kernels it loads) belongs to the environment, not to the model, so it is the one figure
fitted per environment, on about half of the models (``crc32(name)`` even); every error and
verdict reported as held out is on the other half or on a data set that was in no fit. The
step's own memory (tensors, workspaces, allocator segments) is never fitted.

Part B (``calibration``): every row of ``data/gpumemnet_timm_train_peaks.csv``
(timm models measured on an A100 40 GB with nvidia-smi: fp32, Adam, every layer trainable,
the model's default input size, 1000 classes) that can be simulated within ``--time-box``
seconds, models in a seeded random order. The context is fitted on the fit half (median of
measured less predicted, apart for networks of many convolutions, whose cuDNN kernels load
lazily); ``predicted_peak_bytes`` is compared on the held-out half. Targets: median |error|
<= 5%, 90th percentile <= 12%. Rows predicted above the card and measurements inconsistent
with the physics (a peak that does not grow with the batch, or below the source's own naive
count of forward and backward tensors: a failed run or another process on the GPU) are set
apart; so are readings that held memory their step did not need (a larger batch of the same
model completed with less growth than its tensors': :func:`_took_free_memory`), whose errors
are also reported with them put back; a held-out row that ran but whose least need
(``needed_bytes``) is above the card is a refusal.

Part C (``published_a100``): GPUMemNet's other data set, their own training scripts for six
torchvision/timm CNNs at batch 32-128 (``benchmarks/data/gpumemnet_imagenet_cnn_a100_measured.csv``,
same lab and machine), predicted with part B's fitted profile: no row of it is in any fit.
Targets: median |error| <= 7%, max <= 15%.

Part D (``published_rtx3090_brackets``): timm's train benchmark on an RTX 3090 (torch 1.12,
CUDA 11.3, AMP fp16, SGD; ``benchmarks/data/timm_rtx3090_train_brackets.csv``): for each model
the largest batch that ran and the next one, which failed. The least memory the benchmark's
step needs at both batches is simulated; the environment's context is the value that gets
most fit-half verdicts right. Attention layers run timm's explicit path (the attention matrix
stored), as torch 1.12, without ``scaled_dot_product_attention``, ran them. Held out: how many batches that ran are refused, and how many
that failed are accepted (target: none of either). A batch that failed in one memory layout
but ran in the other (same model, same image size: the same tensors) is not counted as a known
failure; those brackets are listed with their predictions. A model whose current timm definition
has another parameter count than the benchmark's ``param_count`` is not the network that ran and
is listed under ``failed_models`` instead.

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
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision

from _machine import emit  # benchmarks/_machine.py (scripts run from here)
from snugtune.memory import (
    BatchSweep,
    GpuProfile,
    StepConfig,
    estimate_memory,
    get_gpu_profile,
    run_steps,
)
from snugtune.memory.modules import configured
from snugtune.models import build_classifier
from snugtune.units import MIB

log = logging.getLogger("benchmarks.planner_accuracy")

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "benchmarks" / "data" / "gpumemnet_timm_train_peaks.csv"
PUBLISHED_CNN = ROOT / "benchmarks" / "data" / "gpumemnet_imagenet_cnn_a100_measured.csv"
BRACKETS = ROOT / "benchmarks" / "data" / "timm_rtx3090_train_brackets.csv"
TARGETS = {"cpu_median": 0.03, "cpu_worst": 0.08, "calibration_median": 0.05,
           "calibration_p90": 0.12, "published_median": 0.07, "published_max": 0.15}
# The card of part D as PyTorch reports it (benchmarks/data/README.md: 24268 MiB), sm86.
RTX3090 = GpuProfile("timm-bench-rtx3090", 24268 * MIB, 0, (8, 6), True,
                     "NVIDIA GeForce RTX 3090 in timm's train benchmark (torch 1.12, CUDA 11.3)",
                     "total: transformers docs/source/en/debugging.md; context: fitted (part D)")

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


def _calibration_rows(path: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Measured peaks and the source's naive forward+backward tensor counts, by model and batch."""
    rows: dict[str, dict[int, float]] = defaultdict(dict)
    naive: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            rows[r["model"]][int(r["batch"])] = float(r["measured_peak_mib"]) * MIB
            naive[r["model"]][int(r["batch"])] = float(r["naive_faketensor_mib"]) * MIB
    return rows, naive


def _failed(series: dict[int, float], batch: int, capacity: int,
            naive: dict[int, float] | None = None) -> str | None:
    """Why a reading is not a completed run's peak on its own evidence, or None."""
    meas = series[batch]
    if meas >= 0.97 * capacity:
        return "at the card's capacity (out of memory)"
    if naive and meas < naive.get(batch, 0.0):
        return "below the source's own forward+backward tensor count (a failed run)"
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


def _inconsistent(series: dict[int, float], batch: int, capacity: int,
                  naive: dict[int, float] | None = None) -> str | None:
    """Why a measured peak cannot be a complete run's peak, or None.

    A training step's memory grows with the batch: a reading at the card's capacity is an
    out-of-memory run (or one that filled the card: ambiguous), one below the source's own
    naive count of the live tensors of forward and backward a run that stopped early, a
    reading repeated at another batch a run that stopped before training; of the rest, those
    outside the largest subset that grows with the batch (2% noise allowed) are spikes or
    failed runs.
    """
    if reason := _failed(series, batch, capacity, naive):
        return reason
    rest = {b: m for b, m in series.items() if _failed(series, b, capacity, naive) is None}
    grows = _monotone(rest)
    if batch not in grows:
        return "not growing with the batch (spike or failed run)"
    if naive and _took_free_memory({b: rest[b] for b in grows}, batch, naive):
        return TOOK_FREE_MEMORY
    return None


# A completed run that holds more than its step needs: see _took_free_memory.
TOOK_FREE_MEMORY = "above a larger batch's reading less its tensors' growth (free memory taken)"


def _took_free_memory(series: dict[int, float], batch: int, naive: dict[int, float]) -> bool:
    """Whether the reading at ``batch`` holds memory its step did not need.

    From ``batch`` to a larger batch ``b`` the step's tensors grow by at least what the source's
    own count of forward and backward tensors grows (``naive[b] - naive[batch]``), so a
    completed run at ``b`` whose reading grew by less shows that the reading at ``batch`` held
    memory the step could do without. The mechanism is PyTorch's cuDNN path
    (``aten/src/ATen/native/cudnn/Conv_v8.cpp``): it runs the heuristics' plans in order and
    moves to the next one when a plan's workspace allocation raises ``OutOfMemoryError``, so
    on a card with free memory a convolution may take a workspace of gigabytes that the
    caching allocator then keeps (``nvidia-smi`` sees it), and under a cap it takes a smaller
    one. The rule uses the measurements and the source's count only, never a prediction.
    """
    return any(b > batch and series[b] - series[batch] < naive[b] - naive[batch]
               for b in series if b in naive and batch in naive)


def held_out(model: str) -> bool:
    """Whether ``model``'s rows are kept out of every fit (about half of the models, fixed)."""
    return zlib.crc32(model.encode()) % 2 == 1


# Profiles that separate the step's own memory from the environment's: no context, and a
# 1-byte "conv kernels" marker that tells whether the device model counts a network as one of
# many convolutions (the context is then fitted per environment, never per row).
def _probe_profile(base: GpuProfile) -> GpuProfile:
    return replace(base, name=f"{base.name} (context apart)", context_bytes=0,
                   conv_kernels_bytes=1, available_bytes=None)


def _predict_model(name: str, series: dict[int, float], gpu: GpuProfile,
                   naive: dict[int, float]) -> list[dict[str, Any]]:
    """The step's own device memory (allocator reserve) at every measured batch of ``name``."""
    with torch.device("meta"):
        model = timm.create_model(name)
    res = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    sweep = BatchSweep(model, StepConfig(batch=1, res=res, optimizer="adam", device="cuda"),
                       classes=1000, name=name)
    probe_gpu = _probe_profile(gpu)
    out = []
    for batch, meas in sorted(series.items()):
        est = sweep.estimate(batch, probe_gpu)
        near = est.reserved_bytes > 0.7 * (gpu.memory_bytes or 0)  # capped, it may need less
        out.append({"model": name, "batch": batch, "res": res, "measured_bytes": int(meas),
                    "step_bytes": est.reserved_bytes, "tensor_peak_bytes": est.tensor_peak_bytes,
                    "needed_step_bytes": sweep.needed(batch, probe_gpu) if near else None,
                    "convnet": est.context_bytes == 1, "held_out": held_out(name),
                    "inconsistent": _inconsistent(series, batch, gpu.memory_bytes or 0, naive)})
    return out


def fit_context(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The environment's context from the fit rows: the median of measured less the step's own
    memory, for networks of few convolutions (``context_bytes``) and the extra for networks of
    many (``conv_kernels_bytes``: cuDNN kernels loaded lazily)."""
    def median_residual(convnet: bool) -> float | None:
        res = [r["measured_bytes"] - r["step_bytes"] for r in rows
               if r["convnet"] == convnet and not r["held_out"] and not r["inconsistent"]]
        return statistics.median(res) if res else None

    plain, conv = median_residual(False), median_residual(True)
    base = plain if plain is not None else conv or 0.0
    return {"context_bytes": int(base), "conv_kernels_bytes": int(max(0.0, (conv or base) - base))}


def _errors(rows: list[dict[str, Any]], gpu: GpuProfile) -> None:
    for r in rows:
        context = gpu.context_bytes + (gpu.conv_kernels_bytes if r["convnet"] else 0)
        r["predicted_peak_bytes"] = r["step_bytes"] + context
        r["error"] = (r["predicted_peak_bytes"] - r["measured_bytes"]) / r["measured_bytes"]
        need = (r["needed_step_bytes"] or r["step_bytes"]) + context
        ran = r["inconsistent"] in (None, TOOK_FREE_MEMORY)
        r["refused"] = ran and need > (gpu.memory_bytes or 0)
        r["at_capacity_predicted_to_fit"] = str(r["inconsistent"]).startswith(
            "at the card's capacity") and need <= (gpu.memory_bytes or 0)
        if r["predicted_peak_bytes"] > (gpu.memory_bytes or 0):
            r["excluded"] = "predicted out of memory"
        elif r["inconsistent"]:
            r["excluded"] = f"measurement {r['inconsistent']}"


def _stats(errors: list[float]) -> dict[str, float | int]:
    if not errors:
        return {"n": 0}
    abs_err = sorted(abs(e) for e in errors)
    p90 = abs_err[min(len(abs_err) - 1, int(round(0.9 * (len(abs_err) - 1))))]
    return {"n": len(errors), "median_abs_error": statistics.median(abs_err),
            "p90_abs_error": p90, "max_abs_error": abs_err[-1],
            "mean_error": statistics.mean(errors), "median_error": statistics.median(errors)}


def _time_boxed(models: list[str], predict: Callable[[str], list[dict[str, Any]]],
                time_box: float, seed: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows of ``predict(model)`` for models in a seeded random order until ``time_box``
    seconds are spent; models that cannot be built or traced, with why."""
    order = sorted(models)
    random.Random(seed).shuffle(order)
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    started = time.perf_counter()
    for name in order:
        if time.perf_counter() - started > time_box:
            break
        try:
            rows.extend(predict(name))
        except Exception as e:  # noqa: BLE001 - renamed or untraceable models are reported
            failed[name] = f"{type(e).__name__}: {str(e)[:160]}"
    return rows, failed


def part_b(path: Path, time_box: float, seed: int) -> dict[str, Any]:
    """Predicted vs measured A100 peaks for as many calibration models as the time box allows:
    the environment's context fitted on half of the models, errors on the other half."""
    card = get_gpu_profile("a100-40gb")
    series, naive = _calibration_rows(path)
    started = time.perf_counter()
    rows, failed = _time_boxed(
        list(series), lambda name: _predict_model(name, series[name], card, naive[name]),
        time_box, seed)
    fitted = fit_context(rows)
    gpu = replace(card, name="gpumemnet-a100-40gb", **fitted,
                  source="context fitted on the fit half of this data set")
    _errors(rows, gpu)
    kept = [r for r in rows if "excluded" not in r]
    main_stats = _stats([r["error"] for r in kept if r["held_out"]])
    log.info("B context %.0f MiB (+%.0f MiB for convolution networks); held-out median %.2f%%",
             fitted["context_bytes"] / MIB, fitted["conv_kernels_bytes"] / MIB,
             100 * float(main_stats.get("median_abs_error", 0)))
    return {
        "csv": str(path), "gpu": gpu.to_dict(), "time_box_s": time_box, "seed": seed,
        "split": "held out: models with crc32(name) odd; the context is fitted on the others",
        "models_tried": len({r["model"] for r in rows}) + len(failed),
        "models_simulated": len({r["model"] for r in rows}), "models_total": len(series),
        "rows": rows, "failed_models": failed,
        "excluded": {k: sum(1 for r in rows if r.get("excluded", "").startswith(k))
                     for k in ("predicted out of memory", "measurement")},
        "excluded_as_free_memory_taken": sum(1 for r in rows
                                             if r["inconsistent"] == TOOK_FREE_MEMORY),
        **main_stats,
        # the same held-out rows with the readings that took free memory put back
        "held_out_with_free_memory_readings": _stats(
            [r["error"] for r in rows if r["held_out"] and ("excluded" not in r or (
                r["inconsistent"] == TOOK_FREE_MEMORY
                and r["excluded"] != "predicted out of memory"))]),
        "held_out_verdicts": {
            "refusals_of_a_run": sum(1 for r in rows if r["held_out"] and r["refused"]),
            # a reading at the card's capacity is an out-of-memory run or a run whose
            # allocator filled the card: not a known failure
            "readings_at_capacity_predicted_to_fit": sum(
                1 for r in rows if r["held_out"] and r["at_capacity_predicted_to_fit"]),
            "rows": sum(1 for r in rows if r["held_out"])},
        "fit_rows": _stats([r["error"] for r in kept if not r["held_out"]]),
        "all_rows": _stats([r["error"] for r in rows
                            if r.get("excluded") != "predicted out of memory"]),
        "targets": {"median": TARGETS["calibration_median"], "p90": TARGETS["calibration_p90"]},
        "meets_targets": bool(kept) and main_stats["median_abs_error"]
        <= TARGETS["calibration_median"] and main_stats["p90_abs_error"]
        <= TARGETS["calibration_p90"],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------- part C: never-seen A100 peaks


def _torchvision_or_timm(name: str, library: str) -> torch.nn.Module:
    with torch.device("meta"):
        if library == "timm":
            return timm.create_model(name)
        if name == "inception_v3_no_aux":
            return torchvision.models.inception_v3(weights=None, aux_logits=False,
                                                   init_weights=False)
        return torchvision.models.get_model(name, weights=None)


def part_c(path: Path, gpu: GpuProfile) -> dict[str, Any]:
    """GPUMemNet's own-script A100 peaks (torchvision and timm CNNs, fp32, Adam, batch
    32-128; its other data set, same machine), none of them in a fit: ``gpu`` is the profile
    whose context part B fitted on the calibration set's fit half."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    for name in dict.fromkeys(r["model"] for r in table):
        mine = [r for r in table if r["model"] == name]
        model = _torchvision_or_timm(name, mine[0]["model_library"])
        res = int(mine[0]["img_size"])
        sweep = BatchSweep(model, StepConfig(batch=1, res=res, optimizer="adam", device="cuda"),
                           classes=1000, name=name)
        for r in mine:
            batch, meas = int(r["batch"]), int(r["measured_gpu_memory_mib"]) * MIB
            est = sweep.estimate(batch, gpu, budget=gpu.memory_bytes)
            rows.append({"model": name, "batch": batch, "res": res, "measured_bytes": meas,
                         "predicted_peak_bytes": est.predicted_peak_bytes,
                         "tensor_peak_bytes": est.tensor_peak_bytes,
                         "error": (est.predicted_peak_bytes - meas) / meas})
        log.info("C %-22s %s", name, " ".join(f"{100 * r['error']:+.1f}%" for r in rows
                                              if r["model"] == name))
    stats = _stats([r["error"] for r in rows])
    return {"csv": str(path), "gpu": gpu.to_dict(),
            "fitted": "nothing on these rows (the context: part B's fit half)", "rows": rows, **stats,
            "targets": {"median": TARGETS["published_median"], "max": TARGETS["published_max"]},
            "meets_targets": stats["median_abs_error"] <= TARGETS["published_median"]
            and stats["max_abs_error"] <= TARGETS["published_max"],
            "elapsed_s": round(time.perf_counter() - started, 1)}


# ------------------------------------------------- part D: fits / fails on an RTX 3090 (AMP)


def _bracket_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["bracket_basis"] == "code_at_commit":  # torch 1.12, one process per model
                out[r["model"]].append({
                    "layout": r["layout"], "res": int(r["img_size"]),
                    "fits": int(r["fits_batch"]),
                    "fails": int(r["fails_batch"]) if r["fails_batch"] else None,
                    "param_count_m": float(r["param_count_m"])})
    return out


def _same_network(model: torch.nn.Module, brackets: list[dict[str, Any]]) -> None:
    """Raise unless ``model`` has the parameter count of the network that ran (the source's
    ``param_count``, millions to 2 decimals): timm has redefined a few names since 0.6.6."""
    now = sum(p.numel() for p in model.parameters()) / 1e6
    then = brackets[0]["param_count_m"]
    if abs(now - then) > max(0.02, 0.01 * then):
        raise ValueError(f"not the network that ran: {then:.2f} M parameters in the benchmark, "
                         f"{now:.2f} M with this timm")


def _predict_brackets(name: str, brackets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The least memory the benchmark's step needs at each bracket's batches, context apart.

    The step is timm's train benchmark: autocast fp16, SGD with Nesterov momentum, the model's
    own head. Its ``zero_grad()`` keeps the gradients (``set_to_none=False`` in torch 1.12)
    where snugtune's step frees them: their fp32 bytes are added (every parameter trains).
    """
    with torch.device("meta"):
        model = timm.create_model(name)
    _same_network(model, brackets)
    grads = 4 * sum(p.numel() for p in model.parameters())
    gpu = _probe_profile(RTX3090)
    out = []
    for b in brackets:
        sweep = BatchSweep(model, StepConfig(batch=1, res=b["res"], precision="fp16",
                                             optimizer="sgd", channels_last=b["layout"] == "nhwc",
                                             device="cuda"),
                           classes=int(getattr(model, "num_classes", 1000)) or 1000, name=name)
        row = {"model": name, **b, "held_out": held_out(name), "gradients_bytes": grads,
               "convnet": sweep.estimate(2, gpu).context_bytes == 1,
               "fits_need_bytes": sweep.needed(b["fits"], gpu) + grads}
        if b["fails"] is not None:
            row["fails_need_bytes"] = sweep.needed(b["fails"], gpu) + grads
            row["fails_ran_in_other_layout"] = _ran_in_other_layout(b, brackets)
        out.append(row)
    return out


def _ran_in_other_layout(bracket: dict[str, Any], brackets: list[dict[str, Any]]) -> bool:
    """Whether the batch that failed in ``bracket`` ran for the same model and image size in
    the other memory layout: the same tensors, so not a known failure for a memory model that
    does not see the layout's kernels (cuDNN's algorithm choice, the retry's leftovers)."""
    return any(o["layout"] != bracket["layout"] and o["res"] == bracket["res"]
               and o["fits"] >= bracket["fails"] for o in brackets)


def _verdicts(row: dict[str, Any], context: int) -> tuple[bool, bool | None]:
    """(the batch that ran is predicted to fit, the batch that failed is predicted to fail);
    None for a failure that is not known (none, or it ran in the other layout)."""
    cap = RTX3090.memory_bytes or 0
    fits = row["fits_need_bytes"] + context <= cap
    known = "fails_need_bytes" in row and not row["fails_ran_in_other_layout"]
    fails = row["fails_need_bytes"] + context > cap if known else None
    return fits, fails


def _score(rows: list[dict[str, Any]], context: int) -> int:
    return sum(int(a) + int(b or False) for a, b in (_verdicts(r, context) for r in rows))


def fit_bracket_context(rows: list[dict[str, Any]]) -> int:
    """The context (16 MiB steps up to 4 GiB) that gets the most fit-half verdicts right; the
    middle of the best run of such values."""
    fit = [r for r in rows if not r["held_out"]]
    grid = range(0, 4 * 1024 * MIB + 1, 16 * MIB)
    scores = [_score(fit, c) for c in grid]
    best = max(scores)
    run = [c for c, s in zip(grid, scores, strict=True) if s == best]
    return run[len(run) // 2]


def part_d(path: Path, time_box: float, seed: int) -> dict[str, Any]:
    """timm's RTX 3090 AMP brackets (the batch that ran, the next that failed): the context of
    that environment (torch 1.12, CUDA 11.3: kernels loaded eagerly) fitted on half of the
    models, verdicts on the other half."""
    brackets = _bracket_rows(path)
    # torch 1.12 had no F.scaled_dot_product_attention: timm 0.6 attention layers stored the
    # attention matrix; timm's explicit path does the same today
    timm.layers.set_fused_attn(False)
    started = time.perf_counter()
    rows, failed = _time_boxed(list(brackets), lambda name: _predict_brackets(name, brackets[name]),
                               time_box, seed)
    timm.layers.set_fused_attn(True)
    context = fit_bracket_context(rows)
    for r in rows:
        r["fits_predicted"], r["fails_predicted"] = _verdicts(r, context)
    held = [r for r in rows if r["held_out"]]
    refused = [r for r in held if not r["fits_predicted"]]
    accepted = [r for r in held if r["fails_predicted"] is False]
    log.info("D context %.0f MiB; held out: %d brackets, %d refusals of a batch that ran, %d "
             "acceptances of one that failed", context / MIB, len(held), len(refused),
             len(accepted))

    def margins(rs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        cap = RTX3090.memory_bytes or 0
        out = []
        for r in rs:
            batch = r[key.split("_")[0]]
            # the same model in the other memory layout: did it run this batch?
            other = [o for o in brackets[r["model"]] if o["layout"] != r["layout"]]
            out.append({"model": r["model"], "layout": r["layout"], "res": r["res"],
                        "batch": batch, "over_by": (r[key] + context - cap) / cap,
                        "other_layout_ran_it": any(o["fits"] >= batch for o in other)})
        return out

    return {
        "csv": str(path), "gpu": RTX3090.to_dict(), "time_box_s": time_box, "seed": seed,
        "rows_used": "pt112 files (code at the commit, one process per model)",
        "split": "held out: models with crc32(name) odd; the context is fitted on the others",
        "fitted_context_bytes": context,
        "models_simulated": len({r["model"] for r in rows}), "models_total": len(brackets),
        "failed_models": failed, "rows": rows,
        "fit_half": {"brackets": len(rows) - len(held),
                     "right": _score([r for r in rows if not r["held_out"]], context)},
        "held_out": {
            "brackets": len(held),
            "with_a_known_failing_batch": sum(1 for r in held if r["fails_predicted"] is not None),
            "refusals_of_a_batch_that_ran": len(refused),
            "acceptances_of_a_batch_that_failed": len(accepted),
            "refused": margins(refused, "fits_need_bytes"),
            "accepted": margins(accepted, "fails_need_bytes"),
            # failures set apart: the same batch ran in the other layout
            "failures_the_other_layout_ran": margins(
                [r for r in held if r.get("fails_ran_in_other_layout")], "fails_need_bytes"),
        },
        "fit_half_failures_the_other_layout_ran": margins(
            [r for r in rows if not r["held_out"] and r.get("fails_ran_in_other_layout")],
            "fails_need_bytes"),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for, print the JSON, write it to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--part", choices=["a", "b", "d", "all"], default="all",
                    help="b: the A100 environment (parts B and C), d: the RTX 3090 brackets")
    ap.add_argument("--time-box", type=float, default=600.0,
                    help="seconds for parts B and D each (models are simulated until it is spent)")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION)
    ap.add_argument("--seed", type=int, default=0, help="order of the calibration models")
    ap.add_argument("--published", type=Path, default=PUBLISHED_CNN)
    ap.add_argument("--brackets", type=Path, default=BRACKETS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "planner_accuracy", "machine": machine(),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if a.part in ("a", "all"):
        result["cpu"] = part_a()
    if a.part in ("b", "all"):
        result["calibration"] = part_b(a.calibration, a.time_box, a.seed)
        result["published_a100"] = part_c(a.published,
                                          GpuProfile.from_dict(result["calibration"]["gpu"]))
    if a.part in ("d", "all"):
        result["published_rtx3090_brackets"] = part_d(a.brackets, a.time_box, a.seed)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    emit(result, a.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
