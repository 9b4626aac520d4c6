"""Cross-entropy over soft targets with label smoothing and class weights, split-invariant.

One mechanism covers hard labels, label smoothing, MixUp/CutMix soft targets and class
weights: per-sample loss ``l_i = -sum_c t_ic log p_ic`` weighted by ``w_i = sum_c t_ic w_c``, summed
and divided by the total weight of the *effective* batch. Because the normaliser is the whole
batch's, the gradient is the same however the batch is split into micro-batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["balanced_class_weights", "soft_targets", "weighted_loss_sum", "weight_total"]


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """Keras/scikit-learn "balanced" weights: ``n_samples / (n_classes * count_c)``."""
    total, k = sum(counts), len(counts)
    return [total / (k * c) if c else 0.0 for c in counts]


def soft_targets(y: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """(B,) int labels or (B, C) soft targets -> (B, C) smoothed targets."""
    t = F.one_hot(y, num_classes).float() if y.dim() == 1 else y.float()
    if smoothing:
        t = t * (1.0 - smoothing) + smoothing / num_classes
    return t


def weight_total(targets: Tensor, class_weights: Tensor | None) -> Tensor:
    """Sum of per-sample weights of an effective batch ((B, C) targets)."""
    if class_weights is None:
        return torch.tensor(float(targets.shape[0]))
    return (targets.float() @ class_weights.to(targets.device)).sum()


def weighted_loss_sum(logits: Tensor, targets: Tensor, class_weights: Tensor | None) -> Tensor:
    """Sum over the micro-batch of weighted soft cross-entropy (fp32 for stability)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    per_sample = -(targets * logp).sum(-1)  # (B,)
    if class_weights is not None:
        per_sample = per_sample * (targets @ class_weights.to(targets.device))
    return per_sample.sum()
