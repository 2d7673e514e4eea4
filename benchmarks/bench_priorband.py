"""PriorBand on the multi-fidelity Hartmann functions, side by side with NePS 0.17.

For Hartmann-3 and -6 (``hnas.testing.hartmann``; fidelity z in 1..100, eta 3) and the good,
medium and bad priors it runs, per seed, random search, Hyperband and our PriorBand through the
engine's ask/tell protocol in-process, and NePS 0.17.0's PriorBand in NePS's own virtualenv
(``benchmarks/.neps-venv``, created on first use; ``neps_runner.py`` runs there and returns
every evaluation as JSON). Every optimizer is scored by the same code:

* budget = cumulative evaluation cost ``0.05 + 0.95 (z/100)^2`` in units of one max-fidelity
  evaluation (every evaluation is charged in full, as in the PriorBand paper's suite);
* incumbent = the configuration with the best *observed* value so far (any fidelity);
  regret = its noise-free value minus the optimum.

BOHB (prior-free) and PriorBand+BO (per prior) run beside them through the same protocol.
It prints the median regret [Q1, Q3] over seeds at 1x, 2x, 5x, 10x and 20x the max-fidelity
budget, then PASS/FAIL for the targets of issues 3 and 6 (BOHB beats random search and
Hyperband on Hartmann-6 at 10x and 20x: lower median and one-sided Mann-Whitney p < 0.05;
PriorBand+BO no worse than PriorBand with good/medium priors, lower median at 20x with the
bad one). "No worse within seed noise" means: the median is no higher, or a one-sided
Mann-Whitney U test does not find it higher (p >= 0.05).

A multi-objective section minimises (loss, cost) with cost = fidelity cost x a config term
``0.1 + mean(x)`` and compares the hypervolume reached by Regularized PriorBand, Hyperband with
non-dominated-sorting promotion (random inside a front) and random search at equal budget.

    python benchmarks/bench_priorband.py             # full: 10 seeds, both functions, NePS
    python benchmarks/bench_priorband.py --quick     # CI smoke run (< 60 s, no NePS)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from hnas.search import Float, SearchSpace, Trial, hypervolume, make_optimizer  # noqa: E402
from hnas.testing.hartmann import (  # noqa: E402
    BIAS_NOISE,
    FIDELITY_MAX,
    FIDELITY_MIN,
    PRIOR_QUALITIES,
    MFHartmann,
)

ETA = 3
#: Rows that ignore the prior (one run per seed serves every prior) and rows that use it.
PRIOR_FREE = [("random", "random search"), ("hyperband", "Hyperband"), ("bohb", "BOHB")]
WITH_PRIOR = [("priorband", "PriorBand (ours)"), ("priorband-bo", "PriorBand+BO")]
BUDGET_POINTS = (1, 2, 5, 10, 20)
MO_BUDGET_POINTS = (5, 10, 20)
#: Our "medium" numeric prior is a truncated normal with std 0.25 x range (the PriorBand paper's
#: NePS <= 0.12, ``neps/search_spaces/hyperparameters/float.py``: FLOAT_CONFIDENCE_SCORES
#: medium = 0.25, std = range x score); NePS 0.17 maps confidence c to std 1 - c, so its "high"
#: (0.75) is the same distribution.
OUR_CONFIDENCE, NEPS_CONFIDENCE = "medium", "high"
NEPS_VERSION = "0.17.0"
TORCH_PIN = "torch==2.13.0+cpu"  # the local CPU wheel; PyPI's plain torch would pull CUDA
ALPHA = 0.05

#: Measured with NePS 0.17.0 (neural-pipeline-search) on Hartmann-3, fidelity 1..100, eta 3:
#: median regret at 1x/2x/5x/10x/20x the max-fidelity budget over 10 seeds.
NEPS_REFERENCE = {
    "random search": (3.24, 3.08, 1.65, 0.93, 0.33),
    "Hyperband": (3.41, 2.51, 0.52, 0.49, 0.34),
    "PriorBand, medium prior": (0.059, 0.059, 0.059, 0.059, 0.059),
    "PriorBand, bad prior": (3.86, 3.52, 0.89, 0.36, 0.25),
}


@dataclass(frozen=True)
class Evaluation:
    config: dict[str, float]
    fidelity: float
    loss: float
    cost: float            # what the evaluation is charged against the budget


# -- running optimizers -------------------------------------------------------------------------
def make_space(function: MFHartmann, prior: Mapping[str, float]) -> SearchSpace:
    return SearchSpace([Float(name, 0.0, 1.0, default=prior[name], confidence=OUR_CONFIDENCE)
                        for name in function.names])


def config_term(config: Mapping[str, float]) -> float:
    """The multi-objective cost's config-dependent factor, in [0.1, 1.1] ("model size")."""
    return 0.1 + float(np.mean(list(config.values())))


