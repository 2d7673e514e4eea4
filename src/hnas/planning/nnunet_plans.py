"""nnU-Net's ``nnUNetPlans.json`` -> Plan: run hnas on the networks nnU-Net planned itself.

Reads the 2.4+ ``architecture`` form of a plans file (and the configurations that inherit
from others), and the label count from the ``dataset.json`` nnU-Net copies beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hnas.errors import PlanError
from hnas.planning.plan import Plan
from hnas.planning.planner import (CONV_BLOCKS, CONV_DECODER_BLOCKS, DEFAULT_MAX_FEATURES, RESIDUAL_DECODER_BLOCKS,
                                   features_per_stage, resenc_m_blocks)


def is_nnunet_plans(path: Path) -> bool:
    """Whether ``path`` is a JSON file with nnU-Net's 'configurations' entry."""
    try:
        return path.is_file() and "configurations" in json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False

# nnU-Net's scheme classes -> Plan.normalization names (RescaleTo01 is (x - min) / (max - min) per image).
_NORMALIZATION_NAMES = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "RescaleTo01Normalization": "minmax",
                        "NoNormalization": "none", "RGBTo01Normalization": "rgb_to_0_1"}
# nnU-Net's plans names -> our planner names; other planners' plans keep their plans name.
_PLANNER_OF_PLANS = {"nnUNetPlans": "default", "nnUNetResEncUNetMPlans": "resenc_m"}


def plan_from_nnunet(plans, configuration: str = "3d_fullres", dataset_json=None) -> Plan:
    """A Plan from nnU-Net's ``nnUNetPlans.json`` (2.4+ ``architecture`` form).

    ``plans`` and ``dataset_json`` are paths or dicts. The label count is not in the plans
    file, so it comes from ``dataset_json`` (default: the ``dataset.json`` nnU-Net copies
    next to the plans file).
    """
    plans_path = None
    if not isinstance(plans, dict):
        plans_path = Path(plans)
        plans = _load_json(plans_path, "plans file")
    if dataset_json is None and plans_path is not None and (plans_path.parent / "dataset.json").is_file():
        dataset_json = plans_path.parent / "dataset.json"
    if dataset_json is None:
        where = (f"beside {str(plans_path)!r} (nnU-Net copies it into nnUNet_preprocessed/DatasetXXX_Name/)"
                 if plans_path is not None else "(Python: pass dataset_json=, a path or a dict with 'labels')")
        raise PlanError(f"nnU-Net's plans do not list the labels; expected the dataset's dataset.json {where}")
    if not isinstance(dataset_json, dict):
        dataset_json = _load_json(Path(dataset_json), "dataset.json")
    config = resolve_nnunet_configuration(plans, configuration)
    arch = _architecture_kwargs(config, configuration)
    n_stages = int(arch["n_stages"])
    features = tuple(int(f) for f in arch["features_per_stage"])
    dims = len(config["patch_size"])
    residual = "n_blocks_per_stage" in arch
    encoder_blocks = tuple(int(b) for b in arch["n_blocks_per_stage" if residual else "n_conv_per_stage"])
    decoder_blocks = tuple(int(b) for b in arch["n_conv_per_stage_decoder"])
    transpose = plans.get("transpose_forward")
    return Plan(
        dataset_name=str(plans.get("dataset_name", "")),
        dims=dims,
        patch_size=tuple(int(p) for p in config["patch_size"]),
        spacing=tuple(float(s) for s in config["spacing"]),
        median_shape=tuple(int(round(float(m))) for m in config["median_image_size_in_voxels"]),
        n_stages=n_stages,
        strides=_int_tuples(arch["strides"], n_stages, dims),
        kernel_sizes=_int_tuples(arch["kernel_sizes"], n_stages, dims),
        features_per_stage=features,
        conv_blocks_per_stage=(CONV_BLOCKS,) * n_stages if residual else encoder_blocks,
        conv_decoder_blocks_per_stage=(CONV_DECODER_BLOCKS,) * (n_stages - 1) if residual else decoder_blocks,
        residual_blocks_per_stage=encoder_blocks if residual else resenc_m_blocks(n_stages),
        residual_decoder_blocks_per_stage=(decoder_blocks if residual
                                           else (RESIDUAL_DECODER_BLOCKS,) * (n_stages - 1)),
        batch_size=int(config["batch_size"]),
        n_input_channels=len(config["normalization_schemes"]),
        n_classes=_count_classes(dataset_json),
        normalization=tuple(_normalization_from_nnunet(n) for n in config["normalization_schemes"]),
        base_features=features[0],
        max_features=_max_features(features, dims),
        transpose_forward=tuple(int(t) for t in transpose) if transpose is not None else None,
        planner=_planner_of_plans(plans),
    )


