"""nnU-Net's planning: Fingerprint -> Plan (network topology, patch, batch, spacing).

Rules of nnU-Net v2's planners in numpy (:mod:`hnas.planning.planner`), the Plan itself
(:mod:`hnas.planning.plan`) and the import of nnU-Net's own plans files
(:mod:`hnas.planning.nnunet_plans`). No torch here.
"""

from hnas.planning.nnunet_plans import is_nnunet_plans, plan_from_nnunet, resolve_nnunet_configuration
from hnas.planning.plan import DEFAULT_PLANNER, RESENC_M_BLOCKS, Plan
from hnas.planning.planner import (ANISOTROPY_THRESHOLD, PLANNERS, PlannerRules, make_plan, planner_rules,
                                   resenc_m_blocks, target_spacing)

__all__ = [
    "ANISOTROPY_THRESHOLD", "DEFAULT_PLANNER", "PLANNERS", "Plan", "PlannerRules", "RESENC_M_BLOCKS",
    "is_nnunet_plans", "make_plan", "plan_from_nnunet", "planner_rules", "resenc_m_blocks",
    "resolve_nnunet_configuration", "target_spacing",
]
