"""GPU truth: the memory model against a real CUDA device, in one command of a few minutes.

    PYTHONPATH=src python3 benchmarks/gpu_truth.py                 # on a machine with CUDA
    python benchmarks/gpu_truth.py --dry-run --models mobilenet_v2  # anywhere: predictions only

Needs only torch, torchvision, timm and what snugtune's library imports (no install step, no
pretrained weights: every model is randomly initialised). Measured on the device:

1. ``context``: fresh processes with ``CUDA_MODULE_LOADING=LAZY`` and ``=EAGER`` each ask the
   card (``snugtune.memory.probe``: CUDA, cuBLAS and cuDNN initialised): what a process holds
   outside PyTorch's caching allocator, the card's total and free memory.
2. ``matrix``: vgg16, efficientnet_b0, mobilenet_v2 and resnet50 (torchvision) at 224 px, for
   fp32 and autocast (bf16 on sm80+, else fp16), trainable ``head``, ``top:2`` and ``all`` at
   micro-batches 16 and 64, and ``all`` with every block checkpointed at 64: the trainer's own
   step (``snugtune.memory.run_steps``: two optimizer steps and an evaluation, fused AdamW)
   runs on the card, one process per (model, precision); between configurations everything is
   freed and the allocator's cache emptied. Measured: ``max_memory_reserved`` plus the context
   the process holds after the run (kernels load lazily, so it is read at the end), against
   ``estimate_memory`` with the card's measured profile. Then the same step once more under
   the budget a plan would give it (``capped``: the prediction over ``1 - SAFETY_MARGIN``, the
   allocator capped at it less the context, as ``CudaBudget`` does in training): it must end at
   its micro-batch, without halving. An uncapped step on a big card may hold more than it needs
   (cuDNN takes large workspaces while memory is free); the capped run shows what it needs.
3. ``budget_run``: ``snugtune.train`` of torchvision VGG16 at 224 px on generated images under
   ``--gpu-memory 4GiB``: the plan, the phases' measured whole-process peaks, and NVML's view of
   this process sampled every 20 ms when ``nvidia-ml-py`` is installed (``snugtune[gpu]``).
   Passes when every peak < 4 GiB.
4. ``oom_recovery``: ResNet-50 fine-tuned with a forced micro-batch of 32 under a budget between
   the predicted peaks of micro-batch 8 and 32: the run must halve and finish.
5. ``step_speed``: for each model, snugtune's full fine-tuning step against the plain AMP loop
   of the same model at the low precision, batch 64 at 224 px (``step_speed.compare``): images/s
   of each and their ratio.

Honest by construction: the parent process never touches CUDA (the card's figures come from
the first child), so no child's context or cap is skewed by the parent's; each row records the
micro-batch its step really ran at (an uncapped step that halved is not scored at the batch it
started with) and its own error, so one failure costs one row; the recipe runs (3, 4) run in
children too.

The JSON goes to ``--out`` (a folder: ``gpu_truth_<gpu>.json``, or a file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

import snugtune
from snugtune.data import make_image_folder
from snugtune.errors import BudgetError
from snugtune.memory import GpuProfile, estimate_memory, get_gpu_profile, probe, run_steps
from snugtune.memory.gpus import DeviceInfo, nvml_usage
from snugtune.memory.guard import CudaBudget
from snugtune.memory.modules import configured
from snugtune.memory.simulator import StepConfig
from snugtune.models import build_classifier
from snugtune.planner import SAFETY_MARGIN
from snugtune.units import GIB
from step_speed import compare  # benchmarks/step_speed.py (scripts run from here)

MODELS = ("vgg16", "efficientnet_b0", "mobilenet_v2", "resnet50")
RES = 224
CLASSES = 1000
BUDGET_RUN_BYTES = 4 * GIB


def configs(precision_low: str) -> list[dict[str, Any]]:
    """The matrix of one model (see the module docstring)."""
    out = []
    for precision in ("fp32", precision_low):
        for trainable in ("head", "top:2", "all"):
            for batch in (16, 64):
                out.append({"precision": precision, "trainable": trainable, "batch": batch,
                            "checkpointing": False})
        out.append({"precision": precision, "trainable": "all", "batch": 64, "checkpointing": True})
    return out


def predict(model: str, c: dict[str, Any], gpu: GpuProfile) -> dict[str, int]:
    r = estimate_memory(model, batch=c["batch"], res=RES, classes=CLASSES,
                        precision=c["precision"], trainable=c["trainable"],
                        checkpointing=c["checkpointing"], channels_last=c["precision"] != "fp32",
                        device="cuda", gpu=gpu)
    return {"predicted_bytes": r.predicted_peak_bytes, "predicted_tensor_bytes": r.tensor_peak_bytes,
            "predicted_context_bytes": r.breakdown["cuda_context"]}


# ------------------------------------------------------------------ measured in child processes


def _process_context(dev: torch.device) -> int:
    """This process's memory outside the caching allocator, now (0 off CUDA)."""
    return probe(dev).context_bytes if dev.type == "cuda" else 0


