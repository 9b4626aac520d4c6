"""Test-time augmentation (TTA): a model's softmax probabilities averaged over fixed views.

Each image is classified in four views, in this order (``VIEWS``):

* ``plain``: the evaluation input, exactly as without TTA (``eval_transform``: square resize
  to the model's size, scale, normalise);
* ``flip``: ``plain`` mirrored left-right;
* ``zoom``: the same evaluation pipeline at about ``1.15 * size`` (``ZOOM``; the margin is
  rounded to an even number of pixels, e.g. 224 -> 258, so the crop is exactly centred),
  centre-cropped to ``size``: the central 87% (1 / 1.15) of each side, enlarged;
* ``zoom+flip``: ``zoom`` mirrored left-right.

The prediction is the unweighted mean of the four softmax vectors (fastai's ``learn.tta``
instead averages random training augmentations and mixes in the plain view with weight
``beta``; fixed views make TTA deterministic and the same in every path). The set of views is
closed under mirroring, so the TTA prediction of a mirrored image is that of the image, whatever
the model.

Both paths decode each image once and build its views with :func:`view_transform` (the plain
and the zoomed input, both by the evaluation pipeline itself), then run the views one after
another: the PyTorch path (``predict``, ``evaluate_run``: ``run.predict_views``) passes each
loaded batch's sources (:func:`view_inputs`) through the model view by view, a flipped view
flipped inside the forward pass per micro-batch (:class:`FlipInput`), so a forward pass holds no
more images than without TTA and the memory budget (``--gpu-memory``) and its halving on
out-of-memory apply as before; the ONNX path (``OnnxModel``) runs :func:`expand_views` of each
batch. JPEGs decode at the draft scale of the model's size, as without TTA, so the ``plain``
view is exactly the input a run without TTA gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as tvf

from snugtune.data import ZOOM, eval_transform, zoom_size
from snugtune.report import ClassificationReport

__all__ = ["VIEWS", "ZOOM", "FlipInput", "TTAReport", "average_views", "expand_views", "flip",
           "view_inputs", "view_transform", "zoom_size"]

#: The views' names, in the order :func:`expand_views` returns them.
VIEWS: tuple[str, ...] = ("plain", "flip", "zoom", "zoom+flip")
#: Each view of ``VIEWS`` as (its source in :class:`ViewTransform`'s output, mirrored or not).
_SOURCES: tuple[tuple[int, bool], ...] = ((0, False), (0, True), (1, False), (1, True))
class ViewTransform:
    """PIL RGB image -> (2, 3, size, size): the ``plain`` input and the ``zoom`` crop.

    Both come from :func:`snugtune.data.eval_transform` (the second at :func:`zoom_size`);
    the flipped views are made from these by :func:`expand_views`. Picklable, for loader
    worker processes.
    """

    def __init__(self, pre: Mapping[str, Any]) -> None:
        self.size = int(pre["size"])
        self.plain = eval_transform(pre)
        self.zoomed = eval_transform({**pre, "size": zoom_size(self.size)})

    def __call__(self, image: PIL.Image.Image) -> Tensor:
        zoom = tvf.center_crop(self.zoomed(image), [self.size, self.size])
        return torch.stack([self.plain(image), zoom])


def view_transform(pre: Mapping[str, Any]) -> ViewTransform:
    """The TTA dataset transform for a model card's ``preprocessing`` (see :class:`ViewTransform`)."""
    return ViewTransform(pre)


def flip(x: Tensor) -> Tensor:
    """Images (..., H, W) mirrored left-right (the width axis reversed)."""
    return x.flip(-1)


def view_inputs(x: Tensor) -> list[tuple[Tensor, bool]]:
    """(B, 2, 3, H, W) from :class:`ViewTransform` -> per view of ``VIEWS``, its unflipped
    (B, 3, H, W) source (a view of ``x``, no copy) and whether the view is that source
    :func:`flip`-ped. The PyTorch path flips inside the forward pass (:class:`FlipInput`), so
    that no flipped copy of a whole batch is ever held."""
    if x.dim() != 5 or x.shape[1] != 2:
        raise ValueError(f"TTA expects (B, 2, 3, H, W) batches from view_transform, got {tuple(x.shape)}")
    return [(x[:, source], flipped) for source, flipped in _SOURCES]


def expand_views(x: Tensor) -> list[Tensor]:
    """(B, 2, 3, H, W) from :class:`ViewTransform` -> one (B, 3, H, W) batch per view of ``VIEWS``."""
    return [flip(src) if flipped else src for src, flipped in view_inputs(x)]


class FlipInput(nn.Module):
    """``model(flip(x))``: a flipped view made per forward pass (per micro-batch, on the device).

    In ``model``'s mode (train/eval), so that an evaluation restoring the wrapper's mode
    restores ``model``'s.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(flip(x))  # type: ignore[no-any-return]


def average_views(probs: Sequence[Tensor] | Tensor) -> Tensor:
    """The TTA prediction: the mean over views of (V, N, C) (or V tensors (N, C)) probabilities."""
    stacked = probs if isinstance(probs, Tensor) else torch.stack(list(probs))
    return stacked.float().mean(0)


@dataclass(frozen=True)
class TTAReport(ClassificationReport):
    """A :class:`ClassificationReport` of TTA predictions (``accuracy`` is with TTA), with the
    report of the ``plain`` view, i.e. without TTA, as ``without_tta``.

    ``to_dict`` adds ``accuracy_without_tta``, ``macro_f1_without_tta``, ``tta_views`` and the
    full ``without_tta`` report to the keys of a plain report.
    """

    without_tta: ClassificationReport | None = None
    views: tuple[str, ...] = field(default=VIEWS)

    @property
    def accuracy_without_tta(self) -> float | None:
        """Accuracy of the ``plain`` view alone (what ``evaluate`` gives without TTA)."""
        return None if self.without_tta is None else self.without_tta.accuracy

    def to_dict(self) -> dict[str, object]:
        """JSON-safe dict; :meth:`from_dict` reads it back."""
        base = self.without_tta
        return {
            **super().to_dict(),
            "accuracy_without_tta": self.accuracy_without_tta,
            "macro_f1_without_tta": None if base is None else base.macro_f1(),
            "tta_views": list(self.views),
            "without_tta": None if base is None else base.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TTAReport:
        """Rebuild a report from :meth:`to_dict` output."""
        report = ClassificationReport.from_dict(data)
        base = data.get("without_tta")
        return cls(accuracy=report.accuracy, per_class=report.per_class,
                   confusion=report.confusion, classes=report.classes,
                   without_tta=None if base is None else ClassificationReport.from_dict(base),  # type: ignore[arg-type]
                   views=tuple(str(v) for v in data.get("tta_views", VIEWS)))  # type: ignore[attr-defined]
