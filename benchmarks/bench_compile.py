"""torch.compile on the CPU: does every grammar op compile, what does it cost at start-up, what does it save per step?

For a few tiny networks (cpu preset features 8..64, 3 stages; a 32^3 patch, batch 2; one 2D network
of 64^2 patches, batch 8) that together use every word of the extended grammar -- both encoders
(plain, residual with basic or bottleneck blocks, with and without squeeze-excitation), both
decoders, instance and batch norm, the five nonlinearities, dropout, the three ways down (strided
conv, max and average pooling; up is always a transposed conv) -- this trains the same network
eagerly and compiled (``hnas.train.Trainer(..., compile=...)``, deep supervision, nnU-Net's
default configuration) and predicts one case by sliding windows both ways (``sliding_window_logits``
with a :class:`~hnas.train.compilation.CompiledNetwork`, as ``hnas predict --compile`` does).

Per network it prints whether compile worked (or fell back to eager, with the error), the first
step's seconds (compile included) and the median seconds of the following steps, eager vs
compiled, for training and for prediction, and how far apart the two results are (first step's
loss, the case's probabilities). Timed steps alternate between the modes, in reversed order every
other round (the machine may be shared). Inductor's kernel cache starts empty (a fresh
TORCHINDUCTOR_CACHE_DIR, as on a new machine; later networks reuse kernels of earlier ones, as
later trials of a search do) unless --warm-cache.

    python benchmarks/bench_compile.py                 # every network, ~10 min on 2 busy cores
    python benchmarks/bench_compile.py --only default  # one network
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

#: network name -> (dims, sentence); together they use every word of the extended grammar
NETWORKS = {
    "default": (3, "unet conv_encoder instance_norm leaky_relu no_dropout conv_pool 2b down 2b down 2b "
                   "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b"),
    "conv-bn-relu-max": (3, "unet conv_encoder batch_norm relu dropout max_pool 1b down 1b down 1b "
                            "res_decoder instance_norm gelu no_dropout up 1b up 1b"),
    "res-basic-se-avg": (3, "unet res_encoder instance_norm prelu no_dropout avg_pool basic_block se 1b down 1b "
                            "down 1b conv_decoder batch_norm elu dropout up 1b up 1b"),
    "res-bottleneck": (3, "unet res_encoder batch_norm elu dropout conv_pool bottleneck_block no_se 1b down 1b "
                          "down 1b res_decoder batch_norm relu dropout up 1b up 1b"),
    "default-2d": (2, "unet conv_encoder instance_norm leaky_relu no_dropout conv_pool 2b down 2b down 2b "
                      "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b"),
}
#: Case shapes predicted: 3x3x3 windows of 32^3 at half overlap; 2D: 6 slices of 3x3 windows of 64^2.
CASE_SHAPE = {3: (1, 48, 48, 48), 2: (1, 6, 96, 96)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(NETWORKS), help="networks to measure (default: all)")
    parser.add_argument("--iterations", type=int, default=4, help="timed steps (and cases) per mode after the first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--warm-cache", action="store_true", help="keep Inductor's usual kernel cache")
    return parser.parse_args()


def bench_plan(dims: int):
    """The cpu preset's sizes on a 3-stage isotropic plan (features 8, 16, 32)."""
    from hnas.planning.plan import Plan

    one, two, three = (1,) * dims, (2,) * dims, (3,) * dims
    patch, batch = ((32,) * 3, 2) if dims == 3 else ((64, 64), 8)
    return Plan(dataset_name="Dataset900_Bench", dims=dims, patch_size=patch, spacing=(1.0,) * dims,
                median_shape=CASE_SHAPE[3][1:][-dims:], n_stages=3, strides=(one, two, two), kernel_sizes=(three,) * 3,
                features_per_stage=(8, 16, 32), conv_blocks_per_stage=(2, 2, 2), conv_decoder_blocks_per_stage=(2, 2),
                residual_blocks_per_stage=(1, 3, 4), residual_decoder_blocks_per_stage=(1, 1), batch_size=batch,
                n_input_channels=1, n_classes=3, normalization=("zscore",), base_features=8, max_features=64)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def alternating(runs: dict, iterations: int) -> dict:
    """Median seconds of ``iterations`` calls of each mode's function, the modes alternating in order."""
    seconds = {mode: [] for mode in runs}
    for round_ in range(iterations):
        for mode in (list(runs) if round_ % 2 == 0 else list(reversed(runs))):
            seconds[mode].append(timed(runs[mode])[0])
    return {mode: statistics.median(values) for mode, values in seconds.items()}


