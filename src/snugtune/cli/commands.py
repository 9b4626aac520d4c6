"""What each command does: turn its flags into settings, call the library, render the result.

One function per command, named as the command, taking the parsed flags and returning the exit
code. The library is imported here (torch with it), not in the parser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

import snugtune.recipe as recipe
from snugtune.cli import render
from snugtune.cli.flags import flag, given, options
from snugtune.cli.parser import (
    DOCTOR_FIELDS,
    INFERENCE_FIELDS,
    PHASE_FIELDS,
    RUN_FIELDS,
    CacheOptions,
    CalibrateOptions,
    DemoOptions,
    ExportOptions,
    LRFindOptions,
    MemoryOptions,
    Output,
    PredictOptions,
    TTAOptions,
)
from snugtune.config import (
    DEFAULT_BATCH_SIZE,
    PhaseConfig,
    TrainConfig,
    build_config,
    default_phases,
    validate,
    validate_phase,
)
from snugtune.data import write_animal_mnist
from snugtune.errors import ConfigError
from snugtune.export import TOLERANCE, export_run
from snugtune.infer import TTAReport, evaluate_run
from snugtune.infer import predict as predict_files
from snugtune.memory import build_model, estimate_memory, probe, resolve_gpu, save_calibration
from snugtune.models.candidates import is_auto
from snugtune.planner import auto_precision
from snugtune.rundir import RunDir
from snugtune.step import plan_device
from snugtune.store import CacheHome, cache_usage, clear_cache
from snugtune.units import format_bytes, parse_bytes

__all__ = ["cache", "calibrate", "demo", "evaluate", "export", "memory", "plan", "predict",
           "train"]


def run_config(args: argparse.Namespace, data: str,
               defaults: Mapping[str, Any] | None = None) -> TrainConfig:
    """The settings of a run from ``--config`` and the flags given (all problems at once);
    ``defaults``: a command's own values for settings whose flags are not given."""
    overrides: dict[str, Any] = {**(defaults or {}), **given(args, RUN_FIELDS), "data": data}
    overrides["augment"] = _augment(args.augment or [])
    phases = {"*": given(args, PHASE_FIELDS)}
    phases.update({ph.name: given(args, PHASE_FIELDS, prefix=ph.name) for ph in default_phases()})
    overrides["phase_overrides"] = {k: v for k, v in phases.items() if v}
    return build_config(args.config, overrides)


def _augment(items: list[str]) -> dict[str, Any] | None:
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
    return out or None


def _budget(args: argparse.Namespace) -> int | None:
    try:
        return parse_bytes(args.gpu_memory) if args.gpu_memory else None
    except ValueError as e:
        raise ConfigError(f"--gpu-memory: {e}") from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _json(args: argparse.Namespace) -> bool:
    return options(args, Output).json


def train(args: argparse.Namespace) -> int:
    if args.resume:
        result = recipe.resume(args.resume)
    else:
        if not args.data:
            raise ConfigError("DATA: give an image folder to train on, or --resume RUN")
        result = recipe.train(run_config(args, args.data))
    if result.rank != 0:
        return 0  # under torchrun only rank 0 reports
    if _json(args):
        _print_json(result.summary.to_dict())
        return 0
    acc = result.best_val_accuracy
    print(f"best val accuracy: {acc:.4f}" if acc is not None else "no validation split")
    print(f"report: {result.report_path}")
    return 0


DEMO_FINETUNE_EPOCHS = 6
"""The demo fine-tunes for 6 epochs unless told otherwise (``--finetune-epochs``, ``--epochs``,
``--time-budget``, a config file). The default schedule for its 8,000 training images is 4,
which ends while the validation accuracy still rises (the best epoch is the last); the demo
is where a new user judges the recipe, so it runs the schedule to where it settles. A time
budget is not the demo's default: on a slow or busy machine the budget would have to refuse
the run (the frozen phase's one pass over the images alone can exceed it)."""


def demo_config(args: argparse.Namespace, data: str) -> TrainConfig:
    """The demo's settings: the flags given, else runs/demo and ``DEMO_FINETUNE_EPOCHS``."""
    cfg = run_config(args, data, defaults={"out": "runs/demo"})
    if cfg.time_budget is not None:
        return cfg
    return replace(cfg, phases=tuple(
        replace(p, epochs=DEMO_FINETUNE_EPOCHS) if p.name == "finetune" and p.epochs is None else p
        for p in cfg.phases))


