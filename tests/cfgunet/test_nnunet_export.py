"""nnU-Net interop: an exported plans configuration builds hnas's network in nnU-Net's own factory.

nnunetv2 is an optional dependency (`pip install --no-deps nnunetv2==2.8.1 batchgenerators==0.25.5`
is all its network factory needs); the tests that call it skip without it.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import isotropic_plan
from hnas.cfgunet import build, compile_architecture
from hnas.cfgunet.nnunet_export import (
    NETWORK_CLASS_NAME,
    HnasNnUNet,
    arch_kwargs_of,
    export_nnunet,
    spec_from_arch_kwargs,
)
from hnas.errors import SearchError, SpecError
from hnas.grammar import default_architecture, make_grammar
from hnas.pipeline.export import ExportWarning, PresetScaleError, export_run, trial_network
from hnas.train.presets import NNUNET

PLAN = isotropic_plan(4, patch=64, base=8, top=64, name="Dataset004_Hippocampus")
GRAMMAR = make_grammar(PLAN)
SEARCHED = ("unet res_encoder batch_norm gelu dropout 1b down 3b down 2b conv_decoder instance_norm prelu "
            "no_dropout up 1b up 2b")


def nnunet_plans() -> dict:
    """An nnU-Net 2.8 plans file for PLAN's dataset (PlainConvUNet 3d_fullres plus a 2d configuration)."""
    arch_kwargs = {
        "n_stages": 4, "features_per_stage": [8, 16, 32, 64],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}}
    return {
        "dataset_name": "Dataset004_Hippocampus", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 12, "patch_size": [64, 64],
                   "spacing": [1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                   "median_image_size_in_voxels": [64.0, 64.0], "architecture": {}},
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 9, "patch_size": [40, 56, 40], "median_image_size_in_voxels": [36.0, 50.0, 35.0],
                "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
                "batch_dice": False},
        },
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
    }


@pytest.fixture
def plans_file(tmp_path):
    path = tmp_path / "nnUNetPlans.json"
    path.write_text(json.dumps(nnunet_plans(), indent=2))
    return path


def nnunet_configuration(plans: dict, name: str) -> dict:
    """nnU-Net's PlansManager inheritance (_internal_resolve_configuration_inheritance): the parent's
    keys, overridden by the child's. (PlansManager itself imports nnU-Net's image readers, which need
    scikit-image; the rule is these few lines.)"""
    configuration = dict(plans["configurations"][name])
    parent = configuration.pop("inherits_from", None)
    return configuration if parent is None else {**nnunet_configuration(plans, parent), **configuration}


def nnunet_builds(configuration: dict, input_channels: int, num_classes: int, deep_supervision: bool = True):
    """What nnUNetTrainer.build_network_architecture does with a configuration."""
    factory = pytest.importorskip("nnunetv2.utilities.get_network_from_plans", reason="nnunetv2 not installed "
                                  "(pip install --no-deps nnunetv2==2.8.1 batchgenerators==0.25.5)")
    architecture = configuration["architecture"]
    return factory.get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                          architecture["_kw_requires_import"], input_channels, num_classes,
                                          allow_init=True, deep_supervision=deep_supervision)


