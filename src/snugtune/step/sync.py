"""A data-parallel step that every rank agrees on: local micro-batches, one agreement, one
gradient sum.

Each rank runs all the micro-batches of its share of a step on its own, with no collective
inside a forward or backward pass, so an out-of-memory error is recovered on that rank alone
(``step.microbatch``: rewind, halve, redo) exactly as in one process. PyTorch's DDP instead
all-reduces gradient buckets from hooks *during* the synchronising backward; an OOM there
leaves its reducer mid-iteration (the next forward raises "Expected to have finished
reduction in the prior iteration" while the peers wait in their all-reduce) or, if no hook
had fired, makes the retry's first micro-batch all-reduce a partial gradient against the
peers' full ones: a silently wrong step, then a hang until the process group's timeout.
Composer agrees on OOMs across ranks for the same reason.

Then, once per optimizer step (:meth:`StepSync.finish`):

1. **Agree**: one ``all_gather`` of (loss weight ``T_r``, micro-batch, failed) from every rank.
   A rank that could not finish its share (out of memory at micro-batch 1, or any other error)
   still takes part, so every rank learns it at once and stops with one error naming that rank
   and its reason (a second collective, only then, carries the text). Otherwise every rank
   continues at the smallest micro-batch any rank ran at, so all ranks stay halved together.
2. **Sum the gradients**: each rank's loss was normalised by its own share's weight ``T_r``,
   so each gradient is scaled by ``T_r / T`` and all-reduced: the single-process gradient of
   the global batch whatever the shares, class weights or label smoothing. Gradients go in
   buckets of at most ``BUCKET_CAP_BYTES`` packed into one flat buffer (a gradient larger than
   that is reduced in place, unpacked); at most ``IN_FLIGHT`` buckets are being reduced at once,
   so the communication of one bucket overlaps the packing of the next, and the sum holds at
   most ``IN_FLIGHT * BUCKET_CAP_BYTES`` beyond the gradients. That is what a data-parallel
   plan adds per rank: the simulator runs this same code with a :class:`Alone` peer set, so
   the buffers are in every predicted peak.

What it costs: the all-reduce no longer overlaps the backward pass (it cannot, safely: no
backward is guaranteed not to run out of memory). Measured on the 2-core CPU, 2 gloo processes
of one thread, 16 images a rank at 64 px, median of 12 interleaved steps against DDP
(``benchmarks/ddp_sync.py``, ``benchmarks/results/ddp_sync.json``): mobilenet_v2 (8.9 MB of
gradients) 0.986x DDP's step time, resnet18 (44.7 MB) 1.026x. Not yet measured with NCCL on
GPUs, where the overlap DDP gives is worth more.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from snugtune.errors import DistributedError
from snugtune.results import Recovery
from snugtune.step.microbatch import MicroBatch

__all__ = ["BUCKET_CAP_BYTES", "IN_FLIGHT", "Alone", "Peers", "StepSync", "sum_gradients"]

log = logging.getLogger(__name__)

#: Bytes of gradients packed into one all-reduce: DDP's default ``bucket_cap_mb=25``.
BUCKET_CAP_BYTES = 25 * 2**20
#: Buckets being reduced at once (each holds its packed buffer until it is unpacked).
IN_FLIGHT = 2


class Pending(Protocol):
    """An all-reduce in progress."""

    def wait(self) -> object: ...


class Peers(Protocol):
    """The collectives a data-parallel step uses (``recipe.distributed`` has the real ones)."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def all_gather(self, values: Sequence[float]) -> list[list[float]]:
        """Every rank's ``values``, in rank order."""

    def all_reduce_async(self, t: Tensor) -> Pending:
        """Start summing ``t`` over the ranks, in place."""

    def broadcast_text(self, text: str, src: int) -> str:
        """Rank ``src``'s ``text`` on every rank."""


class _Done:
    def wait(self) -> object:
        return None


@dataclass(frozen=True)
class Alone:
    """A peer set where every other rank did what this one did: the simulator's stand-in (the
    step allocates what it would in a ``world_size`` run; nothing is communicated)."""

    world_size: int = 2
    rank: int = 0

    def all_gather(self, values: Sequence[float]) -> list[list[float]]:
        return [list(values) for _ in range(self.world_size)]

    def all_reduce_async(self, t: Tensor) -> Pending:
        return _Done()

    def broadcast_text(self, text: str, src: int) -> str:
        return text


