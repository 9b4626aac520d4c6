"""step/loop.py: the OOM-recovering step."""

from __future__ import annotations

import copy

import torch
from torch import nn

from snugtune.step import MicroBatch, StepContext, train_step


class _FailAbove(nn.Module):
    """Raises out-of-memory for batches larger than ``limit`` (after what precedes it ran)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"test: batch {x.shape[0]} > {self.limit}")
        return x


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), _FailAbove(4), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def test_oom_retry_restores_batchnorm_statistics_and_matches_the_smaller_micro_batch() -> None:
    x, y = torch.randn(8, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ctx = StepContext(device=torch.device("cpu"), num_classes=3)
    recovered, clean = _net(), _net()
    clean.load_state_dict(copy.deepcopy(recovered.state_dict()))
    _, micro = train_step(recovered, torch.optim.SGD(recovered.parameters(), lr=0.1), x, y, ctx,
                          MicroBatch(8), step=0)
    recoveries = [r.to_dict() for r in micro.recoveries]
    assert micro.size == 4 and recoveries == [{"epoch": 0, "step": 0, "from": 8, "to": 4}]
    train_step(clean, torch.optim.SGD(clean.parameters(), lr=0.1), x, y, ctx, MicroBatch(4), step=0)
    for (name, a), b in zip(recovered.state_dict().items(), clean.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # running_mean/var and num_batches_tracked included
