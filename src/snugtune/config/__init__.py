"""Every setting of a run (:mod:`.settings`), and how a run's configuration is built from
defaults, a YAML file and flags, all problems reported at once (:mod:`.load`, :mod:`.checks`).
"""

from snugtune.config.checks import flag_name, validate, validate_phase
from snugtune.config.load import build_config
from snugtune.config.settings import (
    CLASS_WEIGHTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    DEFAULT_OUT,
    DEVICES,
    EXPORT_FORMATS,
    FILL_MODES,
    LABEL_FORMATS,
    MONITORS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    AugmentConfig,
    PhaseConfig,
    TrainConfig,
    config_to_dict,
    default_phases,
    parse_trainable,
)

__all__ = [
    "CLASS_WEIGHTS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODEL",
    "DEFAULT_OUT",
    "DEVICES",
    "EXPORT_FORMATS",
    "FILL_MODES",
    "LABEL_FORMATS",
    "MONITORS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "AugmentConfig",
    "PhaseConfig",
    "TrainConfig",
    "build_config",
    "config_to_dict",
    "default_phases",
    "flag_name",
    "parse_trainable",
    "validate",
    "validate_phase",
]
