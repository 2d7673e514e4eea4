"""Does the trainer learn? Validation Dice of nnU-Net's default configuration against iterations.

Trains the default configuration and network (CPU preset: features 8..64, batch 2) on one fold,
stopping every ``--every`` epochs to validate on the fold's first ``--validation-cases`` cases
and continuing from the checkpoint (the same path a promoted search trial takes). The schedule
(PolyLR) runs over ``--epochs``. Prints one Markdown row per checkpoint.

    .venv/bin/python benchmarks/bench_learning_curve.py [--iterations-per-epoch 50] [--epochs 20] [--every 2]

Use it to choose a CPU budget where learning happens before comparing configurations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from real_data import add_dataset_argument, dataset_or_skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=20, help="the schedule's length")
    parser.add_argument("--every", type=int, default=2, help="validate every this many epochs")
    parser.add_argument("--validation-cases", type=int, default=20)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hnas-bench-learning-curve")
    args = parser.parse_args(argv)
    dataset = dataset_or_skip(args.dataset, args.out)
    if dataset is None:
        return 0

    from hnas.pipeline.run import SearchSettings, resolve
    from hnas.pipeline.spaces import make_space
    from hnas.train import checkpoint_path, evaluate

    settings = SearchSettings(dataset=str(dataset), space="hpo", preset="cpu", fold=args.fold, seed=args.seed)
    setup = resolve(settings)
    train_setup = replace(setup.train_setup(args.out), iterations_per_epoch=args.iterations_per_epoch,
                          max_epochs=args.epochs, validation_cases=args.validation_cases)
    config = make_space("hpo").default_config()
    plan = train_setup.plan
    print(f"dataset {dataset.name}, fold {args.fold}, default configuration, CPU preset ({plan.n_stages} stages, patch "
          f"{'x'.join(map(str, plan.patch_size))}, features {plan.base_features}..{plan.max_features}, batch "
          f"{plan.batch_size}), PolyLR over {args.epochs} epochs x {args.iterations_per_epoch} iterations, "
          f"validation on {args.validation_cases} cases, {os.cpu_count()} CPU cores\n")
    print("| epochs | iterations | train loss | validation Dice | per class | training s |")
    print("|---:|---:|---:|---:|---|---:|")
    previous = None
    started = time.perf_counter()
    for epochs in range(args.every, args.epochs + 1, args.every):
        trial_dir = args.out / f"seed{args.seed}_i{args.iterations_per_epoch}_e{args.epochs}" / f"{epochs:04d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        result = evaluate(config, None, epochs, previous, trial_dir, setup=train_setup)
        per_class = ", ".join(f"{name} {dice:.3f}" for name, dice in result.dice_per_class.items())
        print(f"| {epochs} | {epochs * args.iterations_per_epoch} | {result.train_loss:.4f} | {result.mean_dice:.4f} | "
              f"{per_class} | {result.runtime:.0f} |", flush=True)
        previous = checkpoint_path(trial_dir)
    print(f"\nwall {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
