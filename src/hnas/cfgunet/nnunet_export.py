"""Take a searched network into nnU-Net: a plans configuration whose network class is hnas's.

nnU-Net names a configuration's network by import path and builds it with
``get_network_from_plans(network_class_name, arch_kwargs, _kw_requires_import, input_channels,
num_classes, allow_init=True, deep_supervision=...)`` (nnunetv2/utilities/get_network_from_plans.py):
``cls(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`` and then
``network.apply(network.initialize)``. :class:`HnasNnUNet` follows that protocol, and
:func:`export_nnunet` writes a copy of ``nnUNetPlans.json`` with one more configuration that
inherits from an existing one (``3d_fullres``) and whose ``arch_kwargs`` are the searched
network's :class:`UNetSpec` minus what nnU-Net passes itself. nnU-Net's own trainer then builds,
trains and predicts with exactly the network ``hnas.cfgunet.build(spec)`` gives.

nnU-Net itself is not needed here (it is an optional dependency, see docs/cli.md).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from hnas.cfgunet.network import HnasUNet
from hnas.cfgunet.spec import UNetSpec
from hnas.errors import PlanError, SpecError
from hnas.planning.plan import Plan
from hnas.planning.nnunet_plans import resolve_nnunet_configuration

NETWORK_CLASS_NAME = "hnas.cfgunet.nnunet_export.HnasNnUNet"
#: UNetSpec fields nnU-Net passes to the network class itself (from the dataset, the trainer).
NNUNET_PASSES = ("input_channels", "n_classes", "deep_supervision")
HNAS_KEY = "hnas"
_SPACING_TOLERANCE = 0.01  # relative; plans and run must describe the same voxel grid


class HnasNnUNet(HnasUNet):
    """hnas's U-Net under nnU-Net's network-class protocol.

    ``arch_kwargs`` are the UNetSpec fields other than input channels, classes and deep
    supervision (JSON lists are fine). Weights start torch-initialised; nnU-Net then applies
    :meth:`HnasUNet.initialize` (its He initialisation), as for its own networks.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = True, **arch_kwargs: Any):
        super().__init__(spec_from_arch_kwargs(arch_kwargs, input_channels, num_classes, deep_supervision))


def spec_from_arch_kwargs(arch_kwargs: Mapping[str, Any], input_channels: int, num_classes: int,
                          deep_supervision: bool = True) -> UNetSpec:
    """The UNetSpec that a configuration's ``arch_kwargs`` describe (SpecError names a bad field)."""
    passed = sorted(set(arch_kwargs) & set(NNUNET_PASSES))
    if passed:
        raise SpecError(f"arch_kwargs must not contain {passed}: nnU-Net passes them to the network itself")
    return UNetSpec.from_dict({**copy.deepcopy(dict(arch_kwargs)), "input_channels": input_channels,
                               "n_classes": num_classes, "deep_supervision": bool(deep_supervision)})


def arch_kwargs_of(spec: UNetSpec) -> dict[str, Any]:
    """``spec`` as JSON-ready nnU-Net ``arch_kwargs`` (without what nnU-Net passes itself)."""
    data = json.loads(spec.to_json())
    return {k: v for k, v in data.items() if k not in NNUNET_PASSES}


@dataclass(frozen=True)
class Replacement:
    """One value of nnU-Net's configuration that the exported configuration overrides."""

    key: str
    nnunet: Any  # the base configuration's value (None where it has none)
    exported: Any

    def describe(self) -> str:
        """``key: nnU-Net's value -> exported value``, the line `hnas export-nnunet` prints."""
        return f"{self.key}: {_shown(self.nnunet)} -> {_shown(self.exported)}"


@dataclass(frozen=True)
class NnUNetExport:
    """nnU-Net's plans with the searched network added; ``path`` is None until :meth:`write`.

    ``replaced`` lists every value of ``base_configuration`` that the new configuration overrides,
    so nobody trains a network at another scale than nnU-Net's without having been told.
    """

    plans: dict
    configuration_name: str
    base_configuration: str
    replaced: tuple[Replacement, ...]
    path: Path | None = None

    def write(self, out_json: str | Path) -> "NnUNetExport":
        """Write the plans as ``out_json`` (its stem becomes their ``plans_name``); the written export."""
        out = Path(out_json)
        plans = {**self.plans, "plans_name": out.stem}  # nnU-Net's `-p` identifier is the file name
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(plans, indent=4) + "\n")
        except OSError as exc:
            raise SpecError(f"cannot write the exported plans to {str(out)!r}: {exc}") from exc
        return replace(self, plans=plans, path=out)


def export_nnunet(spec: str | Path | UNetSpec, plans_json: str | Path, out_json: str | Path, *,
                  configuration_name: str = "3d_fullres_hnas", base_configuration: str = "3d_fullres",
                  plan: Plan | None = None, record: Mapping[str, Any] | None = None) -> NnUNetExport:
    """Write ``plans_json`` plus a configuration that trains ``spec`` with nnU-Net; returns what was written.

    ``spec``: a UNetSpec or a JSON file of one. ``plan`` (the plan the network was searched
    on) also sets the configuration's patch and batch size, after checking its grid matches
    nnU-Net's; ``record`` is stored under ``"hnas"`` (what the export came from, searched
    hyperparameters nnU-Net's default trainer does not read). For a search run's trials use
    :func:`hnas.pipeline.export.export_run`. Written as ``nnUNetPlans_hnas.json`` beside the
    original, train it with ``nnUNetv2_train DATASET 3d_fullres_hnas FOLD -p nnUNetPlans_hnas`` once hnas is
    importable in nnU-Net's environment.
    """
    return prepare_export(spec, plans_json, configuration_name=configuration_name,
                          base_configuration=base_configuration, plan=plan, record=record).write(out_json)


