"""The loss is the same however the effective batch is split into micro-batches."""

import torch

from snugtune.step.loss import (
    balanced_class_weights,
    soft_targets,
    weight_total,
    weighted_loss_sum,
)


def test_balanced_weights_match_sklearn_formula() -> None:
    assert balanced_class_weights([10, 30]) == [2.0, 2.0 / 3.0]


def test_split_invariant_with_smoothing_and_class_weights() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    w = torch.tensor([1.0, 2.0, 0.5, 1.5])
    t = soft_targets(y, 4, 0.1)
    total = weight_total(t, w)
    whole = weighted_loss_sum(logits, t, w) / total
    parts = sum(weighted_loss_sum(logits[i : i + 3], t[i : i + 3], w) for i in range(0, 8, 3)) / total
    torch.testing.assert_close(whole, parts)


def test_unweighted_equals_torch_cross_entropy_with_smoothing() -> None:
    torch.manual_seed(1)
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    ours = weighted_loss_sum(logits, soft_targets(y, 5, 0.1), None) / 6
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(ours, ref)


def test_soft_targets_pass_through_mixup_targets() -> None:
    mixed = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    torch.testing.assert_close(soft_targets(mixed, 2, 0.0), mixed)
