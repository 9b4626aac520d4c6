"""snugtune: fine-tune pretrained image classifiers within the memory you have.

The Python API mirrors the CLI and returns dataclasses::

    import snugtune
    cfg = snugtune.build_config(overrides={"data": "data/", "out": "runs/flowers"})
    result = snugtune.train(cfg)            # TrainResult
    report = snugtune.evaluate("runs/flowers")   # ClassificationReport on the held-out split
    preds = snugtune.predict("runs/flowers", ["img.jpg"], top_k=3)
    plan = snugtune.plan(snugtune.build_config(overrides={"data": "data/", "gpu_memory": "4GiB"}))
    mem = snugtune.estimate_memory("vgg16", batch=32, res=224, precision="fp16")  # MemoryReport
    exported = snugtune.export_run("runs/flowers", "onnx")   # ExportResult (checked)
"""

from __future__ import annotations

__version__ = "0.1.0"

from snugtune.config import AugmentConfig, PhaseConfig, TrainConfig, build_config  # noqa: E402
from snugtune.errors import (  # noqa: E402
    BudgetError,
    CheckpointError,
    ConfigError,
    DataError,
    SnugtuneError,
    WeightsError,
)
from snugtune.export import ExportResult, export_run  # noqa: E402
from snugtune.memory import MemoryReport, estimate_memory  # noqa: E402
from snugtune.plan import PhasePlan, Plan  # noqa: E402
from snugtune.train import (  # noqa: E402
    Prediction,
    TrainResult,
    load_run,
    predict,
    resume,
)
from snugtune.train import evaluate_run as evaluate  # noqa: E402
from snugtune.train import train as _train_fn  # noqa: E402
from snugtune.train.planning import plan_folder as _plan_fn  # noqa: E402

# ``snugtune.train`` and ``snugtune.plan`` are the functions users call; the sub-packages of
# the same names stay importable as ``snugtune.train.<module>`` through sys.modules.
train = _train_fn
plan = _plan_fn

__all__ = [
    "AugmentConfig",
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ExportResult",
    "MemoryReport",
    "PhasePlan",
    "Plan",
    "PhaseConfig",
    "Prediction",
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
