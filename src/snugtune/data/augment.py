"""Keras ``ImageDataGenerator``-style augmentation settings as torchvision ``transforms.v2``.

Eval pipeline: ``ToImage -> Resize((size, size)) -> ToDtype(float32, scale) -> Normalize``.
The resize is to a *square*, ignoring aspect ratio (as Keras' ``image_dataset_from_directory``
does by default) rather than resize-shorter-side + center-crop (timm's eval default): class
folders from the wild hold objects anywhere in the frame, and a crop can cut off what makes
the class; the mild stretch of typical 4:3 photos costs little accuracy after fine-tuning.
The train pipeline resizes the same way, so train and eval see the same geometry.

Train pipeline, after the resize and the scaling to float [0, 1]:

==========================  =================================================================
Keras setting               transform
==========================  =================================================================
rotation_range=d            ``KerasAffine``: one ``grid_sample`` warp for rotation (degrees),
width/height_shift_range    shifts (fractions of the side), x-shear (degrees) and zoom
shear_range=d               (``1 +- z``, isotropic: Keras draws x and y zoom independently;
zoom_range=z                one factor keeps shapes undistorted), as Keras composes them
fill_mode, cval             points outside the image: ``nearest`` (edge), ``reflect``
                            (``abcd|dcba``, Keras/scipy's meaning), ``wrap`` (``abcd|abcd``)
                            or ``constant`` (``cval``, pixel units 0..255 as Keras)
horizontal/vertical_flip    RandomHorizontalFlip / RandomVerticalFlip (p=0.5)
brightness_range=(lo, hi)   ColorJitter(brightness=(lo, hi)): multiply by U(lo, hi), as Keras
color_jitter=s              ColorJitter(brightness=s, contrast=s, saturation=s) (timm's
                            meaning of a scalar color_jitter; no hue)
random_erasing=p            RandomErasing(p) after Normalize, erasing to 0 (the mean colour)
rescale                     ignored: inputs are always scaled to [0, 1] then normalised
==========================  =================================================================

One warp instead of torchvision's pad + ``RandomAffine`` + crop (which the fill modes other
than ``constant`` would need): it was the faster of the two per 96 px image (28 px source) on
one core of the 2-core CPU, where loader workers share the cores with the training step, in an
earlier timing that no committed JSON records.
MixUp/CutMix act on batches: see ``batch_mixer``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import PIL.Image
import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from snugtune.config import AugmentConfig
from snugtune.errors import ConfigError

__all__ = ["batch_mixer", "build_transforms", "eval_transform"]

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}

Transform = Callable[[PIL.Image.Image], Tensor]


def build_transforms(
    aug: AugmentConfig,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    interpolation: str = "bilinear",
) -> Transform:
    """Build the per-image pipeline: PIL RGB image -> normalised float32 tensor (3, size, size).

    Args:
        aug: augmentation settings (ignored when ``train`` is False).
        size: output side in pixels (square).
        mean: per-channel mean of the backbone's preprocessing, in [0, 1] units.
        std: per-channel std, in [0, 1] units.
        train: add the random augmentations.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (the backbone's).

    Returns:
        A picklable ``v2.Compose`` (usable in DataLoader worker processes).
    """
    if interpolation not in _INTERPOLATIONS:
        raise ConfigError(
            f"interpolation: {interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}"
        )
    interp = _INTERPOLATIONS[interpolation]
    steps: list[Any] = [v2.ToImage(), v2.Resize((size, size), interpolation=interp, antialias=True),
                        v2.ToDtype(torch.float32, scale=True)]
    if train:
        steps += _geometry(aug, interp) + _flips(aug) + _colour(aug)
    steps.append(v2.Normalize(list(mean), list(std)))
    if train and aug.random_erasing > 0:
        steps.append(v2.RandomErasing(p=aug.random_erasing, value=0.0))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def eval_transform(pre: Mapping[str, Any]) -> Transform:
    """The evaluation pipeline from a model card's ``preprocessing`` (size, mean, std,
    interpolation): what ``predict``, ``evaluate`` and the export checks feed a model."""
    return build_transforms(AugmentConfig(), size=int(pre["size"]), mean=pre["mean"],
                            std=pre["std"], train=False,
                            interpolation=str(pre.get("interpolation", "bilinear")))


def _geometry(aug: AugmentConfig, interp: v2.InterpolationMode) -> list[Any]:
    """One random affine warp for rotation/shift/shear/zoom (none when all are 0)."""
    if not (
        aug.rotation_range
        or aug.width_shift_range
        or aug.height_shift_range
        or aug.shear_range
        or aug.zoom_range
    ):
        return []
    # Grid sampling has only nearest/bilinear; bicubic backbones get bilinear here.
    mode = "nearest" if interp == v2.InterpolationMode.NEAREST else "bilinear"
    return [KerasAffine(aug, mode)]


class KerasAffine(v2.Transform):
    """Keras' random affine (``ImageDataGenerator.apply_transform``) on float image tensors.

    One ``grid_sample`` per image: the output's pixel centres are mapped through the inverse
    of ``shift . rotate . shear . zoom`` (about the centre, in units of the side, as Keras),
    and points outside the image take the fill mode: ``nearest`` clamps to the edge,
    ``reflect`` mirrors (``abcd|dcba``), ``wrap`` repeats (``abcd|abcd``), ``constant``
    is ``cval`` (pixel units 0..255, as Keras, which augments before rescaling).
    Angles, shifts, shear and zoom are drawn uniformly from torch's RNG (the loader seeds it
    per sample). The image must be square (the pipeline resizes first).
    """

    def __init__(self, aug: AugmentConfig, mode: str = "bilinear") -> None:
        super().__init__()
        self.rotation, self.shear, self.zoom = aug.rotation_range, aug.shear_range, aug.zoom_range
        self.shift = (aug.width_shift_range, aug.height_shift_range)
        self.fill_mode, self.cval, self.mode = aug.fill_mode, aug.cval / 255.0, mode

    def _theta(self) -> Tensor:
        """(1, 2, 3) map from output to input coordinates, both in [-1, 1] units.

        The content is zoomed, x-sheared, rotated, then shifted by (tx, ty):
        ``fwd = R(rot) @ [[1, -sin sh], [0, cos sh]] / zoom``; sampling needs its inverse
        ``zoom * [[1, tan sh], [0, 1 / cos sh]] @ R(-rot)``, applied to ``out - (tx, ty)``.
        """
        u = [2 * v - 1 for v in torch.rand(5, dtype=torch.float64).tolist()]  # U(-1, 1) each
        rot, shear = math.radians(self.rotation * u[0]), math.radians(self.shear * u[1])
        zoom = 1.0 + self.zoom * u[2]
        tx, ty = 2 * self.shift[0] * u[3], 2 * self.shift[1] * u[4]
        c, s, t, k = math.cos(rot), math.sin(rot), math.tan(shear), 1.0 / math.cos(shear)
        a, b = zoom * (c - t * s), zoom * (s + t * c)
        d, e = zoom * (-k * s), zoom * (k * c)
        return torch.tensor([[[a, b, -(a * tx + b * ty)], [d, e, -(d * tx + e * ty)]]])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Warp a (C, S, S) float image."""
        x = inpt.as_subclass(Tensor)
        if not x.is_floating_point():
            raise TypeError("KerasAffine expects a float image (after ToDtype)")
        side = x.shape[-1]
        grid = (_base_grid(side) @ self._theta()[0].T).view(1, side, side, 2)  # (1, S, S, (x, y))
        if self.fill_mode == "wrap":
            grid = torch.remainder(grid + 1, 2) - 1
        padding = {"nearest": "border", "reflect": "reflection", "wrap": "border"}.get(self.fill_mode, "zeros")
        src = x - self.cval if self.fill_mode == "constant" else x
        out = nn.functional.grid_sample(src[None], grid, mode=self.mode, padding_mode=padding,
                                        align_corners=False)[0]
        out = out + self.cval if self.fill_mode == "constant" else out
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    _transform = transform  # torchvision < 0.21 calls _transform


