"""The runtime guards: the virtual CPU device budget, the CUDA cap, and ``PeakMeter``."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from snugtune.errors import BudgetError
from snugtune.memory import PeakMeter
from snugtune.memory.guard import CudaBudget, VirtualDeviceBudget, host_side
from snugtune.step import MicroBatch

F32 = 4  # bytes per float32 element


def guard(budget: int | None = None) -> VirtualDeviceBudget:
    """A guard that ignores whatever else the test process holds."""
    return VirtualDeviceBudget(budget, track_existing=False)


def test_raises_out_of_memory_at_the_exact_byte_count() -> None:
    with guard(1000) as g:
        a = torch.empty(100)  # 400 B
        b = torch.empty(150)  # 600 B: exactly the budget, allowed
        assert g.live_bytes == 1000
        with pytest.raises(torch.OutOfMemoryError, match="tried to allocate 1 B"):
            torch.empty(1, dtype=torch.uint8)
        assert g.live_bytes == 1000 and g.peak_bytes == 1000  # the refused bytes never count
        event = g.ooms[-1]
        assert (event.requested_bytes, event.live_bytes, event.budget_bytes) == (1, 1000, 1000)
        del b
        c = torch.empty(150)  # fits again once something is freed
    assert a.numel() + c.numel() == 250


def test_frees_subtract_and_peak_is_recorded() -> None:
    with guard() as g:
        a = torch.ones(1000)
        b = a * 2  # 4000 more
        assert g.live_bytes == 8000
        del a, b
        assert g.live_bytes == 0
        c = torch.zeros(10)
        assert g.live_bytes == 40
    assert g.peak_bytes == 8000
    assert c.sum() == 0


def test_views_and_in_place_results_count_once() -> None:
    with guard() as g:
        a = torch.zeros(4, 25)
        views = [a[1:], a.t(), a.view(100), a.reshape(2, 50), a.detach(), a[0]]
        a.add_(1).mul_(3)
        torch.add(a, 1, out=a)
        assert g.live_bytes == 100 * F32
        del a
        assert g.live_bytes == 100 * F32  # the views keep the storage alive
        views.clear()
        assert g.live_bytes == 0


def test_resized_storage_is_recounted() -> None:
    with guard() as g:
        out = torch.empty(0)
        torch.add(torch.ones(50), 1, out=out)  # out= resizes its storage to 200 B
        assert g.live_bytes == 200
    assert out.numel() == 50


def test_modules_alive_at_entry_and_tensors_first_read_are_counted() -> None:
    lin = nn.Linear(10, 10)  # 400 B weight + 40 B bias
    outside = torch.from_numpy(np.zeros(25, dtype=np.float32))  # made without an operator
    with VirtualDeviceBudget(None) as g:
        entry = g.entry_bytes
        assert entry >= 440
        y = outside + 1  # reads `outside`: counted, and y is new
        assert g.live_bytes == entry + 2 * 100
        del lin
        assert g.live_bytes == entry + 200 - 440
    assert y.shape == (25,)


def test_budget_below_what_exists_at_entry_is_a_budget_error() -> None:
    keep = nn.Linear(100, 100)  # ~40 KB of weights already "on the device"
    with (
        pytest.raises(BudgetError, match="already held before the first step"),
        VirtualDeviceBudget(1024),
    ):
        pass
    assert torch._C._len_torch_dispatch_stack() == 0
    assert keep.weight.shape == (100, 100)


def test_fake_and_meta_tensors_use_no_memory() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with guard(100) as g:
        m = torch.empty(10_000, device="meta")
        with FakeTensorMode():
            f = torch.empty(10_000) * 2
        assert g.live_bytes == 0
    assert m.is_meta and f.shape == (10_000,)


def _tiny_step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).square().sum().backward()
    model.zero_grad(set_to_none=True)


def test_backward_out_of_memory_is_the_cuda_exception_and_the_peak_is_exact() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    x = torch.randn(16, 64)
    with VirtualDeviceBudget(None) as free:
        _tiny_step(model, x)
    peak = free.peak_bytes
    assert peak > free.entry_bytes
    with pytest.raises(torch.OutOfMemoryError), VirtualDeviceBudget(peak - 1) as g:
        _tiny_step(model, x)
    assert g.ooms and g.peak_bytes <= peak - 1
    model.zero_grad(set_to_none=True)
    with VirtualDeviceBudget(peak) as g:  # the measured peak is enough, to the byte
        _tiny_step(model, x)
    assert g.peak_bytes == peak and not g.ooms


def test_nothing_leaks_after_exit() -> None:
    g = guard(10_000)
    with g:
        kept = torch.ones(100)
        dropped = torch.ones(100)
        storage = weakref.ref(dropped.untyped_storage())
    assert torch._C._len_torch_dispatch_stack() == 0
    assert not g._ledger._refs and not g._ledger._live  # no weakrefs, no callbacks left behind
    live = g.live_bytes
    del dropped
    assert storage() is None  # the guard held no reference to it
    assert g.live_bytes == live  # frees after exit no longer reach the guard
    torch.empty(10**6)  # no budget any more
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None
    assert kept.sum() == 100


class _Allocating(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        big = torch.ones(100_000) * i  # 400 KB in the worker, far over the budget below
        return big[:10].clone()  # 40 B reach the main process


def test_forked_loader_workers_are_not_counted() -> None:
    with guard() as probe:
        pass
    with guard(probe.live_bytes + 10_000) as g:
        loader = DataLoader(
            _Allocating(), batch_size=1, num_workers=1, multiprocessing_context="fork"
        )
        items = [int(b.sum()) for b in loader]  # a worker's 400 KB never reach the guard
    assert items == [0, 10]
    assert not g.ooms


def test_main_process_loading_is_host_memory_until_the_batch_is_read() -> None:
    with guard() as probe:
        pass
    with guard(probe.live_bytes + 10_000) as g:
        batches = list(DataLoader(_Allocating(), batch_size=2, num_workers=0))
        assert g.live_bytes == probe.live_bytes and not g.ooms  # decoding was not counted
        on_device = batches[0] * 2  # reading the batch: it and the result count
        assert g.live_bytes == probe.live_bytes + 2 * 80
        with host_side():
            host = torch.ones(100_000)  # explicitly host-side: not counted either
        assert g.live_bytes == probe.live_bytes + 160
    assert on_device.shape == (2, 10) and host.numel() == 100_000


def test_peak_meter_on_cpu_enforces_and_measures_only_with_a_budget() -> None:
    cpu = torch.device("cpu")
    with PeakMeter(cpu) as m:
        torch.ones(1000)
    assert m.peak_bytes is None and m.reserved_bytes is None
    with PeakMeter(cpu, budget_bytes=10**9) as m:
        a = torch.ones(1000)
        b = a + 1
    assert m.entry_bytes is not None and m.peak_bytes is not None
    assert m.peak_bytes >= m.entry_bytes + 8000 and m.reserved_bytes is None
    with pytest.raises(torch.OutOfMemoryError), PeakMeter(cpu, budget_bytes=m.entry_bytes + 100):
        torch.ones(1000)
    assert b.sum() == 2000


def test_peak_meter_adds_figures_to_a_budget_error() -> None:
    cpu = torch.device("cpu")
    weights = nn.Linear(10, 10)  # something held before the first step
    with PeakMeter(cpu, budget_bytes=10**9) as probe:
        pass
    assert probe.entry_bytes is not None and probe.entry_bytes >= 440
    micro = MicroBatch(1)
    with pytest.raises(BudgetError) as info, PeakMeter(cpu, budget_bytes=probe.entry_bytes + 1000):
        try:
            torch.ones(1000)
        except torch.OutOfMemoryError:
            micro.halved("train", 0, 0)  # what the training loop does at micro-batch 1
    msg = str(info.value)
    assert "needed at micro-batch 1" in msg and "held before the first step" in msg
    assert "--gpu-memory" in msg and "\n" not in msg
    assert weights.weight.shape == (10, 10)


def test_cuda_fraction_is_budget_over_total(monkeypatch: pytest.MonkeyPatch) -> None:
    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _d: Props())
    dev = torch.device("cuda", 0)
    assert CudaBudget(4 * 2**30, dev).fraction() == pytest.approx(0.05)
    assert CudaBudget(None, dev).fraction() == 1.0
    assert CudaBudget(200 * 2**30, dev).fraction() == 1.0


def test_cuda_budget_counts_the_context_so_the_process_holds_the_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Props:
        total_memory = 80 * 2**30

    fractions: list[float] = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _d: Props())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda _d=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda _d=None: None)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda _d: 1.0,
                        raising=False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda f, _d=None: fractions.append(f))
    allocated = {"bytes": 100 * 2**20}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda _d=None: allocated["bytes"])
    dev = torch.device("cuda", 0)
    # a "4 GiB card" on an 80 GiB one: 512 MiB of context, the allocator gets the other 3.5 GiB
    with CudaBudget(4 * 2**30, dev, context_bytes=512 * 2**20) as g:
        assert g.allocator_bytes == int(3.5 * 2**30)
    assert fractions == [pytest.approx(3.5 / 80), 1.0]  # capped, then restored on exit
    allocated["bytes"] = 3800 * 2**20  # 3.71 GiB already held + 0.5 context > 4 GiB
    with pytest.raises(BudgetError, match="context included"), CudaBudget(
            4 * 2**30, dev, context_bytes=512 * 2**20):
        pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_budget_caps_the_allocator() -> None:
    dev = torch.device("cuda", 0)
    with CudaBudget(64 * 2**20, dev) as g:
        ok = torch.empty(16 * 2**20, dtype=torch.uint8, device=dev)
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(128 * 2**20, dtype=torch.uint8, device=dev)
    assert g.peak_bytes is not None and 16 * 2**20 <= g.peak_bytes <= 64 * 2**20
    big = torch.empty(128 * 2**20, dtype=torch.uint8, device=dev)  # the cap is lifted on exit
    assert ok.numel() + big.numel() > 0
