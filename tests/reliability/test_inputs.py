"""Hostile but realistic inputs to plan/grammar/sample/show and the data layer (issue 10):
each gives one line naming the bad value (or a warning), never a traceback or a silent result."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import isotropic_plan
from hnas.cli import MAX_SEED
from hnas.data import DatasetWarning, compute_fingerprint, load_dataset, validate_dataset
from hnas.errors import DatasetError
from hnas.grammar import make_grammar
from data.builders import nnunet_dataset, write_zyx
from reliability.run_folders import run_cli as run

SHAPE = (20, 20, 20)  # large enough for a 3-stage plan at 1 mm


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    isotropic_plan(3, patch=16, base=4, top=16).save(path)
    return path


def dataset(tmp_path, name="ds") -> Path:
    return nnunet_dataset(tmp_path / name, shape=SHAPE, spacing=(1.0, 1.0, 1.0))


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", str(MAX_SEED + 1)])
@pytest.mark.parametrize("command", [["sample"], ["search", "--max-trials", "1"]])
def test_a_seed_numpy_refuses_is_refused_by_the_parser(capsys, plan_file, command, seed):
    argv = command + (["--plan", plan_file] if command == ["sample"] else []) + ["--seed", seed]
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"got {seed!r}" in err and "from 0 to 4294967295" in err


def test_the_largest_seed_samples(capsys, plan_file):
    code, out, _ = run(capsys, "sample", "--plan", plan_file, "--seed", MAX_SEED, "-n", 2)
    assert code == 0 and len(out.splitlines()) == 2


# ---------------------------------------------------------------- plan and grammar files


def test_a_non_utf8_grammar_file_is_named(capsys, tmp_path):
    grammar = tmp_path / "g.lark"
    grammar.write_bytes(b"\xff\xfestart: 'a'\n")
    code, _, err = run(capsys, "sample", "--grammar", grammar)
    assert code == 1 and "'g.lark' is not UTF-8" in err.replace(str(tmp_path) + "/", "") and "0xff" in err


@pytest.mark.parametrize("command", [["grammar"], ["sample"], ["show", "default"]])
@pytest.mark.parametrize("content, expected", [(b"\xff\xfe{}", "is not UTF-8"), (b"[1, 2]", "expected an object"),
                                               (b"{not json", "not valid JSON")])
def test_a_broken_plan_file_is_named(capsys, tmp_path, command, content, expected):
    plan = tmp_path / "p.json"
    plan.write_bytes(content)
    code, _, err = run(capsys, *command, "--plan", plan)
    assert code == 1 and expected in err and str(plan) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("field, value, expected", [
    ("n_stages", "x", "plan field 'n_stages' is 'x'; expected an integer"),
    ("features_per_stage", [4, -8, 16], "features_per_stage"),
    ("patch_size", [16, "a", 16], "patch_size"),
    ("kernel_sizes", [[3, 3], [3, 3, 3], [3, 3, 3]], "kernel_sizes"),
])
def test_grammar_validates_the_plan_like_show(capsys, plan_file, field, value, expected):
    data = json.loads(plan_file.read_text())
    plan_file.write_text(json.dumps({**data, field: value}))
    for command in (["grammar"], ["show", "default"]):
        code, out, err = run(capsys, *command, "--plan", plan_file)
        assert code == 1 and expected in err and out == "", command


# ---------------------------------------------------------------- the prior of a grammar file


def test_confidence_on_a_grammar_without_defaults_warns_that_it_is_uniform(capsys, tmp_path):
    plan = isotropic_plan(3, patch=16, base=4, top=16)
    stripped = tmp_path / "g.lark"
    stripped.write_text("\n".join(line for line in make_grammar(plan).splitlines() if not line.startswith("//@")))
    code, out, err = run(capsys, "sample", "--grammar", stripped, "--confidence", "high", "-n", 2)
    assert code == 0 and len(out.splitlines()) == 2
    assert err.startswith("hnas: warning:") and "'high' prior is uniform" in err


def test_an_annotated_grammar_samples_its_prior_without_warning(capsys, tmp_path):
    annotated = tmp_path / "g.lark"
    annotated.write_text(make_grammar(isotropic_plan(3, patch=16, base=4, top=16)))
    code, _, err = run(capsys, "sample", "--grammar", annotated, "--confidence", "high", "-n", 2)
    assert code == 0 and err == ""


# ---------------------------------------------------------------- output paths


def test_output_files_in_missing_folders_are_written(capsys, tmp_path, plan_file):
    target = tmp_path / "new" / "sub" / "g.lark"
    code, _, _ = run(capsys, "grammar", "--plan", plan_file, "-o", target)
    assert code == 0 and target.read_text().startswith("// hnas")


def test_a_plan_goes_into_a_missing_folder(capsys, tmp_path):
    target = tmp_path / "new" / "plan.json"
    code, _, _ = run(capsys, "plan", dataset(tmp_path), "-o", target)
    assert code == 0 and json.loads(target.read_text())["n_stages"] >= 2


def _blocked(tmp_path: Path) -> Path:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return blocker


@pytest.mark.parametrize("argv, expected", [
    (["plan", "{ds}", "-o", "{dir}"], "is a folder"),
    (["grammar", "--plan", "{plan}", "-o", "{dir}"], "is a folder"),
    (["grammar", "--plan", "{plan}", "-o", "{file}/g.lark"], "is a file"),
    (["show", "default", "--plan", "{plan}", "--render", "{dir}"], "is a folder"),
    (["show", "default", "--plan", "{plan}", "--render", "{file}/sub/t.svg"], "is a file"),
    (["predict", "--model", "{plan}", "{plan}", "-o", "{file}"], "is an existing file"),
    (["predict", "--model", "{plan}", "{plan}", "-o", "{file}/out"], "is a file"),
    (["report", "{dir}", "-o", "{file}"], "is an existing file"),
    (["evaluate", "--run", "{dir}", "-o", "{file}"], "is an existing file"),
    (["evaluate", "--run", "{dir}", "-o", "{file}/out"], "is a file"),
    (["export-nnunet", "{dir}", "--plans", "{plan}", "-o", "{dir}"], "is a folder"),
])
def test_impossible_output_paths_are_refused_before_any_work(capsys, tmp_path, plan_file, argv, expected):
    names = {"ds": tmp_path / "no_dataset_needed", "dir": tmp_path, "plan": plan_file, "file": _blocked(tmp_path)}
    code, _, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and expected in err


# ---------------------------------------------------------------- damaged and non-finite images


def _truncate_voxels(path: Path) -> None:
    """A .nii.gz whose header is intact but whose voxels stop short (a cut download)."""
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))


SEARCH = ["search", "--dataset", "{ds}", "--max-trials", "1", "--run-dir", "{run}", "--no-progress"]


@pytest.mark.parametrize("command", [["plan", "{ds}"], ["grammar", "--dataset", "{ds}"], SEARCH])
def test_a_truncated_image_is_named_in_one_line(capsys, tmp_path, command, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    ds = dataset(tmp_path)
    _truncate_voxels(ds / "imagesTr" / "case_b_0000.nii.gz")
    code, _, err = run(capsys, *[a.format(ds=ds, run=tmp_path / "run") for a in command])
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "case_b_0000.nii.gz' is damaged" in err


def test_damaged_voxels_raise_a_dataset_error(tmp_path):
    ds = dataset(tmp_path)
    _truncate_voxels(ds / "labelsTr" / "case_a.nii.gz")
    with pytest.raises(DatasetError, match="case_a.nii.gz' is damaged"):
        compute_fingerprint(ds)


@pytest.mark.parametrize("bad, command", [(np.nan, ["plan", "{ds}"]), (np.inf, ["plan", "{ds}"]),
                                          (-np.inf, ["plan", "{ds}"]), (np.nan, SEARCH)])
def test_non_finite_images_are_refused(capsys, tmp_path, monkeypatch, bad, command):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    ds = dataset(tmp_path)
    path = ds / "imagesTr" / "case_c_0000.nii.gz"
    image = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32).transpose(2, 1, 0)
    image[5, 5, 5] = bad
    write_zyx(path, image)
    code, _, err = run(capsys, *[a.format(ds=ds, run=tmp_path / "run") for a in command])
    assert code == 1 and "case_c_0000.nii.gz' holds 1 non-finite voxel(s)" in err


# ---------------------------------------------------------------- warnings for odd headers


def _warnings_of(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]


def _rewrite(path: Path, edit) -> None:
    image = nib.load(str(path))
    data, affine, header = np.asarray(image.dataobj), image.affine.copy(), image.header.copy()
    edited = nib.Nifti1Image(data, affine, header)
    edit(edited)
    nib.save(edited, str(path))


def test_a_label_affine_other_than_the_image_warns(tmp_path):
    ds = dataset(tmp_path)

    def shift_origin(image):
        affine = image.affine.copy()
        affine[:3, 3] += (5.0, 0.0, 0.0)
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)

    _rewrite(ds / "labelsTr" / "case_b.nii.gz", shift_origin)
    messages = _warnings_of(lambda: validate_dataset(ds))
    assert len(messages) == 1 and "label affine that differs" in messages[0] and "'case_b'" in messages[0]


def _zero_pixdim(path: Path, axis: int) -> None:
    """Set pixdim[axis + 1] to 0 in the stored header (nibabel itself would 'fix' it to 1 on save)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    offset = 76 + 4 * (axis + 1)  # pixdim: float32[8] at byte 76 of a NIfTI-1 header
    raw[offset:offset + 4] = np.float32(0.0).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def test_a_zero_pixdim_warns(tmp_path):
    ds = dataset(tmp_path)
    for path in (ds / "imagesTr" / "case_a_0000.nii.gz", ds / "labelsTr" / "case_a.nii.gz"):
        _zero_pixdim(path, 1)
    messages = _warnings_of(lambda: validate_dataset(ds))
    assert len(messages) == 1 and "pixdim 0" in messages[0] and "'case_a'" in messages[0]


def test_a_constant_image_warns(tmp_path):
    ds = dataset(tmp_path)
    write_zyx(ds / "imagesTr" / "case_b_0000.nii.gz", np.full(SHAPE, 7, dtype=np.int16))
    messages = _warnings_of(lambda: compute_fingerprint(load_dataset(ds)))
    assert len(messages) == 1 and "constant image" in messages[0] and "'case_b'" in messages[0]


def test_a_clean_dataset_gives_no_warning(tmp_path):
    ds = dataset(tmp_path)
    assert _warnings_of(lambda: (validate_dataset(ds), compute_fingerprint(ds))) == []


def test_an_unwritable_label_map_is_named(tmp_path):
    from hnas.data import write_label_map

    reference = write_zyx(tmp_path / "ref.nii.gz", np.zeros((2, 3, 4), dtype=np.int16))
    blocked = _blocked(tmp_path) / "out" / "case.nii.gz"  # a file where the folder must be
    with pytest.raises(DatasetError, match="cannot write label map"):
        write_label_map(np.zeros((2, 3, 4), dtype=np.int16), reference, blocked)

