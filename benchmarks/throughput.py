"""Training throughput: snugtune's loop against the plain PyTorch loop, in one process, as ratios.

The plain loop is what a user would write: torchvision ``ImageFolder`` + ``DataLoader``
(shuffle, as many workers as snugtune's default), the same model (torchvision ``mobilenet_v2``
with a dropout + linear head, random init: no hub here, and weights do not change speed), the
same optimizer (AdamW, lr 1e-3, weight decay 1e-4, label smoothing 0.1), fp32, and a Keras-like
augmentation (resize, random affine, horizontal flip). snugtune runs through its public API,
``snugtune.train(cfg)``, and its per-epoch ``images_per_s`` (training time only) is read from
``metrics.csv``; its feature-cache fill time from ``summary.json``.

Cases (mobilenet_v2, 96 px, batch 32, on an Animal-MNIST subset):

* ``finetune``: every layer trains, one epoch each; snugtune with its CPU default precision
  (fp32) and with ``--precision bf16``.
* ``frozen_first_epoch``: backbone frozen. Plain: one epoch (the backbone runs every batch).
  snugtune: the cache fill (hashing + decoding + encoding) plus its first head epoch.
* ``frozen_cached_epochs``: snugtune's head epochs 2 and 3 (features from the cache) against
  the same plain frozen epoch.

Every case runs ``--repeats`` times, interleaved (the order rotates each repeat); the JSON
gives every value, the medians and the ratio of medians, the machine, and the load average
before and after each measurement (the machine may be shared).

Usage: ``python benchmarks/throughput.py --out benchmarks/results/throughput.json``
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from snugtune.config import build_config
from snugtune.data import default_workers, write_animal_mnist
from snugtune.train import train

log = logging.getLogger("benchmarks.throughput")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGETS = {"finetune": 1.5, "frozen_first_epoch": 1.8, "frozen_cached_epochs": 20.0}


def load() -> list[float]:
    """1, 5 and 15 minute load averages (other work on a shared machine skews timings)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                   if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_tile" in flags,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


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
             batch: int) -> dict[str, Any]:
    """One ``snugtune.train`` run; returns its per-epoch images/s and the cache record."""
    out = work / f"run-{time.monotonic_ns()}"
    phase = {"name": "head" if trainable == "head" else "finetune", "epochs": epochs, "lr": 1e-3,
             "trainable": trainable, "warmup_epochs": 0.0, "patience": None}
    cfg = build_config(None, {
        "data": str(root), "out": str(out), "model": "torchvision:mobilenet_v2", "weights": "none",
        "resolution": res, "batch_size": batch, "val_split": 0.0, "precision": precision,
        "progress": False, "phases": [phase],
    })
    result = train(cfg)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    record = {"images": int(rows[0]["samples_seen"]),
              "epoch_images_per_s": [float(r["images_per_s"]) for r in rows],
              "feature_cache": result.summary["phases"][0]["feature_cache"]}
    shutil.rmtree(out, ignore_errors=True)
    return record


def _first_epoch(run: dict[str, Any]) -> dict[str, float]:
    """Fill + first cached epoch, as one epoch's images/s."""
    cache = run["feature_cache"] or {}
    n = run["images"]
    seconds = float(cache.get("seconds") or 0.0) + n / run["epoch_images_per_s"][0]
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 2),
            "fill_seconds": cache.get("seconds"), "views": cache.get("views"), "used": cache.get("used")}


def measurements(root: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The named measurements of one repeat, as callables."""
    kw = {"res": args.resolution, "batch": args.batch}
    workers = default_workers()
    return {
        "plain_finetune": lambda: plain_epoch(root, frozen=False, workers=workers, seed=0, **kw),
        "snugtune_finetune_fp32": lambda: snug_run(root, work, trainable="all", epochs=1,
                                                   precision="auto", **kw),
        "snugtune_finetune_bf16": lambda: snug_run(root, work, trainable="all", epochs=1,
                                                   precision="bf16", **kw),
        "plain_frozen": lambda: plain_epoch(root, frozen=True, workers=workers, seed=0, **kw),
        "snugtune_frozen": lambda: snug_run(root, work, trainable="head", epochs=3,
                                            precision="auto", **kw),
    }


def run_repeats(root: Path, work: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every measurement ``args.repeats`` times, interleaved, rotating the order."""
    cases = measurements(root, work, args)
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
    """Medians of images/s per side and their ratios, against the targets of issue 5."""
    plain_ft = _median([v["images_per_s"] for v in results["plain_finetune"]])
    plain_fr = _median([v["images_per_s"] for v in results["plain_frozen"]])
    first = [_first_epoch(v) for v in results["snugtune_frozen"]]
    cached = _median([statistics.median(v["epoch_images_per_s"][1:]) for v in results["snugtune_frozen"]])
    out: dict[str, Any] = {}
    for key in ("fp32", "bf16"):
        snug = _median([v["epoch_images_per_s"][0] for v in results[f"snugtune_finetune_{key}"]])
        out[f"finetune_{key}"] = _case(plain_ft, snug, TARGETS["finetune"])
    out["frozen_first_epoch"] = _case(plain_fr, _median([f["images_per_s"] for f in first]),
                                      TARGETS["frozen_first_epoch"])
    out["frozen_first_epoch"]["fill_seconds_median"] = _median([f["fill_seconds"] or 0 for f in first])
    out["frozen_cached_epochs"] = _case(plain_fr, cached, TARGETS["frozen_cached_epochs"])
    return out


def _case(plain: float, snug: float, target: float) -> dict[str, Any]:
    ratio = round(snug / plain, 2) if plain else None
    return {"plain_images_per_s": plain, "snugtune_images_per_s": snug, "ratio": ratio,
            "target_ratio": target, "met": ratio is not None and ratio >= target}


def _warm_up(res: int, batch: int) -> None:
    """One fp32 and one bf16 step first, so that no case pays the process's one-off costs."""
    model = torchvision.models.mobilenet_v2(num_classes=10)
    x = torch.randn(batch, 3, res, res)
    for dtype in (None, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            model(x).sum().backward()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--data", type=Path, help="class-folder tree (default: Animal-MNIST subset)")
    p.add_argument("--per-class", type=int, default=100, help="Animal-MNIST images per class")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("snugtune").setLevel(logging.WARNING)
    t0, start_load = time.perf_counter(), load()
    with tempfile.TemporaryDirectory(prefix="snugtune-bench-") as tmp:
        work = Path(tmp)
        root = args.data or write_animal_mnist(work / "data", per_class=args.per_class)
        _warm_up(args.resolution, args.batch)
        results = run_repeats(Path(root), work, args)
    report = {
        "benchmark": "throughput", "machine": machine(),
        "settings": {"model": "mobilenet_v2 (torchvision, random init)", "resolution": args.resolution,
                     "batch": args.batch, "repeats": args.repeats, "workers": default_workers(),
                     "data": str(args.data) if args.data else f"Animal-MNIST, {args.per_class} per class "
                     f"({10 * args.per_class} images, 28x28 PNG), all used for training"},
        "summary": summarise(results), "runs": results,
        "load": {"start": start_load, "end": load()}, "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
