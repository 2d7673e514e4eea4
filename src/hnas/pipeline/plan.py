"""`hnas plan`: nnU-Net's plan of a dataset folder, an nnUNetPlans.json or the built-in data."""

from __future__ import annotations

from pathlib import Path

from hnas.data.cache import builtin_dataset, fingerprint_of
from hnas.errors import PlanError
from hnas.pipeline.text import key_value_table
from hnas.planning import Plan, is_nnunet_plans, make_plan, plan_from_nnunet, planner_rules


def plan_for(source: Path | None, *, max_stages: int | None = None, dims: int = 3,
             planner: str = "default") -> Plan:
    """nnU-Net's plan for a dataset folder or an nnUNetPlans.json (default: built-in data).

    ``planner`` picks nnU-Net's planner for a dataset ("default" or "resenc_m"); a plans file
    already holds its planner's result, so asking it for another planner is an error.
    """
    rules = planner_rules(planner)
    if source is not None and source.is_file():
        if not is_nnunet_plans(source):
            raise PlanError(f"{str(source)!r} is a file but not nnU-Net's nnUNetPlans.json; expected a dataset "
                            "folder or a plans file with a 'configurations' entry")
        plan = plan_from_nnunet(source, configuration="3d_fullres" if dims == 3 else "2d")
        if rules.name != "default" and plan.planner != rules.name:
            raise PlanError(f"planner {planner!r} asked for, but {str(source)!r} holds plans of planner "
                            f"{plan.planner!r}; give the dataset folder to plan it with {planner!r}")
        return with_stages(plan, max_stages)
    dataset = builtin_dataset() if source is None else source
    return make_plan(fingerprint_of(dataset), max_stages, dims=dims, planner=rules.name)


def resolve_plan(dataset: Path | None, plan_file: Path | None, max_stages: int | None) -> Plan:
    """The plan a command works on: from --plan, from --dataset, or the built-in data."""
    if plan_file is None:
        return plan_for(dataset, max_stages=max_stages)
    if is_nnunet_plans(plan_file):
        return plan_for(plan_file, max_stages=max_stages)
    return with_stages(Plan.load(plan_file), max_stages)


def with_stages(plan: Plan, max_stages: int | None) -> Plan:
    """A stored plan cut to ``max_stages`` (a stored plan cannot grow: re-plan the dataset)."""
    if max_stages is None or max_stages == plan.n_stages:
        return plan
    if max_stages > plan.n_stages:
        raise PlanError(f"--max-stages {max_stages} exceeds the {plan.n_stages} stages of the stored plan; "
                        "plan the dataset itself (--dataset) to let the topology grow")
    return plan.truncated(max_stages)


def describe_plan(plan: Plan) -> str:
    rows = [
        ("dataset", plan.dataset_name), ("dims", f"{plan.dims}D"), ("planner", plan.planner),
        ("patch size", "x".join(map(str, plan.patch_size))),
        ("spacing", "x".join(f"{s:g}" for s in plan.spacing)),
        ("median shape", "x".join(map(str, plan.median_shape))),
        ("stages", str(plan.n_stages)), ("batch size", str(plan.batch_size)),
        ("strides", " ".join("x".join(map(str, s)) for s in plan.strides)),
        ("kernels", " ".join("x".join(map(str, k)) for k in plan.kernel_sizes)),
        ("features", " ".join(map(str, plan.features_per_stage))),
        ("channels -> classes", f"{plan.n_input_channels} -> {plan.n_classes}"),
        ("normalization", ", ".join(plan.normalization)),
    ]
    return key_value_table(rows)
