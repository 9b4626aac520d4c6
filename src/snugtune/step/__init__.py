"""The training step, defined once: the trainer runs it on real tensors, the memory simulator on
fake ones.

::

    build_optimizer(param_groups(...), phase, device)   optimizer and its kernels   optim
    soft_targets / weighted_loss_sum                    the loss                     loss
    autocast / grad_scaler / resolve_device             precision and device         device
    keep_freed_memory(device)                           a CPU step's freed memory    host_memory
    set_checkpointing(blocks, indices)                  activation checkpointing     checkpointing
    train_step / evaluate                               the step, OOM-recovering     loop, microbatch
    StepSync(peers)                                     a data-parallel step's end   sync
    derive_seed(...)                                    every random stream's seed   seeding
"""

from snugtune.step.checkpointing import checkpointed_blocks, set_checkpointing
from snugtune.step.device import (
    AUTOCAST_DTYPES,
    CUBLAS_DETERMINISTIC,
    autocast,
    deterministic,
    grad_scaler,
    plan_device,
    resolve_device,
)
from snugtune.step.host_memory import keep_freed_memory
from snugtune.step.loop import (
    CPU_FORWARD_CHUNK,
    Stats,
    StepContext,
    eval_micro_batch,
    evaluate,
    train_step,
)
from snugtune.step.loss import balanced_class_weights, soft_targets, weight_total, weighted_loss_sum
from snugtune.step.microbatch import MicroBatch, free_memory, local_batch, retry_halving
from snugtune.step.optim import (
    PhaseSchedule,
    build_optimizer,
    build_scheduler,
    lr_factor,
    param_groups,
)
from snugtune.step.seeding import derive_seed
from snugtune.step.sync import Alone, Peers, StepSync

__all__ = [
    "AUTOCAST_DTYPES",
    "CUBLAS_DETERMINISTIC",
    "Alone",
    "CPU_FORWARD_CHUNK",
    "MicroBatch",
    "Peers",
    "PhaseSchedule",
    "Stats",
    "StepContext",
    "StepSync",
    "autocast",
    "balanced_class_weights",
    "build_optimizer",
    "build_scheduler",
    "checkpointed_blocks",
    "derive_seed",
    "deterministic",
    "eval_micro_batch",
    "evaluate",
    "free_memory",
    "grad_scaler",
    "keep_freed_memory",
    "local_batch",
    "lr_factor",
    "param_groups",
    "plan_device",
    "resolve_device",
    "retry_halving",
    "set_checkpointing",
    "soft_targets",
    "train_step",
    "weight_total",
    "weighted_loss_sum",
]
