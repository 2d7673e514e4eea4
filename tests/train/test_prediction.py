"""predict(): label maps on the input's grid (shape, affine, header)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from data.builders import set_stored_pixdim
from hnas.data import DatasetWarning, load_dataset
from hnas.data.io import write_volume
from hnas.errors import DatasetError, TrainingError
from hnas.grammar import make_grammar
from hnas.train import Predictor, predict, train_fold
from hnas.train import prediction as prediction_module
from hnas.train.prediction import (MAX_RESAMPLED_VOXELS, SPACING_WARNING_FACTOR, InputLimits, PredictionWarning,
                                   window_count)

from .conftest import tiny_plan_2d


@pytest.fixture(scope="module")
def checkpoint(tiny_setup, tmp_path_factory):
    setup = replace(tiny_setup, iterations_per_epoch=1, validation_cases=1)
    return train_fold({"aug_factor": 0.0}, 1, tmp_path_factory.mktemp("model"), setup=setup).checkpoint


def test_label_maps_keep_the_input_geometry(checkpoint, tiny_dataset, tmp_path):
    dataset = load_dataset(tiny_dataset)
    images = [case.image_files[0] for case in dataset.cases[:2]]
    written = predict(checkpoint, images, tmp_path / "out")
    assert [p.name for p in written] == [f"{case.case_id}.nii.gz" for case in dataset.cases[:2]]
    for image, output in zip(images, written):
        source, result = nib.load(str(image)), nib.load(str(output))
        assert result.shape == source.shape
        assert np.allclose(result.affine, source.affine)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


def test_an_anisotropic_input_is_resampled_back(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    volume = np.zeros((10, 26, 22), dtype=np.float32)
    volume[1:-1, 2:-2, 2:-2] = rng.normal(500.0, 50.0, size=(8, 22, 18))
    path = write_volume(volume, (2.5, 0.8, 1.1), tmp_path / "thick_0000.nii.gz")
    written = predict(checkpoint, [path], tmp_path / "out")
    result = nib.load(str(written[0]))
    assert written[0].name == "thick.nii.gz"
    assert result.shape == nib.load(str(path)).shape
    assert np.allclose(result.header.get_zooms()[:3], (1.1, 0.8, 2.5))


def test_bad_inputs_are_named(checkpoint, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        predict(checkpoint, [tmp_path / "missing.nii.gz"], tmp_path)
    with pytest.raises(TrainingError, match="no images"):
        predict(checkpoint, [], tmp_path)


@pytest.fixture(scope="module")
def checkpoint_2d(tiny_setup, tmp_path_factory):
    plan = tiny_plan_2d()
    setup = replace(tiny_setup, plan=plan, grammar=make_grammar(plan), iterations_per_epoch=1, validation_cases=1)
    return train_fold({"aug_factor": 0.0}, 1, tmp_path_factory.mktemp("model_2d"), setup=setup).checkpoint


def test_a_2d_checkpoint_writes_label_maps_on_the_input_grid(checkpoint_2d, tiny_dataset, tmp_path):
    assert Predictor(checkpoint_2d, device="cpu").plan.dims == 2
    image = load_dataset(tiny_dataset).cases[0].image_files[0]
    rng = np.random.default_rng(0)
    volume = np.zeros((10, 26, 22), dtype=np.float32)
    volume[1:-1, 2:-2, 2:-2] = rng.normal(500.0, 50.0, size=(8, 22, 18))
    thick = write_volume(volume, (2.5, 0.8, 1.1), tmp_path / "thick_0000.nii.gz")  # slices kept, planes resampled
    written = predict(checkpoint_2d, [image, thick], tmp_path / "out", device="cpu", mirror=True)
    for source_path, output in zip([image, thick], written):
        source, result = nib.load(str(source_path)), nib.load(str(output))
        assert result.shape == source.shape
        assert np.allclose(result.affine, source.affine)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


# ---------------------------------------------------------------- the input's voxel size and the work (issue 18)


def _image(path, spacing, shape=(24, 24, 24)):
    """A head-like volume (zero border, so cropping has something to do) with the given (z, y, x) spacing."""
    rng = np.random.default_rng(0)
    volume = np.zeros(shape, dtype=np.float32)
    volume[1:-1, 1:-1, 1:-1] = rng.normal(500.0, 50.0, size=tuple(s - 2 for s in shape))
    return write_volume(volume, spacing, path)


def _hnas_warnings(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, (PredictionWarning, DatasetWarning))]


def test_an_image_at_the_models_spacing_predicts_without_warning(checkpoint, tmp_path):
    path = _image(tmp_path / "fine_0000.nii.gz", (1.0, 1.0, 1.0))
    assert _hnas_warnings(lambda: predict(checkpoint, [path], tmp_path / "out", device="cpu")) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_voxel_size_that_is_not_finite_is_refused_naming_the_file(checkpoint, tmp_path, bad):
    path = set_stored_pixdim(_image(tmp_path / "odd_0000.nii.gz", (1.0, 1.0, 1.0)), 0, bad)
    with pytest.raises(DatasetError, match=r"odd_0000.nii.gz' has voxel size \((nan|inf), 1.0, 1.0\) mm"):
        predict(checkpoint, [path], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spacing", [(1.0, -1.0, 1.0), (0.0, 1.0, 1.0), (float("nan"), 1.0, 1.0)])
def test_a_spacing_that_is_not_positive_is_refused(checkpoint, spacing):
    predictor = Predictor(checkpoint, device="cpu")
    with pytest.raises(DatasetError, match=r"image has voxel size .* mm \(z, y, x\); expected finite sizes > 0"):
        predictor.segment(np.ones((1, 8, 8, 8), np.float32), spacing)


def test_a_zero_pixdim_warns_as_plan_does_and_predicts(checkpoint, tmp_path):
    path = set_stored_pixdim(_image(tmp_path / "flat_0000.nii.gz", (1.0, 1.0, 1.0)), 2, 0.0)
    caught = _hnas_warnings(lambda: predict(checkpoint, [path], tmp_path / "out", device="cpu"))
    assert [w.category for w in caught] == [DatasetWarning]
    assert "store pixdim 0 (no spacing; read as 1 mm)" in str(caught[0].message)
    assert "flat_0000.nii.gz" in str(caught[0].message)
    assert (tmp_path / "out" / "flat.nii.gz").is_file()


@pytest.mark.parametrize("spacing, shape, words", [((0.01, 0.01, 0.01), (24, 24, 24), "100x finer"),
                                                   ((20.0, 1.0, 1.0), (2, 24, 24), "20x coarser")])
def test_a_voxel_size_far_from_the_models_warns(checkpoint, tmp_path, spacing, shape, words):
    """Warned, and predicted: the inputs are as cheap as a training case (a costly one is refused)."""
    path = _image(tmp_path / "far_0000.nii.gz", spacing, shape=shape)
    caught = _hnas_warnings(lambda: predict(checkpoint, [path], tmp_path / "out", device="cpu"))
    messages = [str(w.message) for w in caught if w.category is PredictionWarning]
    far = [m for m in messages if words in m]
    assert len(far) == 1 and "far_0000.nii.gz" in far[0] and "(1.0, 1.0, 1.0) mm" in far[0]
    assert f"more than {SPACING_WARNING_FACTOR:g}x" in far[0]


def _stop(*args, **kwargs):
    raise RuntimeError("sliding window reached")


def test_the_work_is_estimated_before_the_sliding_window(checkpoint, tmp_path, monkeypatch):
    path = _image(tmp_path / "wide_0000.nii.gz", (1.0, 1.0, 1.0), shape=(24, 256, 256))

    def reached(*args, **kwargs):
        raise RuntimeError("sliding window reached")

    monkeypatch.setattr(prediction_module, "sliding_window_logits", reached)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="sliding window reached"):
            predict(checkpoint, [path], tmp_path / "out", device="cpu")
    messages = [str(w.message) for w in caught if w.category is PredictionWarning]
    # 24 x 256 x 256 at 1 mm: 2 x 31 x 31 windows of 16^3; the median case (22^3) needs 2 x 2 x 2
    assert len(messages) == 1 and "wide_0000.nii.gz" in messages[0]
    assert "1,922 sliding windows of (16, 16, 16)" in messages[0] and "240x the median training case" in messages[0]


def test_a_long_prediction_needs_many_windows_to_warn(checkpoint, tmp_path, monkeypatch):
    """24 x 96 x 96: 242 windows, 30x the median case but quick; no warning."""
    path = _image(tmp_path / "wide_0000.nii.gz", (1.0, 1.0, 1.0), shape=(24, 96, 96))
    assert Predictor(checkpoint, device="cpu").work((24, 96, 96), (1.0, 1.0, 1.0)).windows == 242
    assert Predictor(checkpoint, device="cpu", mirror=True).work((24, 96, 96), (1.0, 1.0, 1.0)).passes == 242 * 8
    monkeypatch.setattr(prediction_module, "sliding_window_logits", _stop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="sliding window reached"):
            predict(checkpoint, [path], tmp_path / "out", device="cpu")
    assert not [w for w in caught if w.category is PredictionWarning]


def test_an_absurd_resampled_volume_is_refused_before_any_work(checkpoint, tmp_path, monkeypatch):
    huge = _image(tmp_path / "huge_0000.nii.gz", (20.0, 20.0, 20.0), shape=(64, 64, 64))

    def reached(*args, **kwargs):
        raise AssertionError("preprocessing reached")

    monkeypatch.setattr(prediction_module, "preprocess_image", reached)
    with pytest.raises(DatasetError, match=r"huge_0000.nii.gz' would be resampled to \(1280, 1280, 1280\) = "
                                           rf"2,097,152,000 voxels .* expected at most {MAX_RESAMPLED_VOXELS:,}"):
        predict(checkpoint, [huge], tmp_path / "out", device="cpu")
    normal = _image(tmp_path / "normal_0000.nii.gz", (1.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"= 13,824 voxels .* expected at most 1,000"):
        predict(checkpoint, [normal], tmp_path / "out", device="cpu", limits=InputLimits(max_voxels=1000))


def test_an_unusual_voxel_size_with_a_long_prediction_is_refused_unless_allowed(checkpoint, tmp_path, monkeypatch):
    """20 mm voxels for a 1 mm model (a header in cm?): minutes of sliding window for a meaningless map."""
    coarse = _image(tmp_path / "coarse_0000.nii.gz", (20.0, 20.0, 20.0), shape=(2, 8, 8))  # 40x160x160 at 1 mm: 4x19x19
    monkeypatch.setattr(prediction_module, "sliding_window_logits", _stop)
    with pytest.raises(DatasetError, match=r"coarse_0000.nii.gz' has voxel size \(20.0, 20.0, 20.0\) mm .* 20x coarser"
                                           r".* 1,444 sliding windows .* pass --allow-unusual-inputs"):
        predict(checkpoint, [coarse], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="sliding window reached"):  # allowed: warned, then predicted
            predict(checkpoint, [coarse], tmp_path / "out", device="cpu", limits=InputLimits.lifted())
    messages = [str(w.message) for w in caught if w.category is PredictionWarning]
    assert len(messages) == 2 and "20x coarser" in messages[0] and "expect a long prediction" in messages[1]


def test_an_unusual_voxel_size_is_refused_when_costly_even_below_the_long_prediction_floor(checkpoint):
    """(2, 3, 3) at 20 mm: 40x60x60 at 1 mm, 4x7x7 = 196 windows (< 1000 passes, no work warning) but 24x the
    median case's 8: refused, as the spacing says the header is probably wrong."""
    predictor = Predictor(checkpoint, device="cpu")
    work = predictor.work((2, 3, 3), (20.0,) * 3)
    assert (work.windows, work.median_windows) == (196, 8)
    with pytest.raises(DatasetError, match=r"20x coarser.*196 sliding windows"):
        predictor.input_warnings((2, 3, 3), (20.0,) * 3)
    small = predictor.input_warnings((1, 1, 1), (20.0,) * 3)  # 20^3 at 1 mm: 8 windows, as cheap as a case
    assert len(small) == 1 and "20x coarser" in small[0]


