"""When nothing fits: the smallest need, by category, and which changes would fit.

The message follows the house style: "Budget 4.0 GiB < 5.3 GiB needed at batch 1 (weights
0.5, optimizer 1.1, activations 2.9). Try --precision bf16 or --resolution 160." Every
suggestion is checked by simulation before it is offered.
"""

from __future__ import annotations

import dataclasses

from snugtune.config import PhaseConfig
from snugtune.errors import BudgetError
from snugtune.memory import BatchSweep, MemoryReport
from snugtune.planner.context import SAFETY_MARGIN, PlanContext
from snugtune.planner.cost import Candidate
from snugtune.units import GIB, MIB

__all__ = ["budget_error", "grouped", "min_need"]

_GROUPS = {
    "weights": ("parameters", "autocast_copies"),
    "gradients": ("gradients",),
    "optimizer": ("optimizer_state",),
    "activations": ("activations", "temporaries", "input", "workspace"),
    "CUDA context and allocator": ("cuda_context", "allocator_reserve"),
}


def _size(n: int) -> str:
    if n >= GIB // 10:
        return f"{n / GIB:.1f} GiB"
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def _num(n: int) -> str:
    return f"{n / GIB:.1f}" if n >= GIB // 10 else _size(n)


def _smaller_resolutions(res: int) -> list[int]:
    """75% and 50% of ``res``, rounded down to a multiple of 32 (8 below 64 px)."""
    out = []
    for share in (0.75, 0.5):
        r = int(res * share)
        step = 32 if r >= 64 else 8
        r = max(16, r // step * step)
        if r < res and r not in out:
            out.append(r)
    return out


def grouped(breakdown: dict[str, int]) -> dict[str, int]:
    """The breakdown in the five groups a user can act on."""
    return {g: sum(breakdown.get(k, 0) for k in keys) for g, keys in _GROUPS.items()}


def min_need(ctx: PlanContext, sweep: BatchSweep, batch: int) -> tuple[int, MemoryReport]:
    """Smallest budget (bytes) under which ``batch`` fits, and the report at that budget."""
    need = sweep.needed(batch, ctx.gpu)
    return int(need / (1.0 - SAFETY_MARGIN)), sweep.report(batch, ctx.gpu, budget=need)


def _fits_at_one(ctx: PlanContext, phase: PhaseConfig, cand: Candidate) -> bool:
    sweep = ctx.sweep(phase, cand, 1)
    return not sweep.estimate(1, ctx.gpu, budget=ctx.usable).oom


def _suggestions(ctx: PlanContext, phase: PhaseConfig, cand: Candidate) -> list[str]:
    out: list[str] = []
    if cand.precision == "fp32" and ctx.device == "cuda":
        low = "bf16" if ctx.gpu.bf16 else "fp16"
        if _fits_at_one(ctx, phase, dataclasses.replace(cand, precision=low)):
            out.append(f"--precision {low}")
    for trainable in ("top:1", "head"):
        if phase.trainable in ("head", trainable):
            continue
        lean = dataclasses.replace(phase, trainable=trainable)
        if _fits_at_one(ctx, lean, dataclasses.replace(cand, checkpointing=())):
            out.append(f"freezing more (phases.{phase.name}.trainable: {trainable})")
            break
    for res in _smaller_resolutions(ctx.resolution):
        smaller = dataclasses.replace(ctx, resolution=res, sweeps={})
        if _fits_at_one(smaller, phase, cand):
            out.append(f"--resolution {res}")
            break
    return out


def budget_error(ctx: PlanContext, phase: PhaseConfig, cand: Candidate) -> BudgetError:
    """The error for a phase that does not fit even with ``cand`` (the leanest) at batch 1."""
    budget = ctx.budget or 0
    need, report = min_need(ctx, ctx.sweep(phase, cand, 1), 1)
    parts = ", ".join(f"{g} {_num(v)}" for g, v in grouped(report.breakdown).items() if v)
    what = f"training {phase.trainable}, {cand.precision}" + (
        f", checkpointing blocks {_span(cand.checkpointing)}" if cand.checkpointing else "")
    tries = _suggestions(ctx, phase, cand) + [f"--gpu-memory {_size(need)} or more"]
    return BudgetError(
        f"Budget {_size(budget)} < {_size(need)} needed at batch 1 for phase "
        f"{phase.name!r} of {ctx.cfg.model} at {ctx.resolution} px ({what}; {parts}). "
        f"Try {' or '.join(tries)}."
    )


def _span(blocks: tuple[int, ...]) -> str:
    if len(blocks) > 2 and blocks == tuple(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return ",".join(map(str, blocks))
