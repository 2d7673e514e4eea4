"""nnU-Net's default vs the hpo+hnas incumbent, each cross-validated, plus their fold ensembles on unseen cases.

    .venv/bin/python benchmarks/bench_cross_validation.py [--dataset DIR | --dataset builtin] [--run RUN]
        [--budget 3] [--folds 0 1 2] [--epochs 30] [--iterations-per-epoch 100] [--test-cases 20] [--workers 1]

1. A fixed, seeded set of ``--test-cases`` cases is held out: the work folder gets an nnU-Net raw
   dataset of symlinks (imagesTr/labelsTr: the remaining cases; imagesTs/labelsTs: the held-out ones).
2. The hpo+hnas Regularized PriorBand search runs on the remaining cases (CPU preset, ``--budget``
   max-fidelity trainings at ``--iterations-per-epoch``), or an earlier run of this script is reused
   (``--run``; it must have searched this work folder's cases, else the test set would not be unseen).
3. The default configuration and the incumbent are trained on every fold of ``--folds`` for
   ``--epochs`` x ``--iterations-per-epoch`` iterations (`hnas train --folds`), fold by fold (both
   models, then the next fold), and each fold's validation cases are predicted; a line after every
   fold gives both models' CV Dice over the folds recorded so far (on a rerun also those trained
   before), so a run stopped early still compares paired folds.
4. Printed: mean Dice +- std per model over the cross-validation cases and over folds, the Wilcoxon
   signed-rank test over cases paired by id (`hnas evaluate`), and each model's fold-ensemble Dice on
   the held-out cases with the same test.

Everything resumes: the search, finished folds and their validation predictions are reused on a rerun
(the held-out cases are predicted again).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from real_data import add_dataset_argument, dataset_or_skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hnas-bench-cross-validation")
    parser.add_argument("--run", type=Path, default=None, help="reuse this search run (default: search in --out)")
    parser.add_argument("--test-cases", type=int, default=20, help="cases held out as the unseen test set")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out choice")
    parser.add_argument("--budget", type=float, default=3.0, help="search budget in max-fidelity trainings")
    parser.add_argument("--min-epochs", type=int, default=None, help="search: default the CPU preset's 1")
    parser.add_argument("--max-epochs", type=int, default=None, help="search: default the CPU preset's 9")
    parser.add_argument("--max-stages", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="cross-validation epochs")
    parser.add_argument("--workers", type=int, default=1,
                        help="cross-validation: train this many (model, fold) pairs at once (2 on 2 CPU cores: ~20%% "
                             "more throughput than one process with 2 threads)")
    parser.add_argument("--iterations-per-epoch", type=int, default=100,
                        help="for the search and the cross-validation (30 x 100 = 3,000 iterations)")
    args = parser.parse_args(argv)

    from hnas.data.cache import builtin_dataset

    if args.dataset is not None and str(args.dataset) == "builtin":
        args.out.mkdir(parents=True, exist_ok=True)
        dataset = builtin_dataset()
    else:
        dataset = dataset_or_skip(args.dataset, args.out)
        if dataset is None:
            return 0
    work = hold_out(dataset, args.out / "data", args.test_cases, args.split_seed)
    started = time.perf_counter()
    run_dir = search_run(args, work)
    search_wall = time.perf_counter() - started

    from hnas.pipeline.cross_validate import cross_validate, default_choice, trial_choice
    from hnas.pipeline.evaluate import evaluate_run, summary_table

    choices = [default_choice(run_dir), trial_choice(run_dir)]
    started = time.perf_counter()
    for done, fold in enumerate(args.folds, start=1):  # fold by fold: an interrupted run still has paired folds
        folders = cross_validate(run_dir, choices, [fold], args.epochs,
                                 iterations_per_epoch=args.iterations_per_epoch, workers=args.workers)
        names = [f.name for f in folders]
        so_far, _ = evaluate_run(run_dir, names, out_dir=args.out / "evaluation_validation", log=lambda *a: None)
        print(f"after fold {fold} ({done}/{len(args.folds)} folds, {time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{n} {_pm(so_far['models'][n]['dice'])} (folds {_recorded_folds(f)})"
                          for n, f in zip(names, folders)), flush=True)
    cv_wall = time.perf_counter() - started
    validation = so_far  # the last fold's evaluation covers every fold
    started = time.perf_counter()
    test, _ = evaluate_run(run_dir, names, test_dir=work, out_dir=args.out / "evaluation_test")
    test_wall = time.perf_counter() - started

    n_train = len(list((work / "labelsTr").iterdir()))
    evaluated = sorted({fold for folder in folders for fold in _recorded_folds(folder)})  # a rerun may add folds
    print(f"\ndataset {dataset.name}: {n_train} cases cross-validated on folds {evaluated}, {args.test_cases} held "
          f"out (split seed {args.split_seed}); {args.epochs} epochs x {args.iterations_per_epoch} iterations per "
          f"fold; run {run_dir}")
    print(f"wall time: search {search_wall:.0f} s, cross-validation {cv_wall:.0f} s, test prediction {test_wall:.0f} s")
    same = " (the default configuration itself: the search found nothing better)" \
        if choices[1].config == choices[0].config else ""
    print(f"incumbent: trial {choices[1].trial_id}{same}\n")
    print("| model | CV Dice over cases (mean +- std) | CV Dice over folds (mean +- std) | cases | "
          "fold-ensemble Dice on held-out cases |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        model, held_out = validation["models"][name], test["models"][name]
        print(f"| {name} | {_pm(model['dice'])} | {_pm(model['dice_over_folds'])} | {model['cases']} | "
              f"{_pm(held_out['dice'])} |")
    for label, summary in (("cross-validation", validation), ("held-out test", test)):
        for pair in summary["pairs"]:
            result = (f"W = {pair['statistic']:g}, p = {pair['p']:.4g}" if pair["p"] is not None
                      else f"no test: {pair['reason']}")
            print(f"Wilcoxon ({label}, {pair['model']} - {pair['baseline']}, n = {pair['n']}): {result}")
    print("\nper class (cross-validation):")
    print(summary_table(validation))
    return 0


def _recorded_folds(model_dir: Path) -> list[int]:
    """The folds `hnas evaluate` scores for a model: every fold its model.json lists, also earlier runs' ones."""
    from hnas.pipeline.layout import load_model_record

    return load_model_record(model_dir)["folds"]


