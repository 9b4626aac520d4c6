"""The new classification head put on a pretrained backbone's pooled features."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Head"]


class Head(nn.Module):
    """Dropout -> [Linear -> ReLU -> Dropout] -> Linear, the Keras transfer-learning head.

    The backbone already applies global average pooling, so the head sees ``(B, F)``.

    Args:
        in_features: F, the backbone's pooled feature width.
        num_classes: C.
        hidden: width of the optional dense layer (``None``: no hidden layer).
        dropout: dropout probability before each linear layer.
    """

    def __init__(
        self, in_features: int, num_classes: int, *, hidden: int | None = None, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = in_features
        if hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """(B, F) pooled features -> (B, C) logits."""
        return self.layers(features)
