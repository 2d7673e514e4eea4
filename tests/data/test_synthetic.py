import json

import numpy as np
import pytest

from hnas.data import (SYNTHETIC_NAME, compute_fingerprint, ensure_synthetic_dataset, load_dataset,
                       make_synthetic_dataset, read_case, validate_dataset)
from hnas.data.fingerprint import nonzero_bbox
from hnas.data.synthetic import DEFAULT_SHAPE, DEFAULT_SPACING, MARKER_FILE, synthetic_case
from hnas.errors import DatasetError

SMALL = dict(n_cases=4, shape=(24, 32, 28), spacing=(1.0, 1.0, 1.0), seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), **SMALL)


def test_small_dataset_is_valid_nnunet_raw_with_both_structures(small):
    dataset = validate_dataset(small)

    assert small.name == SYNTHETIC_NAME and dataset.format == "nnunet"
    assert dataset.channel_names == ("MRI",)
    assert dataset.labels == (("background", 0), ("organ", 1), ("substructure", 2))
    assert len(dataset.cases) == 4
    for case in dataset.cases:
        data = read_case(dataset, case)
        assert data.image.shape == (1, 24, 32, 28)
        assert data.spacing == (1.0, 1.0, 1.0)
        assert set(np.unique(data.label)) == {0, 1, 2}, case.case_id
        assert data.image[0][data.label > 0].min() > 0  # structures lie inside the head


def test_air_is_zero_so_cropping_removes_it(small):
    fp = compute_fingerprint(small)
    for shape in fp.shapes_after_crop:
        assert all(s <= n for s, n in zip(shape, SMALL["shape"]))
        assert np.prod(shape) < np.prod(SMALL["shape"])


def test_cases_differ_from_each_other(small):
    dataset = load_dataset(small)
    labels = [read_case(dataset, c).label for c in dataset.cases]
    assert all(not np.array_equal(labels[0], other) for other in labels[1:])


def test_same_seed_gives_identical_files_and_other_seed_differs(small, tmp_path):
    again = make_synthetic_dataset(tmp_path / "again", **SMALL)
    for sub in ("imagesTr/synth_001_0000.nii.gz", "labelsTr/synth_001.nii.gz"):
        assert (again / sub).read_bytes() == (small / sub).read_bytes()
    other = make_synthetic_dataset(tmp_path / "other", **{**SMALL, "n_cases": 1, "seed": 4})
    assert (other / "imagesTr/synth_000_0000.nii.gz").read_bytes() != \
        (small / "imagesTr/synth_000_0000.nii.gz").read_bytes()


def test_anisotropic_spacing_is_written(tmp_path):
    root = make_synthetic_dataset(tmp_path, n_cases=1, shape=(16, 40, 40), spacing=(3.0, 1.0, 1.0), seed=0)
    data = read_case(load_dataset(root), "synth_000")
    assert data.spacing == (3.0, 1.0, 1.0) and data.image.shape == (1, 16, 40, 40)
    assert {1, 2} <= set(np.unique(data.label))


def test_ensure_reuses_a_complete_folder(tmp_path):
    first = ensure_synthetic_dataset(tmp_path, **SMALL)
    marker = first / MARKER_FILE
    stamp = marker.stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path, **SMALL) == first
    assert marker.stat().st_mtime_ns == stamp

    changed = ensure_synthetic_dataset(tmp_path, **{**SMALL, "n_cases": 2})
    assert changed == first
    assert json.loads(marker.read_text())["n_cases"] == 2
    assert len(load_dataset(changed).cases) == 2


def test_ensure_replaces_an_incomplete_folder(tmp_path):
    folder = make_synthetic_dataset(tmp_path, **{**SMALL, "n_cases": 1})
    (folder / MARKER_FILE).unlink()  # as if interrupted before the marker was written
    (folder / "imagesTr" / "synth_000_0000.nii.gz").unlink()
    result = ensure_synthetic_dataset(tmp_path, **{**SMALL, "n_cases": 1})
    assert (result / MARKER_FILE).is_file()
    validate_dataset(result)


