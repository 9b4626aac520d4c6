"""Training throughput: snugtune's loop against the plain PyTorch loop, in one process, as ratios.

The plain loop is what a user would write: torchvision ``ImageFolder`` + ``DataLoader``
(shuffle, a few workers as tutorials do: the CPU count, at most 4; a what-if runs it with none,
as snugtune loads on a 2-core CPU), the same model (torchvision ``mobilenet_v2``
with a dropout + linear head, random init: no hub here, and weights do not change speed), the
same optimizer (AdamW, lr 1e-3, weight decay 1e-4, label smoothing 0.1), fp32, and a Keras-like
augmentation (resize, random affine, horizontal flip). snugtune runs through its public API,
``snugtune.train(cfg)``, and its per-epoch ``images_per_s`` (training time only) is read from
``metrics.csv``; its feature-cache fill time from ``summary.json``.

Cases (mobilenet_v2, 96 px, batch 32, on Animal-MNIST subsets):

* ``finetune_*``: every layer trains, one epoch each; snugtune as planned (``default``: fp32,
  channels_last, BatchNorm statistics frozen as in the Keras recipe), with ``--precision bf16``,
  and a what-if with the plan patched to the contiguous (NCHW) layout, to show what
  channels_last gives.
* ``frozen_first_epoch``: backbone frozen. Plain: one epoch (the backbone runs every batch).
  snugtune: the cache fill (hashing + decoding + encoding) plus its first head epoch.
* ``frozen_cached_epochs``: snugtune's head epochs after the fill (features from the cache;
  median of ``--cached-epochs``) against the same plain frozen epoch.

Both loops run with the CPU's freed memory kept for the next step (``step.keep_freed_memory``,
set at the start: a snugtune run would set it for the whole process anyway), so the ratios
compare the loops, not glibc's settings; what that setting gives on its own is
``cpu_step.json``'s ``host_memory``.

Every case runs ``--repeats`` times, interleaved (the order rotates each repeat); the JSON
gives every value, the medians and the ratio of medians, the machine, and the load average
before and after each measurement (the machine may be shared).

Usage: ``python benchmarks/throughput.py --out benchmarks/results/throughput.json``
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.config import AugmentConfig, build_config
from snugtune.data import build_transforms, default_workers, load_image, write_animal_mnist
from snugtune.recipe import finetune, train
from snugtune.step import keep_freed_memory

log = logging.getLogger("benchmarks.throughput")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGETS = {"finetune": 1.5, "frozen_first_epoch": 1.8, "frozen_cached_epochs": 20.0}


def plain_epoch(root: Path, *, frozen: bool, res: int, batch: int, workers: int, seed: int) -> dict[str, float]:
    """One epoch of the loop a user would write; returns images/s over the whole epoch."""
    torch.manual_seed(seed)
    tf = T.Compose([T.Resize((res, res)), T.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                    T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    data = torchvision.datasets.ImageFolder(str(root), transform=tf)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers)
    model = torchvision.models.mobilenet_v2(num_classes=len(data.classes))
    if frozen:
        model.features.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    t0 = time.perf_counter()
    seen = 0
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        seen += len(y)
    seconds = time.perf_counter() - t0
    return {"images": seen, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 2)}


def snug_run(root: Path, work: Path, *, trainable: str, epochs: int, precision: str, res: int,
             batch: int, channels_last: bool | None = None) -> dict[str, Any]:
    """One ``snugtune.train`` run with a cache of its own (the first frozen epoch is a fill,
    every repeat); returns its per-epoch images/s and the cache record.

    ``channels_last`` (a what-if) patches the plan's memory layout; ``None`` keeps the plan's.
    """
    out = work / f"run-{time.monotonic_ns()}"
    phase = {"name": "head" if trainable == "head" else "finetune", "epochs": epochs, "lr": 1e-3,
             "trainable": trainable, "warmup_epochs": 0.0, "patience": None}
    cfg = build_config(None, {
        "data": str(root), "out": str(out), "model": "torchvision:mobilenet_v2", "weights": "none",
        "resolution": res, "batch_size": batch, "val_split": 0.0, "precision": precision,
        "progress": False, "phases": [phase], "cache_dir": str(out) + "-cache",
    })
    original = finetune.plan_phases

    def with_layout(*a: Any, **k: Any) -> Any:
        plan = original(*a, **k)
        return replace(plan, phases=tuple(replace(p, channels_last=channels_last) for p in plan.phases))

    if channels_last is not None:
        finetune.plan_phases = with_layout
    try:
        result = train(cfg)
    finally:
        finetune.plan_phases = original
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    phase_summary = result.summary.phases[0]
    cache = phase_summary.feature_cache
    record = {"images": int(rows[0]["samples_seen"]),
              "epoch_images_per_s": [float(r["images_per_s"]) for r in rows],
              "precision": phase_summary.precision, "channels_last": phase_summary.channels_last,
              "feature_cache": cache.to_dict() if cache else None}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + "-cache", ignore_errors=True)
    return record


def _first_epoch(run: dict[str, Any]) -> dict[str, float]:
    """Fill + first cached epoch, as one epoch's images/s."""
    cache = run["feature_cache"] or {}
    n = run["images"]
    seconds = float(cache.get("seconds") or 0.0) + n / run["epoch_images_per_s"][0]
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 2),
            "fill_seconds": cache.get("seconds"), "used": cache.get("used")}


