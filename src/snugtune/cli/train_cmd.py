"""``snugtune train DATA --out RUN [flags]`` and ``snugtune train --resume RUN``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from snugtune.config import build_config
from snugtune.errors import ConfigError

__all__ = ["add_config_flags", "config_from_args", "register"]


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``demo``; each maps to a ``TrainConfig`` field."""
    g = p.add_argument_group("model and data")
    g.add_argument("--config", metavar="YAML", help="settings file; flags override it")
    g.add_argument("--model", help="timm or torchvision name (default tf_efficientnet_lite0)")
    g.add_argument("--weights", help="auto (default), none (from scratch), or a weights FILE")
    g.add_argument("--resolution", "--res", type=int, dest="resolution",
                   help="input size in px (default: from the backbone and the images)")
    g.add_argument("--batch-size", type=int, help="effective batch size (default 32)")
    g.add_argument("--val-split", type=float, help="held-out fraction (default 0.2)")
    g.add_argument("--seed", type=int)
    g.add_argument("--workers", type=int, help="loader processes (default: sized to the machine)")
    g.add_argument("--head-hidden", type=int, help="width of an extra dense layer in the head")
    g.add_argument("--head-dropout", type=float)
    g.add_argument("--class-weights", choices=["auto", "balanced", "none"])
    g.add_argument("--augment", action="append", metavar="KEY=VALUE", default=[],
                   help="Keras-style augmentation, e.g. rotation_range=20 horizontal_flip=false")
    r = p.add_argument_group("recipe (applies to every phase unless prefixed)")
    r.add_argument("--epochs", type=int, help="epochs of every phase")
    r.add_argument("--head-epochs", type=int, help="epochs of the frozen-backbone phase")
    r.add_argument("--finetune-epochs", type=int, help="epochs of the fine-tuning phase")
    r.add_argument("--lr", type=float, help="learning rate of the head (every phase)")
    r.add_argument("--unfreeze", type=str, metavar="N|all",
                   help="backbone blocks unfrozen in the finetune phase (default 2)")
    r.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    r.add_argument("--label-smoothing", type=float)
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    m = p.add_argument_group("memory and device")
    m.add_argument("--device", choices=["auto", "cpu", "cuda"])
    m.add_argument("--gpu", metavar="PROFILE", help="GPU profile for planning (e.g. t4-16gb)")
    m.add_argument("--gpu-memory", metavar="SIZE", help="memory budget, e.g. 4GiB")
    m.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    m.add_argument("--micro-batch", type=int, help="force a micro-batch (no planning)")
    m.add_argument("--deterministic", action="store_true", default=None)
    m.add_argument("--no-feature-cache", dest="feature_cache", action="store_false", default=None)
    m.add_argument("--cache-views", type=int, help="augmented views cached per image")
    m.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def _augment(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bad = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            bad.append(f"--augment: {item!r} must be KEY=VALUE, e.g. rotation_range=20")
            continue
        out[key.strip()] = yaml.safe_load(value)  # numbers, booleans, lists; never code
    if bad:
        raise ConfigError(bad)
    return out


def _phase_flags(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    every = {"epochs": a.epochs, "lr": a.lr, "patience": a.patience,
             "label_smoothing": a.label_smoothing, "weight_decay": a.weight_decay,
             "optimizer": a.optimizer}
    unfreeze = None
    if a.unfreeze is not None:
        unfreeze = "all" if a.unfreeze == "all" else f"top:{a.unfreeze}"
    flags = {"*": every, "head": {"epochs": a.head_epochs},
             "finetune": {"epochs": a.finetune_epochs, "trainable": unfreeze}}
    return {k: {f: v for f, v in d.items() if v is not None} for k, d in flags.items()
            if any(v is not None for v in d.values())}


def config_from_args(a: argparse.Namespace, data: str, out: str) -> Any:
    """Build the validated ``TrainConfig`` from parsed flags (all errors at once)."""
    names = ("model", "weights", "resolution", "batch_size", "val_split", "seed", "workers",
             "head_hidden", "head_dropout", "class_weights", "device", "gpu", "gpu_memory",
             "precision", "micro_batch", "deterministic", "feature_cache", "cache_views", "progress")
    overrides: dict[str, Any] = {n: getattr(a, n) for n in names}
    overrides.update(data=data, out=out, augment=_augment(a.augment) or None,
                     phase_overrides=_phase_flags(a))
    return build_config(a.config, overrides)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained backbone on a class-folder tree",
                       description="Train a classifier on DATA (a folder of class sub-folders).")
    p.add_argument("data", nargs="?", help="image folder: DATA/<class>/*.jpg")
    p.add_argument("--out", help="run folder (default runs/latest)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_flags(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.train import resume, train

    if a.resume:
        result = resume(a.resume)
    else:
        if not a.data:
            raise ConfigError("DATA: give an image folder to train on, or --resume RUN")
        result = train(config_from_args(a, a.data, a.out or "runs/latest"))
    if getattr(result, "rank", 0) != 0:
        return 0  # under torchrun only rank 0 reports
    if a.json:
        print(json.dumps(result.summary, indent=2, default=str))
        return 0
    acc = result.best_val_accuracy
    print(f"best val accuracy: {acc:.4f}" if acc is not None else "no validation split", file=sys.stdout)
    print(f"report: {result.report_path}")
    return 0
