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

from conftest import isotropic_plan
from hnas.cfgunet import build, compile_architecture
from hnas.cli import main
from hnas.data import load_dataset, make_synthetic_dataset, read_images
from hnas.errors import TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.pipeline.predict import EnsembleWarning, load_models, model_source, predict_with
from hnas.train.checkpoint import save_checkpoint
from hnas.train.postprocessing import Postprocessing
from hnas.train.preprocessing import ChannelNormalization

LABELS = [["background", 0], ["left", 1], ["right", 2]]


def write_checkpoint(path, plan, seed):
    """An untrained network with a seeded init: predicting only needs weights, plan and labels."""
    torch.manual_seed(seed)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, deep_supervision=True)
    network = build(spec, torch.device("cpu"))
    return save_checkpoint(path, {"trainer": {"model": network.state_dict()}, "plan": plan.to_json(),
                                  "spec": spec.to_json(), "labels": LABELS,
                                  "normalization": [ChannelNormalization("zscore").to_dict()]})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two members on different plans (1 mm and 1.5 mm spacing) of a 3-stage network with 4..16 features."""
    root = tmp_path_factory.mktemp("ensemble")
    fine = isotropic_plan(3, patch=16, base=4, top=16)
    coarse = replace(fine, spacing=(1.5, 1.5, 1.5))
    return {"fine": write_checkpoint(root / "fine.pt", fine, 0),
            "coarse": write_checkpoint(root / "coarse.pt", coarse, 1)}


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
