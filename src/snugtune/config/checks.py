"""Validation of a built ``TrainConfig``: every problem at once, each naming the fix."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from snugtune.config.settings import (
    CLASS_WEIGHTS,
    DEVICES,
    FILL_MODES,
    LABEL_FORMATS,
    MONITORS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    AugmentConfig,
    PhaseConfig,
    TrainConfig,
    parse_trainable,
)

__all__ = ["flag_name", "validate", "validate_phase"]


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _check(problems: list[str], ok: bool, msg: str) -> None:
    if not ok:
        problems.append(msg)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML `yes` is True, an int


def _bool_problems(obj: Any, names: tuple[str, ...], key: Callable[[str], str]) -> list[str]:
    return [f"{key(n)}: {getattr(obj, n)!r} must be true or false"
            for n in names if not isinstance(getattr(obj, n), bool)]


#: The largest values taken as meant (anything larger is a typo or an overflow): a memory
#: budget (1 PiB), a time budget (a year), epochs and batch sizes, a seed (numpy's and
#: torch's range), warm-up epochs, loader processes, a head layer's width.
MAX_BYTES = 2**50
MAX_SECONDS = 365 * 24 * 3600.0
MAX_EPOCHS = 100_000
MAX_BATCH = 2**20
MAX_SEED = 2**63 - 1
MAX_WORKERS = 1024
MAX_HIDDEN = 2**20


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _texts(cfg: TrainConfig) -> list[str]:
    """The settings that are names or paths: text, not numbers or booleans."""
    fixes = {"data": "give the image folder's path", "out": "give the run folder's path",
             "model": "give a backbone name, e.g. tf_efficientnet_lite0, or auto",
             "weights": "give auto, none or a weights file's path",
             "gpu": "give auto or a profile name, e.g. t4-16gb"}
    return [f"{flag_name(n)}: {getattr(cfg, n)!r} must be text; {fix}"
            for n, fix in fixes.items() if not _text(getattr(cfg, n))]


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem of ``cfg``, each naming the flag or key, the bad value and the fix."""
    p: list[str] = _texts(cfg)
    _check(p, _int(cfg.batch_size) and 1 <= cfg.batch_size <= MAX_BATCH,
           f"--batch-size: {cfg.batch_size!r} must be an integer in [1, {MAX_BATCH}]; use e.g. 32")
    _check(p, cfg.gpu_memory is None or (_int(cfg.gpu_memory) and 1 <= cfg.gpu_memory <= MAX_BYTES),
           f"--gpu-memory: {cfg.gpu_memory!r} must be a size from 1 B to 1 PiB; use e.g. 4GiB")
    _check(p, cfg.time_budget is None or (_num(cfg.time_budget) and 0 < cfg.time_budget <= MAX_SECONDS),
           f"--time-budget: {cfg.time_budget!r} must be a duration up to a year; use e.g. 10m")
    _check(p, _num(cfg.val_split) and 0 <= cfg.val_split < 1,
           f"--val-split: {cfg.val_split!r} must be in [0, 1); use e.g. 0.2")
    _check(p, cfg.resolution is None or (_int(cfg.resolution) and 16 <= cfg.resolution <= 2048),
           f"--resolution: {cfg.resolution!r} must be an integer in [16, 2048]; use e.g. 224")
    _check(p, _int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED,
           f"--seed: {cfg.seed!r} must be an integer in [0, 2**63 - 1]; use e.g. 0")
    _check(p, cfg.workers is None or (_int(cfg.workers) and 0 <= cfg.workers <= MAX_WORKERS),
           f"--workers: {cfg.workers!r} must be an integer in [0, {MAX_WORKERS}] or omitted")
    _check(p, cfg.head_hidden is None or (_int(cfg.head_hidden) and 0 < cfg.head_hidden <= MAX_HIDDEN),
           f"--head-hidden: {cfg.head_hidden!r} must be an integer in [1, {MAX_HIDDEN}] or omitted")
    _check(p, _num(cfg.head_dropout) and 0 <= cfg.head_dropout < 1,
           f"--head-dropout: {cfg.head_dropout!r} must be in [0, 1)")
    for name, allowed in (("class_weights", CLASS_WEIGHTS), ("device", DEVICES), ("precision", PRECISIONS)):
        v = getattr(cfg, name)
        _check(p, v in allowed, f"{flag_name(name)}: {v!r} is not one of {', '.join(allowed)}")
    _check(p, cfg.micro_batch is None or (_int(cfg.micro_batch) and 1 <= cfg.micro_batch <= MAX_BATCH),
           f"--micro-batch: {cfg.micro_batch!r} must be an integer in [1, {MAX_BATCH}] or omitted")
    _check(p, bool(cfg.phases), "phases: [] is empty; give at least one phase, e.g. "
           "[{name: head, epochs: 5, lr: 1.0e-3}]")
    names = [ph.name for ph in cfg.phases]
    _check(p, len(set(map(str, names))) == len(names),
           f"phases: names must be unique, got {names}; rename one")
    p.extend(_bool_problems(cfg, ("deterministic", "feature_cache", "progress", "pre_logits",
                                  "group_split"), flag_name))
    _check(p, cfg.cache_dir is None or (isinstance(cfg.cache_dir, str) and cfg.cache_dir != ""),
           f"--cache-dir: {cfg.cache_dir!r} must be a folder path or omitted")
    p.extend(_labels_problems(cfg))
    p.extend(_validate_augment(cfg.augment))
    for ph in cfg.phases:
        p.extend(validate_phase(ph))
    return p


