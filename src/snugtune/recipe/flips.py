"""Whether random left-right flips suit this data, decided from its images before training.

Mirroring is free extra data for pictures of things that face either way, and wrong for
digits, text and anything with a handedness. With ``augment.horizontal_flip`` unset (the
default) the recipe looks at each class's average image (32x32 grayscale, up to
``PER_CLASS`` training images each): a class whose objects face either way averages to its
own mirror image; a class with a handedness does not. The asymmetry of a class is
``mean|m - mirror(m)| / mean|m - mean(m)|`` of its average image ``m``; flips are kept when
the median over classes is at most ``MAX_ASYMMETRY``.

Measured (``benchmarks/results/time_budget.json``, each run's ``flip_check``, written by
``benchmarks/time_to_accuracy.py --budgets 2m 5m``): Animal-MNIST's ten classes 0.06-0.22
(median 0.1299), flips kept; the MNIST digit scans' 0.35-0.58 (median 0.4349), flips off.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from snugtune.config import TrainConfig
from snugtune.data import ImageStore, Sample
from snugtune.data.images import decode_image
from snugtune.errors import ImageLoadError

__all__ = ["MAX_ASYMMETRY", "PER_CLASS", "FlipCheck", "check_flips", "with_flips"]

log = logging.getLogger(__name__)

#: The classes' median asymmetry up to which flips are kept.
MAX_ASYMMETRY = 0.25
#: Training images per class averaged.
PER_CLASS = 100
_SIDE = 32


@dataclass(frozen=True)
class FlipCheck:
    """The decision and what it was made from."""

    asymmetry: float  # median over classes
    flips: bool  # keep random horizontal flips
    per_class: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"asymmetry": self.asymmetry, "flips": self.flips, "max_asymmetry": MAX_ASYMMETRY,
                "per_class": dict(self.per_class)}


def check_flips(samples: Sequence[Sample], classes: Sequence[str],
                images: ImageStore | None = None) -> FlipCheck:
    """Decide from the classes' average images (see the module docstring); the images come
    from the decoded-image store ``images`` where it holds them."""
    per_class = {}
    for label, name in enumerate(classes):
        chosen = sorted((s for s in samples if s.label == label), key=lambda s: s.path)[:PER_CLASS]
        stored = images.view(chosen) if images is not None else None
        thumbs = [t for i, s in enumerate(chosen)
                  if (t := _thumbnail(s.path, stored.get(i) if stored is not None else None))
                  is not None]
        if thumbs:
            per_class[name] = _asymmetry(np.mean(thumbs, axis=0))
    median = statistics.median(per_class.values()) if per_class else 0.0
    check = FlipCheck(round(median, 4), median <= MAX_ASYMMETRY,
                      {k: round(v, 4) for k, v in per_class.items()})
    log.info("horizontal flips %s: the classes' average images' median asymmetry %.2f (%s %.2f)",
             "kept" if check.flips else "turned off", median,
             "at most" if check.flips else "over", MAX_ASYMMETRY)
    return check


def with_flips(cfg: TrainConfig, check: FlipCheck | None) -> TrainConfig:
    """``cfg`` with horizontal flips as ``check`` decided, unless the user set them."""
    if check is None or cfg.augment.horizontal_flip is not None:
        return cfg
    return replace(cfg, augment=replace(cfg.augment, horizontal_flip=check.flips))


def _asymmetry(mean: np.ndarray) -> float:
    spread = float(np.abs(mean - mean.mean()).mean())
    return float(np.abs(mean - mean[:, ::-1]).mean()) / max(spread, 1e-6)


def _thumbnail(path: str, image: Image.Image | None = None) -> np.ndarray | None:
    """32x32 grayscale of ``image`` (the stored one), else of the file."""
    if image is None:
        try:
            image = decode_image(path, draft_size=2 * _SIDE).image
        except ImageLoadError:
            return None  # changed since the scan: left out
    small = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)
