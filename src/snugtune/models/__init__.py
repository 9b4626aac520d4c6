"""Backbones (timm / torchvision), pretrained weight sources, the new head, freeze groups."""

from snugtune.models.classifier import Classifier, build_classifier
from snugtune.models.head import Head
from snugtune.models.weights import (
    WeightsInfo,
    lite_weights_file,
    load_by_position,
    read_state_dict,
)
from snugtune.models.zoo import BackboneSpec, Preprocessing, resolve_backbone

__all__ = [
    "BackboneSpec",
    "Classifier",
    "Head",
    "Preprocessing",
    "WeightsInfo",
    "build_classifier",
    "lite_weights_file",
    "load_by_position",
    "read_state_dict",
    "resolve_backbone",
]
