"""snugtune: fine-tune pretrained image classifiers within the memory you have.

The Python API mirrors the CLI and returns dataclasses::

    import snugtune
    cfg = snugtune.build_config(overrides={"data": "data/", "out": "runs/flowers"})
    result = snugtune.train(cfg)            # TrainResult
    report = snugtune.evaluate("runs/flowers")   # ClassificationReport on the held-out split
    preds = snugtune.predict("runs/flowers", ["img.jpg"], top_k=3)
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
from snugtune.train import (  # noqa: E402
    Prediction,
    TrainResult,
    load_run,
    predict,
    resume,
)
from snugtune.train import evaluate_run as evaluate  # noqa: E402
from snugtune.train import train as _train_fn  # noqa: E402

# ``snugtune.train`` is the function (the API users call); the sub-package stays importable
# as ``snugtune.train.<module>`` through sys.modules.
train = _train_fn

__all__ = [
    "AugmentConfig",
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "PhaseConfig",
    "Prediction",
    "SnugtuneError",
    "TrainConfig",
    "TrainResult",
    "WeightsError",
    "__version__",
    "build_config",
    "evaluate",
    "load_run",
    "predict",
    "resume",
    "train",
]
