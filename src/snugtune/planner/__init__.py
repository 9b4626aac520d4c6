"""The planner: pure search over configurations that fit a memory budget -> a :class:`Plan`.

::

    plan = plan_run(cfg, num_classes=10, num_train=8000, resolution=224, device="cuda")
    plan.phase("finetune").micro_batch, plan.save(run_dir)   # -> run_dir/plan.json

No GPU is touched here; predictions come from ``snugtune.memory``.
"""

from snugtune.planner.context import SAFETY_MARGIN
from snugtune.planner.search import auto_precision, plan_run
from snugtune.planner.types import PhasePlan, Plan

__all__ = ["SAFETY_MARGIN", "PhasePlan", "Plan", "auto_precision", "plan_run"]
