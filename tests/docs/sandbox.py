"""The folder the documentation's commands run in: small datasets, prepared runs, nnU-Net plans files.

Everything lives under one root made per test module. The datasets:

* FULL: the real hippocampus data (208 cases), copied under $HNAS_CACHE so its fingerprint is
  computed once; only for the commands that plan (`hnas plan/grammar/sample/show`), whose comments
  cite its figures (patch 40x56x40, 4 stages, batch 7).
* SMALL: 10 real cases, each cut to the 20x24x20 voxels around its label's centre (labels with it),
  so a network on it trains in about a second on 2 cores; the docs' searches and trainings run on it.
  nnU-Net's five folds get two validation cases each.
* TEST: one further real case, cut the same way, as imagesTs/labelsTs with a dataset.json.

Without the real data (no dataset.json at $HNAS_HIPPOCAMPUS, or by default at
../shared/data/Dataset004_Hippocampus) all three are synthetic (`make_synthetic_dataset`; FULL with
the hippocampus' median shape, so it plans 4 stages too); the commands whose comments cite figures
of the real data still run (later lines need their files), and their tests skip with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from docs.examples import REPO

HIPPOCAMPUS = "Dataset004_Hippocampus"
SMALL_CASES = 10
TEST_CASES = 1  # each test image is predicted by every fold of every model, 8 mirrorings each
CROP = (20, 24, 20)  # voxels kept around each label's centre (every MSD hippocampus case is >= 31x40x24)


def hippocampus_source() -> Path | None:
    """The real data: $HNAS_HIPPOCAMPUS, else ../shared/data/Dataset004_Hippocampus beside the repository (as
    tests/conftest.py's hippocampus_dir); None when that folder has no dataset.json."""
    path = Path(os.environ.get("HNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / HIPPOCAMPUS))
    return path if (path / "dataset.json").is_file() else None


def _case_ids(source: Path) -> list[str]:
    return sorted(p.name[: -len("_0000.nii.gz")] for p in (source / "imagesTr").glob("*_0000.nii.gz"))


def _crop(image: Path, label: Path, image_out: Path, label_out: Path) -> None:
    """Cut image and label to CROP voxels around the label's foreground centre; the affine keeps the world
    position of the kept voxels."""
    import nibabel as nib
    import numpy as np

    img, lab = nib.load(image), nib.load(label)
    labels = np.asarray(lab.dataobj)
    centre = np.argwhere(labels > 0).mean(axis=0).round().astype(int)
    start = [int(min(max(c - n // 2, 0), s - n)) for c, n, s in zip(centre, CROP, labels.shape)]
    box = tuple(slice(a, a + n) for a, n in zip(start, CROP))
    for source, out in ((img, image_out), (lab, label_out)):
        affine = source.affine.copy()
        affine[:3, 3] = source.affine[:3, :3] @ np.array(start) + source.affine[:3, 3]
        data = np.asarray(source.dataobj)[box]
        cut = nib.Nifti1Image(data, affine, source.header)
        cut.set_qform(affine), cut.set_sform(affine)
        nib.save(cut, out)


def _dataset_json(source: Path, n_cases: int) -> dict:
    meta = json.loads((source / "dataset.json").read_text())
    meta.pop("sha256", None)  # the copy's files are cut: the source's digests no longer apply
    return {**meta, "numTraining": n_cases}


def make_small(root: Path, source: Path | None) -> Path:
    """SMALL: root/Dataset004_Hippocampus (nnU-Net raw), real cases cut to CROP, or synthetic without data."""
    target = root / HIPPOCAMPUS
    if source is None:
        from hnas.data import make_synthetic_dataset

        return make_synthetic_dataset(root, n_cases=SMALL_CASES, shape=CROP, seed=1, name=HIPPOCAMPUS)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    for case in _case_ids(source)[:SMALL_CASES]:
        _crop(source / "imagesTr" / f"{case}_0000.nii.gz", source / "labelsTr" / f"{case}.nii.gz",
              target / "imagesTr" / f"{case}_0000.nii.gz", target / "labelsTr" / f"{case}.nii.gz")
    (target / "dataset.json").write_text(json.dumps(_dataset_json(source, SMALL_CASES), indent=1))
    return target


def make_test_set(root: Path, source: Path | None) -> Path:
    """TEST: root/Dataset004_Hippocampus_test with imagesTs/labelsTs and a dataset.json (cases not in SMALL)."""
    target = root / f"{HIPPOCAMPUS}_test"
    (target / "imagesTs").mkdir(parents=True)
    (target / "labelsTs").mkdir()
    if source is None:
        from hnas.data import make_synthetic_dataset

        synthetic = make_synthetic_dataset(root / "synthetic_test", n_cases=TEST_CASES, shape=CROP, seed=7)
        for image in sorted((synthetic / "imagesTr").iterdir()):
            shutil.copy(image, target / "imagesTs" / image.name)
        for label in sorted((synthetic / "labelsTr").iterdir()):
            shutil.copy(label, target / "labelsTs" / label.name)
        shutil.copy(synthetic / "dataset.json", target / "dataset.json")
        return target
    for case in _case_ids(source)[SMALL_CASES:SMALL_CASES + TEST_CASES]:
        _crop(source / "imagesTr" / f"{case}_0000.nii.gz", source / "labelsTr" / f"{case}.nii.gz",
              target / "imagesTs" / f"{case}_0000.nii.gz", target / "labelsTs" / f"{case}.nii.gz")
    (target / "dataset.json").write_text(json.dumps(_dataset_json(source, TEST_CASES), indent=1))
    return target


def make_full(cache: Path, source: Path | None) -> Path:
    """FULL: a copy of the real data under the hnas cache (fingerprinted once there); without it, five synthetic
    cases of the hippocampus' median shape (36x50x35), which nnU-Net plans with 4 stages as well."""
    target = cache / "planning" / HIPPOCAMPUS
    if source is None:
        from hnas.data import make_synthetic_dataset

        return make_synthetic_dataset(target.parent, n_cases=5, shape=(36, 50, 35), seed=2, name=HIPPOCAMPUS)
    shutil.copytree(source, target)
    return target


def nnunet_plans(plan) -> dict:
    """An nnU-Net 2.8 nnUNetPlans.json whose 3d_fullres is ``plan`` (a hnas Plan at nnU-Net's scale)."""
    stages = plan.n_stages
    arch_kwargs = {
        "n_stages": stages, "features_per_stage": list(plan.features_per_stage),
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [list(k) for k in plan.kernel_sizes],
        "strides": [list(s) for s in plan.strides], "n_conv_per_stage": list(plan.conv_blocks_per_stage),
        "n_conv_per_stage_decoder": list(plan.conv_decoder_blocks_per_stage), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}}
    return {
        "dataset_name": plan.dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(plan.spacing), "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": plan.batch_size, "patch_size": list(plan.patch_size),
            "median_image_size_in_voxels": list(plan.median_shape), "spacing": list(plan.spacing),
            "normalization_schemes": ["ZScoreNormalization"] * plan.n_input_channels,
            "use_mask_for_norm": [False] * plan.n_input_channels,
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
    }


def write_nnunet_plans(dataset: Path, out: Path) -> Path:
    """nnU-Net's plans of ``dataset`` as nnU-Net would write them (its default planner, its scale), with the
    dataset.json nnU-Net keeps beside them in nnUNet_preprocessed/DatasetXXX/."""
    from hnas.pipeline.plan import plan_for

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nnunet_plans(plan_for(dataset)), indent=2))
    shutil.copy(dataset / "dataset.json", out.parent / "dataset.json")  # nnU-Net copies it beside its plans
    return out


def make_run(dataset: Path, run_dir: Path, *, preset: str = "cpu", optimizer: str = "regularized-priorband",
             budget: float = 2.0) -> Path:
    """A finished `hnas search` on ``dataset`` whose trials are faked (tests/reliability/run_folders.py): its
    run.json, plan, grammar, history and checkpoints are real files, made in well under a second."""
    from dataclasses import replace

    import pytest

    from hnas.pipeline import search as search_module
    from reliability.run_folders import fake_training, settings_for

    settings = replace(settings_for(dataset), max_stages=None, optimizer=optimizer, preset=preset, max_trials=None,
                       budget=budget)
    with pytest.MonkeyPatch.context() as patch:
        fake_training(patch)
        search_module.search(settings, run_dir, progress=False)
    return run_dir


def copy_builtin_data(cache: Path, pytest_cache) -> Path:
    """The built-in synthetic data in ``cache`` (the sandbox's $HNAS_CACHE), as `hnas` generates it there.

    Generating it takes ~10 s on 2 cores, so it is generated once into pytest's cache (.pytest_cache,
    gitignored), with its fingerprint, and copied: the data is deterministic, and its marker holds the
    generator's version and parameters, so a changed generator regenerates it as in a user's cache.
    """
    from hnas.data.synthetic import ensure_synthetic_dataset

    target = cache / "synthetic"
    if pytest_cache is None:  # -p no:cacheprovider
        return ensure_synthetic_dataset(target)
    from hnas.data import load_dataset
    from hnas.data.cache import cached_fingerprint

    built = ensure_synthetic_dataset(pytest_cache.mkdir("hnas_builtin_data"))
    cached_fingerprint(load_dataset(built), built, validate=True)  # kept beside it, as under $HNAS_CACHE
    shutil.copytree(built, target / built.name)
    return ensure_synthetic_dataset(target)  # the marker matches: nothing is generated
