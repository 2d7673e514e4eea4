import nibabel as nib
import numpy as np
import pytest

from hnas.data import read_header, read_images, read_label_map, write_label_map
from hnas.errors import DatasetError

from .builders import counting_hashes, write_zyx


def test_axis_order_is_nifti_reversed(tmp_path):
    data_xyz = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data_xyz, np.diag([1.0, 2.0, 3.0, 1.0])), str(path))

    volume = read_images([path])

    assert volume.array.shape == (1, 7, 6, 5)
    assert volume.spacing == (3.0, 2.0, 1.0)
    assert volume.array.dtype == np.float32
    assert volume.array[0, 4, 3, 2] == data_xyz[2, 3, 4]
    header = read_header(path)
    assert header.shape == (7, 6, 5) and header.spacing == (3.0, 2.0, 1.0) and header.n_channels is None


def test_channels_of_a_4d_file_are_split(tmp_path):
    first, second = np.full((3, 4, 5), 1, np.int16), np.full((3, 4, 5), 2, np.int16)
    path = write_zyx(tmp_path / "stack.nii.gz", [first, second])

    volume = read_images([path, path], channel_in_file=[1, 0])

    assert volume.array.shape == (2, 3, 4, 5)
    assert np.all(volume.array[0] == 2) and np.all(volume.array[1] == 1)
    assert read_header(path).n_channels == 2


def test_reading_a_4d_file_as_one_channel_names_the_file(tmp_path):
    path = write_zyx(tmp_path / "stack.nii.gz", [np.zeros((3, 4, 5))] * 2)
    with pytest.raises(DatasetError, match="stack.nii.gz.*2 channels"):
        read_images([path])


def test_channels_on_different_grids_are_refused(tmp_path):
    a = write_zyx(tmp_path / "a.nii.gz", np.zeros((3, 4, 5)))
    b = write_zyx(tmp_path / "b.nii.gz", np.zeros((3, 4, 6)))
    with pytest.raises(DatasetError, match=r"b.nii.gz.*\(3, 4, 6\).*expected \(3, 4, 5\)"):
        read_images([a, b])


def test_whole_number_float_labels_become_integers(tmp_path):
    label = np.zeros((3, 4, 5), np.float32)
    label[1, 2, 3] = 2.0
    array, geometry = read_label_map(write_zyx(tmp_path / "l.nii.gz", label))
    assert np.issubdtype(array.dtype, np.integer)
    assert array[1, 2, 3] == 2 and array.sum() == 2
    assert geometry.shape == (3, 4, 5)


def test_fractional_labels_are_refused(tmp_path):
    label = np.zeros((3, 4, 5), np.float32)
    label[0, 0, 0] = 0.5
    with pytest.raises(DatasetError, match=r"non-integer values \[0.5\]"):
        read_label_map(write_zyx(tmp_path / "l.nii.gz", label))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nope.nii.gz.*does not exist"):
        read_images([tmp_path / "nope.nii.gz"])


def test_label_map_written_back_onto_reference_geometry(tmp_path):
    affine = np.array([[0.0, 0.0, -1.5, 10.0], [0.0, 2.0, 0.0, -4.0], [0.8, 0.0, 0.0, 3.0], [0, 0, 0, 1]])
    reference = tmp_path / "ref.nii.gz"
    img = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), affine)
    img.set_qform(affine, code=1)
    nib.save(img, str(reference))
    volume = read_images([reference])
    prediction = np.zeros(volume.array.shape[1:], np.int64)
    prediction[1, 2, 3] = 2

    for ref in (reference, volume.geometry):
        out = write_label_map(prediction, ref, tmp_path / "out" / "pred.nii.gz")
        written = nib.load(str(out))
        np.testing.assert_allclose(written.affine, affine)
        assert written.shape == (5, 6, 7)
        assert written.get_data_dtype() == np.uint8
        back, _ = read_label_map(out)
        np.testing.assert_array_equal(back, prediction)


def test_label_map_of_wrong_shape_is_refused(tmp_path):
    reference = write_zyx(tmp_path / "ref.nii.gz", np.zeros((3, 4, 5)))
    with pytest.raises(DatasetError, match=r"\(5, 4, 3\).*expected \(3, 4, 5\)"):
        write_label_map(np.zeros((5, 4, 3), np.uint8), reference, tmp_path / "p.nii.gz")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_affine_is_refused_naming_the_file(tmp_path, bad):
    import nibabel as nib

    from hnas.data.io import read_header
    from hnas.errors import DatasetError

    affine = np.eye(4)
    affine[0, 3] = bad
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine)
    image.set_qform(np.eye(4), code=0)
    path = tmp_path / "odd_0000.nii.gz"
    nib.save(image, path)
    with pytest.raises(DatasetError, match="odd_0000.nii.gz"):
        read_header(path)


# ---------------------------------------------------------------- digests kept across processes (issue 20)


def test_a_file_is_hashed_once_across_processes_until_it_changes(tmp_path, monkeypatch):
    import hashlib

    from hnas.data import io as data_io

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "label.bin"
    path.write_bytes(b"labels" * 1000)
    calls = counting_hashes(monkeypatch)
    first = data_io.file_digest(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest() and len(calls) == 1
    monkeypatch.setattr(data_io, "_DIGESTS", {})  # the next command: served from $HNAS_CACHE
    assert data_io.file_digest(path) == first and len(calls) == 1
    path.write_bytes(b"edited" * 1000)  # same size; mtime and ctime change
    monkeypatch.setattr(data_io, "_DIGESTS", {})
    assert data_io.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest() and len(calls) == 2


@pytest.mark.parametrize("cache", ["a_file", "damaged_database"])
def test_a_cache_that_cannot_be_used_only_costs_the_hashing(tmp_path, monkeypatch, cache):
    import hashlib

    from hnas.data import io as data_io

    if cache == "a_file":
        (tmp_path / "cache").write_text("not a folder")
    else:
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / data_io.DIGEST_DATABASE).write_bytes(b"\x00garbage" * 100)
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "image.bin"
    path.write_bytes(b"voxels" * 100)
    calls = counting_hashes(monkeypatch)
    assert data_io.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest() and len(calls) == 1