@functools.lru_cache(maxsize=8)
def _base_grid(side: int) -> Tensor:
    """(S*S, 3) output pixel centres ``(x, y, 1)`` in [-1, 1] units, x fastest: what
    ``affine_grid(align_corners=False)`` multiplies by theta, built once per side: 17 us an
    image against ``affine_grid``'s 43 us at 96 px, the same grid within 2.4e-7
    (``grid_us`` in ``benchmarks/results/loader_cost.json``, from ``loader_cost.py``)."""
    centres = (torch.arange(side, dtype=torch.float32) * 2 + 1) / side - 1
    return torch.stack([centres.repeat(side), centres.repeat_interleave(side),
                        torch.ones(side * side)], dim=1)


def _flips(aug: AugmentConfig) -> list[Any]:
    steps: list[Any] = []
    if aug.horizontal_flip is not False:  # None (outside the recipe, which decides): on
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if aug.vertical_flip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    return steps


def _colour(aug: AugmentConfig) -> list[Any]:
    steps: list[Any] = []
    if aug.brightness_range is not None:
        lo, hi = aug.brightness_range
        steps.append(v2.ColorJitter(brightness=(float(lo), float(hi))))
    if aug.color_jitter > 0:
        s = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    return steps


def batch_mixer(
    aug: AugmentConfig, num_classes: int
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None:
    """MixUp and/or CutMix on a collated batch, or None when both alphas are 0.

    With both set, each batch gets one of them at random (``v2.RandomChoice``, as timm's
    ``switch_prob=0.5``). Randomness comes from torch's global RNG.

    Returns:
        ``mix(images (B, C, H, W), labels (B,) int64) -> (images, targets (B, num_classes))``
        with soft float targets.
    """
    ops: list[Any] = []
    if aug.mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=float(aug.mixup_alpha), num_classes=num_classes))
    if aug.cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=float(aug.cutmix_alpha), num_classes=num_classes))
    if not ops:
        return None
    return BatchMixer(ops[0] if len(ops) == 1 else v2.RandomChoice(ops), num_classes)


class BatchMixer:
    """Callable wrapper returning plain tensors: (mixed images, soft targets (B, C))."""

    def __init__(self, op: Callable[..., Any], num_classes: int) -> None:
        self.op = op
        self.num_classes = num_classes

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mix one batch; ``labels`` are class indices (B,)."""
        mixed, targets = self.op(images, labels.long())
        return mixed.as_subclass(Tensor), targets.as_subclass(Tensor)

    def __repr__(self) -> str:
        return f"BatchMixer({self.op!r})"
