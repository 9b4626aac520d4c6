"""Where a CPU fine-tuning step's time goes, and what PyTorch's speed options give on it.

The step is snugtune's own (``snugtune.step.train_step``: soft targets, micro-batch loop,
AdamW with the multi-tensor ``foreach`` kernel; the fused kernel snugtune trains with is timed
apart, ``adamw_step_ms``), on a torchvision backbone built as snugtune builds it (``build_classifier``, random
weights: speed does not depend on them) with every layer and BatchNorm training (the
like-for-like setting of ``keras_anchor.py``), at 96 px, batch 32, on fixed random inputs (no
loader).

Variants, each timed as the median of ``--steps`` steps after ``WARMUP`` steps, ``--repeats``
times interleaved (the order rotates), in this one process:

* ``nchw``: fp32, contiguous layout;
* ``channels_last``: fp32, NHWC (what the planner picks on the CPU for BatchNorm convnets);
* ``channels_last_bf16``: plus bf16 autocast;
* ``channels_last_1_thread``: one intra-op thread instead of all;
* ``compiled``: ``torch.compile`` (inductor) of the model, channels_last; its first steps'
  seconds (compilation) are reported apart from the steady rate;
* ``compiled_bf16``: the same under bf16 autocast.

The variants run as the trainer does, with freed memory kept for the next step
(``snugtune.step.keep_freed_memory``). What that setting gives is measured apart,
``host_memory``: the channels_last fp32 step in fresh processes (the setting lasts as long as
the process), glibc's defaults (``default``) against the setting (``kept``), ``--repeats``
times interleaved, at 96 px for each model and at 224 px for mobilenet_v2 (activations of up
to 154 MB: 32 x 96 x 112 x 112 floats): steady images/s, minor page faults and kernel (system) milliseconds per step, the
peak resident set (``ru_maxrss``), and the median paired ``speedup``.

``forward_chunk``: images/s of an inference forward pass (eval mode, no gradients,
channels_last fp32, freed memory kept) over 256 images in chunks of 8, 16, 32 and 64 images,
for each model and the default backbone (tf_efficientnet_lite0, random weights), the best of
``--repeats`` interleaved passes: what evaluation and the feature-cache fill run at
(``step.CPU_FORWARD_CHUNK``).

Also: the AdamW step alone (foreach vs fused, the model's parameters), the step's operators by
self CPU time (``torch.profiler``, channels_last fp32). The loader's share per image is
``throughput.py``'s (``input_pipeline_ms_per_image_one_thread``).

Usage: ``python benchmarks/cpu_step.py --out benchmarks/results/cpu_step.json``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.models import build_classifier
from snugtune.step import MicroBatch, StepContext, keep_freed_memory, train_step

WARMUP = 3
MODELS = ("mobilenet_v2", "efficientnet_b0")
CPU = torch.device("cpu")
#: (model, resolution) of the host-memory comparison.
HOST_MEMORY_CASES = (("mobilenet_v2", 96), ("efficientnet_b0", 96), ("mobilenet_v2", 224))


def build(name: str, channels_last: bool) -> nn.Module:
    model = build_classifier(f"torchvision:{name}", num_classes=10, weights="none",
                             head_hidden=256, head_dropout=0.0)
    model.train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def timed_steps(model: nn.Module, step_model: Callable[..., Any] | nn.Module, steps: int, *,
                channels_last: bool, precision: str, batch: int, res: int
                ) -> dict[str, float]:
    """Seconds of the first ``WARMUP`` steps and the median steady step."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, res, res), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    ctx = StepContext(device=torch.device("cpu"), num_classes=10, precision=precision,
                      channels_last=channels_last)
    times = []
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        train_step(step_model, optimizer, x, y, ctx, MicroBatch(batch), step=i)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[WARMUP:])
    return {"warmup_s": round(sum(times[:WARMUP]), 2), "step_ms": round(1000 * steady, 1),
            "images_per_s": round(batch / steady, 1)}


def variant(name: str, variant_name: str, steps: int, batch: int, res: int) -> dict[str, float]:
    channels_last = variant_name != "nchw"
    precision = "bf16" if variant_name.endswith("bf16") else "fp32"
    model = build(name, channels_last)
    step_model: Any = torch.compile(model) if variant_name.startswith("compiled") else model
    threads = torch.get_num_threads()
    if variant_name.endswith("1_thread"):
        torch.set_num_threads(1)
    try:
        return timed_steps(model, step_model, steps, channels_last=channels_last,
                           precision=precision, batch=batch, res=res)
    finally:
        torch.set_num_threads(threads)


VARIANTS = ("nchw", "channels_last", "channels_last_bf16", "channels_last_1_thread", "compiled",
            "compiled_bf16")


def optimizer_ms(name: str, fused: bool, repeats: int = 20) -> float:
    """Median ms of one AdamW step over the model's parameters (gradients set)."""
    model = build(name, False)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times[2:]), 2)


def operators(name: str, batch: int, res: int, top: int = 10) -> dict[str, float]:
    """Share of self CPU time per operator over 5 steady channels_last fp32 steps."""
    model = build(name, True)
    timed_steps(model, model, 1, channels_last=True, precision="fp32", batch=batch, res=res)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        timed_steps(model, model, 2, channels_last=True, precision="fp32", batch=batch, res=res)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events)
    events.sort(key=lambda e: e[1], reverse=True)
    return {k: round(100 * t / total, 1) for k, t in events[:top]}


