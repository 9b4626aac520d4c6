"""The JSON model card saved next to the weights: what a model is and how to feed it.

A card is everything ``predict``/``export`` need besides the weights (backbone name, class
names in label order, preprocessing) plus provenance (metrics, versions, creation time).
Layout, ``format_version`` 1::

    {
      "format": "snugtune-model-card", "format_version": 1,
      "backbone": "tf_efficientnet_lite0", "num_classes": 3, "classes": [...],
      "preprocessing": {"size": 224, "mean": [...], "std": [...], "interpolation": "bilinear"},
      "metrics": {...}, "snugtune_version": "0.1.0", "torch_version": "2.5.1",
      "created_utc": "2025-01-01T12:00:00Z", ...extra keys...
    }
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from snugtune._version import __version__
from snugtune.rundir import RunDir, write_json

__all__ = ["MODEL_CARD_FORMAT_VERSION", "read_model_card", "write_model_card"]

logger = logging.getLogger(__name__)

MODEL_CARD_FORMAT_VERSION = 1
_FORMAT = "snugtune-model-card"
_PREPROCESSING_KEYS = ("size", "mean", "std", "interpolation")
_RESERVED = frozenset(
    {
        "format",
        "format_version",
        "backbone",
        "num_classes",
        "classes",
        "preprocessing",
        "metrics",
        "snugtune_version",
        "torch_version",
        "created_utc",
    }
)


def write_model_card(
    path: Path,
    *,
    backbone: str,
    classes: Sequence[str],
    preprocessing: Mapping[str, object],
    metrics: Mapping[str, object],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write the model card as JSON, atomically.

    Args:
        path: The card file, or an existing directory to write ``model_card.json`` into.
        backbone: Model name as the zoo knows it (e.g. ``"tf_efficientnet_lite0"``).
        classes: Class names in label order.
        preprocessing: At least ``size``, ``mean``, ``std``, ``interpolation``; other keys
            (e.g. ``crop_pct``) are kept. Missing ones are logged as a warning.
        metrics: Headline metrics, e.g. ``{"best_val_accuracy": 0.97}``.
        extra: Further top-level fields (e.g. ``{"weights": "model.safetensors"}``).

    Returns:
        The path written.

    Raises:
        ValueError: ``extra`` tries to replace one of the card's own fields.
    """
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).card
    _check_inputs(preprocessing, extra)
    card: dict[str, object] = {
        "format": _FORMAT,
        "format_version": MODEL_CARD_FORMAT_VERSION,
        "backbone": backbone,
        "num_classes": len(classes),
        "classes": list(classes),
        "preprocessing": dict(preprocessing),
        "metrics": dict(metrics),
        "snugtune_version": __version__,
        "torch_version": _torch_version(),
        "created_utc": _utc_now(),
    }
    card.update(extra or {})
    write_json(path, card)
    logger.info("Wrote model card %s", path)
    return path


def read_model_card(path: Path) -> dict[str, object]:
    """Read a model card written by :func:`write_model_card`.

    Args:
        path: The card file or the run directory holding ``model_card.json``.

    Raises:
        ValueError: the file is not a snugtune model card or is from a newer format.
    """
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).card
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict) or card.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a snugtune model card (no format {_FORMAT!r})")
    version = card.get("format_version")
    if not isinstance(version, int) or version > MODEL_CARD_FORMAT_VERSION:
        raise ValueError(
            f"{path} has model card format_version {version!r}; this snugtune "
            f"({__version__}) reads up to {MODEL_CARD_FORMAT_VERSION}. Upgrade snugtune."
        )
    return card


def _check_inputs(preprocessing: Mapping[str, object], extra: Mapping[str, object] | None) -> None:
    clash = sorted(_RESERVED.intersection(extra or {}))
    if clash:
        raise ValueError(f"model card extra keys {clash} clash with built-in fields; rename them")
    missing = [k for k in _PREPROCESSING_KEYS if k not in preprocessing]
    if missing:
        logger.warning("Model card preprocessing lacks %s; predict may have to guess", missing)


def _utc_now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, e.g. ``2025-01-01T12:00:00Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _torch_version() -> str | None:
    """Installed torch version, read from package metadata (importing torch costs seconds)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
