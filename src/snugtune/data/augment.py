"""Keras ``ImageDataGenerator``-style augmentation settings as torchvision ``transforms.v2``.

Eval pipeline: ``ToImage -> Resize((size, size)) -> ToDtype(float32, scale) -> Normalize``.
The resize is to a *square*, ignoring aspect ratio (as Keras' ``image_dataset_from_directory``
does by default) rather than resize-shorter-side + center-crop (timm's eval default): class
folders from the wild hold objects anywhere in the frame, and a crop can cut off what makes
the class; the mild stretch of typical 4:3 photos costs little accuracy after fine-tuning.
The train pipeline resizes the same way, so train and eval see the same geometry.

Train pipeline, after the resize (geometry runs on uint8 images, which is faster):

==========================  =================================================================
Keras setting               v2 transform
==========================  =================================================================
rotation_range=d            RandomAffine(degrees=d)
width/height_shift_range    RandomAffine(translate=(w, h)) (fractions of the side, as Keras)
shear_range=d               RandomAffine(shear=d) (x-shear in degrees, as Keras)
zoom_range=z                RandomAffine(scale=(1-z, 1+z)), isotropic (Keras draws x and y
                            zoom independently; one factor keeps shapes undistorted)
fill_mode='constant'        RandomAffine(fill=cval); ``cval`` is in pixel units 0..255 as in
                            Keras, which augments before rescaling
fill_mode='nearest'         Pad(m, 'edge') -> RandomAffine -> CenterCrop: exact Keras result
'reflect'                   Pad(m, 'symmetric') (Keras/scipy "reflect" repeats the edge pixel:
                            ``abcddcba``, which torch calls symmetric)
'wrap'                      circular Pad (``abcdabcd``, a small v2 Transform: v2.Pad has none)
horizontal/vertical_flip    RandomHorizontalFlip / RandomVerticalFlip (p=0.5)
brightness_range=(lo, hi)   ColorJitter(brightness=(lo, hi)): multiply by U(lo, hi), as Keras
color_jitter=s              ColorJitter(brightness=s, contrast=s, saturation=s) (timm's
                            meaning of a scalar color_jitter; no hue)
random_erasing=p            RandomErasing(p) after Normalize, erasing to 0 (the mean colour)
rescale                     ignored: inputs are always scaled to [0, 1] then normalised
==========================  =================================================================

The margin ``m`` of the padded fill modes is computed from the ranges so that the affine
never samples outside the padded image (capped at ``size - 1`` px; beyond that, for extreme
settings, the rest is black). MixUp/CutMix act on batches: see ``batch_mixer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from snugtune.config import AugmentConfig
from snugtune.errors import ConfigError

__all__ = ["batch_mixer", "build_transforms"]

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}
_PAD_MODES = {"nearest": "edge", "reflect": "symmetric", "wrap": "circular"}

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
    steps: list[Any] = [v2.ToImage(), v2.Resize((size, size), interpolation=interp, antialias=True)]
    if train:
        steps += _geometry(aug, size, interp) + _flips(aug) + _colour(aug)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and aug.random_erasing > 0:
        steps.append(v2.RandomErasing(p=aug.random_erasing, value=0.0))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def _geometry(aug: AugmentConfig, size: int, interp: v2.InterpolationMode) -> list[Any]:
    """RandomAffine for rotation/shift/shear/zoom, wrapped in pad + crop for the fill mode."""
    if not (
        aug.rotation_range
        or aug.width_shift_range
        or aug.height_shift_range
        or aug.shear_range
        or aug.zoom_range
    ):
        return []
    margin = 0 if aug.fill_mode == "constant" else affine_margin(aug, size)
    side = size + 2 * margin
    shift = (aug.width_shift_range * size / side, aug.height_shift_range * size / side)
    affine = v2.RandomAffine(
        degrees=aug.rotation_range,
        translate=shift if any(shift) else None,
        scale=(1 - aug.zoom_range, 1 + aug.zoom_range) if aug.zoom_range else None,
        shear=aug.shear_range or None,
        # Tensor grid sampling has only nearest/bilinear; bicubic backbones get bilinear here.
        interpolation=interp if interp != v2.InterpolationMode.BICUBIC else v2.InterpolationMode.BILINEAR,
        fill=int(round(min(max(aug.cval, 0.0), 255.0))),
    )
    if margin == 0:
        return [affine]
    mode = _PAD_MODES[aug.fill_mode]
    pad = CircularPad(margin) if mode == "circular" else v2.Pad(margin, padding_mode=mode)
    return [pad, affine, v2.CenterCrop(size)]


def affine_margin(aug: AugmentConfig, size: int) -> int:
    """Padding (px) so that the affine's inverse map stays inside the padded image.

    Per axis, |input offset from centre| <= ||A^-1||_inf * (size/2 + shift_px), with
    ||R^-1||_inf = |cos| + |sin| (at most sqrt 2, at 45 degrees), ||Shear^-1||_inf <=
    1 + tan(shear) and the zoom-out factor 1 / (1 - zoom).
    """
    theta = math.radians(min(aug.rotation_range, 45.0))
    rot = math.cos(theta) + math.sin(theta)
    shear = 1.0 + math.tan(math.radians(min(aug.shear_range, 80.0)))
    shift_px = max(aug.width_shift_range, aug.height_shift_range) * size
    half_in = rot * shear * (size / 2 + shift_px) / (1.0 - aug.zoom_range)
    return int(min(max(math.ceil(half_in - size / 2) + 1, 0), size - 1))


def _flips(aug: AugmentConfig) -> list[Any]:
    steps: list[Any] = []
    if aug.horizontal_flip:
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


class CircularPad(v2.Transform):
    """Pad images periodically (Keras ``fill_mode='wrap'``); v2.Pad has no circular mode."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = int(padding)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Pad a (C, H, W) image tensor by ``padding`` px on each side, wrapping around."""
        if not isinstance(inpt, torch.Tensor):
            inpt = v2.functional.to_image(inpt)
        p = self.padding
        out = torch.nn.functional.pad(inpt.as_subclass(torch.Tensor), (p, p, p, p), mode="circular")
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    _transform = transform  # torchvision < 0.21 calls _transform


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