FORWARD_CHUNKS = (8, 16, 32, 64)


def forward_chunks(name: str, repeats: int, res: int) -> dict[str, float]:
    """Best images/s of a no-grad eval forward over 256 images, per chunk size."""
    model = build_classifier(name, num_classes=10, weights="none").eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(256, 3, res, res).contiguous(memory_format=torch.channels_last)
    rates: dict[int, list[float]] = {c: [] for c in FORWARD_CHUNKS}
    with torch.no_grad():
        for r in range(repeats):
            k = r % len(FORWARD_CHUNKS)  # the order rotates every repeat
            for c in FORWARD_CHUNKS[k:] + FORWARD_CHUNKS[:k]:
                model(x[:c])
                t0 = time.perf_counter()
                for i in range(0, len(x), c):
                    model(x[i : i + c])
                rates[c].append(len(x) / (time.perf_counter() - t0))
    return {str(c): round(max(v), 1) for c, v in rates.items()}


def host_memory_child(name: str, res: int, mode: str, steps: int, batch: int) -> dict[str, float]:
    """In a fresh process: the channels_last fp32 step with glibc's defaults or kept memory."""
    if mode == "kept" and not keep_freed_memory(CPU):
        raise SystemExit("keep_freed_memory had no effect here (not glibc?)")
    model = build(name, True)
    timed_steps(model, model, 1, channels_last=True, precision="fp32", batch=batch, res=res)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = timed_steps(model, model, steps, channels_last=True, precision="fp32", batch=batch,
                         res=res)
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = WARMUP + steps
    return {**result, "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / n),
            "system_ms_per_step": round(1000 * (after.ru_stime - before.ru_stime) / n, 1),
            "maxrss_mb": after.ru_maxrss // 1024}


def host_memory(repeats: int, steps: int, batch: int) -> dict[str, Any]:
    """``default`` against ``kept``, each run in its own process, interleaved."""
    out: dict[str, Any] = {}
    for name, res in HOST_MEMORY_CASES:
        runs: dict[str, list[dict[str, Any]]] = {"default": [], "kept": []}
        for r in range(repeats):
            for mode in (("default", "kept") if r % 2 == 0 else ("kept", "default")):
                before = load()
                p = subprocess.run([sys.executable, __file__, "--host-memory-child", name, str(res),
                                    mode, "--steps", str(steps if res <= 96 else max(3, steps // 3)),
                                    "--batch", str(batch)],
                                   capture_output=True, text=True, check=True)
                runs[mode].append({**json.loads(p.stdout), "repeat": r, "load": [before, load()]})
                print(f"host memory {name} {res}px {mode} repeat {r}: {runs[mode][-1]}",
                      file=sys.stderr)
        ratios = [round(k["images_per_s"] / d["images_per_s"], 3)
                  for d, k in zip(runs["default"], runs["kept"], strict=True)]
        out[f"{name}_{res}px"] = {
            **{mode: {key: statistics.median(x[key] for x in rs) for key in
                      ("images_per_s", "minor_faults_per_step", "system_ms_per_step", "maxrss_mb")}
               for mode, rs in runs.items()},
            "paired_speedups": ratios, "speedup": statistics.median(ratios), "runs": runs}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host-memory-child", nargs=3, metavar=("MODEL", "RES", "MODE"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.host_memory_child:
        name, res, mode = args.host_memory_child
        print(json.dumps(host_memory_child(name, int(res), mode, args.steps, args.batch)))
        return 0
    memory = host_memory(args.repeats, args.steps, args.batch)
    keep_freed_memory(CPU)  # as the trainer does, for every variant below
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {v: [] for v in args.variants}
                                                        for m in args.models}
    for r in range(args.repeats):
        for name in args.models:
            order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
            for v in order:
                before = load()
                result = variant(name, v, args.steps, args.batch, args.res)
                runs[name][v].append({**result, "repeat": r, "load": [before, load()]})
                print(f"{name} {v} repeat {r}: {result}", file=sys.stderr)
    summary = {name: {v: {"images_per_s_median": statistics.median(x["images_per_s"] for x in rs),
                          "spread": round((max(x["images_per_s"] for x in rs)
                                           - min(x["images_per_s"] for x in rs))
                                          / statistics.median(x["images_per_s"] for x in rs), 3),
                          "warmup_s_median": statistics.median(x["warmup_s"] for x in rs)}
                      for v, rs in variants.items()} for name, variants in runs.items()}
    report = {
        "benchmark": "cpu_step", "machine": machine(),
        "settings": {"batch": args.batch, "res": args.res, "steps": args.steps,
                     "warmup_steps": WARMUP, "repeats": args.repeats},
        "summary": summary,
        "adamw_step_ms": {name: {"foreach": optimizer_ms(name, False), "fused": optimizer_ms(name, True)}
                          for name in args.models},
        "operators_self_cpu_percent": {name: operators(name, args.batch, args.res)
                                       for name in args.models},
        "host_memory": memory,
        "forward_chunk": {name: forward_chunks(name, max(3, args.repeats), args.res) for name in
                          [f"torchvision:{m}" for m in args.models] + ["tf_efficientnet_lite0"]},
        "runs": runs,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