def test_lifted_limits_predict_a_volume_above_the_voxel_cap(checkpoint):
    predictor = Predictor(checkpoint, device="cpu", limits=InputLimits.lifted())
    assert predictor.work((64, 64, 64), (20.0,) * 3).voxels > MAX_RESAMPLED_VOXELS
    messages = predictor.input_warnings((64, 64, 64), (20.0,) * 3)
    assert "20x coarser" in messages[0] and "expect a long prediction" in messages[1]


@pytest.mark.parametrize("shape, patch", [((24, 96, 96), (16, 16, 16)), ((10, 7, 33), (16, 16, 16)),
                                          ((17, 16, 40), (8, 16, 12)), ((5, 40, 41), (16, 16))])
def test_the_window_count_is_monais(shape, patch):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    planar = shape[-len(patch):]
    size = tuple(max(n, p) for n, p in zip(planar, patch))  # MONAI pads an image smaller than the patch
    interval = _get_scan_interval(size, patch, len(patch), (0.5,) * len(patch))
    per_slice = len(dense_patch_slices(size, patch, interval))
    expected = per_slice * (shape[0] if len(patch) == 2 else 1)
    assert window_count(shape, patch, 0.5) == expected


# ---------------------------------------------------------------- device: cuDNN tuning, host float32, out of memory