@dataclass(frozen=True)
class StepSync:
    """Ends a data-parallel step once this rank's micro-batches are done (see module doc)."""

    peers: Peers
    bucket_cap_bytes: int = BUCKET_CAP_BYTES

    def finish(self, model: nn.Module, *, weight: float, micro: MicroBatch,
               failure: BaseException | None, step: int = -1, epoch: int = 0) -> MicroBatch:
        """Agree with the other ranks, then sum the gradients of ``model``'s trainable
        parameters. Returns the micro-batch to continue at (the smallest any rank ran at).

        Args:
            weight: this rank's loss normaliser ``T_r`` (its share's total sample weight).
            micro: the micro-batch this rank's share ran at.
            failure: why this rank could not finish its share (None: it did).

        Raises:
            failure: on the rank that failed.
            DistributedError: on the others, naming the rank that failed and why.
        """
        rows = self.peers.all_gather([float(weight), float(micro.size), float(failure is not None)])
        failed = [r for r, row in enumerate(rows) if row[2]]
        if failed:
            first = failed[0]
            text = self.peers.broadcast_text(
                _describe(failure) if self.peers.rank == first else "", src=first)
            if failure is not None:
                raise failure
            raise DistributedError(f"rank {first} could not finish its share of step {step + 1} "
                                   f"and every rank stopped: {text}")
        total = sum(row[0] for row in rows)
        params = [p for p in model.parameters() if p.requires_grad]
        sum_gradients(params, weight / total if total else 0.0, self.peers, self.bucket_cap_bytes)
        smallest = int(min(row[1] for row in rows))
        if smallest >= micro.size:
            return micro
        log.warning("another process ran out of memory at step %d: continuing at micro-batch %d "
                    "like it", step + 1, smallest)
        return MicroBatch(smallest, (*micro.recoveries, Recovery(epoch, step, micro.size, smallest)))


def _describe(e: BaseException | None) -> str:
    text = "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _buckets(params: Sequence[nn.Parameter], cap: int) -> list[list[nn.Parameter]]:
    """Consecutive parameters of one dtype and device, at most ``cap`` bytes of gradient
    each (a parameter larger than ``cap`` alone). The same on every rank."""
    out: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        last = out[-1] if out else None
        if (last is None or size + nbytes > cap or last[0].dtype != p.dtype
                or last[0].device != p.device):
            out.append([p])
            size = nbytes
        else:
            last.append(p)
            size += nbytes
    return out


def sum_gradients(params: Sequence[nn.Parameter], scale: float, peers: Peers,
                  cap: int = BUCKET_CAP_BYTES) -> None:
    """``p.grad = sum over ranks of scale_r * p.grad_r`` for every parameter, in buckets.

    A parameter without a gradient on this rank contributes zeros (every rank must issue the
    same collectives).
    """
    pending: deque[tuple[list[Tensor], Tensor, Pending]] = deque()
    for bucket in _buckets(params, cap):
        for p in bucket:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in bucket if p.grad is not None]
        if len(grads) == 1 and grads[0].is_contiguous():
            flat = grads[0]  # reduced in place: no copy
            flat.mul_(scale)
        else:
            flat = torch.empty(sum(g.numel() for g in grads), dtype=grads[0].dtype,
                               device=grads[0].device)  # (n,) one bucket's gradients
            offset = 0
            for g in grads:
                flat[offset : offset + g.numel()].view(g.shape).copy_(g)
                offset += g.numel()
            flat.mul_(scale)
        pending.append((grads, flat, peers.all_reduce_async(flat)))
        if len(pending) >= IN_FLIGHT:
            _unpack(*pending.popleft())
    while pending:
        _unpack(*pending.popleft())


def _unpack(grads: list[Tensor], flat: Tensor, work: Pending) -> None:
    work.wait()
    if len(grads) == 1 and flat is grads[0]:
        return
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view(g.shape))
        offset += g.numel()