def measure(name: str, dims: int, sentence: str, iterations: int) -> dict:
    import torch

    from hnas.cfgunet import build, compile_architecture
    from hnas.grammar import GrammarOptions, make_grammar
    from hnas.train.compilation import CompiledNetwork, CompileFallbackWarning
    from hnas.train.config import train_config
    from hnas.train.inference import sliding_window_logits
    from hnas.train.trainer import Trainer

    plan = bench_plan(dims)
    spec = compile_architecture(make_grammar(plan, GrammarOptions.extended()), sentence, plan, dropout_rate=0.2,
                                deep_supervision=True)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(plan.batch_size, 1, *plan.patch_size, generator=generator)
    target = torch.randint(0, 3, (plan.batch_size, 1, *plan.patch_size), generator=generator).float()
    case = torch.randn(*CASE_SHAPE[dims], generator=generator).numpy()
    trainers, first, losses = {}, {}, {}
    fallbacks = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileFallbackWarning)
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            trainer = Trainer(build(spec), train_config({}), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=100,
                              seed=0, compile=mode == "compiled")
            trainer.network.train()
            trainer.network.decoder.deep_supervision = True
            torch.manual_seed(1)
            first[mode], loss = timed(lambda: trainer.step(image, target))
            trainers[mode], losses[mode] = trainer, float(loss)
        train = alternating({mode: (lambda t=t: t.step(image, target)) for mode, t in trainers.items()}, iterations)
        network = trainers["eager"].network  # both modes predict with the same weights
        forwards = {"eager": network, "compiled": CompiledNetwork(network, True)}

        def predict(mode):
            return sliding_window_logits(network, case, plan.patch_size, torch.device("cpu"),
                                         batch_size=plan.batch_size, forward=forwards[mode])

        first_case, probabilities = {}, {}
        for mode in forwards:
            first_case[mode], probabilities[mode] = timed(lambda: predict(mode))
        cases = alternating({mode: (lambda m=mode: predict(m)) for mode in forwards}, iterations)
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, CompileFallbackWarning)]
    compiled = trainers["compiled"].forward.is_compiled and forwards["compiled"].is_compiled
    return {"name": name, "status": "compiled" if compiled and not fallbacks else "fallback: " + "; ".join(fallbacks),
            "train_first": first, "train_step": train, "loss_diff": abs(losses["eager"] - losses["compiled"]),
            "predict_first": first_case, "predict_case": cases,
            "probability_diff": float((probabilities["eager"] - probabilities["compiled"]).abs().max())}


def table(rows: list[dict]) -> str:
    lines = ["| network | compile | train: first step eager / compiled (s) | train: step eager / compiled (s) "
             "| predict: first case eager / compiled (s) | predict: case eager / compiled (s) "
             "| max diff: loss, probability |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        pair = lambda values, digits: f"{values['eager']:.{digits}f} / {values['compiled']:.{digits}f}"  # noqa: E731
        lines.append(f"| {row['name']} | {row['status']} | {pair(row['train_first'], 2)} | {pair(row['train_step'], 3)} "
                     f"| {pair(row['predict_first'], 2)} | {pair(row['predict_case'], 3)} "
                     f"| {row['loss_diff']:.1e}, {row['probability_diff']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="hnas-bench-inductor-")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only or list(NETWORKS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, {args.iterations} timed steps per "
          f"mode, Inductor cache {'as usual' if args.warm_cache else 'empty at start'}", flush=True)
    rows = []
    started = time.perf_counter()
    for name in names:
        dims, sentence = NETWORKS[name]
        rows.append(measure(name, dims, sentence, args.iterations))
        print(f"{name}: done after {time.perf_counter() - started:.0f} s", flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
