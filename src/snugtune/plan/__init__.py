"""The planner: pure search over configurations that fit a memory budget -> a :class:`Plan`.

::

    plan = plan_run(cfg, num_classes=10, num_train=8000, resolution=224)
    plan.phase("finetune").micro_batch, plan.save(run_dir)   # -> run_dir/plan.json

No GPU is touched here; predictions come from ``snugtune.memory``.
"""

from snugtune.plan.search import SAFETY_MARGIN, plan_run
from snugtune.plan.types import PLAN_FILE, PhasePlan, Plan

__all__ = ["PLAN_FILE", "SAFETY_MARGIN", "PhasePlan", "Plan", "plan_run"]