def assert_same_network(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    a.load_state_dict(b.state_dict(), strict=True)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for out_a, out_b in zip(a(x), b(x), strict=True):
            assert torch.equal(out_a, out_b)


def test_exported_spec_builds_the_same_network_in_nnunets_factory(tmp_path, plans_file):
    spec = compile_architecture(GRAMMAR, SEARCHED, PLAN, dropout_rate=0.3)
    out = export_nnunet(spec, plans_file, tmp_path / "out" / "plans.json").path
    plans = json.loads(out.read_text())
    assert plans["configurations"]["3d_fullres"] == nnunet_plans()["configurations"]["3d_fullres"]  # untouched
    assert plans["plans_name"] == "plans"  # nnU-Net's `-p` identifier is the file's stem
    configuration = nnunet_configuration(plans, "3d_fullres_hnas")
    assert configuration["architecture"]["network_class_name"] == NETWORK_CLASS_NAME
    assert configuration["architecture"]["_kw_requires_import"] == []
    assert configuration["patch_size"] == [40, 56, 40] and configuration["data_identifier"] == "nnUNetPlans_3d_fullres"
    # nnUNetTrainer derives its deep-supervision scales from arch_kwargs["strides"]: one per output
    assert len(configuration["architecture"]["arch_kwargs"]["strides"]) == spec.n_stages

    torch.manual_seed(0)
    network = nnunet_builds(configuration, PLAN.n_input_channels, PLAN.n_classes)
    assert type(network) is HnasNnUNet and network.spec == spec
    assert_same_network(network, build(spec))
    without = nnunet_builds(configuration, PLAN.n_input_channels, PLAN.n_classes, deep_supervision=False)
    assert without.spec.deep_supervision is False and without.decoder.deep_supervision is False

    (tmp_path / "spec.json").write_text(spec.to_json())  # a spec file is a source too
    from_file = json.loads(export_nnunet(tmp_path / "spec.json", plans_file, tmp_path / "p2.json").path.read_text())
    assert from_file["configurations"]["3d_fullres_hnas"]["architecture"] == configuration["architecture"]


def test_exported_default_network_is_nnunets_own(tmp_path, plans_file):
    """The default sentence exported and built by nnU-Net loads strictly into nnU-Net's PlainConvUNet."""
    spec = compile_architecture(GRAMMAR, default_architecture(PLAN), PLAN, dropout_rate=0.0)
    plans = json.loads(export_nnunet(spec, plans_file, tmp_path / "plans.json").path.read_text())
    ours = nnunet_builds(nnunet_configuration(plans, "3d_fullres_hnas"), 1, PLAN.n_classes)
    theirs = nnunet_builds(nnunet_configuration(plans, "3d_fullres"), 1, PLAN.n_classes)
    assert_same_network(ours, theirs)


def test_network_class_follows_nnunets_protocol_without_nnunet():
    spec = compile_architecture(GRAMMAR, SEARCHED, PLAN, dropout_rate=0.3)
    kwargs = json.loads(json.dumps(arch_kwargs_of(spec)))  # as read back from the plans file
    assert set(kwargs).isdisjoint({"input_channels", "n_classes", "deep_supervision"})
    network = HnasNnUNet(input_channels=1, num_classes=3, deep_supervision=True, **kwargs)
    network.apply(network.initialize)
    assert network.spec == spec
    with pytest.raises(SpecError, match="nnU-Net passes them"):
        spec_from_arch_kwargs({**kwargs, "n_classes": 3}, 1, 3)
    with pytest.raises(SpecError, match="unknown fields"):
        HnasNnUNet(1, 3, True, **kwargs, conv_op="torch.nn.Conv3d")


def objective(context) -> dict:
    blocks = context.config["architecture"].count("b ")
    return {"loss": 0.5 / context.fidelity + 0.01 * blocks, "cost": float(context.fidelity), "dice": 0.5}


@pytest.fixture
def run_dir(tmp_path):
    from hnas.sampling import GrammarArchitecture
    from hnas.pipeline.spaces import make_space
    from hnas.search import run

    path = tmp_path / "run"
    run(objective, make_space("hpo+hnas", GrammarArchitecture(GRAMMAR)), optimizer="random", max_trials=4,
        min_fidelity=1, max_fidelity=3, run_dir=path, seed=3)
    PLAN.save(path / "plan.json")
    (path / "grammar.lark").write_text(GRAMMAR)
    NNUNET.save(path / "preset.json")  # searched at nnU-Net's scale, as a GPU run is
    return path


def test_export_from_a_run_carries_patch_batch_and_hyperparameters(tmp_path, run_dir, plans_file):
    trial, spec, plan = trial_network(run_dir)
    assert spec == compile_architecture(GRAMMAR, trial.config["architecture"], PLAN,
                                        dropout_rate=trial.config["dropout_rate"])
    plans = json.loads(export_run(run_dir, plans_file, tmp_path / "plans.json",
                                     configuration_name="hnas_best").path.read_text())
    configuration = plans["configurations"]["hnas_best"]
    assert configuration["inherits_from"] == "3d_fullres"
    assert configuration["patch_size"] == [64, 64, 64] and configuration["batch_size"] == PLAN.batch_size
    record = configuration["hnas"]
    assert record["trial_id"] == trial.trial_id and record["architecture"] == trial.config["architecture"]
    assert record["hyperparameters"]["initial_lr"] == trial.config["initial_lr"]
    assert "architecture" not in record["hyperparameters"]
    nnunet = nnunet_plans()["configurations"]["3d_fullres"]
    topology = ("n_stages", "features_per_stage", "strides", "kernel_sizes")  # the incumbent has fewer stages
    assert spec.n_stages == 2 and record["replaced"] == {
        "patch_size": [40, 56, 40], "batch_size": 9,
        "network_class_name": nnunet["architecture"]["network_class_name"],
        **{key: nnunet["architecture"]["arch_kwargs"][key] for key in topology}}
    assert record["preset"] == "nnunet"
    assert spec_from_arch_kwargs(configuration["architecture"]["arch_kwargs"], 1, PLAN.n_classes) == spec

    other = export_run(run_dir, plans_file, tmp_path / "plans2.json", trial_id=1)
    assert json.loads(other.path.read_text())["configurations"]["3d_fullres_hnas"]["hnas"]["trial_id"] == 1


def test_export_errors_name_the_problem(tmp_path, run_dir, plans_file):
    spec = compile_architecture(GRAMMAR, SEARCHED, PLAN)
    with pytest.raises(SpecError, match="'3d_lowres' is not in the plans.*3d_fullres"):
        export_nnunet(spec, plans_file, tmp_path / "o.json", base_configuration="3d_lowres")
    with pytest.raises(SpecError, match="'3d_fullres' already exists.*not written by hnas"):
        export_nnunet(spec, plans_file, tmp_path / "o.json", configuration_name="3d_fullres")
    with pytest.raises(SpecError, match="3D but configuration '2d'"):
        export_nnunet(spec, plans_file, tmp_path / "o.json", base_configuration="2d")
    with pytest.raises(SearchError, match="no trial 99"):
        export_run(run_dir, plans_file, tmp_path / "o.json", trial_id=99)
    with pytest.raises(SpecError, match="does not exist"):
        export_nnunet(spec, tmp_path / "missing.json", tmp_path / "o.json")
    two_channels = nnunet_plans()
    two_channels["configurations"]["3d_fullres"]["normalization_schemes"] *= 2
    (tmp_path / "two.json").write_text(json.dumps(two_channels))
    with pytest.raises(SpecError, match="1 input channel.*normalises 2"):
        export_nnunet(spec, tmp_path / "two.json", tmp_path / "o.json")
    coarse = nnunet_plans()
    coarse["configurations"]["3d_fullres"]["spacing"] = [3.0, 1.0, 1.0]
    (tmp_path / "coarse.json").write_text(json.dumps(coarse))
    with pytest.raises(SpecError, match=r"spacing \[1.0, 1.0, 1.0\].*\[3.0, 1.0, 1.0\]"):
        export_run(run_dir, tmp_path / "coarse.json", tmp_path / "o.json")
    odd = nnunet_plans()
    odd["configurations"]["3d_fullres"]["patch_size"] = [40, 56, 42]
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    with pytest.raises(SpecError, match=r"patch \[40, 56, 42\] is not divisible"):
        export_nnunet(spec, tmp_path / "odd.json", tmp_path / "o.json")
    with pytest.raises(SpecError, match="is not a UNetSpec JSON file"):
        export_nnunet(tmp_path / "nothing", plans_file, tmp_path / "o.json")
    with pytest.raises(SearchError, match="not an hnas run folder"):
        export_run(tmp_path / "nothing", plans_file, tmp_path / "o.json")


# ---------------------------------------------------------------- what the export replaces, and at which scale

PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def test_the_export_returns_every_value_it_replaces(tmp_path, plans_file):
    spec = compile_architecture(GRAMMAR, default_architecture(PLAN), PLAN)
    export = export_nnunet(spec, plans_file, tmp_path / "plans.json", plan=PLAN)
    assert [r.describe() for r in export.replaced] == [
        "patch_size: [40, 56, 40] -> [64, 64, 64]", f"batch_size: 9 -> {PLAN.batch_size}",
        f"network_class_name: {PLAIN_CONV_UNET} -> {NETWORK_CLASS_NAME}"]
    written = json.loads(export.path.read_text())["configurations"]["3d_fullres_hnas"]
    assert written["hnas"]["replaced"] == {r.key: r.nnunet for r in export.replaced}

    wide = nnunet_plans()  # nnU-Net's own features: the exported network's 8..64 replace them
    wide["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [32, 64, 128, 256]
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    replaced = export_nnunet(spec, tmp_path / "wide.json", tmp_path / "o.json").replaced
    assert [r.describe() for r in replaced] == [f"network_class_name: {PLAIN_CONV_UNET} -> {NETWORK_CLASS_NAME}",
                                                "features_per_stage: [32, 64, 128, 256] -> [8, 16, 32, 64]"]


def test_a_run_without_preset_json_exports_with_a_warning(run_dir, plans_file, tmp_path):
    (run_dir / "preset.json").unlink()  # runs written before hnas stored their preset
    with pytest.warns(ExportWarning, match="no preset.json, so the scale it was searched at is unknown"):
        export = export_run(run_dir, plans_file, tmp_path / "plans.json")
    assert json.loads(export.path.read_text())["configurations"]["3d_fullres_hnas"]["hnas"]["preset"] is None


def plans_of(plan) -> dict:
    """nnunet_plans() for another dataset: its 3d_fullres at ``plan``'s patch, batch, spacing and topology."""
    plans = nnunet_plans()
    configuration = plans["configurations"]["3d_fullres"]
    configuration.update(patch_size=list(plan.patch_size), batch_size=plan.batch_size, spacing=list(plan.spacing),
                         median_image_size_in_voxels=list(plan.median_shape))
    configuration["architecture"]["arch_kwargs"].update(
        n_stages=plan.n_stages, features_per_stage=list(plan.features_per_stage),
        strides=[list(s) for s in plan.strides], kernel_sizes=[list(k) for k in plan.kernel_sizes],
        n_conv_per_stage=[2] * plan.n_stages, n_conv_per_stage_decoder=[2] * (plan.n_stages - 1))
    return plans


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """(run folder, nnU-Net's plans of its dataset) of a search with the CPU preset (features 8..64, batch 2)."""
    from hnas.pipeline.plan import plan_for
    from reliability.run_folders import make_stored_run

    root = tmp_path_factory.mktemp("cpu_run")
    dataset, run_dir = make_stored_run(root)
    plans = root / "nnUNetPlans.json"  # nnU-Net plans the dataset at its own scale: features 32..64 here
    plans.write_text(json.dumps(plans_of(plan_for(dataset, max_stages=2))))
    return run_dir, plans


CPU_SCALE = "scale preset 'cpu' (features 8..64, batch 2, patch at most 48^3 voxels)"


def test_a_cpu_preset_run_is_refused_without_allow_preset_and_writes_nothing(cpu_run, tmp_path, capsys):
    from reliability.run_folders import run_cli

    run_dir, plans = cpu_run
    code, out, err = run_cli(capsys, "export-nnunet", run_dir, "--plans", plans, "-o", tmp_path / "out.json")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"was searched with {CPU_SCALE}" in err and "--preset nnunet, or --allow-preset" in err
    with pytest.raises(PresetScaleError, match="'cpu'"):
        export_run(run_dir, plans, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_allow_preset_exports_a_cpu_run_printing_what_it_replaces(cpu_run, tmp_path, capsys):
    from reliability.run_folders import run_cli

    run_dir, plans = cpu_run
    _, spec, _ = trial_network(run_dir)
    nnunet_features = json.loads(plans.read_text())["configurations"]["3d_fullres"]["architecture"][
        "arch_kwargs"]["features_per_stage"]
    code, out, err = run_cli(capsys, "export-nnunet", run_dir, "--plans", plans, "-o", tmp_path / "out.json",
                             "--allow-preset")
    assert code == 0 and (tmp_path / "out.json").is_file()
    assert out.splitlines()[:3] == [
        "'3d_fullres_hnas' replaces these values of nnU-Net's '3d_fullres':",
        f"  network_class_name: {PLAIN_CONV_UNET} -> {NETWORK_CLASS_NAME}",
        f"  features_per_stage: {nnunet_features} -> {list(spec.features_per_stage)}"]
    assert nnunet_features == [32, 64] and spec.features_per_stage == (8, 16)
    assert err == f"hnas: warning: the exported network keeps {CPU_SCALE}, not nnU-Net's scale; nnUNetv2_train " \
                  "trains it as it is\n"
    record = json.loads((tmp_path / "out.json").read_text())["configurations"]["3d_fullres_hnas"]["hnas"]
    assert record["preset"] == "cpu" and record["replaced"]["features_per_stage"] == nnunet_features


def test_a_run_at_nnunets_scale_exports_without_the_flag(cpu_run, tmp_path, capsys):
    from reliability.run_folders import copy_run, run_cli

    run_dir = copy_run(cpu_run[0], tmp_path / "gpu_run")
    NNUNET.save(run_dir / "preset.json")  # as a run searched on a GPU stores it
    code, out, err = run_cli(capsys, "export-nnunet", run_dir, "--plans", cpu_run[1], "-o", tmp_path / "out.json")
    assert code == 0 and err == "" and (tmp_path / "out.json").is_file()
    assert "  features_per_stage: [32, 64] -> [8, 16]" in out.splitlines()
