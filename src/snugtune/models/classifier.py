"""A pretrained backbone plus a new head, with freeze groups and activation checkpointing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from snugtune.models.groups import backbone_blocks
from snugtune.models.head import Head
from snugtune.models.weights import WeightsInfo, load_pretrained
from snugtune.models.zoo import BackboneSpec, Preprocessing, build_backbone, resolve_backbone
from snugtune.step import checkpointed_blocks, set_checkpointing

__all__ = ["Classifier", "build_classifier"]

_BN = (nn.modules.batchnorm._BatchNorm,)


class Classifier(nn.Module):
    """``head(backbone(x))`` with the backbone cut into freeze groups (``blocks``).

    Args:
        backbone: maps (B, 3, H, W) to pooled features (B, F).
        head: maps (B, F) to logits (B, C).
        spec: the resolved backbone name.
        preprocessing: input size and normalisation of the pretrained weights.
        weights: where the backbone's weights came from.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Head,
        *,
        spec: BackboneSpec,
        preprocessing: Preprocessing,
        weights: WeightsInfo,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec
        self.preprocessing = preprocessing
        self.weights = weights
        # A plain list keeps the blocks out of state_dict (they alias backbone modules).
        self.blocks: list[nn.ModuleList] = backbone_blocks(backbone, spec.source)
        self.train_bn = False

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, F) pooled features."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, C) logits."""
        return self.head(self.backbone(x))

    def set_trainable(self, top_blocks: int | None, *, train_bn: bool = False) -> None:
        """Freeze the backbone except its top ``top_blocks`` blocks (``None``: train all).

        BatchNorm layers of frozen blocks always use their running statistics; those of
        trainable blocks update them only when ``train_bn`` is set (small batches give noisy
        statistics that ruin pretrained ones, the reason Keras recommends ``training=False``).
        """
        self.backbone.requires_grad_(top_blocks is None)
        if top_blocks:
            for block in self.blocks[-top_blocks:]:
                block.requires_grad_(True)
        self.head.requires_grad_(True)
        self.train_bn = train_bn
        self.train(self.training)

    def trainable_blocks(self) -> int:
        """How many top blocks currently have a trainable parameter."""
        count = 0
        for block in reversed(self.blocks):
            if not any(p.requires_grad for p in block.parameters()):
                break
            count += 1
        return count

    def backbone_frozen(self) -> bool:
        """True when no backbone parameter is trainable (features can be cached)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> Classifier:
        """Like ``nn.Module.train`` but keeps frozen BatchNorm layers in eval mode."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, _BN) and (not self.train_bn or not _trainable(m)):
                    m.eval()
        return self

    def set_checkpointing(self, block_indices: Iterable[int]) -> None:
        """Recompute the chosen blocks' activations in backward instead of storing them."""
        set_checkpointing(self.blocks, block_indices)

    def checkpointed_blocks(self) -> tuple[int, ...]:
        """Indices of the checkpointed blocks."""
        return checkpointed_blocks(self.blocks)


def _trainable(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters(recurse=False))


def build_classifier(
    name: str,
    num_classes: int,
    *,
    weights: str = "auto",
    head_hidden: int | None = None,
    head_dropout: float = 0.2,
    pre_logits: bool = False,
    device: str | torch.device | None = None,
) -> Classifier:
    """Build backbone + new head, with pretrained backbone weights.

    Args:
        name: timm or torchvision model name (``timm:NAME`` / ``torchvision:NAME`` to force).
        num_classes: C, the head's output width.
        weights: ``"auto"`` (package, cache or hub), ``"none"`` (random) or a file path.
        head_hidden: optional dense layer width in the head.
        head_dropout: dropout before the head's linear layers.
        pre_logits: keep a timm backbone's pre-logits layers (see ``zoo.build_backbone``).
        device: ``"meta"`` builds without allocating (for memory simulation; needs
            ``weights="none"``).

    Raises:
        ConfigError: unknown model name.
        WeightsError: no pretrained weights could be loaded.
    """
    spec = resolve_backbone(name)
    meta = device is not None and torch.device(device).type == "meta"
    ctx = torch.device("meta") if meta else contextlib.nullcontext()
    with ctx:
        backbone, width, pre = build_backbone(spec, pre_logits=pre_logits)
        head = Head(width, num_classes, hidden=head_hidden, dropout=head_dropout)
    info = load_pretrained(backbone, spec, "none" if meta else weights)
    model = Classifier(backbone, head, spec=spec, preprocessing=pre, weights=info)
    if device is not None and not meta:
        model.to(device)
    return model
