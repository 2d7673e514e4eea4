"""Peak memory of `hnas find-best` and `hnas evaluate` against the number of validation cases (issue 20).

    .venv/bin/python benchmarks/bench_streaming.py [--cases 10 40 160] [--shape 64] [--models 3]
        [--before /work/before-stream/src]

Builds, once per case count, a dataset of synthetic ``shape``^3 cases (three foreground classes)
and a run folder whose ``--models`` cross-validated models cover all five folds (label maps and
float16 softmax, as `hnas train --folds` writes them; fold.json as the tests record it). Then each
step runs in a fresh interpreter per source tree, twice: once bare (wall time and peak RSS, from
``getrusage``) and once under ``tracemalloc`` (peak of the traced allocations, numpy's arrays
included); the children run with OMP_NUM_THREADS=1 (on a shared machine MONAI's Dice with a torch
thread per core is ~15x slower). ``--before`` names the ``src`` folder of an older checkout (``git worktree add``) to
compare with; without it only this tree is measured. The outputs of both trees are compared:
best_configuration.json, postprocessing.json, metrics.csv and summary.json must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline.conftest import model_record, record_fold  # noqa: E402  (the tests' hand-made cv folders)

LABELS = {"background": 0, "liver": 1, "tumour": 2, "vessel": 3}

CHILD = r"""
import json, resource, shutil, sys, time, tracemalloc, warnings
from pathlib import Path
step, run, out, traced = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
import hnas
from hnas.pipeline.evaluate import evaluate_run
from hnas.pipeline.find_best import find_best
warnings.simplefilter("ignore")
if traced:
    tracemalloc.start()
start = time.perf_counter()
if step == "find-best":
    find_best(run, log=lambda _: None)
else:
    evaluate_run(run, out_dir=out, overwrite=True, log=lambda _: None)