def test_cudnn_picks_kernels_for_the_fixed_windows_on_cuda_only(checkpoint, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    prediction_module.tune_for_fixed_windows(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    prediction_module.tune_for_fixed_windows(torch.device("cuda:0"))
    assert torch.backends.cudnn.benchmark is True
    tuned = []
    monkeypatch.setattr(prediction_module, "tune_for_fixed_windows", tuned.append)
    Predictor(checkpoint, device="cpu")
    assert tuned == [torch.device("cpu")]  # the Predictor's own device decides


def test_half_precision_scores_reach_the_host_as_float32():
    import torch

    scores = torch.full((3, 2, 2), 1 / 3, dtype=torch.float16)
    array = prediction_module.host_float32(scores.transpose(0, 1))  # a 2D plan's scores are a strided view
    assert array.dtype == np.float32 and array.shape == (2, 3, 2) and np.allclose(array, 1 / 3, atol=1e-3)


def test_an_image_out_of_memory_is_one_error_naming_its_size(checkpoint, tmp_path, monkeypatch):
    from hnas.train import inference

    def window(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(inference, "sliding_window_inference", window)
    path = _image(tmp_path / "big_0000.nii.gz", (1.0, 1.0, 1.0))
    with pytest.raises(TrainingError, match=r"a case of shape \(1, 22, 22, 22\) \(10,648 voxels\) ran out of memory "
                                            r"with the whole case on cpu: its 3 class scores need about 0.0 GiB"):
        predict(checkpoint, [path], tmp_path / "out", device="cpu")


def test_an_image_out_of_host_memory_when_resampled_back_is_one_error(checkpoint, monkeypatch):
    def restore(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(prediction_module, "restore_probabilities", restore)
    predictor = Predictor(checkpoint, device="cpu")
    image = np.random.default_rng(0).normal(size=(1, 20, 20, 20)).astype(np.float32)
    with pytest.raises(TrainingError, match=r"an image of shape \(1, 20, 20, 20\) ran out of host memory: its 3 class "
                                            r"scores need about 0.0 GiB \(160,000 bytes\)"):
        predictor.checked_probabilities(image, (1.0, 1.0, 1.0))


def test_cli_predict_out_of_memory_prints_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    from hnas.cli import main
    from hnas.train import inference

    def window(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(inference, "sliding_window_inference", window)
    path = _image(tmp_path / "big_0000.nii.gz", (1.0, 1.0, 1.0))
    code = main(["predict", "--model", str(checkpoint), str(path), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("hnas: error: a case of shape (1, 22, 22, 22)")
    assert "Traceback" not in err