def child_context() -> dict[str, Any]:
    """Run in a fresh process: the card's figures right after initialisation."""
    t0 = time.perf_counter()
    info = probe(torch.device("cuda", 0))
    return {**info.to_dict(), "seconds": round(time.perf_counter() - t0, 2)}


def child_step_speed(model_name: str, precision: str) -> dict[str, Any]:
    """Run in a fresh process: snugtune's step against the plain AMP loop, on the card."""
    return compare(model_name, precision)


def _key(c: dict[str, Any]) -> str:
    return f"{c['trainable']}/{c['batch']}/{c['checkpointing']}"


def child_matrix(model_name: str, precision: str, predicted: dict[str, int],
                 device: str = "cuda") -> list[dict[str, Any]]:
    """Run in a fresh process: the measured peaks of one model at one precision, each also
    under the budget its ``predicted`` peak (by :func:`_key`) would get from a plan."""
    dev = torch.device(device, 0) if device == "cuda" else torch.device(device)
    context_start = _process_context(dev)
    rows = [_measure(model_name, c, dev, predicted[_key(c)])
            for c in configs(precision) if c["precision"] == precision]
    return [{**r, "context_start_bytes": context_start} for r in rows]


def _measure(model_name: str, c: dict[str, Any], dev: torch.device, predicted: int) -> dict[str, Any]:
    """One configuration: its uncapped peak, then the same step capped. Any failure is this
    row's ``error``; the step's micro-batch after any halving is ``ran_micro_batch``."""
    row: dict[str, Any] = {**c, "model": model_name, "error": None, "ran_micro_batch": None}
    model: torch.nn.Module | None = None
    t0 = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = build_classifier(model_name, CLASSES, weights="none").to(dev)
        cfg = StepConfig(batch=c["batch"], res=RES, precision=c["precision"],
                         trainable=c["trainable"], channels_last=c["precision"] != "fp32",
                         checkpointing=tuple(range(len(model.blocks))) if c["checkpointing"] else (),
                         device=dev.type)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        _reset_peaks(dev)
        try:
            with configured(model, cfg.trainable, cfg.checkpointing):
                row["ran_micro_batch"] = run_steps(model, cfg, classes=CLASSES)
            _synchronize(dev)
        except (torch.OutOfMemoryError, BudgetError) as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        reserved, allocated = _peaks(dev)
        context = _process_context(dev)
        row.update({"measured_reserved_bytes": reserved, "measured_allocated_bytes": allocated,
                    "context_after_bytes": context, "measured_bytes": reserved + context,
                    "seconds": round(time.perf_counter() - t0, 2)})
        row.update(_capped(model, cfg, dev, predicted))
    except Exception as e:  # noqa: BLE001 - one failure costs its row, not the model's
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    finally:
        del model
        _empty_cache(dev)
    return row


