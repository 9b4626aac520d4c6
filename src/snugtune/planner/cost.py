"""Relative speed of a configuration: what "fastest" means when choosing among those that fit.

Time per image is modelled as a product of independent factors (lower is faster):

* precision: autocast on tensor cores runs matmuls and convolutions about twice as fast as
  fp32 (NVIDIA's mixed-precision training guide: 2-3x on Volta and later; 2x is the
  conservative figure); on the CPU fp32 is the reference: bf16 autocast trained 0.85x as
  fast for mobilenet_v2 and 0.63x for efficientnet_b0 (every layer and BatchNorm training, 96
  px, batch 32, channels_last) even on a 2-core Xeon with AMX (``benchmarks/cpu_step.py``,
  ``results/cpu_step.json``), so it is only chosen when fp32 does not fit;
* activation checkpointing recomputes the checkpointed blocks' forward in backward; a forward
  is about a third of a training step (backward costs about twice the forward, Chen et al.
  2016, "Training Deep Nets with Sublinear Memory Cost"), so recomputing a fraction ``f`` of
  the forward adds ``f / 3``;
* micro-batch: a step has fixed costs (kernel launches, optimizer, Python), so throughput
  grows like ``m / (m + M0)``; ``M0`` is the micro-batch at which a GPU runs at half its peak
  images/s, of the order of a few images for 224 px CNNs (an assumption, not a measurement).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MICRO_BATCH_HALF_SPEED", "Candidate", "intrinsic_cost", "step_cost"]

MICRO_BATCH_HALF_SPEED = 4
_PRECISION_COST = {
    ("cuda", "fp32"): 1.0,
    ("cuda", "bf16"): 0.5,
    ("cuda", "fp16"): 0.5,
    ("cpu", "fp32"): 1.0,
    ("cpu", "bf16"): 1.5,
    ("cpu", "fp16"): 2.0,
}
FORWARD_SHARE = 1.0 / 3.0


@dataclass(frozen=True)
class Candidate:
    """A configuration of a phase, the micro-batch aside."""

    precision: str
    checkpointing: tuple[int, ...]
    channels_last: bool
    checkpoint_fraction: float  # share of the backbone's blocks that are checkpointed


def intrinsic_cost(device: str, cand: Candidate) -> float:
    """Cost per image independent of the micro-batch."""
    return _PRECISION_COST[(device, cand.precision)] * (
        1.0 + FORWARD_SHARE * cand.checkpoint_fraction
    )


def step_cost(device: str, cand: Candidate, micro_batch: int) -> float:
    """Relative time per image of ``cand`` at ``micro_batch`` (lower is faster)."""
    return intrinsic_cost(device, cand) * (1.0 + MICRO_BATCH_HALF_SPEED / max(1, micro_batch))
