"""`hnas predict --model`: checkpoints, cross-validated model folders (fold ensembles with their decision)
and find-best's best_configuration.json; the Ensemble itself is tested in tests/train/test_ensemble.py."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import THREE_LABELS, isotropic_plan, untrained_checkpoint
from hnas.cli import main
from hnas.data import load_dataset, make_synthetic_dataset, read_images
from hnas.errors import TrainingError
from hnas.pipeline.predict import EnsembleWarning, load_models, model_source, predict_with
from hnas.train.postprocessing import Postprocessing

from .conftest import model_record

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two members on different plans (1 mm and 1.5 mm spacing) of a 3-stage network with 4..16 features."""
    root = tmp_path_factory.mktemp("ensemble")
    fine = isotropic_plan(3, patch=16, base=4, top=16)
    coarse = replace(fine, spacing=(1.5, 1.5, 1.5))
    return {"fine": untrained_checkpoint(root / "fine.pt", fine, 0),
            "coarse": untrained_checkpoint(root / "coarse.pt", coarse, 1)}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    dataset = make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=2, shape=(24, 24, 24), seed=3)
    case = load_dataset(dataset).cases[0]
    return case.image_files[0], read_images(case.image_files)


@pytest.fixture(scope="module")
def model_folder(checkpoints, tmp_path_factory):
    """RUN/cv/<name> with two folds and a post-processing decision."""
    folder = tmp_path_factory.mktemp("run") / "cv" / "default_1ep"
    for fold, member in ((0, "fine"), (1, "coarse")):
        (folder / f"fold_{fold}").mkdir(parents=True)
        shutil.copy(checkpoints[member], folder / f"fold_{fold}" / "checkpoint.pt")
    (folder / "postprocessing.json").write_text(json.dumps(Postprocessing(((1, 2),)).to_dict()))
    (folder / "model.json").write_text(json.dumps(model_record(folder.name, [0, 1])))
    return folder


def test_a_model_folder_is_its_fold_ensemble_with_its_decision(model_folder):
    source = model_source(model_folder)
    assert [p.parent.name for p in source.checkpoints] == ["fold_0", "fold_1"]
    assert source.weights == (0.5, 0.5) and source.postprocessing.regions == ((1, 2),)
    with pytest.warns(EnsembleWarning, match=r"post-processing of \['.*default_1ep'\] not applied"):
        two = load_models([model_folder, model_folder / "fold_0"], device="cpu")
    assert two.weights == (0.25, 0.25, 0.5) and two.postprocessing is None  # a decision belongs to one model


