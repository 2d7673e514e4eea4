"""The first run of hnas's CUDA paths: one prepared check of at most ~8 minutes, printing one table.

No CUDA path of hnas had run when this was written (issue 20). On a machine with an NVIDIA GPU:

    bash benchmarks/gpu_check.sh                 # or: .venv/bin/python benchmarks/gpu_check.py

Rows (each timed; a failing row prints its error and the others still run):

1. AMP training of nnU-Net's default network with the ``nnunet`` preset on a synthetic dataset:
   iterations per second, peak ``torch.cuda.max_memory_allocated`` against the cost model's
   activation estimate (float32 activations x batch; AMP roughly halves them, the optimizer and
   cuDNN workspaces add to them), the GradScaler class used, non-finite steps skipped.
2. ``hnas search --workers 2`` (a local Dask cluster, one GPU each or both on one): finished
   trials, and whether any worker had to drop its augmentation workers (DaemonicProcessWarning).
3. Prediction of a large volume with the device memory capped
   (``torch.cuda.set_per_process_memory_fraction``) so that the float16 accumulator cannot stay
   on the device: which out-of-memory fallback was taken (MemoryFallbackWarning), and the time.

``--smoke`` runs the same code on the CPU with tiny sizes (rows 1-2; row 3 needs CUDA), so the
script itself is tested without a GPU (tests/benchmarks_smoke is not part of `make test`: run
``python benchmarks/gpu_check.py --smoke`` after changing it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import torch  # noqa: E402

from hnas.cfgunet import compile_architecture, cost  # noqa: E402
from hnas.data import make_synthetic_dataset  # noqa: E402
from hnas.data.cache import fingerprint_of  # noqa: E402
from hnas.grammar import default_architecture, make_grammar  # noqa: E402
from hnas.planning import make_plan  # noqa: E402
from hnas.train import TrainSetup, preset, train_fold  # noqa: E402

#: (cases, shape z y x) of the synthetic data: large enough for nnU-Net's patch on a GPU, tiny in --smoke.
GPU_DATA, SMOKE_DATA = (12, (96, 192, 192)), (6, (24, 40, 36))
#: The volume row 3 predicts, and the share of device memory it may use (float16 scores of 3 classes
#: over 300x512x512 are ~0.5 GB: a few percent of an 80 GB card makes the device accumulator fail).
LARGE_VOLUME, MEMORY_FRACTION = (300, 512, 512), 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests the script itself)")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default 60; smoke 4)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    return parser.parse_args()


def synthetic(work: Path, smoke: bool) -> Path:
    cases, shape = SMOKE_DATA if smoke else GPU_DATA
    return make_synthetic_dataset(work / "data", n_cases=cases, shape=shape, seed=0)


def training_row(dataset: Path, work: Path, smoke: bool, iterations: int) -> dict:
    """One epoch of nnU-Net's default configuration with AMP: speed, memory, scaler, skipped steps."""
    scale = preset("cpu" if smoke else "nnunet")
    plan = make_plan(fingerprint_of(dataset))
    setup = TrainSetup.from_preset(scale, dataset=dataset, plan=plan, grammar=make_grammar(plan),
                                   cache_dir=work / "cache", iterations_per_epoch=iterations,
                                   num_workers=0 if smoke else scale.num_workers, validation_cases=1)
    setup = replace(setup, device="cpu" if smoke else "cuda")
    device = setup.torch_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train_fold({}, 1, work / "train", setup=setup)
    spec = compile_architecture(setup.grammar, default_architecture(setup.plan), setup.plan)
    estimate = cost(spec, tuple(setup.plan.patch_size)).activation_bytes * setup.effective_batch_size
    measured = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    checkpoint = torch.load(result.checkpoint, weights_only=True)
    return {
        "row": "AMP training (nnunet preset)" if not smoke else "training (cpu preset, smoke)",
        "patch x batch": f"{'x'.join(map(str, setup.plan.patch_size))} x {setup.effective_batch_size}",
        "it/s": f"{iterations / result.runtime:.2f}",
        "peak MiB (measured)": "-" if measured is None else f"{measured / 2**20:,.0f}",
        "activations MiB (estimate, fp32)": f"{estimate / 2**20:,.0f}",
        "notes": f"scaler {'on' if checkpoint['trainer'].get('grad_scaler') else 'off'}, non-finite steps "
                 f"{sum(checkpoint['trainer'].get('non_finite_steps', []) or [0])}, Dice {result.mean_dice:.3f}",
    }


