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

#: Printed after the demo, so a low Dice is read as the demo's budget, not as the toolkit's result.
BUDGET_NOTE = """
Note: the demo is sized for minutes on a CPU: each network trains at most 9 epochs x 8
iterations (batch 2). The built-in structures are small (under 1% of the volume), so after
72 iterations networks still predict many false positives and Dice stays low; the search
machinery (priors, promotions, continuation, resume, reports) is what the demo shows. On
real data give the CPU preset more iterations (README: 'Searching'), or use a GPU with
--preset nnunet."""


def run(out: Path, max_stages: int = 6, extra: list[str] | None = None) -> int:
    start = time.perf_counter()
    run_dir = out / "run"
    argv = ["search", "--max-stages", str(max_stages), "--run-dir", str(run_dir), *(extra or [])]
    if (run_dir / "search.sqlite").exists():
        argv.append("--resume")  # a second `make demo` continues (or just reports) the same run
    print(f"$ hnas {' '.join(argv)}", flush=True)
    code = cli(argv)
    if code:
        return code
    from hnas.search import load_run

    incumbent = load_run(run_dir).incumbent
    if incumbent is not None:
        architecture = incumbent.config.get("architecture") or "default"
        show = ["show", architecture, "--plan", str(run_dir / "plan.json"), "--render", str(out / "incumbent.svg")]
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
