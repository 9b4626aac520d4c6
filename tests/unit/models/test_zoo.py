"""Resolving a model name: its source, and suggestions for a name that is no model."""

import pytest
import torch

from snugtune.errors import ConfigError
from snugtune.models import build_classifier, resolve_backbone


def test_bare_names_prefer_torchvision_and_prefixes_force_the_source() -> None:
    assert resolve_backbone("vgg16").qualified == "torchvision:vgg16"
    assert resolve_backbone("timm:vgg16").qualified == "timm:vgg16"


def test_a_model_name_suggestion_names_each_model_once() -> None:
    with pytest.raises(ConfigError) as e:
        resolve_backbone("vgg17")
    suggestions = str(e.value).split("did you mean ")[1].rstrip("?").split(", ")
    assert len(suggestions) == len(set(suggestions)) and "vgg19" in suggestions


def test_a_timm_backbone_is_its_pooled_features_unless_pre_logits_are_asked_for() -> None:
    def params(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.backbone.parameters())

    lean = build_classifier("timm:vgg16", 3, weights="none", device="meta")
    full = build_classifier("timm:vgg16", 3, weights="none", device="meta", pre_logits=True)
    assert params(lean) == 14_714_688  # the 13 convolutions, as torchvision's vgg16 features
    assert params(full) - params(lean) == 119_545_856  # fc6/fc7 as convolutions (ConvMlp)
    assert lean.head.layers[-1].in_features == 512 and full.head.layers[-1].in_features == 4096
    with torch.device("meta"):
        assert lean(torch.empty(2, 3, 224, 224)).shape == (2, 3)
