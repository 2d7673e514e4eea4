"""The killed/survived table of the last `make mutation` run (docs/mutation.md).

Reads mutmut's per-file results (``mutants/**/*.py.meta``) and prints one row per module group:
mutants, killed, survived, timeout, other (no tests / suspicious / segfault / not checked) and the
share killed. A timeout counts as killed in the share (mutmut's convention: the mutant changed
behaviour enough to hang the tests), and is shown apart so it can be looked at. With
``--survivors`` it also lists the surviving mutants' names (``mutmut show NAME`` prints the diff).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

#: module group -> the source files mutated for it (pyproject.toml, [tool.mutmut] only_mutate)
GROUPS: dict[str, tuple[str, ...]] = {
    "planner": ("src/hnas/planning/planner.py",),
    "fold split": ("src/hnas/data/splits.py",),
    "prior": ("src/hnas/priors.py", "src/hnas/sampling/prior.py"),
    "optimizers": ("src/hnas/search/optimizers.py", "src/hnas/search/fidelity.py",
                   "src/hnas/search/bohb.py"),
    "pareto": ("src/hnas/search/pareto.py",),
    "evaluation": ("src/hnas/train/evaluation.py",),
    "post-processing": ("src/hnas/train/postprocessing.py",),
    "ensemble": ("src/hnas/train/ensemble.py",),
    "checkpoint": ("src/hnas/train/checkpoint.py",),
}


def exit_codes(root: Path, source: str) -> dict[str, int | None]:
    meta = root / "mutants" / f"{source}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def table(root: Path) -> tuple[list[str], list[str]]:
    lines = ["| module | mutants | killed | survived | timeout | other | % killed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    survivors, totals = [], Counter()
    for group, sources in GROUPS.items():
        counts = Counter()
        for source in sources:
            for name, code in exit_codes(root, source).items():
                status = status_by_exit_code[code]
                counts[status if status in ("killed", "survived", "timeout") else "other"] += 1
                if status == "survived":
                    survivors.append(name)
        totals.update(counts)
        lines.append(_row(group, counts))
    lines.append(_row("**all**", totals))
    return lines, sorted(survivors)


def _row(name: str, counts: Counter) -> str:
    total = sum(counts.values())
    share = f"{100 * (counts['killed'] + counts['timeout']) / total:.1f}" if total else "-"
    return (f"| {name} | {total} | {counts['killed']} | {counts['survived']} | {counts['timeout']} | "
            f"{counts['other']} | {share} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository (holds mutants/)")
    parser.add_argument("--survivors", action="store_true", help="also list the surviving mutants")
    args = parser.parse_args()
    lines, survivors = table(args.root)
    print("\n".join(lines))
    if args.survivors and survivors:
        print("\nsurvivors:\n" + "\n".join(survivors))


if __name__ == "__main__":
    main()
