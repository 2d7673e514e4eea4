"""Training memory: hnas's estimate (``hnas.cfgunet.cost.training_memory``) against measured memory, and the share
of sampled configurations a ``hnas search --gpu-memory GB`` budget prunes.

Three tables (docs/references.md, "Training memory", says what the estimate counts):

* ``cpu``: N configurations drawn from the ``hpo+hnas`` prior (seeded) on the dataset's plan under the ``cpu``
  preset (features 8..64, patch <= 48^3, batch 2), float32, one training step of ``hnas.train.Trainer`` each
  (a warm-up step first, so the optimizer state exists). Measured: ``saved`` = bytes autograd keeps for the
  backward pass (``torch.autograd.graph.saved_tensors_hooks``, unique storages, parameters left out), against
  the estimate's activations; ``peak`` = parameters + optimizer state + the highest sum of the step's allocations
  (``torch.profiler`` with ``profile_memory``, gradients freed before the step), against the estimate's total.
* ``cuda`` (only where ``torch.cuda.is_available()``): the same N configurations on the ``nnunet`` preset's plans
  of the dataset, with AMP as the search trains them: the estimate against ``torch.cuda.max_memory_allocated``
  over one step (peak statistics reset after a warm-up step; parameters and optimizer state included).
* ``fractions``: the share of M prior draws of ``hpo+hnas`` whose estimate exceeds 8 and 24 GB (GiB) under the
  ``nnunet`` preset, for the hippocampus (the real dataset) and a prostate-like plan (a hand-made fingerprint
  with MSD prostate-like spacing 3.6 x 0.625 x 0.625 mm, shape 20 x 320 x 319, two channels, three labels,
  planned by hnas's nnU-Net planner).

The dataset is ``$HNAS_HIPPOCAMPUS``, else ``../shared/data/Dataset004_Hippocampus`` beside the repository, else
the built-in synthetic data (and no hippocampus fraction row).

    python benchmarks/gpu_memory.py                    # cpu and fractions here; cuda too on a GPU machine
    python benchmarks/gpu_memory.py --tables cuda      # the GPU table only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hnas.cfgunet import build, compile_architecture  # noqa: E402
from hnas.cfgunet.cost import training_memory  # noqa: E402
from hnas.data.fingerprint import Fingerprint  # noqa: E402
from hnas.grammar import make_grammar  # noqa: E402
from hnas.pipeline.memory import MemoryEstimator  # noqa: E402
from hnas.pipeline.run import SearchSettings, resolve  # noqa: E402
from hnas.pipeline.spaces import make_space  # noqa: E402
from hnas.planning import make_plan  # noqa: E402
from hnas.sampling import GrammarArchitecture  # noqa: E402
from hnas.testing.memory import saved_for_backward  # noqa: E402
from hnas.train import NNUNET  # noqa: E402
from hnas.train.config import network_choice, train_config  # noqa: E402
from hnas.train.trainer import Trainer  # noqa: E402

MIB = 2**20
HIPPOCAMPUS = HERE.parent.parent / "shared" / "data" / "Dataset004_Hippocampus"
BUDGETS_GB = (8, 24)
#: Prostate-like fingerprint: MSD Task05's spacing and a median shape like its cases (not read from the dataset).
PROSTATE_SPACING, PROSTATE_SHAPE, PROSTATE_CASES = (3.6, 0.625, 0.625), (20, 320, 319), 32


def dataset_path() -> str | None:
    """The hippocampus if present (None: the built-in synthetic data)."""
    path = Path(os.environ.get("HNAS_HIPPOCAMPUS", HIPPOCAMPUS))
    return str(path) if path.is_dir() else None


def sampled_configs(space, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [space.sample_prior(rng) for _ in range(n)]


def network(config, setup):
    """(spec, plan, optimizer name) a configuration trains, as the search's objective builds it."""
    choice = network_choice(config, setup.plan, setup.grammar, plan_2d=setup.plan_2d, grammar_2d=setup.grammar_2d,
                            residual_plan=setup.residual_plan)
    spec = compile_architecture(choice.grammar, choice.architecture, choice.plan, dropout_rate=choice.dropout_rate,
                                deep_supervision=True)
    return spec, choice.plan, train_config(config)