def _pm(stats: dict) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.4f} +- {stats['std']:.4f}"


def hold_out(dataset: Path, out: Path, n_test: int, seed: int) -> Path:
    """A symlinked nnU-Net raw dataset without ``n_test`` seeded cases, which go to imagesTs/labelsTs."""
    from hnas.data import load_dataset

    data = load_dataset(dataset)
    if data.format != "nnunet" or any(c is not None for case in data.cases for c in case.channel_in_file):
        raise SystemExit(f"{dataset}: expected an nnU-Net raw dataset (one file per channel) to link cases from")
    if not 1 <= n_test < len(data.cases) - 5:
        raise SystemExit(f"--test-cases {n_test}: expected 1..{len(data.cases) - 6} (5 folds need >= 5 cases left)")
    ids = sorted(data.case_ids)
    test = set(np.random.default_rng(seed).choice(ids, size=n_test, replace=False).tolist())
    work = out / f"{data.name}_minus{n_test}_seed{seed}"
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    for case in data.cases:
        images, labels = ("imagesTs", "labelsTs") if case.case_id in test else ("imagesTr", "labelsTr")
        for channel, source in enumerate(case.image_files):
            _link(source, work / images / f"{case.case_id}_{channel:04d}{data.file_ending}")
        _link(case.label_file, work / labels / f"{case.case_id}{data.file_ending}")
    description = json.loads((Path(dataset) / "dataset.json").read_text())
    description.update(numTraining=len(data.cases) - n_test, numTest=n_test)
    description["hnas_held_out"] = {"source": str(Path(dataset).resolve()), "seed": seed, "cases": sorted(test)}
    (work / "dataset.json").write_text(json.dumps(description, indent=1) + "\n")
    return work


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() and target.resolve() == Path(source).resolve():
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(Path(source).resolve())


def search_run(args, work: Path) -> Path:
    """The given run (checked to be on the work folder's cases) or this script's own, searched or resumed."""
    from hnas.pipeline.run import SearchSettings
    from hnas.pipeline.search import search

    if args.run is not None:
        searched = SearchSettings.load(args.run).dataset
        if searched is None or Path(searched).resolve() != work.resolve():
            raise SystemExit(f"--run {args.run} searched on {searched}, not on {work}: its folds may hold the "
                             "held-out cases; leave --run out to search on the remaining cases")
        return args.run
    settings = SearchSettings(dataset=str(work), space="hpo+hnas", optimizer="regularized-priorband",
                              preset="cpu", budget=args.budget, seed=args.seed, max_stages=args.max_stages,
                              iterations_per_epoch=args.iterations_per_epoch, min_epochs=args.min_epochs,
                              max_epochs=args.max_epochs)
    run_dir = args.out / (f"run_b{args.budget:g}_s{args.seed}_i{args.iterations_per_epoch}"
                          f"_e{args.min_epochs or 0}-{args.max_epochs or 0}")
    search(settings, run_dir, resume=(run_dir / "search.sqlite").exists(), progress=False)
    return run_dir


if __name__ == "__main__":
    sys.exit(main())
