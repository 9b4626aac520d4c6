"""What snugtune's agreed data-parallel step costs against PyTorch's DDP, in 2 gloo processes.

DDP all-reduces gradient buckets from hooks during the backward pass (communication overlaps
computation); snugtune runs a step's micro-batches with no collective inside them, then agrees
(one ``all_gather``) and sums the gradients in buckets (``snugtune.step.sync``), so that an
out-of-memory error can never leave a collective half-issued. Both run the same model, batch
and optimizer in the same two processes (one intra-op thread each), interleaved step by step
after warm-up; the JSON gives every step time, the medians and the ratio (snugtune / DDP).

Cases: torchvision ``mobilenet_v2`` (3.5 M parameters, 14 MB of gradients) and ``resnet18``
(11.7 M, 47 MB), every layer trained, 64 px, 16 images a rank, AdamW, fp32.

Usage: ``python benchmarks/ddp_sync.py --out benchmarks/results/ddp_sync.json``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import emit, load, machine  # noqa: E402
from snugtune.recipe.distributed import World  # noqa: E402
from snugtune.step import MicroBatch, StepContext, train_step  # noqa: E402

MODELS = ("mobilenet_v2", "resnet18")


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=10)


def _time_model(name: str, rank: int, x: torch.Tensor, y: torch.Tensor,
                args: argparse.Namespace) -> dict[str, list[float]]:
    """Step times of DDP and of snugtune's agreed step, interleaved after warm-up."""
    plain = _model(name)
    ddp = nn.parallel.DistributedDataParallel(plain)
    opt_ddp = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    ours = _model(name)
    world = World(rank=rank, world_size=2)
    world.broadcast_weights(ours)
    sync = world.step_sync()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    ctx = StepContext(device=torch.device("cpu"), num_classes=10)

    def ddp_step() -> None:
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt_ddp.step()
        opt_ddp.zero_grad(set_to_none=True)

    def our_step() -> None:
        train_step(ours, opt_ours, x, y, ctx, MicroBatch(args.batch), step=0, sync=sync)

    times: dict[str, list[float]] = {"ddp": [], "snugtune": []}
    for i in range(args.warmup + args.steps):
        for label, fn in (("ddp", ddp_step), ("snugtune", our_step))[:: 1 if i % 2 else -1]:
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            dist.barrier()
            if i >= args.warmup:
                times[label].append(time.perf_counter() - t0)
    return times


def _worker(rank: int, store: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, args.res, args.res, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    results = {name: _time_model(name, rank, x, y, args) for name in MODELS}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.pt")
        mp.spawn(_worker, args=(os.path.join(tmp, "store"), args, out), nprocs=2)
        times = torch.load(out)
    cases = {}
    for name, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        cases[name] = {
            "step_seconds": {k: [round(s, 4) for s in v] for k, v in t.items()},
            "median_step_seconds": {k: round(v, 4) for k, v in med.items()},
            "ratio_snugtune_over_ddp": round(med["snugtune"] / med["ddp"], 3),
            "gradient_mb": round(sum(p.numel() for p in _model(name).parameters()) * 4 / 1e6, 1),
        }
    emit({"benchmark": "ddp_sync", "processes": 2, "threads_per_process": 1,
          "batch_per_rank": args.batch, "res": args.res, "steps": args.steps,
          "cases": cases, "machine": machine(), "load_before": before, "load_after": load()},
         args.out)


if __name__ == "__main__":
    main()