def test_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / SYNTHETIC_NAME).mkdir()
    (tmp_path / SYNTHETIC_NAME / "precious.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not written by hnas"):
        ensure_synthetic_dataset(tmp_path, **SMALL)
    assert (tmp_path / SYNTHETIC_NAME / "precious.txt").read_text() == "user data"


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="shape is"):
        make_synthetic_dataset(tmp_path, shape=(8, 8, 8))
    with pytest.raises(DatasetError, match="n_cases is 0"):
        make_synthetic_dataset(tmp_path, n_cases=0)


@pytest.mark.parametrize("shape", [(32, 36, 32), (48, 48, 48)])
def test_structures_fill_at_least_5_percent_of_the_volume(shape):
    """Large structures are what lets a CPU-sized search segment the built-in data (issue 11)."""
    for index in range(6):
        _, label = synthetic_case(shape, (1.0, 1.0, 1.0), np.random.default_rng([5, index]))
        assert (label > 0).mean() >= 0.05, index
        assert (label == 2).mean() >= 0.005 and (label == 1).sum() > (label == 2).sum(), index


def test_structures_stand_out_from_every_tissue():
    """Clear contrast: 90% of organ voxels are brighter than 99% of the other head voxels, and
    90% of the substructure brighter than 90% of the organ, despite noise and bias field."""
    for index in range(6):
        image, label = synthetic_case((48, 48, 48), (1.0, 1.0, 1.0), np.random.default_rng([5, index]))
        tissue, organ, sub = image[(label == 0) & (image > 0)], image[label == 1], image[label == 2]
        assert np.percentile(organ, 10) > np.percentile(tissue, 99), index
        assert np.percentile(sub, 10) > np.percentile(organ, 90), index


def test_a_case_is_a_function_of_its_seed():
    first, again = (synthetic_case((24, 32, 28), (1.0, 1.0, 1.0), np.random.default_rng([7, 1])) for _ in range(2))
    other = synthetic_case((24, 32, 28), (1.0, 1.0, 1.0), np.random.default_rng([7, 2]))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_default_size_plans_a_6_stage_unet_with_several_stage_counts():
    """nnU-Net plans a 6-stage 3D U-Net only if the cropped head spans >= 128 voxels in plane; the
    demo's `--max-stages 6` grammar then offers networks of 3..6 stages."""
    from hnas.data import Fingerprint
    from hnas.grammar.generator import stage_range
    from hnas.planning import make_plan

    image, label = synthetic_case(DEFAULT_SHAPE, DEFAULT_SPACING, np.random.default_rng([0, 0]))
    cropped = tuple(s.stop - s.start for s in nonzero_bbox(image[None]))
    assert all(128 <= c < n for c, n in zip(cropped[1:], DEFAULT_SHAPE[1:])) and cropped[0] < DEFAULT_SHAPE[0]
    assert {1, 2} <= set(np.unique(label)) and (label > 0).mean() >= 0.05
    fingerprint = Fingerprint(name=SYNTHETIC_NAME, spacings=(DEFAULT_SPACING,), shapes_after_crop=(cropped,),
                              channel_names=("MRI",), labels=(("background", 0), ("organ", 1), ("substructure", 2)))
    plan = make_plan(fingerprint, max_stages=6)
    assert plan.n_stages == 6 and list(stage_range(plan.n_stages)) == [3, 4, 5, 6]


@pytest.mark.slow
def test_default_dataset_fingerprint(tmp_path):
    fp = compute_fingerprint(make_synthetic_dataset(tmp_path))
    median = np.median(np.array(fp.shapes_after_crop), axis=0)
    assert fp.n_cases == 20 and fp.spacings[0] == DEFAULT_SPACING
    assert np.all(median[1:] >= 128) and np.all(median < np.array(DEFAULT_SHAPE))