def _planner_of_plans(plans: dict) -> str:
    name = str(plans.get("plans_name", "nnUNetPlans"))
    return _PLANNER_OF_PLANS.get(name, name)


def _load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise PlanError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlanError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc


def resolve_nnunet_configuration(plans: dict, name: str, seen: tuple[str, ...] = ()) -> dict:
    """A configuration with its ``inherits_from`` chain merged in (child keys win)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise PlanError("nnU-Net plans have no 'configurations'; expected an nnUNetPlans.json from nnU-Net v2")
    if name not in configurations:
        raise PlanError(f"configuration {name!r} is not in the plans; expected one of {sorted(configurations)}")
    if name in seen:
        raise PlanError(f"configuration {name!r} inherits from itself ({' -> '.join(seen + (name,))})")
    config = dict(configurations[name])
    parent = config.pop("inherits_from", None)
    if parent is None:
        return config
    merged = resolve_nnunet_configuration(plans, parent, seen + (name,))
    merged.update(config)
    return merged


def _architecture_kwargs(config: dict, name: str) -> dict:
    if "architecture" not in config:
        old = [k for k in ("pool_op_kernel_sizes", "conv_kernel_sizes", "UNet_class_name") if k in config]
        raise PlanError(f"configuration {name!r} has no 'architecture' entry"
                        + (f" but the pre-2.4 keys {old}" if old else "")
                        + "; expected a plans file from nnU-Net >= 2.4 (re-run nnUNetv2_plan_experiment)")
    arch = config["architecture"].get("arch_kwargs", {})
    needed = ["n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder"]
    missing = [k for k in needed if k not in arch]
    if "n_conv_per_stage" not in arch and "n_blocks_per_stage" not in arch:
        missing.append("n_conv_per_stage")
    missing += [k for k in ("patch_size", "spacing", "batch_size", "median_image_size_in_voxels",
                            "normalization_schemes") if k not in config]
    if missing:
        raise PlanError(f"configuration {name!r} lacks {missing}; expected nnU-Net 2.4+ plans")
    return arch


def _int_tuples(values, n_stages: int, dims: int) -> tuple[tuple[int, ...], ...]:
    """Per-stage strides/kernels; nnU-Net allows a scalar per stage, meaning every axis."""
    rows = [tuple(int(v) for v in row) if isinstance(row, (list, tuple)) else (int(row),) * dims
            for row in values]
    if len(rows) != n_stages:
        raise PlanError(f"plans list {len(rows)} per-stage entries {values}; expected n_stages={n_stages}")
    return tuple(rows)


def _count_classes(dataset_json: dict) -> int:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise PlanError(f"dataset.json labels {labels!r} are invalid; expected a dict of name -> integer value")
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise PlanError(f"dataset.json labels {labels} use regions; only integer labels are supported")
    return len(labels)


def _normalization_from_nnunet(scheme: str) -> str:
    if scheme not in _NORMALIZATION_NAMES:
        raise PlanError(f"normalization scheme {scheme!r} is not supported; expected one of "
                        f"{sorted(_NORMALIZATION_NAMES)}")
    return _NORMALIZATION_NAMES[scheme]


def _max_features(features: tuple[int, ...], dims: int) -> int:
    """nnU-Net's cap if the features follow min(cap, base*2**i), else the largest stage's."""
    default = DEFAULT_MAX_FEATURES[dims]
    if features == features_per_stage(len(features), features[0], default):
        return default
    return max(features)