def prepare_export(spec: str | Path | UNetSpec, plans_json: str | Path, *,
                   configuration_name: str = "3d_fullres_hnas", base_configuration: str = "3d_fullres",
                   plan: Plan | None = None, record: Mapping[str, Any] | None = None) -> NnUNetExport:
    """:func:`export_nnunet` without writing: the plans, checked, and the values they replace."""
    plans = _load_plans(Path(plans_json))
    base = _resolved_configuration(plans, base_configuration)
    existing = plans["configurations"].get(configuration_name)
    if existing is not None and HNAS_KEY not in existing:
        raise SpecError(f"configuration {configuration_name!r} already exists in {str(plans_json)!r} and was not "
                        "written by hnas; choose another configuration_name")
    configuration: dict[str, Any] = {"inherits_from": base_configuration}
    if not isinstance(spec, UNetSpec):
        record = {"source": str(spec), **dict(record or {})}
        spec = _load_spec(Path(spec))
    record = dict(record or {"source": "spec"})
    if plan is not None:
        _check_grid(plan, base, base_configuration)
        configuration.update(patch_size=list(plan.patch_size), batch_size=int(plan.batch_size))
    _check_fits(spec, base, configuration.get("patch_size", base.get("patch_size")), base_configuration)
    configuration["architecture"] = {"network_class_name": NETWORK_CLASS_NAME, "arch_kwargs": arch_kwargs_of(spec),
                                     "_kw_requires_import": []}
    replaced = replaced_values(base, configuration)
    record["replaced"] = {r.key: r.nnunet for r in replaced}
    configuration[HNAS_KEY] = record
    plans["configurations"][configuration_name] = configuration
    return NnUNetExport(plans, configuration_name, base_configuration, replaced)


#: arch_kwargs that nnU-Net's own networks (PlainConvUNet, ResidualEncoderUNet) and UNetSpec both have.
SHARED_ARCH_KWARGS = ("n_stages", "features_per_stage", "strides", "kernel_sizes")


def replaced_values(base: Mapping[str, Any], configuration: Mapping[str, Any]) -> tuple[Replacement, ...]:
    """What ``configuration`` (inheriting from ``base``) changes of nnU-Net's values, in plans order.

    The patch, batch and network class, and the network's topology where both describe it (stages,
    features, strides, kernels); the block choices have no counterpart among nnU-Net's arch_kwargs
    and come with the network class.
    """
    ours, theirs = configuration["architecture"], base.get("architecture") or {}
    pairs = [(key, base.get(key), configuration[key]) for key in ("patch_size", "batch_size") if key in configuration]
    pairs.append(("network_class_name", theirs.get("network_class_name"), ours["network_class_name"]))
    base_kwargs = theirs.get("arch_kwargs") or {}
    pairs += [(key, base_kwargs.get(key), ours["arch_kwargs"][key]) for key in SHARED_ARCH_KWARGS]
    return tuple(Replacement(key, old, new) for key, old, new in pairs if _as_json(old) != _as_json(new))


def _as_json(value: Any) -> Any:
    """Tuples and lists alike, as the plans file stores them."""
    return json.loads(json.dumps(value))


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _load_plans(path: Path) -> dict:
    if not path.is_file():
        raise SpecError(f"nnU-Net plans file {str(path)!r} does not exist; expected an nnUNetPlans.json")
    try:
        plans = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise SpecError(f"{str(path)!r} has no 'configurations'; expected nnU-Net v2's nnUNetPlans.json")
    return plans


def _resolved_configuration(plans: dict, name: str) -> dict:
    """nnU-Net's inheritance, resolved by the planner's reader; errors as SpecError for the export."""
    try:
        return resolve_nnunet_configuration(plans, name)
    except PlanError as exc:
        raise SpecError(str(exc)) from exc


def _check_fits(spec: UNetSpec, base: dict, patch, base_name: str) -> None:
    """The data nnU-Net feeds must fit the network: same dims and channels, patch divisible by the strides."""
    if "patch_size" not in base or "normalization_schemes" not in base:
        raise SpecError(f"configuration {base_name!r} lacks patch_size or normalization_schemes; expected nnU-Net "
                        "v2 plans")
    if len(patch) != spec.dims:
        raise SpecError(f"the network is {spec.dims}D but configuration {base_name!r} has a {len(patch)}D patch "
                        f"{list(patch)}; expected a base configuration of the same dimensionality")
    channels = len(base["normalization_schemes"])
    if channels != spec.input_channels:
        raise SpecError(f"the network takes {spec.input_channels} input channel(s) but configuration {base_name!r} "
                        f"normalises {channels}; expected plans of the dataset the search ran on")
    if any(p % s for p, s in zip(patch, spec.total_strides)):
        raise SpecError(f"patch {list(patch)} is not divisible by the network's total stride "
                        f"{list(spec.total_strides)}; expected a base configuration planned for this network")


def _check_grid(plan: Plan, base: dict, base_name: str) -> None:
    spacing = base.get("spacing")
    if spacing is None or len(spacing) != len(plan.spacing) or any(
            not math.isclose(a, b, rel_tol=_SPACING_TOLERANCE) for a, b in zip(plan.spacing, spacing)):
        raise SpecError(f"the run was planned at spacing {list(plan.spacing)} but configuration {base_name!r} "
                        f"resamples to {spacing}; expected the plans of the same dataset and configuration")


def _load_spec(path: Path) -> UNetSpec:
    if not path.is_file():
        raise SpecError(f"{str(path)!r} is not a UNetSpec JSON file (for a search run use hnas.pipeline.export.export_run)")
    return UNetSpec.from_json(path.read_text())