wall = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if traced else None
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"source": hnas.__file__, "wall": wall, "traced_peak": peak, "rss_peak": rss}))
"""


def truth_of(index: int, size: int) -> np.ndarray:
    """A liver block holding a tumour, and a vessel in two pieces; shifted a little per case."""
    label = np.zeros((size,) * 3, dtype=np.int16)
    s, shift = size // 8, index % 3
    label[s:5 * s, s + shift:5 * s, s:6 * s] = 1
    label[2 * s:3 * s, 2 * s:3 * s + shift, 2 * s:4 * s] = 2
    label[6 * s, s:7 * s, s:s + 2] = 3
    label[6 * s + 2, s:3 * s, 7 * s - 2:7 * s] = 3
    return label


def prediction_of(truth: np.ndarray, model: int, index: int) -> np.ndarray:
    """The truth eroded on one face per model, plus a false island of a model-dependent class."""
    label = truth.copy()
    size = truth.shape[0]
    face = (model + index) % 3
    edge = [slice(None)] * 3
    edge[face] = slice(size // 8, size // 8 + 1 + model)
    label[tuple(edge)] = np.where(label[tuple(edge)] == 1, 0, label[tuple(edge)])
    corner = size - 4 - model
    label[corner:corner + 3, 1:4, 1:4] = 1 + (model + index) % 3
    return label


def build(folder: Path, n_cases: int, size: int, n_models: int) -> Path:
    """A dataset of ``n_cases`` and a run whose ``n_models`` models cover all five folds; returns the run."""
    from hnas.data import fold_split, load_dataset, write_label_map
    from hnas.data.io import write_volume
    from hnas.pipeline.find_best import complete_folds
    from hnas.pipeline.layout import RunFolder

    data_dir = folder / "Dataset995_Streaming"
    (data_dir / "imagesTr").mkdir(parents=True)
    (data_dir / "labelsTr").mkdir()
    for index in range(n_cases):
        truth = truth_of(index, size)
        image = truth.astype(np.float32)  # never read by these steps: no noise, quick to compress
        write_volume(image, (1.0, 1.0, 1.0), data_dir / "imagesTr" / f"case_{index:04d}_0000.nii.gz")
        write_volume(truth, (1.0, 1.0, 1.0), data_dir / "labelsTr" / f"case_{index:04d}.nii.gz")
    (data_dir / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                       "numTraining": n_cases, "file_ending": ".nii.gz"}))
    run = folder / "run"
    run.mkdir()
    # run.json with the dataset alone (every other setting its default): the older tree reads it too
    RunFolder(run).settings.write_text(json.dumps({"dataset": str(data_dir)}))
    data = load_dataset(data_dir)
    folds = list(range(5))
    for model in range(n_models):
        name = "default_2ep" if model == 0 else f"trial_{model:05d}_2ep"
        model_dir = run / "cv" / name
        model_dir.mkdir(parents=True)
        (model_dir / "model.json").write_text(json.dumps(model_record(name, folds, epochs=2)))
        for fold in folds:
            validation = model_dir / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            for case_id in fold_split(data.case_ids, fold)[1]:
                index = int(case_id.split("_")[1])
                label = prediction_of(truth_of(index, size), model, index)
                softmax = np.full((4,) + label.shape, 0.1, dtype=np.float16)
                for value in range(4):
                    softmax[value][label == value] = 0.7
                np.savez_compressed(validation / f"{case_id}.npz", probabilities=softmax)
                write_label_map(label, data.case(case_id).image_files[0], validation / f"{case_id}.nii.gz")
            record_fold(model_dir, fold, data_dir)
        complete_folds(model_dir, data)  # fills the digest cache: no run below pays the first hashing
    return run


def measure(step: str, run: Path, src: Path, out: Path, traced: bool) -> dict:
    # one torch thread: on a shared machine MONAI's Dice with a thread per core is ~15x slower (oversubscribed)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, step, str(run), str(out), "1" if traced else "0"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{step} under {src} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["source"].startswith(str(src)):
        raise SystemExit(f"{step} imported {result['source']}, not the tree under {src}")
    return result


def outputs(step: str, run: Path, out: Path) -> dict:
    """What a step wrote, for the before/after comparison."""
    if step == "find-best":
        files = [run / "cv" / "best_configuration.json"] + sorted((run / "cv").glob("*/postprocessing.json"))
    else:
        files = [out / "metrics.csv", out / "summary.json"]
    return {str(f.relative_to(run / "cv")) if step == "find-best" else f.name: f.read_text() for f in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[10, 40, 160])
    parser.add_argument("--shape", type=int, default=64, help="edge of the cubic cases (voxels)")
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="src/ of an older checkout to compare with")
    parser.add_argument("--steps", nargs="+", default=["find-best", "evaluate"])
    args = parser.parse_args()
    began = time.perf_counter()
    trees = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT / "src")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HNAS_CACHE", str(Path(tmp) / "cache"))
        for n_cases in args.cases:
            print(f"building {n_cases} cases of {args.shape}^3 ...", file=sys.stderr)
            run = build(Path(tmp) / f"n{n_cases}", n_cases, args.shape, args.models)
            for step in args.steps:
                written = {}
                for tree, src in trees:
                    out = Path(tmp) / f"n{n_cases}" / f"eval_{tree}"
                    bare = measure(step, run, src, out, traced=False)
                    traced = measure(step, run, src, out, traced=True)
                    written[tree] = outputs(step, run, out)
                    rows.append((step, n_cases, tree, bare["wall"], bare["rss_peak"], traced["traced_peak"]))
                    print(f"  {step} {tree}: {bare['wall']:.1f} s", file=sys.stderr)
                if len(written) == 2:
                    same = written["before"] == written["after"]
                    rows.append((step, n_cases, "outputs equal", same, None, None))
    print(f"{args.models} models on 5 folds, {args.shape}^3 voxels a case, 3 foreground classes\n")
    print("| step | validation cases | tree | wall s | peak RSS MiB | traced peak MiB (tracemalloc) |")
    print("|---|---:|---|---:|---:|---:|")
    for step, n_cases, tree, wall, rss, peak in rows:
        if tree == "outputs equal":
            print(f"| {step} | {n_cases} | outputs equal before/after | {'yes' if wall else 'NO'} | | |")
        else:
            print(f"| {step} | {n_cases} | {tree} | {wall:.1f} | {rss / 2**20:.0f} | {peak / 2**20:.1f} |")
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