def run_ours(optimizer: str, function: MFHartmann, prior: str, seed: int, budget: float, *,
             multi_objective: bool = False, **options: Any) -> list[Evaluation]:
    """Drive one engine optimizer through ask/tell until ``budget`` is spent."""
    space = make_space(function, function.prior(prior))
    opt = make_optimizer(optimizer, space, min_fidelity=FIDELITY_MIN, max_fidelity=FIDELITY_MAX,
                         eta=ETA, seed=seed, **options)
    history: list[Trial] = []
    evaluations: list[Evaluation] = []
    spent = 0.0
    while spent < budget - 1e-9:
        job = opt.ask(history)
        if job is None:
            raise RuntimeError(f"{optimizer} returned no job with nothing pending "
                               f"(trial {len(history)}, seed {seed})")
        config = {name: float(job.config[name]) for name in function.names}
        loss, charge = function(config, job.fidelity), function.cost(job.fidelity)
        objective_cost = charge * config_term(config) if multi_objective else charge
        trial = Trial.pending(job).succeeded(loss, objective_cost)
        history.append(trial)
        opt.tell(trial)
        spent += charge
        evaluations.append(Evaluation(config, job.fidelity, loss, charge))
    return evaluations


def neps_python(venv: Path) -> Path:
    """NePS's interpreter, creating ``venv`` (torch pinned to the CPU wheel) when needed."""
    python = venv / "bin" / "python"
    if python.exists() and _has_neps(python):
        return python
    _say(f"creating {venv} with neural-pipeline-search=={NEPS_VERSION} (a few minutes) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    constraints = venv / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH_PIN], check=True)
    subprocess.run(pip + ["-c", str(constraints), f"neural-pipeline-search=={NEPS_VERSION}"],
                   check=True)
    if not _has_neps(python):
        raise RuntimeError(f"{venv}: NePS {NEPS_VERSION} or the CPU torch is missing after install")
    return python


def _has_neps(python: Path) -> bool:
    check = ("import importlib.metadata as m, torch; "
             f"assert m.version('neural-pipeline-search') == '{NEPS_VERSION}'; "
             "assert torch.version.cuda is None and torch.__version__.startswith('2.13.0')")
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def run_neps(python: Path | None, tasks: list[dict],
             saved: Path | None = None) -> dict[str, list[Evaluation]]:
    """All NePS runs in one subprocess (its import alone takes seconds).

    With ``saved``, a task recorded there with the same settings is not run again (NePS's side
    is slow and does not change with our code); the new runs are added to the file.
    """
    stored = json.loads(saved.read_text()) if saved is not None and saved.exists() else {}
    missing = [t for t in tasks if stored.get(t["key"], {}).get("task") != t]
    if missing:
        if python is None:
            raise RuntimeError(f"{len(missing)} NePS task(s) are not in {saved} and NePS is "
                               "unavailable")
        with tempfile.TemporaryDirectory() as tmp:
            request, answer = Path(tmp, "tasks.json"), Path(tmp, "results.json")
            request.write_text(json.dumps({"src": str(SRC), "tasks": missing}))
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            done = subprocess.run([str(python), str(HERE / "neps_runner.py"), str(request),
                                   str(answer)], env=env)
            if done.returncode != 0 or not answer.exists():
                raise RuntimeError(f"neps_runner.py exited {done.returncode} (its traceback is "
                                   "on stderr above)")
            results = json.loads(answer.read_text())["results"]
        by_key = {t["key"]: t for t in missing}
        for r in results:
            stored[r["key"]] = {"task": by_key[r["key"]], "evaluations": r["evaluations"]}
        if saved is not None:
            saved.write_text(json.dumps(stored))
    return {t["key"]: [Evaluation(e["config"], e["fidelity"], e["value"], e["cost"])
                       for e in stored[t["key"]]["evaluations"]] for t in tasks}


# -- scoring -----------------------------------------------------------------------------------
def regret_at(evaluations: Sequence[Evaluation], function: MFHartmann,
              points: Sequence[float]) -> list[float]:
    """Regret of the observed-best configuration once each budget point is reached (NaN before
    the first evaluation finishes)."""
    spent = np.cumsum([e.cost for e in evaluations])
    regrets, best, last = [], None, 0
    for point in points:
        while last < len(evaluations) and spent[last] <= point + 1e-9:
            if best is None or evaluations[last].loss < best.loss:
                best = evaluations[last]
            last += 1
        regrets.append(function.regret(best.config) if best is not None else float("nan"))
    return regrets


def hypervolume_at(evaluations: Sequence[Evaluation], function: MFHartmann,
                   points: Sequence[float]) -> list[float]:
    """Normalised hypervolume of the max-fidelity results' (regret, config term) front.

    Reference point (|f*|, 1.1); 1.0 would be a single point with zero regret and the
    smallest possible cost term 0.1.
    """
    spent = np.cumsum([e.cost for e in evaluations])
    reference = (abs(function.optimum_value), 1.1)
    area = reference[0] * (reference[1] - 0.1)
    volumes = []
    for point in points:
        front = [(function.regret(e.config), config_term(e.config))
                 for e, s in zip(evaluations, spent)
                 if s <= point + 1e-9 and e.fidelity >= function.z_max]
        volumes.append(hypervolume(np.array(front).reshape(-1, 2), reference) / area)
    return volumes


def summary(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{_num(med)} [{_num(q1)}, {_num(q3)}]"


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def no_worse(ours: Sequence[float], theirs: Sequence[float]) -> tuple[bool, str]:
    """Ours (lower is better) is no worse than theirs within seed noise."""
    a, b = np.asarray(ours, float), np.asarray(theirs, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return False, "no data"
    med_a, med_b = float(np.median(a)), float(np.median(b))
    if med_a <= med_b + 1e-12:
        return True, f"median {_num(med_a)} <= {_num(med_b)}"
    p = float(stats.mannwhitneyu(a, b, alternative="greater").pvalue)
    verdict = p >= ALPHA
    return verdict, f"median {_num(med_a)} > {_num(med_b)}, one-sided Mann-Whitney p={p:.3f}"


# -- the benchmark -----------------------------------------------------------------------------
def single_objective(args, functions: dict[str, Callable[[int], MFHartmann]],
                     neps: Path | None) -> tuple[dict, list[tuple[str, bool | None, str]]]:
    budget = max(BUDGET_POINTS)
    curves: dict[tuple[str, str, str], list[list[float]]] = {}
    neps_tasks = []
    prior_free = [(o, label) for o, label in PRIOR_FREE if o in args.rows]
    with_prior = [(o, label) for o, label in WITH_PRIOR if o in args.rows]
    for name, make in functions.items():
        for seed in args.seeds:
            f = make(seed)
            for optimizer, label in prior_free:
                curve = regret_at(run_ours(optimizer, f, "medium", seed, budget), f, BUDGET_POINTS)
                for prior in args.priors:   # none looks at the prior: one run serves all
                    curves.setdefault((name, prior, label), []).append(curve)
            for prior in args.priors:
                for optimizer, label in with_prior:
                    curve = regret_at(run_ours(optimizer, f, prior, seed, budget), f,
                                      BUDGET_POINTS)
                    curves.setdefault((name, prior, label), []).append(curve)
                neps_tasks.append({"key": f"{name}|{prior}|{seed}", "dims": f.dims,
                                   "bias": f.bias, "noise": f.noise, "seed": seed,
                                   "prior": f.prior(prior), "confidence": NEPS_CONFIDENCE,
                                   "eta": ETA, "budget": budget})
        _say(f"{name}: our optimizers done ({time.perf_counter() - START:.0f}s)")
    with_neps = not args.no_neps and (neps is not None or args.neps_results is not None)
    if with_neps:
        try:
            neps_runs = run_neps(neps, neps_tasks, args.neps_results)
        except (RuntimeError, OSError, ValueError) as error:
            _say(f"NePS failed, its comparisons are skipped: {error}")
            neps_runs, with_neps = {}, False
        for key, evaluations in neps_runs.items():
            name, prior, seed = key.split("|")
            curve = regret_at(evaluations, functions[name](int(seed)), BUDGET_POINTS)
            curves.setdefault((name, prior, "PriorBand (NePS 0.17)"), []).append(curve)
        _say(f"NePS done ({time.perf_counter() - START:.0f}s)")
    return curves, targets(args, functions, curves, with_neps)


def beats(ours: Sequence[float], theirs: Sequence[float]) -> tuple[bool, str]:
    """Ours (lower is better) is better: a lower median and a one-sided Mann-Whitney U test
    finding ours lower (p < 0.05)."""
    a, b = np.asarray(ours, float), np.asarray(theirs, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return False, "no data"
    med_a, med_b = float(np.median(a)), float(np.median(b))
    p = float(stats.mannwhitneyu(a, b, alternative="less").pvalue)
    return med_a < med_b and p < ALPHA, f"median {_num(med_a)} vs {_num(med_b)}, p={p:.3f}"


def model_based_targets(args, functions, curves) -> list[tuple[str, bool | None, str]]:
    """Issue 6: BOHB beats random search and Hyperband at 10x and 20x on Hartmann-6;
    PriorBand+BO is no worse than PriorBand everywhere with good and medium priors and better
    at 20x with the bad prior."""
    results: list[tuple[str, bool | None, str]] = []
    column = {b: i for i, b in enumerate(BUDGET_POINTS)}
    prior = args.priors[0]
    if all(("hartmann6", prior, label) in curves
           for label in ("BOHB", "random search", "Hyperband")):
        bohb = np.array(curves[("hartmann6", prior, "BOHB")])
        for other in ("random search", "Hyperband"):
            theirs = np.array(curves[("hartmann6", prior, other)])
            for b in (10, 20):
                results.append((f"hartmann6: BOHB beats {other} at {b}x",
                                *beats(bohb[:, column[b]], theirs[:, column[b]])))
    for name in functions:
        for prior in args.priors:
            needed = {(name, prior, "PriorBand+BO"), (name, prior, "PriorBand (ours)")}
            if not needed <= set(curves):
                continue   # a row left out by --rows
            ours = np.array(curves[(name, prior, "PriorBand+BO")])
            theirs = np.array(curves[(name, prior, "PriorBand (ours)")])
            if prior in ("good", "medium"):
                for b, i in column.items():
                    results.append((f"{name} {prior}: PriorBand+BO no worse than PriorBand at {b}x",
                                    *no_worse(ours[:, i], theirs[:, i])))
            elif prior == "bad":
                i = column[20]
                a, t = float(np.median(ours[:, i])), float(np.median(theirs[:, i]))
                p = float(stats.mannwhitneyu(ours[:, i], theirs[:, i], alternative="less").pvalue)
                results.append((f"{name} bad: PriorBand+BO better than PriorBand at 20x", a < t,
                                f"median {_num(a)} vs {_num(t)}, one-sided Mann-Whitney p={p:.3f}"))
    return results


def targets(args, functions, curves, with_neps: bool) -> list[tuple[str, bool | None, str]]:
    results: list[tuple[str, bool | None, str]] = []
    column = {b: i for i, b in enumerate(BUDGET_POINTS)}
    for name in functions:
        if (name, args.priors[0], "PriorBand (ours)") not in curves:
            continue   # left out by --rows
        for prior in args.priors:
            ours = np.array(curves[(name, prior, "PriorBand (ours)")])
            for b, i in column.items():
                label = f"{name} {prior}: ours no worse than NePS at {b}x"
                if not with_neps:
                    results.append((label, None, "NePS not run"))
                    continue
                theirs = np.array(curves[(name, prior, "PriorBand (NePS 0.17)")])
                results.append((label, *no_worse(ours[:, i], theirs[:, i])))
        if "medium" in args.priors and name == "hartmann3":
            med = float(np.nanmedian(np.array(curves[(name, "medium", "PriorBand (ours)")])[:, 0]))
            results.append((f"{name} medium: median regret at 1x <= 0.1", med <= 0.1,
                            f"median {_num(med)}"))
        if "bad" in args.priors and (name, "bad", "Hyperband") in curves:
            ours = np.array(curves[(name, "bad", "PriorBand (ours)")])[:, column[20]]
            hb = np.array(curves[(name, "bad", "Hyperband")])[:, column[20]]
            results.append((f"{name} bad: ours no worse than Hyperband at 20x", *no_worse(ours, hb)))
    return results + model_based_targets(args, functions, curves)


def multi_objective(args, functions) -> dict:
    budget = max(MO_BUDGET_POINTS)
    volumes: dict[tuple[str, str, str], list[list[float]]] = {}
    for name, make in functions.items():
        for seed in args.seeds:
            f = make(seed)
            shared = {
                "random search": run_ours("random", f, "medium", seed, budget,
                                          multi_objective=True),
                "MO-Hyperband (NDS, random)": run_ours("hyperband", f, "medium", seed, budget,
                                                       multi_objective=True,
                                                       promotion="nds-random"),
            }
            for prior in args.priors:
                runs = {**shared, "Regularized PriorBand": run_ours(
                    "regularized-priorband", f, prior, seed, budget, multi_objective=True)}
                for label, evaluations in runs.items():
                    volumes.setdefault((name, prior, label), []).append(
                        hypervolume_at(evaluations, f, MO_BUDGET_POINTS))
        _say(f"{name}: multi-objective done ({time.perf_counter() - START:.0f}s)")
    return volumes


def print_regret_tables(args, functions, curves) -> None:
    header = "| optimizer | prior | " + " | ".join(f"{b}x" for b in BUDGET_POINTS) + " |"
    rule = "|---|---|" + "---|" * len(BUDGET_POINTS)
    for name in functions:
        print(f"\n### {name}: median regret [Q1, Q3] over {len(args.seeds)} seeds\n")
        print(header)
        print(rule)
        labels = [label for _, label in PRIOR_FREE + WITH_PRIOR] + ["PriorBand (NePS 0.17)"]
        for prior in args.priors:
            for label in labels:
                if (name, prior, label) not in curves:
                    continue
                if label in dict(PRIOR_FREE).values() and prior != args.priors[0]:
                    continue   # prior-free: shown once
                rows = np.array(curves[(name, prior, label)])
                shown_prior = prior if label.startswith("PriorBand") else "-"
                cells = " | ".join(summary(rows[:, i]) for i in range(len(BUDGET_POINTS)))
                print(f"| {label} | {shown_prior} | {cells} |")
    if "hartmann3" in functions:
        print("\nFor context, NePS 0.17.0 measured on Hartmann-3 (10 seeds, medians):\n")
        print("| optimizer | " + " | ".join(f"{b}x" for b in BUDGET_POINTS) + " |")
        print("|---|" + "---|" * len(BUDGET_POINTS))
        for label, values in NEPS_REFERENCE.items():
            print(f"| {label} | " + " | ".join(f"{v:g}" for v in values) + " |")


def print_hypervolume_tables(args, functions, volumes) -> None:
    header = "| optimizer | prior | " + " | ".join(f"{b}x" for b in MO_BUDGET_POINTS) + " |"
    rule = "|---|---|" + "---|" * len(MO_BUDGET_POINTS)
    for name in functions:
        print(f"\n### {name}, (loss, cost x (0.1 + mean x)): normalised hypervolume of the "
              f"max-fidelity front, median [Q1, Q3] over {len(args.seeds)} seeds (higher is "
              "better)\n")
        print(header)
        print(rule)
        for prior in args.priors:
            for label in ("random search", "MO-Hyperband (NDS, random)", "Regularized PriorBand"):
                if label != "Regularized PriorBand" and prior != args.priors[0]:
                    continue
                rows = np.array(volumes[(name, prior, label)])
                shown_prior = prior if label == "Regularized PriorBand" else "-"
                cells = " | ".join(summary(rows[:, i]) for i in range(len(MO_BUDGET_POINTS)))
                print(f"| {label} | {shown_prior} | {cells} |")


def print_targets(results) -> int:
    print("\n### Targets\n")
    failures = 0
    for label, verdict, detail in results:
        word = "SKIP" if verdict is None else ("PASS" if verdict else "FAIL")
        failures += verdict is False
        print(f"- {word} {label} ({detail})")
    counted = [v for _, v, _ in results if v is not None]
    print(f"\n{sum(counted)} of {len(counted)} targets passed"
          + (f", {len(results) - len(counted)} skipped" if len(counted) < len(results) else ""))
    return failures


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    parser.add_argument("--functions", nargs="+", default=["hartmann3", "hartmann6"],
                        choices=["hartmann3", "hartmann6"])
    parser.add_argument("--priors", nargs="+", default=list(PRIOR_QUALITIES),
                        choices=list(PRIOR_QUALITIES))
    parser.add_argument("--variant", default="default", choices=list(BIAS_NOISE),
                        help="bias/noise preset of mf-prior-bench (default: 0.5/0.1)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run (< 60 s): 2 seeds, Hartmann-3, no NePS")
    parser.add_argument("--no-neps", action="store_true", help="skip NePS")
    parser.add_argument("--no-mo", action="store_true", help="skip the multi-objective section")
    parser.add_argument("--neps-venv", type=Path, default=HERE / ".neps-venv")
    parser.add_argument("--neps-results", type=Path, default=None, metavar="JSON",
                        help="keep NePS's evaluations in JSON and reuse those recorded with the "
                             "same settings (NePS's side does not change with our code)")
    parser.add_argument("--rows", nargs="+", default=[o for o, _ in PRIOR_FREE + WITH_PRIOR],
                        choices=[o for o, _ in PRIOR_FREE + WITH_PRIOR],
                        help="which of our optimizers to run (default: all); targets whose "
                             "rows were not run are skipped")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.quick:
        args.seeds, args.functions, args.no_neps = 2, ["hartmann3"], True
    args.seeds = list(range(args.seeds))
    return args


START = time.perf_counter()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    functions = {name: (lambda seed, name=name: MFHartmann.named(name, args.variant, seed=seed))
                 for name in args.functions}
    neps, neps_note = None, "skipped (--no-neps)" if args.no_neps else ""
    if not args.no_neps:
        try:
            neps = neps_python(args.neps_venv)
            neps_note = f"NePS {NEPS_VERSION} from {args.neps_venv}"
        except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
            neps_note = f"NePS unavailable, skipped: {error}"
    print(f"# PriorBand on multi-fidelity Hartmann (fidelity {FIDELITY_MIN}..{FIDELITY_MAX}, "
          f"eta {ETA}, variant {args.variant}, {len(args.seeds)} seeds)\n")
    print(f"Budget in max-fidelity evaluations (cost 0.05 + 0.95 (z/100)^2 per evaluation); "
          f"priors: our confidence '{OUR_CONFIDENCE}' = NePS '{NEPS_CONFIDENCE}' "
          f"(std 0.25); {neps_note}.")
    curves, results = single_objective(args, functions, neps)
    print_regret_tables(args, functions, curves)
    if not args.no_mo:
        print("\n## Multi-objective (equal fidelity budget)")
        print_hypervolume_tables(args, functions, multi_objective(args, functions))
    failures = print_targets(results)
    print(f"\nwall time {time.perf_counter() - START:.1f} s")
    return 1 if (args.strict and failures) else 0


if __name__ == "__main__":
    sys.exit(main())
