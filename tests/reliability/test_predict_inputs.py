"""`hnas predict` with hostile inputs (issue 10): non-finite images or weights, damaged, reshaped or
foreign checkpoints, devices this machine lacks, existing outputs. Each is one line naming the
value, never a traceback and never an all-background map with exit 0.

The checkpoint is an untrained network saved the way training saves it, so no test trains.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import isotropic_plan
from hnas.cfgunet import build, compile_architecture
from hnas.errors import DatasetError, TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.train import predict
from hnas.train.checkpoint import save_checkpoint
from hnas.train.prediction import resolve_device
from data.builders import write_zyx
from reliability.run_folders import run_cli as run

SHAPE = (10, 12, 14)


def _payload(plan, weights=None) -> dict:
    grammar = make_grammar(plan)
    spec = compile_architecture(grammar, default_architecture(plan), plan)
    torch.manual_seed(0)
    network = build(spec, torch.device("cpu"))
    return {"trainer": {"model": network.state_dict() if weights is None else weights(network.state_dict())},
            "spec": spec.to_json(), "plan": plan.to_json(),
            "normalization": [{"scheme": "zscore", "mean": 0.0, "std": 1.0}],
            "labels": [["background", 0], ["left", 1], ["right", 2]]}


@pytest.fixture(scope="module")
def plan():
    return isotropic_plan(3, patch=16, base=4, top=16)


@pytest.fixture(scope="module")
def checkpoint(plan, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("model") / "checkpoint.pt", _payload(plan))


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[1:-1, 1:-1, 1:-1] = rng.normal(100.0, 10.0, size=tuple(s - 2 for s in SHAPE))
    return write_zyx(tmp_path / "case_0000.nii.gz", volume)


def test_a_good_checkpoint_predicts(checkpoint, image, tmp_path):
    written = predict(checkpoint, [image], tmp_path / "out", device="cpu")
    assert nib.load(str(written[0])).shape == nib.load(str(image)).shape


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_image_is_refused(checkpoint, tmp_path, bad):
    volume = np.ones(SHAPE, dtype=np.float32)
    volume[4, 4, 4] = bad
    path = write_zyx(tmp_path / "bad_0000.nii.gz", volume)
    with pytest.raises(DatasetError, match="bad_0000.nii.gz' holds 1 non-finite voxel"):
        predict(checkpoint, [path], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out" / "bad.nii.gz").exists()


def test_non_finite_weights_are_refused(plan, image, tmp_path):
    def poisoned(state):
        return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}

    path = save_checkpoint(tmp_path / "nan.pt", _payload(plan, poisoned))
    with pytest.raises(TrainingError, match="non-finite \\(NaN/inf\\) weights"):
        predict(path, [image], tmp_path / "out", device="cpu")


def test_weights_of_another_shape_are_refused(plan, image, tmp_path):
    def reshaped(state):
        return {k: torch.zeros(tuple(reversed(v.shape))) if v.ndim > 1 else v for k, v in state.items()}

    path = save_checkpoint(tmp_path / "reshaped.pt", _payload(plan, reshaped))
    with pytest.raises(TrainingError, match="do not fit its own network spec"):
        predict(path, [image], tmp_path / "out", device="cpu")


def test_a_checkpoint_without_its_spec_is_refused(plan, image, tmp_path):
    payload = _payload(plan)
    del payload["spec"]
    path = save_checkpoint(tmp_path / "nospec.pt", payload)
    with pytest.raises(TrainingError, match="lacks or garbles entry 'spec'"):
        predict(path, [image], tmp_path / "out", device="cpu")


@pytest.mark.parametrize("kind", ["truncated", "foreign_dict", "text"])
def test_unloadable_checkpoints_are_one_line(capsys, checkpoint, image, tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:
        path.write_text("not a checkpoint\n")
    code, _, err = run(capsys, "predict", "--model", path, image, "-o", tmp_path / "out", "--device", "cpu")
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(path) in err


def test_a_damaged_image_is_one_line(capsys, checkpoint, image, tmp_path):
    raw = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(raw[:-64]))
    code, _, err = run(capsys, "predict", "--model", checkpoint, image, "-o", tmp_path / "out", "--device", "cpu")
    assert code == 1 and "is damaged" in err and len(err.strip().splitlines()) == 1


def test_an_existing_output_is_kept_unless_overwrite(capsys, checkpoint, image, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "case.nii.gz").write_bytes(b"keep me")
    code, _, err = run(capsys, "predict", "--model", checkpoint, image, "-o", out, "--device", "cpu")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (out / "case.nii.gz").read_bytes() == b"keep me"
    code, _, _ = run(capsys, "predict", "--model", checkpoint, image, "-o", out, "--device", "cpu", "--overwrite")
    assert code == 0 and nib.load(str(out / "case.nii.gz")).shape == nib.load(str(image)).shape


def test_an_output_folder_that_is_a_file_is_refused(capsys, checkpoint, image, tmp_path):
    (tmp_path / "taken").write_text("x")
    code, _, err = run(capsys, "predict", "--model", checkpoint, image, "-o", tmp_path / "taken")
    assert code == 2 and "is an existing file" in err


def test_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "", "mps"])
def test_unknown_devices_are_refused(device):
    with pytest.raises(TrainingError, match=f"device {device!r}"):
        resolve_device(device)


def test_predict_cli_names_an_unknown_device(capsys, checkpoint, image, tmp_path):
    code, _, err = run(capsys, "predict", "--model", checkpoint, image, "-o", tmp_path / "out", "--device", "gpu0")
    assert code == 1 and "device 'gpu0' is unknown" in err
