"""`make demo`: `hnas search --max-stages 6` on the built-in synthetic data, then a look at
the incumbent (derivation tree and network diagram).

The built-in data is generated on first use; the CPU preset keeps the search to minutes on
two cores. Everything lands in ``--out`` (default ``demo-output/``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hnas.cli import main as cli
from hnas.pipeline.layout import RunFolder
from hnas.search import load_run

#: What `make demo` asks of `hnas search` beyond --max-stages: the CPU preset's networks, epochs
#: 1..9 and budget (3 max-fidelity trainings), with twice its iterations per epoch so networks
#: see more of the built-in structures; README.md 'Quick start' has the measured time and Dice.
DEMO_ITERATIONS_PER_EPOCH = 16
DEMO_SEARCH_ARGS = ["--iterations-per-epoch", str(DEMO_ITERATIONS_PER_EPOCH)]

#: Printed after the demo, so its numbers are read as what they are.
BUDGET_NOTE = f"""
Note: the demo is sized for minutes on a CPU: small networks (features 8..64, a patch of at
most 48^3 voxels, batch 2) train at most 9 epochs x {DEMO_ITERATIONS_PER_EPOCH} iterations and are validated on
two held-out cases. The built-in lesions are bright and fill ~6% of the volume, so nnU-Net's
default network reaches a Dice of ~0.8 within {9 * DEMO_ITERATIONS_PER_EPOCH} iterations and the search has little room
above it; what it can find here is a configuration that gets there in fewer iterations (the
'fastest' line above, when there is one). Real data needs more iterations (README: 'Searching'),
or a GPU with --preset nnunet."""


#: "As good as the default" for the demo's cheapest-configuration line: within this much Dice.
DICE_TOLERANCE = 0.01


def default_vs_incumbent(run_dir: Path) -> str:
    """The default configuration's Dice beside the incumbent's, and the cheapest trial within
    DICE_TOLERANCE of the default: the search weighs training runtime too, so its gain over nnU-Net's
    choice can be speed rather than accuracy."""
    summary = load_run(run_dir)
    default = max((t for t in summary.successes if t.job.sampler == "default"), key=lambda t: t.fidelity,
                  default=None)
    rows = [("nnU-Net default", default), ("incumbent", summary.incumbent)]
    if default is not None:
        close = [t for t in summary.successes if t.loss <= default.loss + DICE_TOLERANCE]
        fastest = min(close, key=lambda t: t.cost)
        if fastest.cost < default.cost:
            rows.append((f"fastest within {DICE_TOLERANCE:g} of the default", fastest))
    width = max(len(name) for name, _ in rows)
    lines = ["validation Dice (mean of the foreground labels):"]
    for name, trial in rows:
        if trial is None:
            lines.append(f"  {name:<{width}} -")
        else:
            lines.append(f"  {name:<{width}} {1 - trial.loss:.3f}  (trial {trial.trial_id}, {trial.fidelity:g} epochs, "
                         f"{trial.cost:.0f} s training)")
    return "\n".join(lines)


def run(out: Path, max_stages: int = 6, extra: list[str] | None = None) -> int:
    start = time.perf_counter()
    folder = RunFolder(out / "run")
    run_dir = folder.root
    argv = ["search", "--max-stages", str(max_stages), "--run-dir", str(run_dir), *DEMO_SEARCH_ARGS, *(extra or [])]
    if folder.database.exists():
        argv.append("--resume")  # a second `make demo` continues (or just reports) the same run
    print(f"$ hnas {' '.join(argv)}", flush=True)
    code = cli(argv)
    if code:
        return code
    print(f"\n{default_vs_incumbent(run_dir)}", flush=True)
    incumbent = load_run(run_dir).incumbent
    if incumbent is not None:
        architecture = incumbent.config.get("architecture") or "default"
        show = ["show", architecture, "--plan", str(folder.plan), "--render", str(out / "incumbent.svg")]
        print(f"\n$ hnas {' '.join(show[:1])} <incumbent> {' '.join(show[2:])}", flush=True)
        code = cli(show)
    if not code:
        report = ["report", str(run_dir), "-o", str(out / "report")]
        print(f"\n$ hnas {' '.join(report)}", flush=True)
        code = cli(report)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")
    print(BUDGET_NOTE)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hnas.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--max-stages", type=int, default=6)
    args, extra = parser.parse_known_args(argv)
    return run(args.out, args.max_stages, extra)


if __name__ == "__main__":
    sys.exit(main())