def demo(args: argparse.Namespace) -> int:
    opts = options(args, DemoOptions)
    data = write_animal_mnist(opts.data_dir, per_class=opts.per_class)
    cfg = demo_config(args, str(data))
    run = RunDir(cfg.out)
    if run.path.exists() and (opts.fresh or not run.summary.exists()):
        shutil.rmtree(run.path)  # a half-finished demo is restarted rather than resumed
    elif run.summary.exists():
        print(f"{run.path} already holds a finished demo run; pass --fresh to train again")
        print(f"report: {run.report_md}")
        return 0
    result = recipe.train(cfg)
    acc = result.best_val_accuracy or 0.0
    print(f"demo: {len(result.classes)} classes, best val accuracy {acc:.4f}, "
          f"{result.summary.total_seconds or 0:.0f} s")
    print(f"report: {result.report_path}")
    return 0


_CPU_HINT = ("planned for the CPU: no GPU is visible here; --gpu NAME plans for a card "
             "(e.g. --gpu t4-16gb), --device cuda for a generic one")


def plan(args: argparse.Namespace) -> int:
    cfg = run_config(args, args.data)
    if is_auto(cfg.model):  # the candidates, each planned and timed
        entrants = recipe.plan_candidates(cfg)
        if _json(args):
            _print_json([asdict(e) for e in entrants])
        else:
            render.candidates(entrants)
        return 0
    result = recipe.plan_folder(cfg)
    if args.out:
        result.save(RunDir(args.out).plan)
    if _json(args):
        _print_json(result.to_dict())
        return 0
    if result.device == "cpu" and args.device is None:
        print(_CPU_HINT)
    render.plan(result)
    return 0


def lr_find(args: argparse.Namespace) -> int:
    opts = options(args, LRFindOptions)
    if opts.steps < 3 or not 0 < opts.start_lr < opts.end_lr:
        raise ConfigError(f"--steps {opts.steps}, --start-lr {opts.start_lr}, --end-lr "
                          f"{opts.end_lr}: need at least 3 steps and 0 < start < end")
    found = recipe.lr_find(run_config(args, args.data), steps=opts.steps, start=opts.start_lr,
                           end=opts.end_lr, plot=Path(opts.plot))
    if _json(args):
        _print_json(found.to_dict())
        return 0
    print(f"{found.phase} ({found.trainable}): the loss falls fastest at lr {found.steep:.2g}; "
          f"a tenth of its minimum's is {found.minimum_tenth:.2g}; configured {found.configured:.2g}"
          f" (plot: {opts.plot})")
    return 0


def doctor(args: argparse.Namespace) -> int:
    cfg = TrainConfig(data=args.data, **given(args, DOCTOR_FIELDS))
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    scan, found = recipe.diagnose_folder(cfg)
    if _json(args):
        _print_json({"doctor": found.to_dict(), "skipped": [vars(i) for i in scan.skipped],
                     "converted": [vars(i) for i in scan.converted]})
        return 0
    render.doctor(found, scan)
    return 0


def cache(args: argparse.Namespace) -> int:
    home = CacheHome.at(args.cache_dir)
    if options(args, CacheOptions).clear:
        freed = clear_cache(home)
        if _json(args):
            _print_json({"path": str(home.path), "cleared": True, "freed_bytes": freed})
        else:
            print(f"cleared {home.path}: {format_bytes(freed)} freed")
        return 0
    usage = cache_usage(home)
    if _json(args):
        _print_json(usage.to_dict())
        return 0
    render.cache(usage)
    return 0