def step_inputs(spec, plan, device):
    generator = torch.Generator().manual_seed(0)
    shape = (plan.batch_size, spec.input_channels, *plan.patch_size)
    image = torch.randn(shape, generator=generator).to(device)
    label = torch.randint(0, spec.n_classes, (plan.batch_size, 1, *plan.patch_size), generator=generator)
    return image, label.to(torch.int16).to(device)


def trainer_for(spec, settings, device, amp: bool) -> Trainer:
    torch.manual_seed(0)
    return Trainer(build(spec, device), settings, n_outputs=spec.n_stages - 1, device=device, max_epochs=10, amp=amp)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def measure_cpu(spec, plan, settings) -> dict:
    """Saved-for-backward bytes and the step's peak (module docstring), float32 on the CPU."""
    trainer = trainer_for(spec, settings, "cpu", amp=False)
    image, label = step_inputs(spec, plan, "cpu")
    trainer.step(image, label)  # warm-up: the optimizer state exists from here on
    with saved_for_backward(trainer.network) as saved:
        trainer.step(image, label)
    trainer.optimizer.zero_grad(set_to_none=True)
    held = tensor_bytes(trainer.network.parameters()) + tensor_bytes(
        t for state in trainer.optimizer.state.values() for t in state.values())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        trainer.step(image, label)
    events = [e for e in profile.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = highest = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        highest = max(highest, running)
    return {"saved": sum(saved.values()), "peak": held + highest + tensor_bytes((image, label))}


def measure_cuda(spec, plan, settings) -> int:
    """torch.cuda.max_memory_allocated over one AMP training step after a warm-up step (bytes)."""
    device = torch.device("cuda")
    trainer = trainer_for(spec, settings, device, amp=True)
    image, label = step_inputs(spec, plan, device)
    trainer.step(image, label)
    trainer.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer.step(image, label)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del trainer, image, label
    torch.cuda.empty_cache()
    return peak


def describe(config, spec, plan) -> str:
    encoder = spec.encoder
    blocks = "-".join(map(str, encoder.blocks_per_stage))
    dropout = " dropout" if encoder.dropout or spec.decoder.dropout else ""
    return (f"{encoder.kind[:3]} {encoder.norm[:5]} {encoder.nonlin}{dropout} blocks {blocks} {config['optimizer']} "
            f"b{plan.batch_size} {'x'.join(map(str, plan.patch_size))}")


def cpu_table(configs, setup) -> list[str]:
    rows = ["| # | network (encoder, optimizer, batch, patch) | est. activations MiB | saved MiB | ratio | "
            "est. total MiB | peak MiB | ratio | s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = {"saved": [], "peak": []}
    for index, config in enumerate(configs):
        spec, plan, settings = network(config, setup)
        estimate = training_memory(spec, tuple(plan.patch_size), plan.batch_size, amp=False,
                                   optimizer=settings.optimizer)
        started = time.perf_counter()
        measured = measure_cpu(spec, plan, settings)
        seconds = time.perf_counter() - started
        saved_ratio, peak_ratio = estimate.activations / measured["saved"], estimate.total / measured["peak"]
        ratios["saved"].append(saved_ratio)
        ratios["peak"].append(peak_ratio)
        rows.append(f"| {index} | {describe(config, spec, plan)} | {estimate.activations / MIB:.1f} | "
                    f"{measured['saved'] / MIB:.1f} | {saved_ratio:.2f} | {estimate.total / MIB:.1f} | "
                    f"{measured['peak'] / MIB:.1f} | {peak_ratio:.2f} | {seconds:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress
    for name, values in ratios.items():
        rows.append(f"\nestimate / {name}: median {np.median(values):.2f}, min {min(values):.2f}, "
                    f"max {max(values):.2f}")
    return rows


def cuda_table(configs, setup) -> list[str]:
    rows = [f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, AMP",
            "| # | network (encoder, optimizer, batch, patch) | estimate MiB | max_memory_allocated MiB | ratio |",
            "|---:|---|---:|---:|---:|"]
    ratios = []
    for index, config in enumerate(configs):
        spec, plan, settings = network(config, setup)
        estimate = training_memory(spec, tuple(plan.patch_size), plan.batch_size, amp=True,
                                   optimizer=settings.optimizer).total
        try:
            measured = measure_cuda(spec, plan, settings)
        except torch.cuda.OutOfMemoryError:
            rows.append(f"| {index} | {describe(config, spec, plan)} | {estimate / MIB:.0f} | out of memory | - |")
            torch.cuda.empty_cache()
            continue
        ratios.append(estimate / measured)
        rows.append(f"| {index} | {describe(config, spec, plan)} | {estimate / MIB:.0f} | {measured / MIB:.0f} | "
                    f"{ratios[-1]:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress
    if ratios:
        rows.append(f"\nestimate / measured: median {np.median(ratios):.2f}, min {min(ratios):.2f}, "
                    f"max {max(ratios):.2f}")
    return rows


def prostate_estimator() -> tuple[MemoryEstimator, object]:
    fingerprint = Fingerprint(name="Prostate-like", spacings=(PROSTATE_SPACING,) * PROSTATE_CASES,
                              shapes_after_crop=(PROSTATE_SHAPE,) * PROSTATE_CASES, channel_names=("T2", "ADC"),
                              labels=(("background", 0), ("PZ", 1), ("TZ", 2)))
    plan = NNUNET.apply(make_plan(fingerprint))
    residual = NNUNET.apply(make_plan(fingerprint, planner="resenc_m"))
    grammar = make_grammar(plan)
    space = make_space("hpo+hnas", GrammarArchitecture(grammar, "medium"), confidence="medium")
    return MemoryEstimator(plan, grammar, residual_plan=residual), space


def fraction_rows(name: str, estimator: MemoryEstimator, space, n: int, seed: int) -> str:
    estimates = np.array([estimator.gib(config) for config in sampled_configs(space, n, seed)])
    plan, residual = estimator.plan, estimator.residual_plan
    over = " | ".join(f"{np.mean(estimates > budget):.1%}" for budget in BUDGETS_GB)
    return (f"| {name} | {'x'.join(map(str, plan.patch_size))} b{plan.batch_size} (ResEnc M "
            f"{'x'.join(map(str, residual.patch_size))} b{residual.batch_size}) | "
            f"{estimator.gib(space.default_config()):.2f} | "
            f"{np.median(estimates):.2f} | {estimates.max():.1f} | {over} |")


def fractions_table(dataset: str | None, n: int, seed: int) -> list[str]:
    rows = [f"{n} prior draws of hpo+hnas (seed {seed}), nnunet preset, AMP; estimates in GB (GiB)",
            "| plan | patch, batch | default | median | max | pruned at 8 GB | pruned at 24 GB |",
            "|---|---|---:|---:|---:|---:|---:|"]
    if dataset is not None:
        setup = resolve(SearchSettings(dataset=dataset, preset="nnunet"))
        rows.append(fraction_rows("hippocampus (Dataset004)", MemoryEstimator.of(setup), setup.space(), n, seed))
    estimator, space = prostate_estimator()
    rows.append(fraction_rows("prostate-like", estimator, space, n, seed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    tables = ("cpu", "cuda", "fractions")
    parser.add_argument("--tables", nargs="+", choices=tables, default=tables)
    parser.add_argument("--networks", type=int, default=12, help="sampled networks of the cpu and cuda tables")
    parser.add_argument("--draws", type=int, default=1000, help="prior draws per plan of the fractions table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    dataset = dataset_path()
    print(f"dataset: {dataset or 'built-in synthetic data'}")
    if "cpu" in args.tables:
        setup = resolve(SearchSettings(dataset=dataset, preset="cpu"))
        print("\n".join(cpu_table(sampled_configs(setup.space(), args.networks, args.seed), setup)))
    if "cuda" in args.tables:
        if torch.cuda.is_available():
            setup = resolve(SearchSettings(dataset=dataset, preset="nnunet"))
            print("\n".join(cuda_table(sampled_configs(setup.space(), args.networks, args.seed), setup)))
        else:
            print("cuda: no GPU here (torch.cuda.is_available() is False); table skipped")
    if "fractions" in args.tables:
        print("\n".join(fractions_table(dataset, args.draws, args.seed)))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
