"""Full fine-tuning against the seeds' Keras recipe, side by side, like for like.

The anchor is ``keras_seed.py`` from the project's shared anchors folder (``--anchors``,
default ``../shared/anchors`` beside the repository), run in a virtual environment of its own
(``--anchor-venv``; created with ``tensorflow-cpu scipy pillow`` when it does not exist). Both
sides train every layer of the same backbone from random initialisation (nothing can be
downloaded; the speed is the same as with pretrained weights) on the same 8,000 Animal-MNIST
training images at 96 px (``make_animal_folders.py``: DATA/train, DATA/val), batch 32, with
BatchNorm in training mode in both (Keras's way; ``train_bn`` in snugtune), the Keras head
(global pooling, Dense(256) + ReLU, a linear layer; ``head_hidden: 256``) and the Keras
augmentation (shear 0.2, zoom 0.2, horizontal flips).

* Keras: ``keras_seed.py --mode finetune --seconds S``: steady-state images/s after 3 warm-up
  steps (its own figure).
* snugtune: ``snugtune train DATA`` with one fine-tuning phase of one epoch (every training
  image once), its own ``images_per_s`` for the epoch (``metrics.csv``; training time only,
  the first step included, so it is the lower of the two kinds of rate).

The two alternate, in fresh processes, ``--repeats`` times per backbone (the order swaps every
repeat); the JSON gives every run, the machine and its load before and after each run, and per
backbone each side's median and spread ((max - min) / median) and the median of the paired
ratios (snugtune / Keras of the same repeat).

Usage: ``python benchmarks/keras_anchor.py --out benchmarks/results/keras_anchor.json``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet_v2": "torchvision:mobilenet_v2", "efficientnet_b0": "torchvision:efficientnet_b0"}


def anchor_python(venv: Path) -> Path:
    """The anchor venv's interpreter, the venv created first when it is not there."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "tensorflow-cpu", "scipy",
                        "pillow"], check=True)
    return python


def keras_run(python: Path, anchors: Path, data: Path, model: str, seconds: float,
              res: int, batch: int) -> dict[str, Any]:
    """One ``keras_seed.py --mode finetune`` run: its JSON line."""
    before = load()
    p = subprocess.run([str(python), str(anchors / "keras_seed.py"), "--data", str(data),
                        "--res", str(res), "--batch", str(batch), "--model", model,
                        "--seconds", str(seconds), "--mode", "finetune"],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if p.returncode != 0:
        return {"error": p.stderr[-2000:], "load": [before, load()]}
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["load"] = [before, load()]
    return result


def snug_config(data: Path, out: Path, model: str, res: int, batch: int) -> dict[str, Any]:
    """The like-for-like snugtune run: one full fine-tuning epoch, Keras's head and flips."""
    return {
        "data": str(data), "out": str(out), "model": MODELS[model], "weights": "none",
        "resolution": res, "batch_size": batch, "head_hidden": 256, "head_dropout": 0.0,
        "progress": False,
        "augment": {"rotation_range": 0.0, "width_shift_range": 0.0, "height_shift_range": 0.0,
                    "shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
        "phases": [{"name": "finetune", "epochs": 1, "lr": 1e-3, "trainable": "all",
                    "train_bn": True, "warmup_epochs": 0.0, "patience": None,
                    "label_smoothing": 0.0, "weight_decay": 0.0}],
    }


def snug_run(work: Path, data: Path, model: str, res: int, batch: int) -> dict[str, Any]:
    """One ``snugtune train`` in a fresh process with a cache of its own: the epoch's rate."""
    out = work / f"snug-{time.monotonic_ns()}"
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(snug_config(data, out, model, res, batch)))
    env = {**os.environ, "SNUGTUNE_CACHE_DIR": str(out) + "-cache"}
    before, t0 = load(), time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "snugtune", "train", str(data), "--config", str(config)],
                       capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    try:
        if p.returncode != 0:
            return {"error": p.stderr[-2000:], "load": [before, load()]}
        with open(out / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        summary = json.loads((out / "summary.json").read_text())
        phase = summary["phases"][0]
        return {"train_images_per_s": float(rows[0]["images_per_s"]),
                "images": int(rows[0]["samples_seen"]), "val_acc": summary["best_val_accuracy"],
                "precision": phase.get("precision"), "channels_last": phase.get("channels_last"),
                "total_wall_s": round(wall, 1), "load": [before, load()]}
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(str(out) + "-cache", ignore_errors=True)


def spread(values: list[float]) -> float:
    """(max - min) / median."""
    return round((max(values) - min(values)) / statistics.median(values), 3)


def summarise(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per backbone: each side's rates, median and spread; the paired ratios and their median."""
    out: dict[str, Any] = {}
    for model, sides in runs.items():
        pairs = [(k["train_images_per_s"], s["train_images_per_s"])
                 for k, s in zip(sides["keras"], sides["snugtune"], strict=True)
                 if "error" not in k and "error" not in s and k["train_images_per_s"]]
        if not pairs:
            out[model] = {"error": "no repeat where both sides ran"}
            continue
        keras, snug = [k for k, _ in pairs], [s for _, s in pairs]
        ratios = [round(s / k, 3) for k, s in pairs]
        out[model] = {"keras_images_per_s": keras, "snugtune_images_per_s": snug,
                      "keras_median": round(statistics.median(keras), 1),
                      "snugtune_median": round(statistics.median(snug), 1),
                      "keras_spread": spread(keras), "snugtune_spread": spread(snug),
                      "paired_ratios": ratios, "median_paired_ratio": statistics.median(ratios)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=Path, default=ROOT.parent / "shared" / "anchors")
    ap.add_argument("--anchor-venv", type=Path,
                    default=Path(tempfile.gettempdir()) / "snugtune-keras-anchor")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0, help="Keras's training seconds")
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    python = anchor_python(args.anchor_venv)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="snugtune-keras-") as tmp:
        data = Path(tmp) / "animal"
        subprocess.run([sys.executable, str(args.anchors / "make_animal_folders.py"), str(data)],
                       check=True, capture_output=True)
        for model in args.models:
            runs[model] = {"keras": [], "snugtune": []}
            for r in range(args.repeats):
                sides = ["keras", "snugtune"] if r % 2 == 0 else ["snugtune", "keras"]
                for side in sides:
                    result = (keras_run(python, args.anchors, data, model, args.seconds,
                                        args.res, args.batch) if side == "keras"
                              else snug_run(Path(tmp), data, model, args.res, args.batch))
                    result["repeat"] = r
                    runs[model][side].append(result)
                    print(f"{model} repeat {r} {side}: {result.get('train_images_per_s')}",
                          file=sys.stderr)
    report = {"benchmark": "keras_anchor", "machine": machine(),
              "settings": {"res": args.res, "batch": args.batch, "keras_seconds": args.seconds,
                           "snugtune": snug_config(Path("DATA"), Path("OUT"), "mobilenet_v2",
                                                   args.res, args.batch)},
              "summary": summarise(runs), "runs": runs}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
