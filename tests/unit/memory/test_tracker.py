"""MemoryTracker: storage identity, views, in-place ops, frees, frozen params, autocast."""

from __future__ import annotations

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from snugtune.memory.trace import ALLOC, FREE, Category
from snugtune.memory.tracker import MemoryTracker


def _allocs(trace):
    return [(s, n) for k, s, n in trace.events if k == ALLOC]


def test_views_share_one_storage():
    with MemoryTracker() as tr:
        x = torch.empty(1000)  # 4000 bytes
        v = x.view(10, 100)
        s = x[::2]
        t = v.t()
        assert s.numel() + t.numel() > 0
    assert _allocs(tr.trace()) == [(0, 4000)]


def test_in_place_ops_allocate_nothing():
    with MemoryTracker() as tr:
        x = torch.zeros(256)
        x.add_(1).mul_(2)
        torch.relu_(x)
        x.clamp_(max=1.0)
    assert _allocs(tr.trace()) == [(0, 1024)]


def test_frees_are_seen_and_peak_is_first_max():
    with MemoryTracker() as tr:
        a = torch.empty(100)  # 400 B
        b = torch.empty(200)  # 800 B -> peak 1200
        del a
        c = torch.empty(50)  # 200 B -> 1000
        del b, c
    trace = tr.trace()
    assert trace.peak().bytes == 1200
    assert int(trace.live_bytes[-1]) == 0
    assert sum(1 for k, _, _ in trace.events if k == FREE) == 3


def test_out_resize_is_tracked():
    with MemoryTracker() as tr:
        out = torch.empty(0)
        torch.add(torch.ones(10), 1, out=out)  # resizes out's storage to 40 bytes
        assert out.numel() == 10
    assert tr.trace().live_bytes.max() >= 80


def _frozen_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    net[0].requires_grad_(False)  # frozen first layer: MemTracker's failure case
    return net


def test_frozen_parameters_and_categories():
    net = _frozen_net()
    with MemoryTracker() as tr:
        tr.track_existing(list(net.parameters()), Category.PARAMETERS)
        x = torch.randn(32, 8)
        tr.set_category([x], Category.INPUT)
        with tr.watch_modules(net):
            loss = net(x).sum()
        loss.backward()
        tr.set_category([p.grad for p in net.parameters()], Category.GRADIENTS)
        trace = tr.trace()
        end = trace.breakdown_at(len(trace.events) - 1)
    assert net[0].weight.grad is None
    grads = sum(p.numel() * 4 for p in net[2].parameters())
    assert end["gradients"] == grads
    assert end["parameters"] == sum(p.numel() * 4 for p in net.parameters())
    assert end["input"] == 32 * 8 * 4


def test_activations_are_attributed_to_modules():
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
    with MemoryTracker() as tr:
        x = torch.randn(16, 8)
        with tr.watch_modules(net):
            loss = net(x).sum()
        trace = tr.trace()
        top = trace.top_layers_at(len(trace.events) - 1)
        del loss
    # ReLU's output, saved by ReLU and by the last Linear; the weights' views are not
    # activations (they alias tensors made before tracking)
    assert top[0] == ("1", 16 * 64 * 4)
    assert "0" not in dict(top)


def test_autocast_weight_copies_are_categorised():
    net = nn.Linear(64, 64)
    with MemoryTracker() as tr:
        tr.track_existing(list(net.parameters()), Category.PARAMETERS)
        x = torch.randn(4, 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
            trace = tr.trace()
            inside = trace.breakdown_at(len(trace.events) - 1)
        assert y.dtype == torch.bfloat16
        trace = tr.trace()
    # weight and bias cast once to bf16 by autocast's cache
    assert inside["autocast_copies"] == (64 * 64 + 64) * 2
    # the cached weight copy stays while saved for backward, freed with the graph
    del y
    assert inside["parameters"] == (64 * 64 + 64) * 4


def test_works_under_fake_tensor_mode():
    with FakeTensorMode(), MemoryTracker() as tr:
        a = torch.empty(1 << 20)  # 4 MiB, never allocated
        b = a * 2
        del a
        assert b.shape == (1 << 20,)
    trace = tr.trace()
    assert trace.peak().bytes == 2 * 4 * (1 << 20)