FINETUNE_VARIANTS: dict[str, tuple[str, bool | None]] = {
    "default": ("auto", None), "bf16": ("bf16", None), "contiguous_whatif": ("auto", False)}


def measurements(ft_root: Path, fr_root: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The named measurements of one repeat, as callables."""
    kw = {"res": args.resolution, "batch": args.batch}
    workers = default_workers("cuda")  # what users write: a few workers, as tutorials do
    cases: dict[str, Any] = {
        "plain_finetune": lambda: plain_epoch(ft_root, frozen=False, workers=workers, seed=0, **kw),
        "plain_finetune_no_workers": lambda: plain_epoch(ft_root, frozen=False, workers=0, seed=0, **kw),
        "plain_frozen": lambda: plain_epoch(fr_root, frozen=True, workers=workers, seed=0, **kw),
        "snugtune_frozen": lambda: snug_run(fr_root, work, trainable="head", epochs=1 + args.cached_epochs,
                                            precision="auto", **kw),
    }
    for name, (precision, cl) in FINETUNE_VARIANTS.items():
        cases[f"snugtune_finetune_{name}"] = (
            lambda p=precision, c=cl: snug_run(ft_root, work, trainable="all", epochs=1, precision=p,
                                               channels_last=c, **kw))
    return cases


def run_repeats(ft_root: Path, fr_root: Path, work: Path,
                args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every measurement ``args.repeats`` times, interleaved, rotating the order."""
    cases = measurements(ft_root, fr_root, work, args)
    names = list(cases)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            before = load()
            value = cases[name]()
            value.update(repeat=r, load_before=before, load_after=load())
            results[name].append(value)
            log.info("repeat %d %s: %s", r, name, {k: v for k, v in value.items() if k != "feature_cache"})
    return results


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per case: the median images/s of each side, the ratio of the medians, and the median of
    the per-repeat ratios (each repeat's two sides ran minutes apart, under similar load),
    against the targets of issue 5. ``met`` uses the paired ratio."""
    plain_ft = [v["images_per_s"] for v in results["plain_finetune"]]
    plain_fr = [v["images_per_s"] for v in results["plain_frozen"]]
    first = [_first_epoch(v) for v in results["snugtune_frozen"]]
    cached = [statistics.median(v["epoch_images_per_s"][1:]) for v in results["snugtune_frozen"]]
    out: dict[str, Any] = {}
    for key in FINETUNE_VARIANTS:
        snug = [v["epoch_images_per_s"][0] for v in results[f"snugtune_finetune_{key}"]]
        out[f"finetune_{key}"] = _case(plain_ft, snug, TARGETS["finetune"])
    snug_default = [v["epoch_images_per_s"][0] for v in results["snugtune_finetune_default"]]
    out["finetune_default_vs_plain_without_workers"] = _case(
        [v["images_per_s"] for v in results["plain_finetune_no_workers"]], snug_default, TARGETS["finetune"])
    out["frozen_first_epoch"] = _case(plain_fr, [f["images_per_s"] for f in first],
                                      TARGETS["frozen_first_epoch"])
    out["frozen_first_epoch"]["fill_seconds_median"] = _median([f["fill_seconds"] or 0 for f in first])
    out["frozen_cached_epochs"] = _case(plain_fr, cached, TARGETS["frozen_cached_epochs"])
    return out


def _case(plain: list[float], snug: list[float], target: float) -> dict[str, Any]:
    p, s = _median(plain), _median(snug)
    paired = [round(b / a, 2) for a, b in zip(plain, snug, strict=True) if a]
    ratio = _median(paired) if paired else None
    return {"plain_images_per_s": p, "snugtune_images_per_s": s,
            "ratio_of_medians": round(s / p, 2) if p else None, "ratios_per_repeat": paired,
            "ratio": ratio, "target_ratio": target, "met": ratio is not None and ratio >= target}


def _ms_per_image(fn: Any, files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        fn(f)
    return round((time.perf_counter() - t0) / len(files) * 1e3, 2)


def where_time_goes(root: Path, res: int, batch: int) -> dict[str, Any]:
    """A profile: top ops (share of self CPU time) of fp32 fine-tuning steps, and the CPU cost
    per image of the input pipelines (one thread, as in a loader worker) and of the step."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, res, res), torch.randint(0, 10, (batch,))

    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    step()
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    step_ms = (time.perf_counter() - t0) / (3 * batch) * 1e3
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    ops = {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in events[:8]}
    files = sorted(root.glob("*/*.png"))[:64]
    aug = build_transforms(AugmentConfig(), size=res, mean=MEAN, std=STD, train=True)
    plain = T.Compose([T.Resize((res, res)), T.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                       T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inputs = {"snugtune_train_ms": _ms_per_image(lambda f: aug(load_image(f, draft_size=res)), files),
                  "plain_train_ms": _ms_per_image(lambda f: plain(Image.open(f).convert("RGB")), files)}
    finally:
        torch.set_num_threads(threads)
    return {"finetune_step_top_ops_self_cpu_percent": ops,
            "finetune_step_ms_per_image_profiled": round(step_ms, 2),
            "input_pipeline_ms_per_image_one_thread": inputs, "load": load()}


def _warm_up(res: int, batch: int) -> None:
    """A step in each precision and memory format first, so that no case pays the process's
    one-off costs (oneDNN primitive creation) alone."""
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = torchvision.models.mobilenet_v2(num_classes=10).to(memory_format=fmt)
        x = torch.randn(batch, 3, res, res).contiguous(memory_format=fmt)
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x).sum().backward()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--data", type=Path, help="class-folder tree (default: Animal-MNIST subset)")
    p.add_argument("--per-class", type=int, default=64,
                   help="Animal-MNIST images per class for the fine-tuning cases")
    p.add_argument("--frozen-per-class", type=int, default=100,
                   help="Animal-MNIST images per class for the frozen-backbone cases")
    p.add_argument("--cached-epochs", type=int, default=4, help="snugtune head epochs after the fill")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    keep_freed_memory(torch.device("cpu"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("snugtune").setLevel(logging.WARNING)
    t0, start_load = time.perf_counter(), load()
    with tempfile.TemporaryDirectory(prefix="snugtune-bench-") as tmp:
        work = Path(tmp)
        ft_root = args.data or write_animal_mnist(work / "ft", per_class=args.per_class)
        fr_root = args.data or write_animal_mnist(work / "fr", per_class=args.frozen_per_class)
        _warm_up(args.resolution, args.batch)
        results = run_repeats(Path(ft_root), Path(fr_root), work, args)
        profile = where_time_goes(Path(ft_root), args.resolution, args.batch)
    report = {
        "benchmark": "throughput", "machine": machine(),
        "settings": {"model": "mobilenet_v2 (torchvision, random init)", "resolution": args.resolution,
                     "batch": args.batch, "repeats": args.repeats, "plain_workers": default_workers("cuda"),
                     "snugtune_workers": default_workers("cpu"),
                     "data": str(args.data) if args.data else
                     f"Animal-MNIST subsets (28x28 PNG, all used for training): {10 * args.per_class} "
                     f"images for fine-tuning, {10 * args.frozen_per_class} for the frozen cases",
                     "cached_epochs": args.cached_epochs},
        "summary": summarise(results), "where_time_goes": profile, "runs": results,
        "load": {"start": start_load, "end": load()}, "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
