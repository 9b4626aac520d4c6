"""snugtune: fine-tune pretrained image classifiers within the memory you have.

The Python API mirrors the CLI and returns dataclasses::

    import snugtune
    cfg = snugtune.build_config(overrides={"data": "data/", "out": "runs/flowers"})
    result = snugtune.train(cfg)                 # TrainResult (its summary: RunSummary)
    report = snugtune.evaluate("runs/flowers")   # ClassificationReport on the held-out split
    preds = snugtune.predict("runs/flowers", ["img.jpg"], top_k=3)
    plan = snugtune.plan(snugtune.build_config(overrides={"data": "data/", "gpu_memory": "4GiB"}))
    mem = snugtune.estimate_memory("vgg16", batch=32, res=224, precision="fp16")  # MemoryReport
    exported = snugtune.export_run("runs/flowers", "onnx")   # ExportResult (checked)

Names are imported on first use (PEP 562), so ``import snugtune`` and ``snugtune --help`` do
not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from snugtune._version import __version__

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    "AugmentConfig": ("snugtune.config", "AugmentConfig"),
    "PhaseConfig": ("snugtune.config", "PhaseConfig"),
    "TrainConfig": ("snugtune.config", "TrainConfig"),
    "build_config": ("snugtune.config", "build_config"),
    "BudgetError": ("snugtune.errors", "BudgetError"),
    "CheckpointError": ("snugtune.errors", "CheckpointError"),
    "ConfigError": ("snugtune.errors", "ConfigError"),
    "DataError": ("snugtune.errors", "DataError"),
    "ExportError": ("snugtune.errors", "ExportError"),
    "SnugtuneError": ("snugtune.errors", "SnugtuneError"),
    "WeightsError": ("snugtune.errors", "WeightsError"),
    "PhaseResult": ("snugtune.results", "PhaseResult"),
    "RunSummary": ("snugtune.results", "RunSummary"),
    "RunDir": ("snugtune.rundir", "RunDir"),
    "MemoryReport": ("snugtune.memory", "MemoryReport"),
    "estimate_memory": ("snugtune.memory", "estimate_memory"),
    "PhasePlan": ("snugtune.planner", "PhasePlan"),
    "Plan": ("snugtune.planner", "Plan"),
    "Prediction": ("snugtune.infer", "Prediction"),
    "evaluate": ("snugtune.infer", "evaluate_run"),
    "load_run": ("snugtune.infer", "load_run"),
    "predict": ("snugtune.infer", "predict"),
    "ExportResult": ("snugtune.export", "ExportResult"),
    "export_run": ("snugtune.export", "export_run"),
    "TrainResult": ("snugtune.recipe", "TrainResult"),
    "plan": ("snugtune.recipe", "plan_folder"),
    "resume": ("snugtune.recipe", "resume"),
    "train": ("snugtune.recipe", "train"),
}

__all__ = [
    "AugmentConfig",
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ExportError",
    "ExportResult",
    "MemoryReport",
    "PhaseConfig",
    "PhasePlan",
    "PhaseResult",
    "Plan",
    "Prediction",
    "RunDir",
    "RunSummary",
    "SnugtuneError",
    "TrainConfig",
    "TrainResult",
    "WeightsError",
    "__version__",
    "build_config",
    "estimate_memory",
    "evaluate",
    "export_run",
    "load_run",
    "plan",
    "predict",
    "resume",
    "train",
]

if TYPE_CHECKING:
    from snugtune.config import AugmentConfig, PhaseConfig, TrainConfig, build_config
    from snugtune.errors import (
        BudgetError,
        CheckpointError,
        ConfigError,
        DataError,
        ExportError,
        SnugtuneError,
        WeightsError,
    )
    from snugtune.export import ExportResult, export_run
    from snugtune.infer import Prediction, load_run, predict
    from snugtune.infer import evaluate_run as evaluate
    from snugtune.memory import MemoryReport, estimate_memory
    from snugtune.planner import PhasePlan, Plan
    from snugtune.recipe import TrainResult, resume, train
    from snugtune.recipe import plan_folder as plan
    from snugtune.results import PhaseResult, RunSummary
    from snugtune.rundir import RunDir


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'snugtune' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
