"""Data-parallel pieces: batch sharding, single-process no-ops, and the agreed step.

The step is checked in two real gloo processes (a file store, no ports): one optimizer step
with unequal shares (5 + 4 images), different micro-batch counts per rank (1 and 2), class
weights and label smoothing gives the same parameters as one process on the whole batch,
also when one rank runs out of memory inside a backward; a rank that cannot finish its share
stops both with its reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from snugtune.errors import DataError
from snugtune.recipe import distributed
from snugtune.recipe.distributed import ShardedBatches, World, session
from snugtune.recipe.sampler import EpochSampler
from snugtune.step import MicroBatch, Stats, local_batch, train_step


@pytest.mark.parametrize(("n", "batch", "world"), [(30, 7, 2), (30, 8, 2), (29, 7, 2), (31, 8, 3)])
def test_ranks_split_the_single_process_batches_and_see_every_image_once(
    n: int, batch: int, world: int
) -> None:
    order = EpochSampler(n, seed=5).order()
    single = [order[i : i + batch] for i in range(0, n, batch)]
    ranks = [ShardedBatches(n, batch, seed=5, rank=r, world_size=world) for r in range(world)]
    steps = [list(s) for s in ranks]
    assert len({len(s) for s in steps}) == 1 and all(len(s) == len(r) for s, r in zip(steps, ranks, strict=True))
    seen = [i for s in steps for b in s for i, _ in b]
    assert sorted(seen) == list(range(n))  # every image once, nothing padded or dropped
    for k, _ in enumerate(steps[0]):
        blocks = [[i for i, _ in steps[r][k]] for r in range(world)]
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1 and min(map(len, blocks)) >= 1
        merged = [i for b in blocks for i in b]  # contiguous blocks, in rank order
        want = single[k] if k < len(steps[0]) - 1 else [i for b in single[k:] for i in b]
        assert merged == want
    assert all(seed == 5 for s in steps for b in s for _, seed in b)


def test_a_tail_smaller_than_the_world_joins_the_previous_step() -> None:
    s = ShardedBatches(29, 7, seed=0, rank=0, world_size=2)  # 29 = 4 x 7 + 1
    assert [len(b) for b in s.global_batches()] == [7, 7, 7, 8]
    with pytest.raises(DataError, match="3 training images cannot be shared by 4 processes"):
        ShardedBatches(3, 8, seed=0, rank=0, world_size=4)


def test_a_single_process_world_changes_nothing() -> None:
    w = World()
    assert not w.enabled and w.is_main and local_batch(7, 100, w.world_size) == 7
    m = nn.Linear(2, 2)
    w.broadcast_weights(m)
    assert w.step_sync() is None and w.from_main(lambda: 3) == 3 and w.main_first(lambda: 4) == 4
    stats = Stats(1.5, 2, 3)
    assert w.reduce_stats(stats) is stats and w.all_sum([1.0]) == [1.0]
    assert isinstance(w.epoch_sampler(10, 4), EpochSampler)
    assert local_batch(7, 100, World(world_size=3).world_size) == 3
    assert local_batch(32, 5) == 5  # a training set smaller than the batch is the batch


def test_a_run_on_the_cpu_keeps_freed_memory_for_its_next_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(distributed, "keep_freed_memory", lambda d: seen.append(d.type) or True)
    for device in ("cpu", "cuda"):
        with session(torch.device(device)) as world:
            assert world.device.type == device
    assert seen == ["cpu", "cuda"]  # keep_freed_memory itself leaves a GPU run alone


CHILD = r'''
import json, sys, time, torch
import torch.distributed as dist
from torch import nn
sys.path.insert(0, sys.argv[4])
from common import batch, ctx, model
from snugtune.recipe.distributed import World
from snugtune.step import MicroBatch, train_step

rank, store, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[5]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
x, y = batch()
blocks = [b.tolist() for b in torch.tensor_split(torch.arange(len(y)), 2)]  # 5 + 4 images
xr, yr = x[blocks[rank]], y[blocks[rank]]
net = model()
world = World(rank=rank, world_size=2)
world.broadcast_weights(net)
backwards = [0]

def oom_in_backward(grad):  # the first layer's gradient: the end of a micro-batch's backward
    backwards[0] += 1
    if rank == 1 and (mode == "fault" or (mode == "oom" and backwards[0] == 2)):
        raise torch.OutOfMemoryError("injected")
    return grad

net[0].weight.register_hook(oom_in_backward)
opt = torch.optim.SGD(net.parameters(), lr=1.0)
micro = MicroBatch(5 if rank == 0 else 2)  # rank 0: 1 micro-batch, rank 1: 2
result = {}
try:
    stats, micro = train_step(net, opt, xr, yr, ctx(), micro, step=0, sync=world.step_sync())
    result = {"loss_sum": stats.loss_sum, "micro": micro.size,
              "recoveries": [r.to_dict() for r in micro.recoveries]}
except Exception as e:
    result = {"error": type(e).__name__, "message": str(e)}
result["params"] = [p.detach().tolist() for p in net.parameters()]
result["ended"] = time.time()
json.dump(result, open(out, "w"))
dist.destroy_process_group()
'''

COMMON = r'''
import torch
from torch import nn
from snugtune.step import StepContext

def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(9, 4, generator=g), torch.tensor([0, 1, 2, 2, 2, 1, 0, 2, 2])

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

def ctx():
    return StepContext(device=torch.device("cpu"), num_classes=3, label_smoothing=0.1,
                       class_weights=torch.tensor([2.0, 1.0, 0.5]))
'''


def _two_ranks(tmp_path: Path, mode: str) -> list[dict[str, Any]]:
    """One training step of ``model()`` in two gloo processes (see ``CHILD``)."""
    (tmp_path / "common.py").write_text(COMMON)
    (tmp_path / "child.py").write_text(CHILD)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(r),
                               str(tmp_path / "store"), str(tmp_path / f"out{r}.json"),
                               str(tmp_path), mode])
             for r in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    return [json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(2)]


def _single_process(tmp_path: Path) -> tuple[float, list[torch.Tensor]]:
    sys.path.insert(0, str(tmp_path))
    try:
        from common import batch, ctx, model  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    net = model()
    x, y = batch()
    stats, _ = train_step(net, torch.optim.SGD(net.parameters(), lr=1.0), x, y, ctx(),
                          MicroBatch(9), step=0)
    return stats.loss_sum, [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("mode", ["plain", "oom"])
def test_a_data_parallel_step_equals_the_single_process_step(tmp_path: Path, mode: str) -> None:
    """Unequal shares (5 + 4), different micro-batch counts (1 and 2), class weights and label
    smoothing; with ``oom``, rank 1 runs out of memory in its second micro-batch's backward
    (after the first one's gradients accumulated) and redoes its share at micro-batch 1."""
    outs = _two_ranks(tmp_path, mode)
    loss_sum, params = _single_process(tmp_path)
    assert sum(o["loss_sum"] for o in outs) == pytest.approx(loss_sum, rel=1e-6)
    for o in outs:  # both ranks hold the single-process parameters
        for got, want in zip(o["params"], params, strict=True):
            assert torch.allclose(torch.tensor(got), want, atol=1e-6)
    if mode == "oom":  # both ranks go on at the smaller micro-batch
        assert [o["micro"] for o in outs] == [1, 1]
        assert outs[1]["recoveries"] == [{"epoch": 0, "step": 0, "from": 2, "to": 1}]
        assert outs[0]["recoveries"] == [{"epoch": 0, "step": 0, "from": 5, "to": 1}]
    else:
        assert [o["micro"] for o in outs] == [2, 2]


def test_a_rank_that_cannot_finish_its_share_stops_every_rank_with_its_reason(
    tmp_path: Path
) -> None:
    """Rank 1 runs out of memory in every backward, down to micro-batch 1: both ranks end
    the step with an error (no hang, no step taken), rank 0's naming rank 1 and why."""
    t0 = time.time()
    outs = _two_ranks(tmp_path, "fault")
    assert outs[1]["error"] == "BudgetError" and "micro-batch 1" in outs[1]["message"]
    assert outs[0]["error"] == "DistributedError"
    assert "rank 1 could not finish its share of step 1" in outs[0]["message"]
    assert "BudgetError: out of memory at micro-batch 1" in outs[0]["message"]
    assert max(o["ended"] for o in outs) - t0 < 60
    _, params = _single_process(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        from common import model
    finally:
        sys.path.remove(str(tmp_path))
    start = [p.detach() for p in model().parameters()]
    for o in outs:  # no update was applied anywhere
        for got, want in zip(o["params"], start, strict=True):
            assert torch.equal(torch.tensor(got), want)


def test_each_rank_takes_its_local_gpu_or_the_one_gpu_its_launcher_gave_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from snugtune.errors import DistributedError
    from snugtune.recipe.distributed import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # torchrun: every GPU visible
    assert rank_device(2) == torch.device("cuda", 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # SLURM --gpus-per-task=1
    assert rank_device(3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DistributedError, match="LOCAL_RANK 3 but this process sees 2 GPUs"):
        rank_device(3)
