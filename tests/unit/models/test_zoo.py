"""Resolving a model name: its source, and suggestions for a name that is no model."""

import pytest

from snugtune.errors import ConfigError
from snugtune.models import resolve_backbone


def test_bare_names_prefer_torchvision_and_prefixes_force_the_source() -> None:
    assert resolve_backbone("vgg16").qualified == "torchvision:vgg16"
    assert resolve_backbone("timm:vgg16").qualified == "timm:vgg16"


def test_a_model_name_suggestion_names_each_model_once() -> None:
    with pytest.raises(ConfigError) as e:
        resolve_backbone("vgg17")
    suggestions = str(e.value).split("did you mean ")[1].rstrip("?").split(", ")
    assert len(suggestions) == len(set(suggestions)) and "vgg19" in suggestions
