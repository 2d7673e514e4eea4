"""Core pipeline speed: derivations per second and build(spec) time vs DNA's PlainConvUNet.

    .venv/bin/python benchmarks/bench_core.py [--seconds 3] [--repeats 7]

Targets (issue 2): >= 5,000 derivations/s (sample -> string -> parse -> UNetSpec) on an N=6
grammar in one process; build(spec) of the default 6-stage 3D net <= 1.1x the time to
construct (and initialise, as nnU-Net does) DNA's PlainConvUNet for the same plan.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import isotropic_plan  # noqa: E402  (the same hand-built plans the tests use)

from hnas.cfgunet import compile_architecture, spec_from_tree  # noqa: E402
from hnas.grammar import default_architecture, make_grammar, parse  # noqa: E402
from hnas.sampling import Prior, PriorSampler, UniformSampler  # noqa: E402


def rate(step, seconds: float) -> float:
    """Calls per second of ``step`` over about ``seconds`` (after a warm-up)."""
    for _ in range(200):
        step()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            step()
        count += 200
    return count / elapsed


def derivation_rates(seconds: float) -> list[tuple[str, float]]:
    plan = isotropic_plan(6)
    grammar = make_grammar(plan)
    rng = np.random.default_rng(0)
    prior = PriorSampler(Prior.from_grammar(grammar, "medium"))
    uniform = UniformSampler(grammar)
    return [
        ("prior: sample -> string -> parse+transform -> UNetSpec",
         rate(lambda: compile_architecture(grammar, prior.sample_string(rng), plan), seconds)),
        ("uniform: sample -> string -> parse+transform -> UNetSpec",
         rate(lambda: compile_architecture(grammar, uniform.sample_string(rng), plan), seconds)),
        ("prior: sample -> string -> parse -> Tree -> Transformer -> UNetSpec",
         rate(lambda: spec_from_tree(parse(grammar, prior.sample_string(rng)), plan), seconds)),
        ("prior: sample string only", rate(lambda: prior.sample_string(rng), seconds)),
    ]


def build_times(repeats: int) -> dict[str, float]:
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He

    from hnas.cfgunet import build

    torch.set_num_threads(1)
    plan = isotropic_plan(6)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan)

    def dna(init: bool):
        net = PlainConvUNet(
            input_channels=1, n_stages=6, features_per_stage=plan.features_per_stage,
            conv_op=torch.nn.Conv3d, kernel_sizes=plan.kernel_sizes, strides=plan.strides,
            n_conv_per_stage=plan.conv_blocks_per_stage, num_classes=plan.n_classes,
            n_conv_per_stage_decoder=plan.conv_decoder_blocks_per_stage, conv_bias=True,
            norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
        if init:
            net.apply(InitWeights_He(1e-2))
        return net

    candidates = {"hnas build(spec)": lambda: build(spec), "DNA PlainConvUNet()": lambda: dna(False),
                  "DNA PlainConvUNet() + InitWeights_He (nnU-Net)": lambda: dna(True)}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):  # interleaved, so drifting machine load hits all alike
        for name, make in candidates.items():
            start = time.perf_counter()
            make()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per derivation-rate measurement")
    parser.add_argument("--repeats", type=int, default=7, help="build timings per network (median reported)")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, 1 process\n")

    rates = derivation_rates(args.seconds)
    print("| N=6 grammar (paper), plan 128^3 | derivations/s |")
    print("|---|---:|")
    for name, value in rates:
        print(f"| {name} | {value:,.0f} |")
    ok_rate = rates[0][1] >= 5000 and rates[1][1] >= 5000
    print(f"\ntarget >= 5,000/s (sample -> string -> parse -> UNetSpec): {'PASS' if ok_rate else 'FAIL'}\n")

    times = build_times(args.repeats)
    reference = times["DNA PlainConvUNet() + InitWeights_He (nnU-Net)"]
    print("| default 6-stage 3D net (32..320 features) | median ms | vs DNA + nnU-Net init | vs DNA ctor only |")
    print("|---|---:|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:,.1f} | {seconds / reference:.2f}x | "
              f"{seconds / times['DNA PlainConvUNet()']:.2f}x |")
    ratio = times["hnas build(spec)"] / times["DNA PlainConvUNet()"]
    print(f"\ntarget build <= 1.1x DNA's constructor: {ratio:.2f}x {'PASS' if ratio <= 1.1 else 'FAIL'}")
    return 0 if ok_rate and ratio <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
