"""Data-parallel training under ``torchrun``: PyTorch's process groups (NCCL, gloo), and the
policies around them. Not ``DistributedDataParallel``: its reducer all-reduces from hooks inside
the backward pass, where an out-of-memory error leaves it mid-iteration (``step.sync``).

``torchrun --nproc-per-node N -m snugtune train DATA ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`session` finds them, joins the process group
(NCCL on CUDA, gloo on the CPU) and returns a :class:`World`. Without them (or with
``WORLD_SIZE=1``) the world is a single process and every method here is a no-op.

Policies (the single-process run is the reference; a data-parallel run takes the same steps):

* **Global batch.** ``--batch-size`` is the *global* batch. Each step's global batch (the same
  images, in the same order, as a single process's step) is cut into ``world_size``
  contiguous blocks and rank ``r`` trains on block ``r``; shares differ by at most one image
  when the batch does not divide evenly. A final global batch with fewer images than
  processes is merged into the previous step, so every rank takes the same number of steps
  and every image is trained on exactly once per epoch: nothing is padded or dropped.
* **Exact gradients, agreed steps.** Each rank runs its share's micro-batches on its own (an
  out-of-memory error halves and redoes them there, as in one process), then the ranks agree
  and sum the gradients once per step (``snugtune.step.sync``: no collective inside a
  forward or backward pass, so no OOM can leave one half-issued). Each rank's gradient is
  scaled by ``T_r / T`` (its share's total sample weight over the global batch's) and summed:
  the update is the single-process update whatever the shares, class weights or label
  smoothing. All ranks continue at the smallest micro-batch any rank needed; a rank that
  cannot finish its share (out of memory at micro-batch 1, any error) stops every rank at
  that step with one error naming it.
* **Not bit-identical by nature.** Dropout masks and MixUp/CutMix partners are drawn per
  rank over its share (the mixing stays within a share), so such runs are a different,
  equally valid, random draw from a single process's; everything else matches up to float
  rounding. BatchNorm layers that train (``train_bn``) normalise over each rank's share, as a
  single process does over a micro-batch of the same size.
* **Statistics.** Training sums (loss, correct, seen) and validation sums over a sharded
  validation set are all-reduced, so metrics equal a single process's up to float rounding.
  BatchNorm buffers (only trained with ``train_bn``) are broadcast from rank 0 each epoch.
* **Files.** Only rank 0 scans, splits, plans and writes (checkpoints, metrics, reports,
  ``plan.json``); the others receive its results by broadcast (:meth:`World.from_main`).
  Rank 0 fills the feature cache; the others then open it and find every entry
  (:meth:`World.main_first`).
* **Per device.** Budget and plan are per device: each rank's batch is
  ``ceil(batch_size / world_size)``; ``micro_batch`` (agreed: the same on every rank) and
  ``accumulation`` in the metrics are per process. The gradient sum's buffers (at most ``step.sync.IN_FLIGHT`` buckets of 25 MB)
  are in the per-rank plan: the simulator runs the same sum.
* **Weights.** Rank 0's parameters and buffers are broadcast once when a phase starts
  (:meth:`World.broadcast_weights`), as DDP does; identical updates keep them equal after.
* **Failures.** A rank that dies makes torchrun's elastic agent stop the others and report
  the failed rank; a peer lost inside a collective raises :class:`DistributedError`. Hung
  peers are bounded by the process-group timeout, ``SNUGTUNE_DIST_TIMEOUT_S`` (default
  1800 s). ``--resume`` works with any number of processes (checkpoints are per run, not per
  rank, and steps per epoch do not depend on the process count unless a tail is merged), and a worker group restarted by ``torchrun --max-restarts`` resumes by itself. With
  torchrun's c10d rendezvous (``--standalone``, ``--rdzv-backend c10d``) restarted workers
  can find the previous attempt's peers in the shared store and fail to connect (PyTorch
  issues 135712, 167288): launch with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` to restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from snugtune.errors import DistributedError
from snugtune.recipe.sampler import EpochSampler
from snugtune.recipe.shards import ShardedBatches, sharded_loader
from snugtune.step import Stats, StepSync, keep_freed_memory

__all__ = [
    "DistributedError",
    "NullMetrics",
    "ShardedBatches",
    "World",
    "rank_device",
    "restarted_by_torchrun",
    "session",
    "sharded_loader",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
TIMEOUT_ENV = "SNUGTUNE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800


def restarted_by_torchrun() -> bool:
    """True in a worker group that torchrun's elastic agent restarted after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and give every rank its result (or its exception)."""
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except BaseException as e:
                box[0] = ("error", _picklable(e))
                _collective(dist.broadcast_object_list, box, src=0)
                raise
        _collective(dist.broadcast_object_list, box, src=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (which then find what rank 0 wrote, e.g. a
        filled feature cache, and only read it); a failure on rank 0 is raised everywhere."""
        if not self.enabled:
            return fn()
        box: list[T] = []
        self.from_main(lambda: box.append(fn()))
        return box[0] if self.is_main else fn()

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        _collective(dist.all_reduce, t)
        return t.tolist()

    def reduce_stats(self, stats: Stats) -> Stats:
        """Epoch sums over all ranks' shares."""
        if not self.enabled:
            return stats
        loss_sum, correct, seen = self.all_sum([stats.loss_sum, stats.correct, stats.seen])
        return Stats(loss_sum=loss_sum, correct=round(correct), seen=round(seen))

    def epoch_sampler(self, n: int, batch_size: int) -> EpochSampler | ShardedBatches:
        """The train sampler: a plain shuffled order, or this rank's share of each batch (set
        its ``seed`` before each epoch)."""
        if not self.enabled:
            return EpochSampler(n, seed=0)
        return ShardedBatches(n, batch_size, seed=0, rank=self.rank, world_size=self.world_size)

    def val_shard(self, dataset: Dataset) -> Dataset:
        """Every ``world_size``-th validation item from ``rank`` (sums are all-reduced)."""
        if not self.enabled:
            return dataset
        return Subset(dataset, range(self.rank, len(dataset), self.world_size))  # type: ignore[arg-type]

    def broadcast_weights(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers in ``module`` on every rank (as DDP starts)."""
        if self.enabled:
            with torch.no_grad():
                for t in [*module.parameters(), *module.buffers()]:
                    _collective(dist.broadcast, t.data, src=0)

    def step_sync(self) -> StepSync | None:
        """How each training step ends among the ranks (None: one process)."""
        return StepSync(_ProcessGroupPeers(self.rank, self.world_size, self.device)) \
            if self.enabled else None

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's floating buffers (BatchNorm running statistics) on every rank."""
        if self.enabled:
            for b in module.buffers():
                _collective(dist.broadcast, b, src=0)


class NullMetrics:
    """The metrics log of ranks other than 0: accepts rows, writes nothing."""

    rows: list[dict[str, Any]] = []

    def append(self, row: Any) -> None:
        """Ignore ``row`` (rank 0 logs the same, all-reduced, row)."""

    def truncate(self, keep: int) -> None:
        """Nothing to truncate."""

    def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True)
class _ProcessGroupPeers:
    """``step.sync.Peers`` over the default process group (gloo or NCCL)."""

    rank: int
    world_size: int
    device: torch.device

    def all_gather(self, values: Sequence[float]) -> list[list[float]]:
        mine = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        _collective(dist.all_gather, rows, mine)
        return [r.tolist() for r in rows]

    def all_reduce_async(self, t: Tensor) -> _Waiting:
        return _Waiting(_collective(dist.all_reduce, t, async_op=True))

    def broadcast_text(self, text: str, src: int) -> str:
        box = [text]
        _collective(dist.broadcast_object_list, box, src=src)
        return str(box[0])


@dataclass(frozen=True)
class _Waiting:
    """An async collective whose wait reports a lost peer as ``DistributedError``."""

    work: Any

    def wait(self) -> object:
        return _collective(self.work.wait)


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any unpicklable exception is sent as its message
        return DistributedError(f"rank 0 failed: {type(e).__name__}: {e}")


def _collective(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a lost peer becomes a one-line ``DistributedError``."""
    try:
        return fn(*args, **kwargs)
    except dist.DistError as e:
        raise DistributedError(_lost_peer(e)) from e
    except RuntimeError as e:  # gloo reports a closed peer as a plain RuntimeError
        if not _looks_like_lost_peer(e):
            raise
        raise DistributedError(_lost_peer(e)) from e


def _looks_like_lost_peer(e: BaseException) -> bool:
    text = str(e).lower()
    return any(k in text for k in ("connection", "peer", "timed out", "timeout", "gloo", "nccl"))


def _lost_peer(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    rank = os.environ.get("RANK", "?")
    return (f"rank {rank} lost contact with the other processes ({first}); another process "
            "probably died (its error and torchrun's failure report name it). Fix that, then "
            "continue with: snugtune train --resume RUN (any number of processes)")


def _init_group(backend: str, timeout: timedelta, device: torch.device) -> None:
    bind: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}  # NCCL: one GPU per rank
    try:
        dist.init_process_group(backend, timeout=timeout, **bind)
    except (RuntimeError, dist.DistError) as e:
        if not restarted_by_torchrun():
            raise
        first = str(e).strip().splitlines()[0][:200]
        raise DistributedError(
            f"the worker group restarted by torchrun could not connect ({first}); with the c10d "
            "rendezvous, restarted workers may find the previous attempt's peers in torchrun's "
            "shared store (PyTorch issues 135712, 167288). Launch torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, or run snugtune train --resume RUN") from e


def rank_device(local_rank: int) -> torch.device:
    """This rank's GPU: ``cuda:LOCAL_RANK`` where the node's GPUs are all visible (torchrun),
    ``cuda:0`` where the launcher gives each rank its own single GPU (SLURM
    ``--gpus-per-task=1``: ``CUDA_VISIBLE_DEVICES`` differs per rank).

    Raises:
        DistributedError: more GPUs visible than one, but not ``LOCAL_RANK + 1``.
    """
    count = torch.cuda.device_count()
    if count == 1:
        return torch.device("cuda", 0)
    if local_rank < count:
        return torch.device("cuda", local_rank)
    raise DistributedError(
        f"LOCAL_RANK {local_rank} but this process sees {count} GPUs: launch one process per "
        "visible GPU (torchrun --nproc-per-node), or give each rank one GPU "
        "(CUDA_VISIBLE_DEVICES)")


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[World]:
    """Join torchrun's process group for the duration of a run (or yield a single process).

    A group that is already initialised (by the caller) is used and left open. A CPU run keeps
    its freed memory for the next step (``step.keep_freed_memory``).
    """
    keep_freed_memory(device)
    rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World(device=device)
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = rank_device(local)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        backend = "nccl" if device.type == "cuda" else "gloo"
        _init_group(backend, timeout, device)
        log.info("data-parallel: %d processes (%s), global batch split across them", size, backend)
    world = World(rank=rank, world_size=size, local_rank=local, device=device)
    quiet = logging.getLogger("snugtune")
    level = quiet.level
    if not world.is_main:  # one copy of the progress logs, from rank 0
        quiet.setLevel(logging.WARNING)
    try:
        yield world
    except RuntimeError as e:
        if isinstance(e, dist.DistError) or _looks_like_lost_peer(e):
            raise DistributedError(_lost_peer(e)) from e
        raise
    finally:
        quiet.setLevel(level)
        if owned:
            dist.destroy_process_group()
