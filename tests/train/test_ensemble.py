"""Ensembles: the mean softmax of checkpoints with their own plans, model folders and `hnas predict`."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from hnas.cfgunet import build, compile_architecture
from hnas.cli import main
from hnas.data import load_dataset, read_images
from hnas.errors import TrainingError
from hnas.grammar import make_grammar
from hnas.grammar.generator import default_architecture
from hnas.train import Predictor
from hnas.train.checkpoint import save_checkpoint
from hnas.train.ensemble import Ensemble, EnsembleWarning, load_models, model_source, predict_with
from hnas.train.postprocessing import Postprocessing
from hnas.train.preprocessing import ChannelNormalization

from .conftest import tiny_plan

LABELS = [["background", 0], ["left", 1], ["right", 2]]


def write_checkpoint(path, plan, seed, labels=LABELS):
    """An untrained network with a seeded init: predicting only needs weights, plan and labels."""
    torch.manual_seed(seed)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, deep_supervision=True)
    network = build(spec, torch.device("cpu"))
    return save_checkpoint(path, {"trainer": {"model": network.state_dict()}, "plan": plan.to_json(),
                                  "spec": spec.to_json(), "labels": labels,
                                  "normalization": [ChannelNormalization("zscore").to_dict()]})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two members on different plans (1 mm and 1.5 mm spacing) and a third with another label set."""
    root = tmp_path_factory.mktemp("ensemble")
    fine, coarse = tiny_plan(), tiny_plan(spacing=(1.5, 1.5, 1.5))
    return {"fine": write_checkpoint(root / "fine.pt", fine, 0),
            "coarse": write_checkpoint(root / "coarse.pt", coarse, 1),
            "other_labels": write_checkpoint(root / "other.pt", fine, 2, [["background", 0], ["tumour", 1],
                                                                           ["edema", 2]])}


@pytest.fixture(scope="module")
def image(tiny_dataset):
    case = load_dataset(tiny_dataset).cases[0]
    return case.image_files[0], read_images(case.image_files)


def test_members_with_different_plans_average_their_restored_softmax(checkpoints, image):
    _, volume = image
    fine = Predictor(checkpoints["fine"], device="cpu").probabilities(volume.array, volume.spacing)
    coarse = Predictor(checkpoints["coarse"], device="cpu").probabilities(volume.array, volume.spacing)
    assert fine.shape == coarse.shape == (3,) + volume.array.shape[1:]
    ensemble = Ensemble([checkpoints["fine"], checkpoints["coarse"]], weights=[3, 1], device="cpu")
    mean = ensemble.probabilities(volume.array, volume.spacing)
    np.testing.assert_allclose(mean, 0.75 * fine + 0.25 * coarse, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-5)
    assert not np.allclose(fine, coarse, atol=1e-3)  # the average is not trivially one member's
    assert np.array_equal(ensemble.segment(volume.array, volume.spacing), ensemble.to_labels(mean))


def test_members_with_other_labels_are_refused_naming_both(checkpoints):
    with pytest.raises(TrainingError, match=r"other\.pt.*tumour.*fine\.pt.*left.*same label set"):
        Ensemble([checkpoints["fine"], checkpoints["other_labels"]], device="cpu")


@pytest.fixture(scope="module")
def model_folder(checkpoints, tmp_path_factory):
    """RUN/cv/<name> with two folds and a post-processing decision."""
    import shutil

    folder = tmp_path_factory.mktemp("run") / "cv" / "default_1ep"
    for fold, member in ((0, "fine"), (1, "coarse")):
        (folder / f"fold_{fold}").mkdir(parents=True)
        shutil.copy(checkpoints[member], folder / f"fold_{fold}" / "checkpoint.pt")
    (folder / "postprocessing.json").write_text(json.dumps(Postprocessing(((1, 2),)).to_dict()))
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
    import shutil

    single = model_folder.parent / "trial_00003_1ep"
    (single / "fold_0").mkdir(parents=True)
    shutil.copy(checkpoints["fine"], single / "fold_0" / "checkpoint.pt")
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
