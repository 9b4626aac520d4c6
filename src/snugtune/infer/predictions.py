"""Predictions as data, and the image files a list of paths and folders stands for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snugtune.data import IMAGE_EXTENSIONS
from snugtune.errors import DataError

__all__ = ["Prediction", "image_files", "top_k_predictions"]


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image."""

    path: str
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "top": [{"label": lab, "probability": p}
                                           for lab, p in zip(self.labels, self.probabilities, strict=True)]}


def top_k_predictions(paths: Sequence[str], probs: Tensor, classes: Sequence[str],
                      k: int) -> list[Prediction]:
    """One ``Prediction`` per row of ``probs`` (N, C): its ``k`` most probable classes."""
    top = torch.as_tensor(probs).topk(max(1, min(k, len(classes))), dim=-1)
    return [Prediction(str(p), tuple(classes[i] for i in idx), tuple(float(v) for v in val))
            for p, idx, val in zip(paths, top.indices.tolist(), top.values.tolist(), strict=True)]


def image_files(paths: Sequence[str | Path]) -> list[str]:
    """``paths`` with each folder replaced by the image files under it (sorted, recursive,
    hidden entries skipped).

    Raises:
        DataError: a path does not exist, or a folder holds no image file.
    """
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise DataError(f"{str(p)!r} holds no image files (.jpg, .png, .webp, ...)")
            out += found
        elif not p.exists():
            raise DataError(f"{str(p)!r} does not exist; pass image files or folders of them")
        else:
            out.append(str(p))
    return out
