"""Backbone zoo: resolve a model name to timm or torchvision, build it headless, describe it.

Bare names resolve to torchvision when torchvision has the name (the classic Keras-style zoo:
``vgg16``, ``resnet50``, ``mobilenet_v2``, ``efficientnet_b0``), otherwise to timm;
``timm:NAME`` and ``torchvision:NAME`` force the source. Every backbone is built so that
``backbone(x)`` returns globally average-pooled features ``(B, F)`` — Keras'
``include_top=False, pooling="avg"``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm
import torch
import torchvision
from torch import nn

from snugtune.errors import ConfigError

__all__ = ["BackboneSpec", "Preprocessing", "build_backbone", "resolve_backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How inputs must be prepared for the backbone's pretrained weights."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def to_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }


@dataclass(frozen=True)
class BackboneSpec:
    """A resolved backbone name."""

    source: str  # "timm" | "torchvision"
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.source}:{self.name}"


def _torchvision_names() -> list[str]:
    return list(torchvision.models.list_models(module=torchvision.models))


def resolve_backbone(name: str) -> BackboneSpec:
    """Resolve ``NAME``, ``timm:NAME`` or ``torchvision:NAME``.

    Raises:
        ConfigError: unknown name, with the closest known names.
    """
    source, _, bare = name.partition(":") if ":" in name else ("", "", name)
    tv, tm = _torchvision_names(), None
    if source in ("", "torchvision") and bare in tv:
        return BackboneSpec("torchvision", bare)
    if source in ("", "timm") and timm.is_model(bare):
        return BackboneSpec("timm", bare)
    if source not in ("", "timm", "torchvision"):
        raise ConfigError(f"--model: source {source!r} unknown; use timm:NAME or torchvision:NAME")
    tm = timm.list_models()
    pool = tv if source == "torchvision" else tm if source == "timm" else list(dict.fromkeys(tv + tm))
    close = difflib.get_close_matches(bare, pool, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ConfigError(f"--model: {name!r} is not a timm or torchvision model{hint}")


def build_backbone(spec: BackboneSpec, *, pre_logits: bool = False) -> tuple[nn.Module, int, Preprocessing]:
    """Randomly initialised headless backbone, its pooled width F, and its preprocessing.

    A backbone means its features, pooled (Keras' ``include_top=False, pooling="avg"``): a timm
    model's pre-logits layers (VGG's fc6/fc7 as convolutions, ``ConvMlp``: 119.5 M of vgg16's
    134 M parameters) belong to its old classifier and are dropped unless ``pre_logits``.
    """
    if spec.source == "timm":
        model = timm.create_model(spec.name, pretrained=False, num_classes=0)
        dropped = _drop_pre_logits(model) if not pre_logits else False
        cfg = timm.data.resolve_model_data_config(model)
        pre = Preprocessing(
            size=int(cfg["input_size"][-1]),
            mean=(float(cfg["mean"][0]), float(cfg["mean"][1]), float(cfg["mean"][2])),
            std=(float(cfg["std"][0]), float(cfg["std"][1]), float(cfg["std"][2])),
            interpolation=str(cfg["interpolation"]),
            crop_pct=float(cfg["crop_pct"]),
        )
        # Models with a conv head after pooling (mobilenetv3, lcnet) output head_hidden_size.
        hidden = None if dropped else getattr(model, "head_hidden_size", None)
        width = int(hidden) if hidden else int(getattr(model, "num_features", 0))
        return model, width, pre
    model = torchvision.models.get_model(spec.name, weights=None)
    _strip_torchvision_top(model)
    with torch.no_grad():
        was = model.training
        model.eval()
        width = int(model(torch.zeros(1, 3, 64, 64)).shape[1])
        model.train(was)
    return model, width, Preprocessing(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _drop_pre_logits(model: nn.Module) -> bool:
    """Replace a timm model's trainable ``pre_logits`` block by identity; whether it had one."""
    block = getattr(model, "pre_logits", None)
    if not isinstance(block, nn.Module) or not any(True for _ in block.parameters()):
        return False
    model.pre_logits = nn.Identity()
    return True


def _strip_torchvision_top(model: nn.Module) -> None:
    """Replace a torchvision classifier by identity so the model returns pooled features."""
    clf = getattr(model, "classifier", None)
    if isinstance(getattr(model, "fc", None), nn.Linear):  # resnet, regnet, googlenet, ...
        model.fc = nn.Identity()
    elif isinstance(getattr(model, "heads", None), nn.Module):  # vit, swin (head)
        model.heads = nn.Identity()
    elif isinstance(getattr(model, "head", None), nn.Linear):
        model.head = nn.Identity()
    elif isinstance(clf, nn.Sequential):
        if any(isinstance(m, nn.LayerNorm | nn.Flatten) for m in clf):  # convnext: keep its norm
            clf[-1] = nn.Identity()
        else:  # vgg, alexnet, mobilenet, efficientnet: drop the dense top entirely (Keras style)
            model.classifier = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Linear):  # densenet
        model.classifier = nn.Identity()
    else:
        raise ConfigError(f"--model: cannot find the classifier of {type(model).__name__}; "
                          "use the timm:NAME variant")
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size not in (1, (1, 1)):
        model.avgpool = nn.AdaptiveAvgPool2d(1)  # vgg/alexnet pool to 7x7 for their dense top
