"""predict(): label maps on the input's grid (shape, affine, header)."""

from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from hnas.data import load_dataset
from hnas.data.io import write_volume
from hnas.errors import DatasetError, TrainingError
from hnas.grammar import make_grammar
from hnas.train import Predictor, predict, train_fold

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
