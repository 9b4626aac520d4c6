"""Discriminative learning rates and the warm-up + cosine schedule."""

import pytest

from snugtune.config import PhaseConfig
from snugtune.models import build_classifier
from snugtune.step.optim import build_optimizer, lr_factor, param_groups


def test_backbone_blocks_get_lower_decaying_lrs() -> None:
    clf = build_classifier("timm:resnet18", 3, weights="none")
    clf.set_trainable(2)
    phase = PhaseConfig(name="ft", epochs=1, lr=1e-2, trainable="top:2", backbone_lr_ratio=0.1,
                        layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in param_groups(clf.head, clf.blocks, clf.backbone, phase)}
    assert lrs["head"] == pytest.approx(1e-2)
    top, below = len(clf.blocks) - 1, len(clf.blocks) - 2
    assert lrs[f"block{top}"] == pytest.approx(1e-3)
    assert lrs[f"block{below}"] == pytest.approx(5e-4)
    assert all(g["weight_decay"] == 0.0 for g in param_groups(clf.head, clf.blocks, clf.backbone, phase) if "no_decay" in g["name"])


def test_only_trainable_params_reach_the_optimizer() -> None:
    clf = build_classifier("timm:resnet18", 3, weights="none")
    clf.set_trainable(0)
    phase = PhaseConfig(name="head", epochs=1, lr=1e-3)
    opt = build_optimizer(param_groups(clf.head, clf.blocks, clf.backbone, phase), phase, "cpu")
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in clf.head.parameters())


def test_warmup_then_cosine_to_one_percent() -> None:
    total, warm = 100, 10
    assert lr_factor(0, total, warm, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, total, warm, "cosine") == pytest.approx(0.01)
    mid = lr_factor(55, total, warm, "cosine")
    assert 0.4 < mid < 0.6
    assert lr_factor(50, total, 0, "constant") == 1.0
