"""Backbone resolution, freeze groups, BatchNorm handling and checkpointing."""

import pytest
import torch

from snugtune.errors import ConfigError
from snugtune.models import build_classifier, resolve_backbone


@pytest.mark.parametrize(
    ("name", "source"),
    [("vgg16", "torchvision"), ("mobilenet_v2", "torchvision"), ("resnet50", "torchvision"),
     ("efficientnet_b0", "torchvision"), ("tf_efficientnet_lite0", "timm"),
     ("timm:resnet50", "timm"), ("torchvision:resnet18", "torchvision")],
)
def test_resolve_names(name: str, source: str) -> None:
    assert resolve_backbone(name).source == source


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match="did you mean.*resnet50"):
        resolve_backbone("resnet05")


@pytest.mark.parametrize(
    "name", ["vgg16", "mobilenet_v2", "resnet50", "efficientnet_b0", "timm:mobilenetv3_small_050"])
def test_required_backbones_give_pooled_features(name: str) -> None:
    clf = build_classifier(name, 7, weights="none", device="meta")
    out = clf(torch.empty(2, 3, 64, 64, device="meta"))
    assert out.shape == (2, 7)
    assert len(clf.blocks) >= 4


def test_set_trainable_top_blocks_and_head_only() -> None:
    clf = build_classifier("timm:resnet18", 3, weights="none")
    clf.set_trainable(0)
    assert clf.backbone_frozen() and all(p.requires_grad for p in clf.head.parameters())
    clf.set_trainable(2)
    assert clf.trainable_blocks() == 2
    assert not any(p.requires_grad for p in clf.blocks[0].parameters())
    clf.set_trainable(None)
    assert all(p.requires_grad for p in clf.parameters())


def _bn_stats(blocks: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for b in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("train_bn", [False, True])
def test_batchnorm_statistics_of_a_trainable_block_follow_train_bn(train_bn: bool) -> None:
    """The top block trains in both cases; its BatchNorm statistics change only with
    ``train_bn``. The frozen stem's never change."""
    clf = build_classifier("timm:resnet18", 3, weights="none")
    clf.set_trainable(1, train_bn=train_bn)
    clf.train()
    top, stem = clf.blocks[-1], clf.backbone.bn1
    assert any(p.requires_grad for p in top.parameters())  # the block trains
    before_top, before_stem = _bn_stats(top), stem.running_mean.clone()
    clf(torch.randn(4, 3, 32, 32))
    changed = [not torch.equal(a, b) for a, b in zip(before_top, _bn_stats(top), strict=True)]
    assert all(changed) if train_bn else not any(changed)
    assert torch.equal(before_stem, stem.running_mean)
    assert clf.head.training


def test_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    clf = build_classifier("timm:resnet18", 3, weights="none", head_dropout=0.0)
    clf.set_trainable(None)
    clf.eval()
    x = torch.randn(2, 3, 32, 32)
    clf(x).sum().backward()
    ref = [p.grad.clone() for p in clf.parameters()]
    clf.zero_grad()
    clf.set_checkpointing([1, 2, 3])
    assert clf.checkpointed_blocks() == (1, 2, 3)
    clf(x).sum().backward()
    for a, p in zip(ref, clf.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    clf.set_checkpointing([])
    assert clf.checkpointed_blocks() == ()