def memory(args: argparse.Namespace) -> int:
    gpu_name = args.gpu or "auto"
    cfg = TrainConfig(data="-", **given(args, ("batch_size", "resolution", "precision", "device")))
    phase = PhaseConfig(name="memory", epochs=1, lr=1e-3,
                        **{"trainable": "all", **given(args, ("trainable", "optimizer", "weight_decay"))})
    opts = options(args, MemoryOptions)
    problems = validate(cfg) + validate_phase(phase, flag)
    if opts.classes < 1:
        problems.append(f"--classes: {opts.classes} must be an integer >= 1")
    if problems:
        raise ConfigError(problems)
    device = plan_device(cfg.device, gpu_name)
    gpu, _ = resolve_gpu(gpu_name, device)
    model = build_model(args.model, opts.classes)
    report = estimate_memory(
        args.model, batch=cfg.batch_size, res=cfg.resolution or model.preprocessing.size,
        classes=opts.classes,
        precision=cfg.precision if cfg.precision != "auto" else auto_precision(device, gpu),
        optimizer=phase.optimizer, trainable=phase.trainable, checkpointing=opts.checkpointing,
        channels_last=opts.channels_last, device=device, gpu=gpu,
        weight_decay=phase.weight_decay)
    if _json(args):
        _print_json(report.to_dict())
        return 0
    if device == "cpu" and args.device is None:
        print(_CPU_HINT)
    render.memory(report)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    report = evaluate_run(args.run, args.data, **_inference(args), workers=args.workers,
                          tta=options(args, TTAOptions).tta)
    if _json(args):
        _print_json(report.to_dict())
        return 0
    render.evaluation(report)
    if isinstance(report, TTAReport) and report.without_tta is not None:
        plain = report.without_tta
        print(f"with test-time augmentation ({len(report.views)} views: {', '.join(report.views)}); "
              f"without it: accuracy {plain.accuracy:.4f} ({report.accuracy - plain.accuracy:+.4f} "
              f"with TTA), macro F1 {plain.macro_f1():.4f}")
    return 0


def predict(args: argparse.Namespace) -> int:
    preds = predict_files(args.run, args.files, top_k=options(args, PredictOptions).top_k,
                          **_inference(args), tta=options(args, TTAOptions).tta)
    if _json(args):
        _print_json([p.to_dict() for p in preds])
        return 0
    for p in preds:
        tops = ", ".join(f"{lab} {prob:.3f}" for lab, prob in zip(p.labels, p.probabilities, strict=True))
        print(f"{p.path}: {tops}")
    return 0


def _inference(args: argparse.Namespace) -> dict[str, Any]:
    """``device``, ``batch_size`` and ``gpu_memory`` of evaluate/predict, validated."""
    values = given(args, INFERENCE_FIELDS)
    probe = replace(TrainConfig(data="-"), **{k: v for k, v in values.items() if k != "gpu_memory"})
    problems = [p for p in validate(probe) if p.startswith(("--device", "--batch-size"))]
    if problems:
        raise ConfigError(problems)
    return {"device": probe.device, "batch_size": values.get("batch_size", DEFAULT_BATCH_SIZE),
            "gpu_memory": _budget(args)}


def export(args: argparse.Namespace) -> int:
    opts = options(args, ExportOptions)
    result = export_run(args.run, opts.format, opts.output)
    if _json(args):
        _print_json(result.to_dict())
        return 0
    print(f"{result.path} ({result.format})")
    print(f"model card: {result.card_path}")
    print(f"checked on {result.checked_on} {result.inputs_source} images: max |logit difference| "
          f"{result.max_abs_diff:.2g} (tolerance {TOLERANCE:g})", file=sys.stdout)
    return 0


def calibrate(args: argparse.Namespace) -> int:
    info = probe()
    name = options(args, CalibrateOptions).name or _profile_name(info.name, info.total_bytes)
    path = save_calibration(name, info)
    if _json(args):
        _print_json({"name": name, "file": str(path), "device": info.to_dict()})
        return 0
    render.calibration(name, info)
    print(f"saved: {path} (plan for this card anywhere with --gpu {name})")
    return 0


_LABELS_GB = (2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 141, 192)


def _profile_name(device_name: str, total_bytes: int) -> str:
    """``NVIDIA GeForce RTX 3060`` reporting 11.76 GiB -> ``rtx3060-12gb`` (the smallest card
    label at least the reported size: cards report less than their label)."""
    skip = {"nvidia", "geforce", "tesla", "pcie", "sxm", "sxm4", "sxm5", "laptop", "gpu"}
    words = [w for w in device_name.lower().replace("-", " ").split()
             if w not in skip and not w.endswith("gb") and not w.startswith("hbm")]
    gib = total_bytes / 2**30
    label = next((g for g in _LABELS_GB if g >= gib - 0.01), round(gib))
    return "".join(words) + f"-{label}gb"