def search_row(dataset: Path, work: Path, smoke: bool) -> dict:
    """`hnas search --workers 2`: both workers train, and none drops its augmentation workers."""
    run_dir = work / "search"
    argv = [sys.executable, "-W", "always", "-m", "hnas.cli", "search", "--dataset", str(dataset), "--workers", "2",
            "--optimizer", "random", "--max-trials", "2", "--min-epochs", "1", "--max-epochs", "1",
            "--iterations-per-epoch", "4" if smoke else "20", "--preset", "cpu" if smoke else "nnunet",
            "--run-dir", str(run_dir), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "HNAS_CACHE": str(work / "cache")}
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    dropped = "DaemonicProcessWarning" in output or "runs in a daemonic process" in output  # the trainer's warning
    return {"row": "hnas search --workers 2", "patch x batch": "-", "it/s": "-", "peak MiB (measured)": "-",
            "activations MiB (estimate, fp32)": "-",
            "notes": f"exit {done.returncode}, {seconds:.0f} s, augmentation workers "
                     f"{'DROPPED' if dropped else 'kept'}" + ("" if done.returncode == 0 else
                                                               f": {output.strip().splitlines()[-1][:200]}")}


def prediction_row(work: Path) -> dict:
    """A large volume under a device-memory cap: the out-of-memory fallback taken, and its time."""
    from hnas.train.inference import MemoryFallbackWarning
    from hnas.train.prediction import InputLimits, Predictor

    import numpy as np

    predictor = Predictor(work / "train", device="cuda", limits=InputLimits.lifted())
    torch.cuda.set_per_process_memory_fraction(MEMORY_FRACTION)
    image = np.random.default_rng(0).normal(size=(1, *LARGE_VOLUME)).astype(np.float32)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.checked_probabilities(image, predictor.plan.spacing)
    seconds = time.perf_counter() - started
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, MemoryFallbackWarning)]
    return {"row": f"predict {'x'.join(map(str, LARGE_VOLUME))}, {MEMORY_FRACTION:.0%} of the GPU",
            "patch x batch": "x".join(map(str, predictor.plan.patch_size)), "it/s": "-",
            "peak MiB (measured)": f"{torch.cuda.max_memory_allocated() / 2**20:,.0f}",
            "activations MiB (estimate, fp32)": "-",
            "notes": f"{seconds:.0f} s; " + (fallbacks[0][:160] if fallbacks else "no fallback needed")}


def print_table(rows: list[dict]) -> None:
    columns = ["row", "patch x batch", "it/s", "peak MiB (measured)", "activations MiB (estimate, fp32)", "notes"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |")


def guarded(name: str, make) -> dict:
    try:
        return make()
    except Exception as error:  # a check that fails is a finding, not the end of the others
        traceback.print_exc()
        return {"row": name, "notes": f"FAILED: {type(error).__name__}: {str(error)[:200]}"}


def main() -> int:
    args = parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke to test the script on the CPU", file=sys.stderr)
        return 2
    iterations = args.iterations or (4 if args.smoke else 60)
    work = args.work or Path(tempfile.mkdtemp(prefix="hnas_gpu_check_"))
    os.environ["HNAS_CACHE"] = str(work / "cache")
    device = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    print(f"hnas GPU check on {device}, torch {torch.__version__}, work folder {work}")
    dataset = synthetic(work, args.smoke)
    rows = [guarded("training", lambda: training_row(dataset, work, args.smoke, iterations)),
            guarded("search --workers 2", lambda: search_row(dataset, work, args.smoke))]
    if not args.smoke and (work / "train" / "checkpoint.pt").is_file():
        rows.append(guarded("prediction", lambda: prediction_row(work)))
    print_table(rows)
    return 0 if not any(str(r.get("notes", "")).startswith("FAILED") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