def _labels_problems(cfg: TrainConfig) -> list[str]:
    """``--labels`` names a CSV, TSV or JSONL file (the format is read from the extension);
    its two columns are names."""
    p: list[str] = []
    labels = cfg.labels
    kinds = ", ".join(f".{k}" for k in LABEL_FORMATS[:-1]) + f" or .{LABEL_FORMATS[-1]}"
    if labels is not None and not _text(labels):
        p.append(f"--labels: {labels!r} must be a labels file's path ({kinds}) or omitted")
    elif labels is not None and os.path.splitext(labels)[1][1:].lower() not in LABEL_FORMATS:
        p.append(f"--labels: {labels!r} is not a {kinds} file (the format is read from the "
                 "extension); save it as CSV, TSV or JSONL, or rename it if it is one")
    for name in ("path_column", "label_column"):
        _check(p, _text(getattr(cfg, name)),
               f"{flag_name(name)}: {getattr(cfg, name)!r} must be a column name of the labels "
               "file, e.g. " + ("file_name or id" if name == "path_column" else "label"))
    return p


def _validate_augment(a: AugmentConfig) -> list[str]:
    p: list[str] = []
    pre = "augment."
    _check(p, a.rescale is None or (_num(a.rescale) and abs(a.rescale * 255 - 1) < 1e-3),
           f"{pre}rescale: {a.rescale!r} unsupported; inputs are scaled to [0, 1] and normalised "
           "with the backbone's mean/std, so leave it unset (or 1/255)")
    for name in ("rotation_range", "shear_range"):
        v = getattr(a, name)
        _check(p, _num(v) and 0 <= v <= 180, f"{pre}{name}: {v!r} must be degrees in [0, 180]")
    for name in ("width_shift_range", "height_shift_range", "zoom_range", "color_jitter",
                 "random_erasing"):
        v = getattr(a, name)
        _check(p, _num(v) and 0 <= v < 1, f"{pre}{name}: {v!r} must be in [0, 1)")
    for name in ("mixup_alpha", "cutmix_alpha"):
        v = getattr(a, name)
        _check(p, _num(v) and 0 <= v <= 100,
               f"{pre}{name}: {v!r} must be in [0, 100] (0 turns it off); use e.g. 0.2")
    br = a.brightness_range
    _check(p, br is None or (isinstance(br, tuple) and len(br) == 2 and all(_num(x) for x in br)
                             and 0 < br[0] <= br[1]),
           f"{pre}brightness_range: {br!r} must be two numbers 0 < lo <= hi, e.g. [0.8, 1.2]")
    _check(p, a.fill_mode in FILL_MODES,
           f"{pre}fill_mode: {a.fill_mode!r} is not one of {', '.join(FILL_MODES)}")
    _check(p, _num(a.cval) and 0 <= a.cval <= 255,
           f"{pre}cval: {a.cval!r} must be a pixel value in [0, 255] (the fill for "
           "fill_mode=constant)")
    p.extend(_bool_problems(a, ("vertical_flip",), lambda n: pre + n))
    _check(p, a.horizontal_flip is None or isinstance(a.horizontal_flip, bool),
           f"{pre}horizontal_flip: {a.horizontal_flip!r} must be true or false (or null: "
           "decided on the validation split)")
    return p


