"""`make demo`: the whole grammar pipeline on the built-in synthetic data.

Generates the data (once), plans it like nnU-Net with a 6-stage topology, writes the grammar,
samples derivations around nnU-Net's defaults, compiles them and draws one. It does not
search: that arrives with `hnas search`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hnas import workflow
from hnas.cli import main as cli


def run(out: Path, max_stages: int = 6, samples: int = 5, seed: int = 0) -> int:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"[1/5] built-in synthetic dataset: {workflow.builtin_dataset()}")
    steps = [
        ("[2/5] nnU-Net plan", ["plan", "--max-stages", str(max_stages), "-o", str(out / "plan.json")]),
        ("[3/5] grammar", ["grammar", "--plan", str(out / "plan.json"), "-o", str(out / "grammar.lark")]),
        ("[4/5] prior samples (medium confidence)",
         ["sample", "--grammar", str(out / "grammar.lark"), "-n", str(samples), "--seed", str(seed)]),
        ("[5/5] nnU-Net's default derivation, compiled",
         ["show", "default", "--plan", str(out / "plan.json"), "--render", str(out / "derivation.svg")]),
    ]
    for title, argv in steps:
        print(f"\n{title}: hnas {' '.join(argv)}")
        code = cli(argv)
        if code:
            return code
    print(f"\ndemo finished in {time.perf_counter() - start:.1f} s; outputs in {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hnas.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--max-stages", type=int, default=6)
    args = parser.parse_args(argv)
    return run(args.out, args.max_stages)


if __name__ == "__main__":
    sys.exit(main())
