"""Image/label geometry shared by training-data validation, prediction and evaluation (issue 18).

One implementation (``hnas.data.geometry``) says whether two files lie on one grid, whether a
label map holds only known values and whether a header's voxel size is usable; these tests
pin its refusals (one line naming both files and the differing values) and that the
training-data validation built on it words its problems as before.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hnas.data import DatasetWarning, read_header, read_images, read_label_map, validate_dataset
from hnas.data.geometry import (AFFINE_ATOL, check_label_file, check_label_values, check_same_grid,
                                read_input, warn_zero_pixdim)
from hnas.errors import DatasetError

from .builders import case_arrays, nnunet_dataset, set_stored_pixdim, shifted, write_zyx

SHAPE = (6, 7, 8)


@pytest.fixture
def pair(tmp_path):
    """An image and its label on one 2 x 1 x 1 mm grid."""
    channels, label = case_arrays(0, SHAPE)
    image = write_zyx(tmp_path / "case_0000.nii.gz", channels[0], (2.0, 1.0, 1.0))
    return image, write_zyx(tmp_path / "case.nii.gz", label, (2.0, 1.0, 1.0))


def _grid(path):
    return read_label_map(path)[1]


def test_the_same_grid_passes(pair):
    image, label = pair
    check_same_grid(("image", image, read_header(image)), ("label", label, read_header(label)))
    check_label_file([image], label, (0, 1, 2))


def test_a_label_shifted_20_mm_is_refused_naming_both_files_and_origins(pair, tmp_path):
    image, label = pair
    moved = shifted(label, (20.0, 0.0, 0.0), tmp_path / "moved.nii.gz")
    with pytest.raises(DatasetError) as info:
        check_same_grid(("image", image, _grid(image)), ("label", moved, _grid(moved)))
    message = str(info.value)
    assert "\n" not in message and str(image) in message and str(moved) in message
    assert "origin (0.0, 0.0, 0.0)" in message and "(20.0, 0.0, 0.0)" in message and "20 mm" in message


def test_a_flipped_direction_is_refused(pair, tmp_path):
    import nibabel as nib

    image, label = pair
    source = nib.load(str(label))
    affine = source.affine.copy()
    affine[0, 0] = -affine[0, 0]  # x runs the other way: same spacing, same origin
    flipped = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), affine), str(flipped))
    with pytest.raises(DatasetError, match=r"direction .*\(-1\.0, 0\.0, 0\.0\)"):
        check_same_grid(("image", image, _grid(image)), ("label", flipped, _grid(flipped)))


def test_an_affine_within_the_tolerance_passes(pair, tmp_path):
    image, label = pair
    nudged = shifted(label, (AFFINE_ATOL / 10, 0.0, 0.0), tmp_path / "nudged.nii.gz")
    check_same_grid(("image", image, _grid(image)), ("label", nudged, _grid(nudged)))


def test_another_spacing_is_refused_naming_both(pair, tmp_path):
    image, _ = pair
    label = write_zyx(tmp_path / "coarse.nii.gz", case_arrays(0, SHAPE)[1], (2.0, 1.5, 1.0))
    with pytest.raises(DatasetError) as info:
        check_same_grid(("image", image, _grid(image)), ("label", label, _grid(label)), affine="ignore")
    message = str(info.value)
    assert message.startswith("image/label spacing mismatch: image ")
    assert f"image {str(image)!r} (2.0, 1.0, 1.0), label {str(label)!r} (2.0, 1.5, 1.0) (z, y, x)" in message


def test_another_shape_is_refused_naming_both(pair, tmp_path):
    image, _ = pair
    label = write_zyx(tmp_path / "big.nii.gz", np.zeros((6, 7, 9), np.uint8), (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"image/label shape mismatch: image '.*case_0000.nii.gz' \(6, 7, 8\), "
                                           r"label '.*big.nii.gz' \(6, 7, 9\)"):
        check_label_file([image], label, (0, 1, 2))


def test_an_affine_mismatch_can_be_a_warning(pair, tmp_path):
    image, label = pair
    moved = shifted(label, (0.0, 5.0, 0.0), tmp_path / "moved.nii.gz")
    with pytest.warns(DatasetWarning, match="moved.nii.gz"):
        check_same_grid(("image", image, _grid(image)), ("label", moved, _grid(moved)), affine="warn")


def test_extra_label_values_are_named(pair, tmp_path):
    image, _ = pair
    label = case_arrays(0, SHAPE)[1]
    label[0, 0, 0], label[0, 0, 1] = 5, 9
    path = write_zyx(tmp_path / "extra.nii.gz", label, (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"extra.nii.gz' holds values \[5, 9\] that the model's labels do not "
                                           r"list; expected only \[0, 1, 2\]"):
        check_label_values(path, read_label_map(path)[0], (0, 1, 2), not_listed="the model's labels do not list")
    with pytest.raises(DatasetError, match=r"holds values \[5, 9\]"):
        check_label_file([image], path, (0, 1, 2))


# ---------------------------------------------------------------- voxel sizes in the header


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("read", [read_header, lambda p: read_images([p]), read_label_map])
def test_a_non_finite_voxel_size_is_refused_naming_the_file(tmp_path, bad, read):
    path = set_stored_pixdim(write_zyx(tmp_path / "odd.nii.gz", np.ones(SHAPE, np.int16)), 1, bad)
    with pytest.raises(DatasetError, match=r"odd.nii.gz' has voxel size \(1.0, (nan|inf), 1.0\) mm \(z, y, x\); "
                                           "expected finite sizes > 0"):
        read(path)


def test_a_zero_voxel_size_warns_like_plan(tmp_path):
    path = set_stored_pixdim(write_zyx(tmp_path / "flat.nii.gz", np.ones(SHAPE, np.int16)), 0, 0.0)
    with pytest.warns(DatasetWarning, match=r"1 file\(s\) store pixdim 0 \(no spacing; read as 1 mm\): "
                                            r"'.*flat.nii.gz' read as spacing \(1.0, 1.0, 1.0\) \(z, y, x\)"):
        warn_zero_pixdim([path, path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_zero_pixdim([write_zyx(tmp_path / "fine.nii.gz", np.ones(SHAPE, np.int16))])


def test_channels_on_other_spacings_are_refused_when_predicted(tmp_path):
    first = write_zyx(tmp_path / "c_0000.nii.gz", np.ones(SHAPE, np.int16), (2.0, 1.0, 1.0))
    second = write_zyx(tmp_path / "c_0001.nii.gz", np.ones(SHAPE, np.int16), (3.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"c_0001.nii.gz' has spacing \(3.0, 1.0, 1.0\) .* expected "
                                           r"\(2.0, 1.0, 1.0\) like '.*c_0000.nii.gz'"):
        read_input([first, second])
    assert read_input([first, first]).array.shape == (2,) + SHAPE


# ---------------------------------------------------------------- training data: the same checks, worded as before


def test_training_validation_names_a_nan_voxel_size(tmp_path):
    root = nnunet_dataset(tmp_path / "D", shape=SHAPE)
    for path in (root / "imagesTr" / "case_a_0000.nii.gz", root / "labelsTr" / "case_a.nii.gz"):
        set_stored_pixdim(path, 1, np.nan)
    with pytest.raises(DatasetError, match=r"case 'case_a': file '.*case_a_0000.nii.gz' has voxel size "
                                           r"\(2.0, nan, 1.0\) mm"):
        validate_dataset(root)


def test_training_validation_still_only_warns_about_a_label_affine(tmp_path):
    root = nnunet_dataset(tmp_path / "D", shape=SHAPE)
    shifted(root / "labelsTr" / "case_b.nii.gz", (5.0, 0.0, 0.0))
    with pytest.warns(DatasetWarning, match=r"1 case\(s\) have a label affine that differs from the image's: "
                                            r"'case_b' \(labelsTr/case_b.nii.gz differs by up to 5\)"):
        validate_dataset(root)
