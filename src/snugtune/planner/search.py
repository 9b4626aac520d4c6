"""The planner: per phase, the fastest configuration whose predicted peak fits the budget.

For each phase the candidates (precision x checkpointed blocks; channels-last follows the
device, precision and model: :func:`channels_last`) are tried from the intrinsically fastest (:mod:`.cost`). For each, the largest
micro-batch that fits is found by bisection on the device model replayed over traces derived
for every batch from two simulations (:class:`snugtune.memory.BatchSweep`); a candidate that
already runs the whole batch ends the search, since every later one is slower per image.
The winner is verified by simulating its micro-batch directly. When a phase fits in no
configuration even at micro-batch 1, its deepest trainable blocks are frozen one at a time
(``top:N`` -> ``top:N-1`` ... ``top:1`` -> ``head``, "all" counting as every block) and the
deepest depth that fits is planned (``limited_by="frozen depth"``; at ``head`` the phase trains
on cached features); only when the head alone does not fit either does planning fail, with
the figures of the depth that was asked for.

Nothing here touches a GPU: the budget, the device and the GPU profile (measured on the card or
offline) come from the caller.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from torch import nn

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.errors import BudgetError
from snugtune.memory import (
    BatchSweep,
    GpuProfile,
    MemoryReport,
    block_count,
    build_model,
    get_gpu_profile,
)
from snugtune.planner.budget import budget_error
from snugtune.planner.context import PlanContext
from snugtune.planner.cost import Candidate, intrinsic_cost, step_cost
from snugtune.planner.types import PhasePlan, Plan
from snugtune.step import local_batch

__all__ = ["auto_precision", "plan_run"]

log = logging.getLogger(__name__)

def plan_run(
    cfg: TrainConfig,
    *,
    num_classes: int,
    num_train: int,
    resolution: int,
    device: str,
    model: nn.Module | None = None,
    world_size: int = 1,
    gpu: GpuProfile | None = None,
    device_info: Mapping[str, Any] | None = None,
) -> Plan:
    """Plan every phase of a run.

    Args:
        cfg: the run's configuration (budget ``gpu_memory``, ``batch_size``, ``precision``,
            ``micro_batch``, ``gpu`` profile, phases).
        num_classes: classes in the dataset.
        num_train: training images (caps the micro-batch).
        resolution: input resolution in pixels.
        device: ``cuda`` or ``cpu``, the device the plan is for.
        model: the model to plan for (a ``Classifier``, real or on the meta device); built
            from ``cfg.model`` on the meta device when omitted. It is not modified.
        world_size: data-parallel processes sharing each batch (the budget is per device; each
            step's gradient sum is simulated).
        gpu: the GPU's profile (``memory.resolve_gpu``: measured on the card present, or
            offline); by default ``get_gpu_profile(cfg.gpu)``. Without ``--gpu-memory`` a plan
            for a measured card fits the memory this process may use on it.
        device_info: the card's own figures when it was asked (recorded in the plan).

    Raises:
        BudgetError: a phase fits the budget in no configuration, even at micro-batch 1.
        ConfigError: unknown GPU profile.
    """
    started = time.perf_counter()
    dev = device
    ctx = PlanContext(
        cfg=cfg, model=model if model is not None else build_model(
            cfg.model, num_classes, cfg.head_hidden, cfg.pre_logits),
        gpu=gpu or get_gpu_profile(cfg.gpu), device=dev, resolution=resolution,
        num_classes=num_classes, num_train=num_train,
        batch=local_batch(cfg.batch_size, num_train, world_size), world_size=world_size,
    )
    phases = tuple(plan_phase(ctx, ph) for ph in cfg.phases)
    sims = sum(s.simulations for s in ctx.sweeps.values())
    log.info("planned %d phases in %.1f s (%d simulations)", len(phases),
             time.perf_counter() - started, sims)
    cuda = dev == "cuda"
    return Plan(
        model=cfg.model, device=dev, gpu=ctx.gpu.name if cuda else "cpu",
        resolution=resolution, num_classes=num_classes, num_train=num_train,
        batch_size=cfg.batch_size, budget_bytes=ctx.budget, phases=phases,
        gpu_profile=ctx.gpu.to_dict() if cuda else None,
        device_info=dict(device_info) if device_info else None,
    )


def auto_precision(device: str, gpu: GpuProfile) -> str:
    """``--precision auto`` for one step: bf16 on GPUs with bf16 tensor cores (sm80+), fp16 on
    older GPUs, fp32 on the CPU (where the planner also tries bf16: see ``candidates``)."""
    if device == "cuda":
        return "bf16" if gpu.bf16 else "fp16"
    return "fp32"


def candidates(ctx: PlanContext, phase: PhaseConfig) -> list[Candidate]:
    """Configurations of ``phase`` to try, intrinsically fastest first."""
    if ctx.cfg.precision != "auto":
        precisions = [ctx.cfg.precision]
    elif ctx.device == "cuda":
        precisions = [auto_precision(ctx.device, ctx.gpu)]
    else:
        precisions = ["fp32", "bf16"]
    n = block_count(ctx.model)
    top = phase.top_blocks()
    region = list(range(n)) if top is None else list(range(max(0, n - top), n))
    sets: dict[tuple[int, ...], float] = {(): 0.0}
    for share in (1 / 3, 2 / 3, 1.0):
        chosen = tuple(region[: math.ceil(len(region) * share)])
        if chosen:
            sets[chosen] = len(chosen) / max(1, n)
    nhwc = {p: channels_last(ctx.device, p, ctx.model) for p in precisions}  # one model walk each
    out = [Candidate(p, ck, nhwc[p], frac) for p in precisions for ck, frac in sets.items()]
    return sorted(out, key=lambda c: intrinsic_cost(ctx.device, c))


def channels_last(device: str, precision: str, model: nn.Module) -> bool:
    """Whether a phase runs NHWC: convolutional models under autocast on CUDA (tensor cores
    want NHWC), and on the CPU models with BatchNorm (oneDNN's NHWC kernels).

    Timed on the 2-core AVX-512 CPU, one fp32 training step at 96 px, batch 32, BatchNorm in
    eval mode: NHWC ran faster than NCHW for tf_efficientnet_lite0, efficientnet_b0,
    mobilenet_v2 and resnet50, about as fast for resnet18, and slower for convnext_atto (LayerNorm).
    Those ratios are not recorded in a committed JSON; ``benchmarks/results/cpu_step.json``
    (from ``benchmarks/cpu_step.py``) has ``channels_last`` against ``nchw`` for mobilenet_v2
    and efficientnet_b0 with every layer and BatchNorm training.
    """
    mods = list(model.modules())
    if not any(isinstance(m, nn.Conv2d) for m in mods):
        return False
    if device == "cuda":
        return precision != "fp32"
    return any(isinstance(m, nn.BatchNorm2d) for m in mods)


def plan_phase(ctx: PlanContext, phase: PhaseConfig) -> PhasePlan:
    """The plan of one phase (see the module docstring)."""
    try:
        return _plan_at_depth(ctx, phase)
    except BudgetError:
        top = phase.top_blocks()
        deepest = block_count(ctx.model) if top is None else top
        for depth in range(deepest - 1, -1, -1):  # down to the head alone (features cached)
            shallower = dataclasses.replace(phase, trainable=f"top:{depth}" if depth else "head")
            if not _fits(ctx, ctx.sweep(shallower, _leanest(ctx, shallower), 1), 1):
                continue
            plan = _plan_at_depth(ctx, shallower)
            log.warning("phase %s: %s does not fit the budget in any configuration; training %s "
                        "(the deepest depth that fits)", phase.name, phase.trainable, plan.trainable)
            return dataclasses.replace(plan, limited_by="frozen depth")
        if deepest == 0:
            raise
    head = dataclasses.replace(phase, trainable="head")  # not even the head: say what it needs
    raise budget_error(ctx, head, _leanest(ctx, head))


def _leanest(ctx: PlanContext, phase: PhaseConfig) -> Candidate:
    """The configuration with the smallest memory: low precision, most blocks checkpointed."""
    return max(candidates(ctx, phase), key=lambda c: (c.precision != "fp32", c.checkpoint_fraction))


def _plan_at_depth(ctx: PlanContext, phase: PhaseConfig) -> PhasePlan:
    cap, cap_reason = ctx.cap
    cands = candidates(ctx, phase)
    if ctx.cfg.micro_batch is not None:
        return finish(ctx, phase, cands[0], min(ctx.cfg.micro_batch, cap), "micro_batch")
    if ctx.budget is None:
        return finish(ctx, phase, cands[0], cap, "no budget")
    best: tuple[float, Candidate, int] | None = None
    for cand in cands:
        if best is not None and step_cost(ctx.device, cand, cap) >= best[0]:
            break  # sorted by intrinsic cost: no later candidate can be faster
        m = max_fit(ctx, ctx.sweep(phase, cand, 2 if cap > 1 else 1), cap)
        log.debug("phase %s: %s fits micro-batch %d", phase.name, cand, m)
        if m and (best is None or step_cost(ctx.device, cand, m) < best[0]):
            best = (step_cost(ctx.device, cand, m), cand, m)
    if best is None:
        raise budget_error(ctx, phase, cands[-1])
    _, cand, m = best
    return finish(ctx, phase, cand, m, "budget" if m < cap else cap_reason)


def _fits(ctx: PlanContext, sweep: BatchSweep, batch: int) -> bool:
    return not sweep.estimate(batch, ctx.gpu, budget=ctx.usable).oom


def max_fit(ctx: PlanContext, sweep: BatchSweep, cap: int) -> int:
    """Largest micro-batch in ``[1, cap]`` whose step fits (0 if none does)."""
    if not _fits(ctx, sweep, 1):
        return 0
    if _fits(ctx, sweep, cap):
        return cap
    lo, hi = 1, cap  # lo fits, hi does not
    # first guess from the affine growth of the unconstrained peak, then bisection
    p1 = sweep.estimate(1, ctx.gpu).predicted_peak_bytes
    p2 = sweep.estimate(2, ctx.gpu).predicted_peak_bytes
    if ctx.usable is not None and p2 > p1:
        guess = 1 + int((ctx.usable - p1) / (p2 - p1))
        for probe in (guess, guess + 1):
            if lo < probe < hi:
                lo, hi = (probe, hi) if _fits(ctx, sweep, probe) else (lo, probe)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(ctx, sweep, mid) else (lo, mid)
    return lo


def finish(
    ctx: PlanContext, phase: PhaseConfig, cand: Candidate, micro: int, limited_by: str
) -> PhasePlan:
    """Verify ``micro`` by a direct simulation (stepping down if it no longer fits)."""
    total = ctx.batch
    report: MemoryReport | None = None
    while True:
        accumulation = math.ceil(total / micro)
        sweep = ctx.sweep(phase, cand, min(accumulation, 2))
        report = sweep.report(micro, ctx.gpu, budget=ctx.usable, direct=True)
        if report.fits or limited_by in ("micro_batch", "no budget") or micro == 1:
            break
        log.debug("phase %s: micro-batch %d failed verification", phase.name, micro)
        micro, limited_by = micro - 1, "budget"
    budget = ctx.budget
    return PhasePlan(
        phase=phase.name, trainable=phase.trainable, optimizer=phase.optimizer,
        micro_batch=micro, accumulation=accumulation, precision=cand.precision,
        checkpointing=cand.checkpointing, channels_last=cand.channels_last,
        feature_cache=bool(ctx.cfg.feature_cache and phase.top_blocks() == 0),
        predicted_peak_bytes=report.predicted_peak_bytes,
        tensor_peak_bytes=report.tensor_peak_bytes, budget_bytes=budget,
        utilisation=None if budget is None else report.predicted_peak_bytes / budget,
        breakdown=dict(report.breakdown), limited_by=limited_by,
    )
