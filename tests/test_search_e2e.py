"""`hnas search` end to end: a tiny search, its run folder and history, continuation, status,
retraining and prediction — on small built-in-style data and on the real hippocampus set."""

from __future__ import annotations

import sqlite3

import nibabel as nib
import numpy as np
import pytest

from hnas.cli import main

TINY = ["--preset", "cpu", "--space", "hpo+hnas", "--optimizer", "regularized-priorband", "--min-epochs", "1",
        "--max-epochs", "3", "--eta", "3", "--iterations-per-epoch", "1", "--no-progress", "--seed", "0"]


@pytest.fixture
def tiny_dataset(tmp_path_factory):
    from hnas.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=5, shape=(40, 48, 44), seed=1)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def trials_table(run_dir):
    with sqlite3.connect(run_dir / "search.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY trial_id")]


def check_run(capsys, run_dir, dataset_images, tmp_path):
    assert {"run.json", "plan.json", "grammar.lark", "search.sqlite", "summary.md", "trials"} <= {
        p.name for p in run_dir.iterdir()}
    rows = trials_table(run_dir)
    assert len(rows) == 5 and all(r["state"] == "success" for r in rows)
    # the default configuration first, at the maximum fidelity
    assert rows[0]["fidelity"] == 3 and rows[0]["parent_id"] is None
    promoted = [r for r in rows if r["parent_id"] is not None]
    assert promoted, "a 1..3-epoch bracket of 3 configurations must promote one"
    by_id = {r["trial_id"]: r for r in rows}
    for child in promoted:
        parent = by_id[child["parent_id"]]
        assert child["fidelity"] > parent["fidelity"]
        assert child["cost"] > parent["cost"]  # runtime accumulates over rungs: continued, not restarted
    status = run_cli(capsys, "status", run_dir)
    assert "5 finished, 0 failed" in status and "best so far" in status

    checkpoint = next(run_dir.glob("trials/00000/*.pt"))
    out_dir = tmp_path / "pred"
    image = dataset_images[0]
    run_cli(capsys, "predict", "--model", checkpoint, image, "-o", out_dir)
    written = list(out_dir.glob("*.nii.gz"))
    assert len(written) == 1
    source, prediction = nib.load(image), nib.load(written[0])
    assert prediction.shape == source.shape[:3]
    assert np.allclose(prediction.affine, source.affine)
    assert set(np.unique(np.asanyarray(prediction.dataobj))) <= {0, 1, 2}


def test_tiny_search_on_synthetic_data(capsys, tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    out = run_cli(capsys, "search", "--dataset", tiny_dataset, "--max-stages", "3", *TINY, "--max-trials", "5",
                  "--run-dir", run_dir)
    assert "scale preset 'cpu'" in out and "Incumbent" in out and "Pareto front" in out
    check_run(capsys, run_dir, sorted((tiny_dataset / "imagesTr").glob("*.nii.gz")), tmp_path)

    # resuming with more trials continues the same history; changing the seed is refused
    run_cli(capsys, "search", "--dataset", tiny_dataset, "--max-stages", "3", *TINY, "--max-trials", "6",
            "--run-dir", run_dir, "--resume")
    assert len(trials_table(run_dir)) == 6
    code = main(["search", "--dataset", str(tiny_dataset), "--max-stages", "3", *TINY[:-1], "1",
                 "--max-trials", "7", "--run-dir", str(run_dir), "--resume"])
    assert code == 1 and "seed" in capsys.readouterr().err

    out = run_cli(capsys, "train", "--run", run_dir, "--epochs", "2")
    assert "retrained trial" in out and "Dice" in out

    out = run_cli(capsys, "report", run_dir, "-o", tmp_path / "report")
    assert (tmp_path / "report" / "index.html").is_file() and "index.html" in out


@pytest.mark.slow
@pytest.mark.very_slow  # ~4 CPU-minutes: preprocesses and validates the 208 real cases (525 s on a busy machine)
def test_tiny_search_on_real_hippocampus(capsys, tmp_path, hippocampus_dir, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    run_cli(capsys, "search", "--dataset", hippocampus_dir, *TINY, "--max-trials", "5", "--run-dir", run_dir)
    check_run(capsys, run_dir, sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[:1], tmp_path)


PIPELINE = ["--preset", "cpu", "--space", "pipeline", "--optimizer", "random", "--min-epochs", "1", "--max-epochs",
            "1", "--eta", "3", "--iterations-per-epoch", "1", "--no-progress", "--seed", "3"]


def test_pipeline_search_trains_2d_and_3d_networks_on_their_own_preprocessing(capsys, tmp_path, tiny_dataset,
                                                                              monkeypatch):
    import torch

    from hnas.planning.plan import Plan

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    run_cli(capsys, "search", "--dataset", tiny_dataset, "--max-stages", "3", *PIPELINE, "--max-trials", "4",
            "--run-dir", run_dir)
    assert {"plan_2d.json", "grammar_2d.lark"} <= {p.name for p in run_dir.iterdir()}
    rows = trials_table(run_dir)
    assert len(rows) == 4 and all(r["state"] == "success" for r in rows)
    plan_3d, plan_2d = Plan.load(run_dir / "plan.json"), Plan.load(run_dir / "plan_2d.json")
    dims_seen = set()
    for row in rows:
        config = json_config(row)
        trained = Plan.from_json(torch.load(next(run_dir.glob(f"trials/{row['trial_id']:05d}/*.pt")),
                                            weights_only=True)["plan"])
        base = plan_2d if config["network_dims"] == "2d" else plan_3d
        assert trained.dims == base.dims and trained.patch_size == base.patch_size
        assert trained.spacing == pytest.approx(tuple(s * config["spacing_factor"] for s in base.spacing))
        expected = base.normalization if config["intensity_normalization"] == "nnunet" else (
            config["intensity_normalization"],)
        assert trained.normalization == expected
        dims_seen.add(trained.dims)
    assert dims_seen == {2, 3}, "seed 3 samples both a 2D and a 3D network in four trials"

    trial_2d = next(r["trial_id"] for r in rows if json_config(r)["network_dims"] == "2d")
    out = run_cli(capsys, "train", "--run", run_dir, "--trial", trial_2d, "--epochs", "1")
    assert f"retrained trial {trial_2d}" in out
    checkpoint = next(run_dir.glob(f"retrain/trial_{trial_2d:05d}_1ep/*.pt"))
    image = sorted((tiny_dataset / "imagesTr").glob("*.nii.gz"))[0]
    run_cli(capsys, "predict", "--model", checkpoint, image, "-o", tmp_path / "pred")
    prediction = nib.load(next((tmp_path / "pred").glob("*.nii.gz")))
    assert prediction.shape == nib.load(image).shape[:3]


def json_config(row) -> dict:
    import json

    return json.loads(row["config"])


def test_a_pipeline_run_reads_the_dataset_once_for_both_plans(tmp_path, tiny_dataset, monkeypatch):
    import hnas.data.cache
    from hnas.pipeline.run import SearchSettings, resolve

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    calls = []
    compute = hnas.data.cache.compute_fingerprint
    monkeypatch.setattr(hnas.data.cache, "compute_fingerprint", lambda *a, **k: calls.append(1) or compute(*a, **k))
    setup = resolve(SearchSettings(dataset=str(tiny_dataset), space="pipeline", preset="cpu"))
    assert (setup.plan.dims, setup.plan_2d.dims) == (3, 2)
    assert len(calls) == 1