def validate_phase(ph: PhaseConfig, key: Callable[[str], str] | None = None) -> list[str]:
    """Every problem of one phase's settings, each named by ``key(field)`` (by default the YAML
    key ``phases.NAME.field``; a command with flags for them names the flags)."""
    key = key or (lambda n: f"phases.{ph.name}.{n}")
    p: list[str] = []
    _check(p, _text(ph.name), f"{key('name')}: {ph.name!r} must be text, e.g. head or finetune")
    _check(p, ph.epochs is None or (_int(ph.epochs) and 0 <= ph.epochs <= MAX_EPOCHS),
           f"{key('epochs')}: {ph.epochs!r} must be an integer in [0, {MAX_EPOCHS}] or null "
           "(scaled to the data)")
    _check(p, _num(ph.lr) and 0 < ph.lr < 10, f"{key('lr')}: {ph.lr!r} must be in (0, 10); use e.g. 1e-3")
    try:
        parse_trainable(ph.trainable)
    except ValueError as e:
        p.append(f"{key('trainable')}: {e}")
    for name in ("backbone_lr_ratio", "layer_decay"):
        v = getattr(ph, name)
        _check(p, _num(v) and 0 < v <= 1, f"{key(name)}: {v!r} must be in (0, 1]")
    _check(p, _num(ph.weight_decay) and 0 <= ph.weight_decay <= 1,
           f"{key('weight_decay')}: {ph.weight_decay!r} must be in [0, 1]; use e.g. 1e-4")
    _check(p, _num(ph.label_smoothing) and 0 <= ph.label_smoothing < 1,
           f"{key('label_smoothing')}: {ph.label_smoothing!r} must be in [0, 1)")
    _check(p, _num(ph.warmup_epochs) and 0 <= ph.warmup_epochs <= MAX_EPOCHS,
           f"{key('warmup_epochs')}: {ph.warmup_epochs!r} must be in [0, {MAX_EPOCHS}]; use e.g. 0.5")
    _check(p, ph.optimizer in OPTIMIZERS, f"{key('optimizer')}: {ph.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    _check(p, ph.schedule in SCHEDULES, f"{key('schedule')}: {ph.schedule!r} is not one of {', '.join(SCHEDULES)}")
    _check(p, ph.monitor in MONITORS, f"{key('monitor')}: {ph.monitor!r} is not one of {', '.join(MONITORS)}")
    _check(p, ph.patience is None or (_int(ph.patience) and 1 <= ph.patience <= MAX_EPOCHS),
           f"{key('patience')}: {ph.patience!r} must be an integer in [1, {MAX_EPOCHS}] or null "
           "(no early stopping)")
    _check(p, _num(ph.momentum) and 0 <= ph.momentum < 1,
           f"{key('momentum')}: {ph.momentum!r} must be a number in [0, 1), e.g. 0.9")
    p.extend(_bool_problems(ph, ("restore_best", "train_bn"), key))
    return p
