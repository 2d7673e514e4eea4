"""bench_train part (2): nnU-Net's default configuration vs the incumbent of an hpo+hnas
Regularized PriorBand search given the same total training compute, on real data.

    .venv/bin/python benchmarks/bench_train_search.py [--budget 3] [--dataset DIR] [--fold 0]

The search runs with the CPU preset (epochs 1..9, eta 3, 8 iterations per epoch, features
8..64). Its total compute is the epochs it trained (budget x max epochs, promotions paying
only what they add); the default configuration is then trained from scratch for that many
epochs on the same fold. Both are validated with sliding windows over the fold's validation
cases. Prints a Markdown table with Dice and training runtime of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from real_data import add_dataset_argument, dataset_or_skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--budget", type=float, default=3.0, help="search budget in max-fidelity trainings")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="default: the CPU preset's 8 (too few to segment hippocampus; see the README)")
    parser.add_argument("--min-epochs", type=int, default=None, help="default: the CPU preset's 1")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the CPU preset's 9")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hnas-bench-train-search")
    args = parser.parse_args(argv)
    dataset = dataset_or_skip(args.dataset, args.out)
    if dataset is None:
        return 0

    from hnas.pipeline.run import SearchSettings, resolve
    from hnas.pipeline.search import search
    from hnas.pipeline.status import describe_trial
    from hnas.pipeline.spaces import make_space
    from hnas.train import train_fold

    settings = SearchSettings(dataset=str(dataset), space="hpo+hnas", optimizer="regularized-priorband",
                              preset="cpu", budget=args.budget, fold=args.fold, seed=args.seed,
                              iterations_per_epoch=args.iterations_per_epoch, min_epochs=args.min_epochs,
                              max_epochs=args.max_epochs)
    run_dir = args.out / (f"run_b{args.budget:g}_f{args.fold}_s{args.seed}_i{args.iterations_per_epoch or 0}"
                          f"_e{args.min_epochs or 0}-{args.max_epochs or 0}")
    start = time.perf_counter()
    summary = search(settings, run_dir, resume=(run_dir / "search.sqlite").exists(), progress=False)
    search_wall = time.perf_counter() - start
    setup = resolve(settings)
    by_id = {t.trial_id: t for t in summary.history}
    search_epochs = summary.budget_used * setup.max_epochs
    search_runtime = sum(t.cost - (by_id[t.parent_id].cost if t.parent_id is not None else 0.0)
                         for t in summary.successes)
    incumbent = summary.incumbent
    default_trial = summary.history[0]

    epochs = max(1, round(search_epochs))
    default_config = make_space("hpo").default_config()
    start = time.perf_counter()
    default = train_fold(default_config, epochs, args.out / f"default_{epochs}ep_{run_dir.name}",
                         setup=setup.train_setup(run_dir))
    default_wall = time.perf_counter() - start

    print(f"\ndataset {dataset.name}, fold {args.fold}, CPU preset ({setup.plan.n_stages} stages, patch "
          f"{'x'.join(map(str, setup.plan.patch_size))}, features {setup.plan.base_features}..{setup.plan.max_features}, "
          f"{setup.preset.iterations_per_epoch} iterations/epoch, batch {setup.plan.batch_size}, epochs {setup.min_epochs}..{setup.max_epochs}, eta {setup.eta}), {os.cpu_count()} CPU cores\n")
    print("| configuration | epochs trained | training runtime s | wall s | validation Dice |")
    print("|---|---:|---:|---:|---:|")
    print(f"| nnU-Net default, trained {epochs} epochs (= the search's compute) | {epochs} | {default.runtime:.0f} | "
          f"{default_wall:.0f} | {default.mean_dice:.4f} |")
    print(f"| hpo+hnas Regularized PriorBand search, budget {args.budget:g} (all {len(summary.history)} trials) | "
          f"{search_epochs:.0f} | {search_runtime:.0f} | {search_wall:.0f} | - |")
    print(f"| -> its incumbent (trial {incumbent.trial_id}) | {incumbent.fidelity:g} | {incumbent.cost:.0f} | - | "
          f"{1 - incumbent.loss:.4f} |")
    print(f"| -> the default inside the search (trial 0, {default_trial.fidelity:g} epochs) | "
          f"{default_trial.fidelity:g} | {default_trial.cost or 0:.0f} | - | "
          f"{'-' if default_trial.loss is None else f'{1 - default_trial.loss:.4f}'} |")
    print(f"\nincumbent: {describe_trial(incumbent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