def _reset_peaks(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peaks(dev: torch.device) -> tuple[int, int]:
    """The caching allocator's peak reserve and allocation since the reset."""
    if dev.type != "cuda":
        return 0, 0
    return int(torch.cuda.max_memory_reserved(dev)), int(torch.cuda.max_memory_allocated(dev))


def _empty_cache(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _capped(model: torch.nn.Module, cfg: StepConfig, dev: torch.device,
            predicted: int) -> dict[str, Any]:
    """The same step again under the budget a plan would give it (the prediction over
    ``1 - SAFETY_MARGIN``), held as training holds it (``CudaBudget``: the allocator capped at
    the budget less this process's context). An empty card lets cuDNN take large workspaces
    (``memory/backends.py``); under the cap the step must still run at its micro-batch."""
    _empty_cache(dev)
    budget = int(predicted / (1 - SAFETY_MARGIN))
    out: dict[str, Any] = {"capped_budget_bytes": budget, "capped_micro_batch": None,
                           "capped_error": None}
    try:
        with CudaBudget(budget, dev, context_bytes=_process_context(dev)) as held, \
                configured(model, cfg.trainable, cfg.checkpointing):
            out["capped_micro_batch"] = run_steps(model, cfg, classes=CLASSES)
        out["capped_reserved_bytes"] = held.reserved_bytes
    except (torch.OutOfMemoryError, BudgetError) as e:
        out["capped_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return out


def _in_child(call: str, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
    """``call`` (a Python expression on this module) in a fresh interpreter, its JSON result."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import gpu_truth as g; print('RESULT ' + json.dumps(g.{call}))")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{call.split('(')[0]} timed out after {timeout:.0f} s"}
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        return {"error": (p.stderr or p.stdout)[-2000:]}
    return json.loads(line[len("RESULT "):])


# ------------------------------------------------------------------ runs through the recipe


class _NvmlSampler:
    """This process's memory on the card as NVML sees it (``snugtune.memory.gpus.nvml_usage``:
    the device torch uses, this process found even in a container), sampled in a thread."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self.reading: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _NvmlSampler:
        def sample() -> None:
            while not self._stop.is_set():
                usage = nvml_usage(torch.cuda.current_device())
                if usage is None:  # no NVML, or it cannot name this process: said in the JSON
                    return
                self.peak, self.reading = max(self.peak or 0, usage[0]), usage[1]
                time.sleep(0.02)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)


def _train(work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    data = make_image_folder(work / "data", classes=3, per_class=16, size=RES, seed=0)
    cfg = snugtune.build_config(overrides={
        "data": str(data), "out": str(work / f"run-{time.monotonic_ns()}"), "weights": "none",
        "resolution": RES, "workers": 0, "progress": False, "val_split": 0.25,
        "phases": [{"name": "head", "epochs": 1, "lr": 1e-3},
                   {"name": "finetune", "epochs": 1, "lr": 1e-3, "trainable": "top:2"}],
        **overrides})
    t0 = time.perf_counter()
    with _NvmlSampler() as nvml:
        result = snugtune.train(cfg)
    s = result.summary
    return {"seconds": round(time.perf_counter() - t0, 1), "nvml_peak_bytes": nvml.peak,
            "nvml_reading": nvml.reading,
            "phases": [p.to_dict() for p in s.phases],
            "plan": json.loads(Path(result.run_dir, "plan.json").read_text())}


def budget_run() -> dict[str, Any]:
    """Run in a fresh process (see the module doc, 3)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = _train(Path(tmp), {"model": "vgg16", "gpu_memory": BUDGET_RUN_BYTES})
    peaks = [p["measured_process_bytes"] for p in r["phases"] if p["measured_process_bytes"]]
    worst = max(peaks + ([r["nvml_peak_bytes"]] if r["nvml_peak_bytes"] else []), default=None)
    return {**r, "budget_bytes": BUDGET_RUN_BYTES, "worst_peak_bytes": worst,
            "under_budget": worst is not None and worst < BUDGET_RUN_BYTES}


def oom_recovery(gpu_profile: dict[str, Any], precision: str) -> dict[str, Any]:
    """Run in a fresh process (see the module doc, 4)."""
    gpu = GpuProfile.from_dict(gpu_profile)

    def pred(batch: int) -> int:
        return estimate_memory("resnet50", batch=batch, res=RES, classes=3, precision=precision,
                               trainable="top:2", channels_last=precision != "fp32", device="cuda",
                               gpu=gpu).predicted_peak_bytes

    budget = (pred(8) + pred(32)) // 2
    with tempfile.TemporaryDirectory() as tmp:
        r = _train(Path(tmp), {"model": "resnet50", "gpu_memory": budget, "micro_batch": 32,
                               "batch_size": 32, "precision": precision})
    finetune = r["phases"][1]
    return {**r, "budget_bytes": budget, "recovered": finetune["oom_recoveries"] >= 1,
            "final_micro_batch": finetune["micro_batch"]}


# ------------------------------------------------------------------ the report


def _errors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r.get("measured_bytes") and not r.get("error")
          and r.get("ran_micro_batch") == r["batch"]]
    errs = [(r["predicted_bytes"] - r["measured_bytes"]) / r["measured_bytes"] for r in ok]
    if not errs:
        return {"n": 0}
    return {"n": len(errs), "median_abs_error": statistics.median(abs(e) for e in errs),
            "max_abs_error": max(abs(e) for e in errs), "mean_error": statistics.mean(errs),
            "targets": {"median": 0.05, "max": 0.10}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="no CUDA: the predictions only")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out", type=Path, help="a folder (gpu_truth_<gpu>.json) or a file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "gpu_truth", "torch": torch.__version__,
                              "dry_run": args.dry_run, "models": args.models}
    if args.dry_run:
        gpu = get_gpu_profile("h100-80gb")
        low = "bf16"
        report["gpu"] = gpu.to_dict()
    else:
        # the parent never touches CUDA: the card's figures come from a child
        report["context"] = {mode: _in_child("child_context()", {"CUDA_MODULE_LOADING": mode})
                             for mode in ("LAZY", "EAGER")}
        if "error" in report["context"]["LAZY"]:
            print(json.dumps(report, indent=1, default=str))
            return 1
        info = DeviceInfo.from_dict(report["context"]["LAZY"])
        gpu, low = info.profile(), "bf16" if info.bf16 else "fp16"
        report["gpu"] = {**gpu.to_dict(), "device": info.to_dict()}
    rows = []
    for model in args.models:
        for precision in ("fp32", low):
            mine = [{"model": model, **c, **predict(model, c, gpu)}
                    for c in configs(low) if c["precision"] == precision]
            predicted = {_key(r): r["predicted_bytes"] for r in mine}
            measured = [] if args.dry_run else _in_child(
                f"child_matrix({model!r}, {precision!r}, {predicted!r})")
            if isinstance(measured, dict):  # the child failed: say so, keep going
                report.setdefault("failures", []).append({model: measured})
                measured = []
            by_key = {_key(m): m for m in measured}
            rows += [{**r, **by_key.get(_key(r), {})} for r in mine]
    report["matrix"] = rows
    report["matrix_errors"] = _errors(rows)
    if not args.dry_run:
        capped = [r for r in rows if "capped_budget_bytes" in r]
        report["capped"] = {
            "runs": len(capped),
            "at_the_planned_micro_batch": sum(r["capped_micro_batch"] == r["batch"] for r in capped),
            "uncapped_halved": [{k: r.get(k) for k in ("model", "precision", "trainable", "batch",
                                                       "checkpointing", "ran_micro_batch")}
                                for r in rows if r.get("ran_micro_batch") not in (None, r["batch"])],
            "not": [{k: r.get(k) for k in ("model", "precision", "trainable", "batch",
                                            "checkpointing", "capped_micro_batch", "capped_error")}
                    for r in capped if r["capped_micro_batch"] != r["batch"]]}
    if not args.dry_run:
        report["budget_run"] = _in_child("budget_run()", timeout=900)
        report["oom_recovery"] = _in_child(f"oom_recovery({gpu.to_dict()!r}, {low!r})", timeout=900)
        report["step_speed"] = [_in_child(f"child_step_speed({m!r}, {low!r})")
                                for m in args.models]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.out:
        name = "gpu_truth_" + ("dry_run" if args.dry_run else
                               str(report["gpu"]["device"]["name"]).lower().replace(" ", "_"))
        path = args.out / f"{name}.json" if args.out.suffix != ".json" else args.out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
