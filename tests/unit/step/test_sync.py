"""The gradient sum of a data-parallel step: buckets packed, reduced and unpacked exactly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from snugtune.step import MicroBatch
from snugtune.step.sync import Alone, StepSync, _buckets, sum_gradients


class Doubling(Alone):
    """Two ranks whose gradients are this rank's: a sum doubles each buffer (and counts)."""

    reduced: list[int]

    def __init__(self) -> None:
        super().__init__(world_size=2)
        object.__setattr__(self, "reduced", [])

    def all_reduce_async(self, t: Tensor):  # type: ignore[no-untyped-def]
        t.mul_(2)
        self.reduced.append(t.numel())
        return super().all_reduce_async(t)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 600))


def _grads(model: nn.Module) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    return [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]


def test_buckets_are_consecutive_capped_and_a_large_gradient_is_reduced_in_place() -> None:
    model = _model().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params: Sequence[nn.Parameter] = list(model.parameters())
    cap = 8 * 1024  # bytes: the Linear weight (600 x 128 floats) is larger, alone in its bucket
    buckets = _buckets(params, cap)
    assert [p for b in buckets for p in b] == params
    assert all(sum(p.numel() * 4 for p in b) <= cap for b in buckets if len(b) > 1)
    before = _grads(model)
    peers = Doubling()
    sum_gradients(params, 0.5, peers, cap)  # x 0.5, summed over 2 equal ranks: unchanged
    for p, g in zip(params, before, strict=True):
        assert torch.equal(p.grad, g)  # type: ignore[arg-type]
    assert peers.reduced == [sum(p.numel() for p in b) for b in buckets]


def test_a_rank_without_a_gradient_sends_zeros_and_the_agreed_micro_batch_is_the_smallest() -> None:
    model = _model()
    _grads(model)
    model[3].bias.grad = None  # e.g. a parameter this rank's share did not reach
    sync = StepSync(Alone(world_size=2))
    micro = sync.finish(model, weight=3.0, micro=MicroBatch(4), failure=None)
    assert torch.equal(model[3].bias.grad, torch.zeros(600))  # type: ignore[arg-type]
    assert micro.size == 4 and micro.recoveries == ()
