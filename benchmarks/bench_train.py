"""(1) Training-step time of the full trainer vs a bare forward/backward of the same network and batch.

The full trainer's iteration is what ``hnas.train.Trainer`` runs per step: take the next batch
from the DataLoader (patch sampling, foreground oversampling and augmentation in background
workers), copy it to the device, forward with deep supervision, the configured loss over the
supervised outputs, backward, gradient clipping and the optimizer step. The bare reference is
``network(x)`` + a trivial scalar + ``backward()`` on one batch already on the device (deep
supervision on, so the network is the same). Both use nnU-Net's default configuration and the
default architecture of the dataset's plan with the chosen scale preset. Rounds alternate
between the modes, in reversed order every other round (the machine may be shared); each mode's median and best round are reported,
and the overhead is judged on the best rounds (least disturbed by other processes) and on the
medians. Target: overhead <= 10 %.

    python benchmarks/bench_train.py                          # hippocampus if present, else built-in data
    python benchmarks/bench_train.py --dataset PATH --preset nnunet --iterations 50 --workers 8

Part (2), the search comparison on hippocampus, trains configurations with
``hnas.train.train_fold(config, epochs, out_dir, setup=...)`` (Dice + runtime of one config).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import torch  # noqa: E402

from hnas.cfgunet import build, compile_architecture  # noqa: E402
from hnas.data.cache import builtin_dataset, fingerprint_of  # noqa: E402
from hnas.grammar import default_architecture, make_grammar  # noqa: E402
from hnas.planning import make_plan  # noqa: E402
from hnas.train import TrainSetup, prepare, preset  # noqa: E402
from hnas.train.config import train_config  # noqa: E402
from hnas.train.loader import PatchSampler, batch_loader  # noqa: E402
from hnas.train.trainer import Trainer, synchronize  # noqa: E402
from real_data import hippocampus  # noqa: E402

TARGET_OVERHEAD = 0.10
REFERENCE = "bare forward/backward"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=None, help="dataset folder (default: hippocampus, else built-in)")
    parser.add_argument("--preset", default="auto", choices=["auto", "cpu", "nnunet"])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per round and mode")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the judged trainer (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hnas-bench-train")
    return parser.parse_args()


def make_setup(args: argparse.Namespace) -> TrainSetup:
    dataset = args.dataset or (hippocampus() if (hippocampus() / "dataset.json").is_file() else builtin_dataset())
    scale = preset(args.preset)
    plan = make_plan(fingerprint_of(dataset))  # nnU-Net's topology; the preset shrinks features, patch, batch
    workers = scale.num_workers if args.workers is None else args.workers
    return TrainSetup.from_preset(scale, dataset=dataset, plan=plan, grammar=make_grammar(plan), cache_dir=args.cache,
                                  num_workers=workers)


def trainer_mode(workers: int) -> str:
    return "full trainer, in-process data" if workers == 0 else f"full trainer, {workers} background worker(s)"


def per_iteration(run, iterations: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    run(iterations)
    synchronize(device)
    return (time.perf_counter() - started) / iterations


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = make_setup(args)
    device = setup.torch_device()
    data = prepare(setup)
    train_ids, _ = data.split(setup.fold)
    plan = setup.plan
    config = train_config({})
    spec = compile_architecture(setup.grammar, default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    network = build(spec, device)
    trainer = Trainer(network, config, n_outputs=spec.n_stages - 1, device=device, max_epochs=10 ** 6, amp=setup.amp)
    sampler = PatchSampler(data, train_ids, plan.patch_size, setup.effective_batch_size,
                           config.foreground_oversampling, config.aug_factor, seed=0)
    fixed = sampler.batch(0)
    image = fixed["image"].to(device)
    network.train()
    network.decoder.deep_supervision = True

    def bare(n: int) -> None:
        for _ in range(n):
            network.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=trainer.amp):
                outputs = network(image)
            outputs[0].float().mean().backward()

    loaders = {}
    epoch = {"count": 0}

    def full(workers: int):
        if workers not in loaders:
            loaders[workers] = iter(batch_loader(sampler, 1, workers, pin_memory=device.type == "cuda"))
            trainer._train_epoch(loaders[workers], 0, 3)  # start the workers, warm up

        def run(n: int) -> None:
            epoch["count"] += 1
            trainer._train_epoch(loaders[workers], epoch["count"] % 1000, n)
        return run

    def data_only(n: int) -> None:
        for index in range(n):
            sampler.batch(10_000 + index)

    background = max(1, setup.num_workers)
    modes = {REFERENCE: bare, trainer_mode(0): full(0), trainer_mode(background): full(background),
             "data loading + augmentation only": data_only}
    bare(2)
    times: dict[str, list[float]] = {name: [] for name in modes}
    for round_index in range(args.rounds):
        order = list(modes.items())
        for name, run in (order if round_index % 2 == 0 else order[::-1]):  # cancel drift of the machine's load
            times[name].append(per_iteration(run, args.iterations, device))
    report(setup, spec, device, args, times)


def report(setup: TrainSetup, spec, device: torch.device, args, times: dict[str, list[float]]) -> None:
    plan = setup.plan
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPU cores'}), torch threads {torch.get_num_threads()}")
    print(f"dataset {plan.dataset_name}, {spec.n_stages} stages, features {plan.features_per_stage}, patch "
          f"{'x'.join(map(str, plan.patch_size))}, batch {setup.effective_batch_size}, AMP {setup.amp and device.type == 'cuda'}")
    print(f"{args.rounds} rounds x {args.iterations} iterations per mode, ms per iteration\n")
    best = {name: min(v) for name, v in times.items()}
    median = {name: statistics.median(v) for name, v in times.items()}
    reference = REFERENCE
    print(f"{'mode':46s} {'best':>9s} {'vs bare':>8s} {'median':>9s} {'vs bare':>8s}")
    for name in times:
        print(f"{name:46s} {best[name] * 1000:9.1f} {(best[name] / best[reference] - 1) * 100:+7.1f}% "
              f"{median[name] * 1000:9.1f} {(median[name] / median[reference] - 1) * 100:+7.1f}%")
    full = trainer_mode(setup.num_workers)
    overhead = best[full] / best[reference] - 1
    verdict = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
    print(f"\nthe preset's trainer ({full}): overhead (best rounds) {overhead * 100:+.1f}%, (medians) "
          f"{(median[full] / median[reference] - 1) * 100:+.1f}%; target <= {TARGET_OVERHEAD * 100:.0f}%: {verdict}")


if __name__ == "__main__":
    main()