def test_an_ensemble_of_models_without_decisions_does_not_warn(checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_models([checkpoints["fine"], checkpoints["coarse"]], device="cpu")


def test_a_best_configuration_averages_its_members_fold_ensembles(model_folder, checkpoints):
    single = model_folder.parent / "trial_00003_1ep"
    (single / "fold_0").mkdir(parents=True)
    shutil.copy(checkpoints["fine"], single / "fold_0" / "checkpoint.pt")
    (single / "model.json").write_text(json.dumps(model_record(single.name, [0])))
    best = model_folder.parent / "best_configuration.json"
    best.write_text(json.dumps({"best": {"members": ["default_1ep", "trial_00003_1ep"]},
                                "postprocessing": {"regions": [[2]]}}))
    source = model_source(best)
    assert source.weights == (0.25, 0.25, 0.5) and source.postprocessing.regions == ((2,),)
    best.write_text(json.dumps({"best": {"members": ["missing_1ep"]}}))
    with pytest.raises(TrainingError, match="missing_1ep"):
        model_source(best)


def test_predict_with_a_model_folder_writes_post_processed_label_maps(model_folder, image, tmp_path):
    path, volume = image
    ensemble, written = predict_with([model_folder], [path], tmp_path / "out", device="cpu")
    result = nib.load(str(written[0]))
    assert result.shape == nib.load(str(path)).shape
    expected = ensemble.postprocessing.apply(ensemble.to_labels(ensemble.probabilities(volume.array, volume.spacing)))
    assert np.array_equal(np.asarray(result.dataobj).transpose(2, 1, 0), expected)


def test_cli_predict_takes_several_models(model_folder, checkpoints, image, tmp_path, capsys):
    path, _ = image
    code = main(["predict", "--model", str(model_folder), str(checkpoints["fine"]), str(path), "-o",
                 str(tmp_path / "out"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "ensemble of 3 checkpoints" in out and "wrote" in out
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 1


# ---------------------------------------------------------------- what a model folder may contribute (issue 18)


@pytest.fixture
def own_model(model_folder, tmp_path):
    """A writable copy of the module's model folder (RUN/cv/default_1ep with folds 0 and 1)."""
    copy = tmp_path / "run" / "cv" / "default_1ep"
    shutil.copytree(model_folder, copy)
    return copy


def test_stray_fold_folders_are_left_out_with_a_warning(own_model, checkpoints):
    for stray in ("fold_7", "fold_x"):
        (own_model / stray).mkdir()
        shutil.copy(checkpoints["fine"], own_model / stray / "checkpoint.pt")
    with pytest.warns(EnsembleWarning, match=r"\['fold_7', 'fold_x'\] not used: model.json lists folds \[0, 1\]"):
        source = model_source(own_model)
    assert [p.parent.name for p in source.checkpoints] == ["fold_0", "fold_1"]


def test_a_fold_recorded_for_another_model_or_a_replaced_checkpoint_is_refused(own_model, checkpoints):
    from hnas.data.io import file_digest

    settings = {"trial_id": None, "config": {"hand-made": "default_1ep"}, "epochs": 1, "iterations_per_epoch": 1, "provenance": None}
    fold_json = own_model / "fold_1" / "fold.json"
    fold_json.write_text(json.dumps({"model": "trial_00002_1ep", "fold": 1, "settings": settings,
                                     "validation_cases": [], "validation": {}}))
    with pytest.raises(TrainingError, match="belongs to model 'trial_00002_1ep' fold 1; expected 'default_1ep'"):
        model_source(own_model)
    recorded = {"model": "default_1ep", "fold": 1, "settings": settings, "validation_cases": [], "validation": {},
                "checkpoint": file_digest(checkpoints["coarse"])}
    fold_json.write_text(json.dumps(recorded))
    assert len(model_source(own_model).checkpoints) == 2  # the recorded checkpoint
    shutil.copy(checkpoints["fine"], own_model / "fold_1" / "checkpoint.pt")  # swapped for another model's
    with pytest.raises(TrainingError, match="is not the checkpoint fold 1 of 'default_1ep' was trained into"):
        model_source(own_model)


@pytest.mark.parametrize("member", ["../default_1ep", "/etc", "escape", "not_a_model"])
def test_best_configuration_members_stay_inside_the_run_and_are_models(own_model, tmp_path, member):
    cv = own_model.parent
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(own_model, tmp_path / "elsewhere" / "default_1ep")
    (cv / "escape").symlink_to(tmp_path / "elsewhere" / "default_1ep")
    (cv / "not_a_model" / "fold_0").mkdir(parents=True)
    best = cv / "best_configuration.json"
    best.write_text(json.dumps({"best": {"members": [member]}}))
    with pytest.raises(TrainingError, match="plain model folder name|leads outside|no model.json"):
        model_source(best)


def test_predict_never_writes_over_an_input_image(checkpoints, image, tmp_path, capsys):
    source, _ = image
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "case.nii.gz"  # a single-channel image without the _0000 suffix: its label map has its name
    shutil.copy(source, path)
    before = path.read_bytes()
    code = main(["predict", "--model", str(checkpoints["fine"]), str(path), "-o", str(folder), "--overwrite",
                 "--device", "cpu"])
    assert code == 1 and "is also an input of this command" in capsys.readouterr().err
    assert path.read_bytes() == before


# ---------------------------------------------------------------- the input's voxel size (issue 18)


def _volume(path, spacing, shape=(24, 24, 24)):
    from hnas.data.io import write_volume

    rng = np.random.default_rng(0)
    volume = np.zeros(shape, dtype=np.float32)
    volume[1:-1, 1:-1, 1:-1] = rng.normal(500.0, 50.0, size=tuple(s - 2 for s in shape))
    return write_volume(volume, spacing, path)


def _predict_cli(capsys, model, image, out):
    code = main(["predict", "--model", str(model), str(image), "-o", str(out), "--device", "cpu"])
    return code, capsys.readouterr().err


def test_cli_predict_refuses_a_nan_voxel_size_in_one_line(capsys, checkpoints, tmp_path):
    from data.builders import set_stored_pixdim

    path = set_stored_pixdim(_volume(tmp_path / "odd_0000.nii.gz", (1.0, 1.0, 1.0)), 1, float("nan"))
    code, err = _predict_cli(capsys, checkpoints["fine"], path, tmp_path / "out")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"hnas: error: file {str(path)!r} has voxel size (1.0, nan, 1.0) mm (z, y, x)")
    assert not (tmp_path / "out" / "odd.nii.gz").exists()


def test_cli_predict_warns_about_a_zero_pixdim_like_plan(capsys, checkpoints, tmp_path):
    from data.builders import set_stored_pixdim

    path = set_stored_pixdim(_volume(tmp_path / "flat_0000.nii.gz", (1.0, 1.0, 1.0)), 0, 0.0)
    code, err = _predict_cli(capsys, checkpoints["fine"], path, tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "flat.nii.gz").is_file()
    assert "hnas: warning: 1 file(s) store pixdim 0 (no spacing; read as 1 mm)" in err and "flat_0000" in err


def test_cli_predict_warns_about_a_voxel_size_far_from_the_models(capsys, checkpoints, tmp_path):
    path = _volume(tmp_path / "tiny_0000.nii.gz", (0.01, 0.01, 0.01))
    code, err = _predict_cli(capsys, checkpoints["fine"], path, tmp_path / "out")
    lines = [line for line in err.splitlines() if line.startswith("hnas: warning:")]
    assert code == 0 and len(lines) == 1 and "tiny_0000.nii.gz" in lines[0] and "100x finer" in lines[0]


def test_cli_predict_refuses_an_absurd_resampled_volume(capsys, checkpoints, tmp_path):
    path = _volume(tmp_path / "huge_0000.nii.gz", (20.0, 20.0, 20.0), shape=(64, 64, 64))
    code, err = _predict_cli(capsys, checkpoints["fine"], path, tmp_path / "out")
    assert code == 1 and err.count("\n") == 1 and "huge_0000.nii.gz' would be resampled to (1280, 1280, 1280)" in err
    assert not (tmp_path / "out").exists()


def test_cli_predict_refuses_an_unusual_and_long_input_unless_allowed(capsys, checkpoints, tmp_path, monkeypatch):
    from hnas.train import prediction

    monkeypatch.setattr(prediction, "sliding_window_logits",
                        lambda network, image, *args, **kwargs: __import__("torch").zeros((3, *image.shape[1:])))
    path = _volume(tmp_path / "coarse_0000.nii.gz", (20.0, 20.0, 20.0), shape=(2, 8, 8))
    code, err = _predict_cli(capsys, checkpoints["fine"], path, tmp_path / "out")
    assert code == 1 and err.count("\n") == 1 and "20x coarser" in err and "--allow-unusual-inputs" in err
    assert not (tmp_path / "out").exists()
    code = main(["predict", "--model", str(checkpoints["fine"]), str(path), "-o", str(tmp_path / "out"),
                 "--device", "cpu", "--allow-unusual-inputs"])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "out" / "coarse.nii.gz").is_file()
    assert "20x coarser" in err and "expect a long prediction" in err


def test_an_ensemble_refuses_before_any_member_predicts(model_folder, tmp_path, monkeypatch):
    from hnas.errors import DatasetError
    from hnas.train import prediction

    def reached(*args, **kwargs):
        raise AssertionError("a member predicted before every member checked the input")

    monkeypatch.setattr(prediction, "sliding_window_logits", reached)
    path = _volume(tmp_path / "huge_0000.nii.gz", (20.0, 20.0, 20.0), shape=(64, 64, 64))
    with pytest.raises(DatasetError, match="would be resampled"):
        predict_with([model_folder], [path], tmp_path / "out", device="cpu")


@pytest.mark.parametrize("regions", [[[7]], [[0]], [[1, 7]]])
def test_a_decision_naming_labels_the_model_lacks_is_refused(own_model, regions):
    (own_model / "postprocessing.json").write_text(json.dumps({"regions": regions}))
    with pytest.raises(TrainingError, match=r"names label value\(s\) \[(7|0)\]; expected foreground values"):
        load_models([own_model], device="cpu")


def test_predict_does_not_write_into_a_model_folder(own_model, image, tmp_path):
    path, _ = image
    with pytest.raises(TrainingError, match="is inside .*default_1ep', a folder of --model"):
        predict_with([own_model], [path], own_model / "fold_0" / "validation", device="cpu")
    assert not (own_model / "fold_0" / "validation").exists()


# ---------------------------------------------------------------- a folder of images (nnUNetv2_predict -i)


def _image_folder(root, names, spacing=(1.0, 1.0, 1.0)):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        _volume(root / name, spacing, shape=(16, 16, 16))
    return root


@pytest.fixture
def no_windows(monkeypatch):
    """Which files make which case is under test, not the network: every window predicts background."""
    from hnas.train import prediction

    monkeypatch.setattr(prediction, "sliding_window_logits",
                        lambda network, image, *args, **kwargs: torch.zeros((len(THREE_LABELS), *image.shape[1:])))


def _cli(capsys, *argv):
    code = main([str(a) for a in argv] + ["--device", "cpu"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def two_channel_checkpoint(tmp_path_factory):
    """A 2-channel model (say T1 and T2): cases are <case>_0000 and <case>_0001."""
    plan = replace(isotropic_plan(3, patch=16, base=4, top=16), n_input_channels=2,
                   normalization=("zscore", "zscore"))
    return untrained_checkpoint(tmp_path_factory.mktemp("two") / "two.pt", plan, 2)


def test_cli_predict_takes_a_folder_with_i_or_among_the_images(capsys, checkpoints, tmp_path, no_windows):
    folder = _image_folder(tmp_path / "imagesTs", ["b_0000.nii.gz", "a_0000.nii"])
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a_0000.nii").write_bytes(b"macOS metadata")  # hidden: not an image
    _image_folder(folder / "nested", ["deeper_0000.nii.gz"])  # not recursive
    code, out, _ = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", folder, "-o", tmp_path / "i")
    assert code == 0 and [line.split("/")[-1] for line in out.splitlines()] == ["a.nii.gz", "b.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "i").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    # a folder written right after --model, or after the other options, is a folder of images too
    code, _, _ = _cli(capsys, "predict", "--model", checkpoints["fine"], folder, "-o", tmp_path / "after_model")
    assert code == 0 and sorted(p.name for p in (tmp_path / "after_model").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    code, _, _ = _cli(capsys, "predict", "--model", checkpoints["fine"], "-o", tmp_path / "positional", folder)
    assert code == 0 and sorted(p.name for p in (tmp_path / "positional").iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_cli_predict_refuses_a_folder_without_nifti_files(capsys, checkpoints, tmp_path):
    empty = tmp_path / "empty"
    _image_folder(empty / "nested", ["x_0000.nii.gz"])
    (empty / "x_0000.nii.gz.txt").write_text("not an image")
    code, _, err = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", empty, "-o", tmp_path / "out")
    assert code == 1 and err.count("\n") == 1
    assert f"folder {str(empty)!r} holds no NIfTI image; expected files ending in .nii.gz or .nii" in err
    image = _volume(tmp_path / "a_0000.nii.gz", (1.0, 1.0, 1.0))
    code, _, err = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", image, "-o", tmp_path / "out")
    assert code == 1 and f"-i {str(image)!r} is not a folder; expected a folder of NIfTI images" in err
    assert not (tmp_path / "out").exists()


def test_cli_predict_refuses_a_case_given_twice(capsys, checkpoints, two_channel_checkpoint, tmp_path, no_windows):
    folder = _image_folder(tmp_path / "in", ["a_0000.nii.gz", "b_0000.nii.gz"])
    other = _image_folder(tmp_path / "other", ["c_0000.nii.gz"])
    code, _, _ = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", folder, other, "-o", tmp_path / "ok")
    assert code == 0 and len(list((tmp_path / "ok").iterdir())) == 3  # -i and files mix when no case repeats
    code, _, err = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", folder, folder / "b_0000.nii.gz",
                        "-o", tmp_path / "out")
    assert code == 1 and err.count("\n") == 1 and "case 'b' is given twice" in err
    _image_folder(tmp_path / "two", ["a_0000.nii.gz", "a_0001.nii.gz"])
    code, _, err = _cli(capsys, "predict", "--model", two_channel_checkpoint, "-i", tmp_path / "two",
                        tmp_path / "two" / "a_0001.nii.gz", "-o", tmp_path / "out")
    assert code == 1 and err.count("\n") == 1 and "case 'a' channel 1 is given twice" in err
    assert not (tmp_path / "out").exists()


def test_cli_predict_groups_a_folder_by_channel_and_names_what_is_missing(capsys, two_channel_checkpoint, tmp_path, no_windows):
    from hnas.train.prediction import group_cases

    folder = _image_folder(tmp_path / "in", ["b_0001.nii.gz", "a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz"])
    assert group_cases([folder], 2) == {case: [folder / f"{case}_0000.nii.gz", folder / f"{case}_0001.nii.gz"]
                                        for case in ("a", "b")}
    code, out, _ = _cli(capsys, "predict", "--model", two_channel_checkpoint, "-i", folder, "-o", tmp_path / "out")
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]

    _volume(folder / "c_0000.nii.gz", (1.0, 1.0, 1.0))  # its second channel is missing
    code, _, err = _cli(capsys, "predict", "--model", two_channel_checkpoint, "-i", folder, "-o", tmp_path / "o2")
    assert code == 1 and err.count("\n") == 1
    assert (f"case 'c' lacks channel(s) [1]: {str(folder / 'c_0000.nii.gz')!r} has no "
            f"{str(folder / 'c_0001.nii.gz')!r} beside it; expected channels 0..1 for a 2-channel model") in err
    (folder / "c_0000.nii.gz").rename(folder / "c.nii.gz")  # no channel suffix: cannot be grouped
    code, _, err = _cli(capsys, "predict", "--model", two_channel_checkpoint, "-i", folder, "-o", tmp_path / "o2")
    assert code == 1 and f"image {str(folder / 'c.nii.gz')!r} is not named <case>_<XXXX>.nii.gz" in err
    assert not (tmp_path / "o2").exists()


def test_cli_predict_refuses_to_write_into_its_image_folder(capsys, checkpoints, tmp_path):
    folder = _image_folder(tmp_path / "in", ["a_0000.nii.gz"])
    code, _, err = _cli(capsys, "predict", "--model", checkpoints["fine"], "-i", folder, "-o", folder)
    assert code == 1 and err.count("\n") == 1 and f"-o {str(folder)!r} is the image folder" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a_0000.nii.gz"]
