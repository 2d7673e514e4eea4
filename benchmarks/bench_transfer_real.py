"""bench_transfer part (2), real data: a hippocampus search with ``--prior-from`` a search on the
built-in synthetic data against a cold search at the same budget and seeds (issue 19).

    .venv/bin/python benchmarks/bench_transfer_real.py --source RUN [--seeds 0 1] [--budget 3]

``--source`` is a finished ``hnas search`` on another dataset (the issue's: the built-in synthetic
data, 6 stages, e.g. ``hnas search --max-stages 6 --budget 12``); without it the script runs that
search first (``--source-budget``). For each seed it runs two searches on hippocampus with the
same flags, one cold (the prior centred on nnU-Net's default) and one ``--prior-from`` the source,
two at a time (``--jobs``, one torch thread each). Run folders live under ``--out``; a finished one
is read again, an unfinished one resumed, so the script can be stopped and restarted.

Compute is counted in epochs trained (a promotion pays only the epochs it adds), not seconds: the
two searches of a seed share the cores. The optimizer is single-objective PriorBand by default
because Regularized PriorBand's second objective, measured runtime, changes its promotions with
the machine's load. Per seed it reports the Dice of the incumbent (best validation Dice among the
trials trained to the maximum epochs) after each max-fidelity training's worth of compute, and the
compute each search needed to reach the Dice of nnU-Net's default (the cold search's trial 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from real_data import REPO, add_dataset_argument, dataset_or_skip

sys.path.insert(0, str(REPO / "src"))
from hnas.search.optimizers import HistoryIndex  # noqa: E402
from hnas.search.storage import RunStore  # noqa: E402

SUMMARY = "summary.md"


@dataclass(frozen=True)
class Point:
    """One finished trial of a search, in the order it finished."""

    trial_id: int
    sampler: str
    epochs: float
    dice: float
    compute: float  # epochs trained by the search when this trial finished


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--source", type=Path, default=None,
                        help="a finished search on another dataset (default: run one on the built-in data)")
    parser.add_argument("--source-budget", type=float, default=12.0)
    parser.add_argument("--source-stages", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-stages", type=int, default=4)
    parser.add_argument("--budget", type=float, default=3.0, help="each target search's budget")
    parser.add_argument("--optimizer", default="priorband")
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--jobs", type=int, default=2, help="searches at a time (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hnas-bench-transfer-real")
    parser.add_argument("--json", type=Path, default=None, help="also write every trajectory here")
    args = parser.parse_args(argv)
    dataset = dataset_or_skip(args.dataset, args.out)
    if dataset is None:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)

    source = args.source or run_source(args)
    common = ["--dataset", str(dataset), "--max-stages", str(args.max_stages), "--preset", "cpu",
              "--optimizer", args.optimizer, "--budget", f"{args.budget:g}",
              "--iterations-per-epoch", str(args.iterations_per_epoch),
              "--min-epochs", str(args.min_epochs), "--max-epochs", str(args.max_epochs)]
    jobs = [(arm, seed) for seed in args.seeds for arm in ("cold", "prior-from")]

    def one(job):
        arm, seed = job
        extra = ["--seed", str(seed)] + (["--prior-from", str(source)] if arm == "prior-from" else [])
        run_search(common + extra, args.out / f"{arm}_s{seed}", threads=1)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, jobs))
    read = {job: read_run(args.out / f"{job[0]}_s{job[1]}") for job in jobs}
    runs = {job: points for job, (points, _) in read.items()}
    walls = {job: wall for job, (_, wall) in read.items()}
    print_report(args, dataset, source, runs, walls)
    if args.json:
        args.json.write_text(json.dumps({f"{arm}_s{seed}": [p.__dict__ for p in points]
                                         for (arm, seed), points in runs.items()}, indent=1))
    return 0


def run_source(args) -> Path:
    folder = args.out / "source"
    run_search(["--max-stages", str(args.source_stages), "--budget", f"{args.source_budget:g}",
                "--seed", "0"], folder, threads=None)
    return folder


def run_search(flags: list[str], run_dir: Path, threads: int | None) -> None:
    """Run ``hnas search`` into ``run_dir`` (resumed when unfinished, skipped when finished)."""
    if (run_dir / SUMMARY).is_file():
        return
    argv = ["--resume", str(run_dir)] if (run_dir / "search.sqlite").is_file() else flags + ["--run-dir", str(run_dir)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as log:
        done = subprocess.run([sys.executable, "-m", "hnas.cli", "search", *argv, "--no-progress"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"hnas search into {run_dir} failed (exit {done.returncode}); see {run_dir}.log")


def read_run(run_dir: Path) -> tuple[list[Point], float]:
    """The search's successful trials in finishing order with the epochs trained up to each, and
    its wall seconds from the first trial's start to the last one's end (a resumed run counts its pause)."""
    with RunStore.open_existing(run_dir) as store:
        history = store.history()
    index = HistoryIndex(history)
    finished = sorted((t for t in history if t.finished_at is not None), key=lambda t: t.finished_at)
    points, compute = [], 0.0
    for trial in finished:
        compute += index.added_fidelity(trial)
        if trial.state == "success":
            points.append(Point(trial.trial_id, trial.job.sampler, trial.job.fidelity, 1.0 - trial.loss, compute))
    wall = finished[-1].finished_at - min(t.started_at for t in finished if t.started_at is not None)
    return points, wall


def incumbent_dice(points: list[Point], compute: float, max_epochs: int) -> float | None:
    """Best Dice among trials trained to ``max_epochs`` within ``compute`` epochs (None: none yet)."""
    full = [p.dice for p in points if p.epochs >= max_epochs and p.compute <= compute + 1e-9]
    return max(full) if full else None


def compute_to_reach(points: list[Point], dice: float, max_epochs: int) -> float | None:
    return next((p.compute for p in points if p.epochs >= max_epochs and p.dice >= dice - 1e-12), None)


def transferred_prior(run_dir: Path) -> str:
    """What the prior-from searches were centred on (run.json's record, as `hnas search` printed it)."""
    from hnas.pipeline.transfer import describe_record

    return describe_record(json.loads((run_dir / "run.json").read_text())["prior_from"])


def print_report(args, dataset: Path, source: Path, runs: dict, walls: dict) -> None:
    source_points, _ = read_run(source)
    top = max(p.epochs for p in source_points)
    best = max((p for p in source_points if p.epochs == top), key=lambda p: p.dice)
    default = next((p for p in source_points if p.sampler == "default"), None)
    print(f"\nsource {source}: {len(source_points)} trials, {source_points[-1].compute:g} epochs; incumbent trial "
          f"{best.trial_id} Dice {best.dice:.4f} at {top:g} epochs"
          + ("" if default is None else f" (its default: Dice {default.dice:.4f} at {default.epochs:g})"))
    print(f"target {dataset.name}, {args.max_stages} stages, "
          f"{args.optimizer}, budget {args.budget:g} x {args.max_epochs} epochs, "
          f"{args.iterations_per_epoch} iterations/epoch, epochs {args.min_epochs}..{args.max_epochs}\n")
    print(transferred_prior(args.out / f"prior-from_s{args.seeds[0]}") + "\n")
    checkpoints = [args.max_epochs * k for k in range(1, int(args.budget) + 1)]
    print("| seed | search | trials | epochs trained | " + " | ".join(f"Dice at {c} epochs" for c in checkpoints)
          + " | Dice at the end | epochs to reach the default's Dice | trial 0 Dice | wall s |")
    print("|---:|---|---:|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|---:|")
    ends = {}
    for seed in args.seeds:
        default_dice = runs[("cold", seed)][0].dice  # the cold search opens with nnU-Net's default
        for arm in ("cold", "prior-from"):
            points = runs[(arm, seed)]
            cells = [incumbent_dice(points, c, args.max_epochs) for c in checkpoints + [points[-1].compute]]
            ends[(arm, seed)] = cells[-1]
            reach = compute_to_reach(points, default_dice, args.max_epochs)
            print(f"| {seed} | {arm} | {len(points)} | {points[-1].compute:g} | "
                  + " | ".join("-" if c is None else f"{c:.4f}" for c in cells)
                  + f" | {'not reached' if reach is None else f'{reach:g}'} | {points[0].dice:.4f} | "
                  f"{walls[(arm, seed)]:.0f} |")
    differences = [ends[("prior-from", seed)] - ends[("cold", seed)] for seed in args.seeds]
    print("\nincumbent Dice at the end, prior-from minus cold, per seed: "
          + ", ".join(f"{d:+.4f}" for d in differences) + f"; mean {sum(differences) / len(differences):+.4f}")


if __name__ == "__main__":
    sys.exit(main())
