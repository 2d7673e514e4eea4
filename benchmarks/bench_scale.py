"""hnas at real dataset sizes (issue 20, item 4): time and peak memory of every step, per source tree.

Each step is its own ``python -m hnas.cli ...`` subprocess against the code in ``--src`` (PYTHONPATH
puts it first, as ``reliability_campaign.py`` does), with ``$HNAS_CACHE`` a fresh folder per run of
this script, on synthetic nnU-Net raw datasets (``hnas.data.synthetic``, 1 mm isotropic):

=================  =========================================================================================
plan               ``hnas plan DATASET -o plan.json``: read, validate, fingerprint, plan
plan again         the same command again: a reused fingerprint makes it fast
preprocessing      inside ``hnas search``: from the first folder under ``$HNAS_CACHE/preprocessed/<dataset>``
                   to its ``manifest*`` file (watched every 0.05 s), i.e. writing the cache (hashing the
                   files for its key comes before and is not counted); cache bytes per voxel = the bytes of
                   that folder / the raw image voxels
search (1 trial)   ``hnas search --preset cpu --optimizer random --max-trials 1``, 1 epoch of 1 iteration:
                   the whole command (fingerprint, preprocessing, training, validating fold 0's cases)
validation         ``hnas train --folds 0 1 2 3 4 --default --epochs 1 --iterations-per-epoch 1``: one
                   iteration per fold, then a full sliding window over every case (each case once)
find-best          ``hnas find-best`` over that model's 5 folds (every case's validation output)
predict            ``hnas predict --model RUN/cv/best_configuration.json`` on one case (5-fold ensemble)
=================  =========================================================================================

Time is the subprocess's wall time, and its CPU time (user + system from ``os.wait4``: the command and
the children it reaped, so not the workers of a forkserver pool, e.g. fingerprinting's); memory is
the peak resident memory of its process tree (psutil, sampled every 0.05 s: the sum over the tree's
processes; ``ru_maxrss`` of the largest single process, exact, is in the JSON). A step whose flags
the tree's ``--help`` lacks is N/A.

Grids: ``smoke`` (5 cases of 32^3, every step, folds 0 and 1 only: checks the script in under a
minute; exit 1 when a measured step fails or leaves no cache), ``quick`` (20 cases of 32^3; 5 cases
of 64^3), ``full`` (20 and 80 cases of 32^3 and 5 cases of 64^3 and 128^3 with every step; 320 cases
of 32^3 and 5 cases of 100x256x256 and 100x512x512 *light*: plan and preprocessing only, the search
stopped once the cache is written; their other steps get CPU time and peak memory extrapolated
linearly, in cases or in voxels per case, from the two measured points of their series, marked
``~``; wall time is not extrapolated, on a shared machine it follows the load more than the data;
on 2 cores a sliding window over 5 cases of 100x256x256 alone takes tens of minutes), ``large``
(the full grid's two light size points alone). ``--render JSON`` prints a saved run's tables.

    .venv/bin/python benchmarks/bench_scale.py --grid smoke
    .venv/bin/python benchmarks/bench_scale.py --src /work/before-scale/src --grid full --json before.json \
        --data-dir /work/scale-data
    .venv/bin/python benchmarks/bench_scale.py --grid full --json after.json --data-dir /work/scale-data
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.05
MIB = 2 ** 20
FOLDS = ["0", "1", "2", "3", "4"]
# Cheapest settings that still run every step: one random trial of one epoch of one iteration.
SEARCH = ["--preset", "cpu", "--optimizer", "random", "--max-trials", "1", "--min-epochs", "1",
          "--max-epochs", "1", "--iterations-per-epoch", "1", "--seed", "0", "--no-progress"]
CROSS_VALIDATE = ["--default", "--epochs", "1", "--iterations-per-epoch", "1"]
SMOKE_FOLDS = ["0", "1"]  # the smoke grid cross-validates 2 folds: the script's check stays under a minute
STEPS = ("plan", "plan again", "preprocessing", "search (1 trial)", "validation", "find-best", "predict")
# Flags each command needs, checked against the tree's --help (an older tree may lack some).
NEEDED_FLAGS = {
    "plan": ["--output"],
    "search": ["--dataset", "--preset", "--optimizer", "--max-trials", "--min-epochs", "--max-epochs",
               "--iterations-per-epoch", "--seed", "--no-progress", "--run-dir"],
    "train": ["--run", "--folds", "--default", "--epochs", "--iterations-per-epoch"],
    "find-best": ["--run"],
    "predict": ["--model", "--output"],
}


@dataclass(frozen=True)
class Point:
    """One dataset of the grid; ``light``: plan and preprocessing only (the rest is extrapolated)."""

    cases: int
    shape: tuple[int, int, int]  # (z, y, x)
    series: str  # "cases" or "size"
    light: bool = False

    @property
    def voxels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def label(self) -> str:
        return f"{self.cases} x {'x'.join(map(str, self.shape))}"

    @property
    def dataset_name(self) -> str:
        """Unique per point, so --data-dir is shared by every grid and tree."""
        return f"Dataset940_Scale{self.cases}c{'x'.join(map(str, self.shape))}"


def grid(name: str) -> list[Point]:
    if name == "smoke":
        return [Point(5, (32, 32, 32), "cases")]
    if name == "quick":
        return [Point(20, (32, 32, 32), "cases"), Point(5, (64, 64, 64), "size")]
    if name == "full":
        return [Point(20, (32, 32, 32), "cases"), Point(80, (32, 32, 32), "cases"),
                Point(320, (32, 32, 32), "cases", light=True),
                Point(5, (64, 64, 64), "size"), Point(5, (128, 128, 128), "size"),
                Point(5, (100, 256, 256), "size", light=True), Point(5, (100, 512, 512), "size", light=True)]
    if name == "large":  # the full grid's two light points alone
        return [point for point in grid("full") if point.series == "size" and point.light]
    raise SystemExit(f"unknown grid {name!r}; expected smoke, quick, full or large")


@dataclass
class Measurement:
    step: str
    seconds: float | None = None
    peak_mib: float | None = None  # process tree, sampled
    maxrss_mib: float | None = None  # largest single process, exact
    cpu_s: float | None = None  # user + system seconds of the tree's waited-for processes
    load_1min: float | None = None  # the machine's load average when the step ended (others' jobs)
    code: int | None = None
    note: str = ""
    extrapolated: bool = False
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- running one command


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants (processes that vanish mid-read count 0)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


class Watch:
    """Optional watcher of the preprocessing cache: when its folder appears and when its manifest does."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.started: float | None = None
        self.finished: float | None = None

    def poll(self, now: float) -> None:
        if self.folder is None or self.finished is not None or not self.folder.is_dir():
            return
        subfolders = [p for p in self.folder.iterdir() if p.is_dir()]
        if subfolders and self.started is None:
            self.started = now
        if any(f.name.startswith("manifest") for sub in subfolders for f in sub.iterdir()):
            self.finished = now


def sample(pid: int, process: psutil.Process, start: float, samples: list, done: threading.Event,
           watch: Watch | None, stop_when_watched: bool, timeout: float) -> bool:
    """Record the tree's RSS until the command ends; kill it at ``timeout`` or, if asked, once the watch
    has seen the preprocessing cache finished. True when it was killed."""
    killed = False
    while not done.is_set():
        now = time.monotonic() - start
        samples.append((now, tree_rss(process)))
        if watch is not None:
            watch.poll(now)
        stop = now > timeout or (stop_when_watched and watch is not None and watch.finished is not None)
        if stop and not killed:
            os.killpg(pid, 9)
            killed = True
        done.wait(POLL_S)
    return killed


def run_command(python: str, argv: list[str], env: dict, cwd: Path, *, watch: Watch | None = None,
                stop_when_watched: bool = False, timeout: float = 3600.0) -> tuple[Measurement, str, list]:
    """Run ``python -m hnas.cli argv``; its wall time, peak tree RSS and output (and the RSS samples)."""
    log = tempfile.TemporaryFile(mode="w+", errors="replace")
    start = time.monotonic()
    popen = subprocess.Popen([python, "-m", "hnas.cli", *argv], stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                             env=env, start_new_session=True)
    process = psutil.Process(popen.pid)
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    result: dict = {}

    def reap():  # os.wait4 gives this child's own rusage (its ru_maxrss), unlike RUSAGE_CHILDREN
        _, status, usage = os.wait4(popen.pid, 0)
        result["status"], result["maxrss"] = status, usage.ru_maxrss * 1024
        result["cpu"] = usage.ru_utime + usage.ru_stime
        result["end"] = time.monotonic()
        done.set()

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    try:
        killed = sample(popen.pid, process, start, samples, done, watch, stop_when_watched, timeout)
    finally:
        if not done.is_set():  # this script was interrupted: take the command down with it
            os.killpg(popen.pid, 9)
    reaper.join()
    popen.returncode = os.waitstatus_to_exitcode(result["status"])
    if watch is not None:
        watch.poll(result["end"] - start)
    log.seek(0)
    output = log.read()
    log.close()
    seconds = result["end"] - start
    peak = max((rss for _, rss in samples), default=0)
    measurement = Measurement(step=argv[0], seconds=seconds, peak_mib=peak / MIB, maxrss_mib=result["maxrss"] / MIB,
                              cpu_s=result["cpu"], load_1min=os.getloadavg()[0], code=popen.returncode)
    if popen.returncode != 0 and not (stop_when_watched and killed):
        measurement.note = f"exit {popen.returncode}: {last_line(output)}"
    return measurement, output, samples


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


# --------------------------------------------------------------------------- one source tree


class Bench:
    def __init__(self, src: Path, work: Path, data_dir: Path, folds: list[str] = FOLDS):
        self.src, self.work, self.data_dir, self.folds = src, work, data_dir, folds
        self.python = sys.executable
        self.cache = work / "cache"
        self.env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1", "HNAS_CACHE": str(self.cache),
                    "COLUMNS": "120"}
        self.missing = self.missing_flags()

    def missing_flags(self) -> dict[str, list[str]]:
        """Per command, the flags this script needs that the tree's --help does not mention."""
        missing = {}
        for command, flags in NEEDED_FLAGS.items():
            text = subprocess.run([self.python, "-m", "hnas.cli", command, "--help"], env=self.env,
                                  capture_output=True, text=True).stdout
            absent = [flag for flag in flags if flag not in text]
            if absent:
                missing[command] = absent
        return missing

    def step(self, name: str, command: str, argv: list[str], point_dir: Path, **kwargs) -> tuple[Measurement, str]:
        if command in self.missing:
            return Measurement(step=name, note=f"N/A: no {' '.join(self.missing[command])}"), ""
        measurement, output, samples = run_command(self.python, argv, self.env, point_dir, **kwargs)
        measurement.step = name
        watch = kwargs.get("watch")
        if watch is not None and watch.started is not None:  # the preprocessing window's own peak
            end = watch.finished if watch.finished is not None else float("inf")
            inside = [rss for t, rss in samples if watch.started <= t <= end]
            measurement.extra["window_peak_mib"] = max(inside, default=0) / MIB
        print(f"  {name:18s} {measurement.seconds:8.1f} s {measurement.cpu_s:8.1f} cpu s "
              f"{measurement.peak_mib:8.0f} MiB  load {measurement.load_1min:.1f} {measurement.note}",
              file=sys.stderr, flush=True)
        return measurement, output

    def dataset(self, point: Point) -> tuple[Path, float]:
        """The point's synthetic dataset (reused from --data-dir when complete), and seconds spent making it."""
        code = ("import sys; from hnas.data.synthetic import ensure_synthetic_dataset as make; "
                "print(make(sys.argv[1], n_cases=int(sys.argv[2]), shape=tuple(map(int, sys.argv[3:6])), "
                "spacing=(1.0, 1.0, 1.0), name=sys.argv[6]))")
        start = time.monotonic()
        out = subprocess.run([self.python, "-c", code, str(self.data_dir), str(point.cases), *map(str, point.shape),
                              point.dataset_name], env=self.env, capture_output=True, text=True, check=True)
        return Path(out.stdout.strip().splitlines()[-1]), time.monotonic() - start

    def measure(self, point: Point) -> dict:
        folder, made_s = self.dataset(point)
        print(f"{point.label} ({'plan + preprocessing' if point.light else 'every step'}; data {made_s:.0f} s)",
              file=sys.stderr, flush=True)
        point_dir = self.work / folder.name
        point_dir.mkdir(parents=True)
        run_dir = point_dir / "run"
        results = []
        plan, _ = self.step("plan", "plan", ["plan", str(folder), "--output", str(point_dir / "plan.json")], point_dir)
        again, _ = self.step("plan again", "plan", ["plan", str(folder)], point_dir)
        results += [plan, again]

        watch = Watch(self.cache / "preprocessed" / folder.name)
        search, output = self.step("search (1 trial)", "search",
                                   ["search", "--dataset", str(folder), *SEARCH, "--run-dir", str(run_dir)], point_dir,
                                   watch=watch, stop_when_watched=point.light)
        preprocessing = self.preprocessing(search, watch, folder, point)
        results.append(preprocessing)
        if point.light:
            search = Measurement(step="search (1 trial)", note="not run (extrapolated)")
        else:
            match = re.search(r"training ([0-9.]+) s", output)
            search.extra["training_s"] = float(match.group(1)) if match else None
        results.append(search)
        if point.light or search.code != 0:
            why = "not run (extrapolated)" if point.light else "search failed"
            results += [Measurement(step=s, note=why) for s in ("validation", "find-best", "predict")]
        else:
            validation, _ = self.step("validation", "train",
                                      ["train", "--run", str(run_dir), "--folds", *self.folds, *CROSS_VALIDATE],
                                      point_dir)
            find_best, _ = self.step("find-best", "find-best", ["find-best", "--run", str(run_dir)], point_dir)
            image = sorted((folder / "imagesTr").iterdir())[0]
            predict, _ = self.step("predict", "predict",
                                   ["predict", "--model", str(run_dir / "cv" / "best_configuration.json"), str(image),
                                    "--output", str(point_dir / "prediction")], point_dir)
            results += [validation, find_best, predict]
        return {"point": asdict(point), "label": point.label, "voxels_per_case": point.voxels, "cases": point.cases,
                "data_seconds": made_s, "steps": [asdict(r) for r in results]}

    @staticmethod
    def preprocessing(search: Measurement, watch: Watch, folder: Path, point: Point) -> Measurement:
        """The preprocessing window inside the search, and the bytes it left per raw voxel."""
        cache_bytes = folder_bytes(watch.folder) if watch.folder is not None else 0
        extra = {"cache_bytes": cache_bytes, "bytes_per_voxel": cache_bytes / (point.cases * point.voxels)}
        if search.seconds is None:
            return Measurement(step="preprocessing", note=search.note, extra=extra)
        if watch.started is None or watch.finished is None:
            return Measurement(step="preprocessing", note="N/A: no manifest seen in the cache", extra=extra)
        return Measurement(step="preprocessing", seconds=watch.finished - watch.started,
                           peak_mib=search.extra.pop("window_peak_mib", None), extra=extra)


def measure_tree(src: Path, points: list[Point], work: Path, data_dir: Path, save=lambda result: None,
                 folds: list[str] = FOLDS) -> dict:
    """Every point of the grid against ``src``; ``save`` gets the result so far after each point."""
    bench = Bench(src, work, data_dir, folds)
    result = {"src": str(src), "commit": commit_of(src), "missing_flags": bench.missing, "folds": folds, "runs": []}
    for point in points:
        result["runs"].append(bench.measure(point))
        result["load_average"] = os.getloadavg()
        save(result)
    extrapolate(result["runs"])
    return result


def commit_of(src: Path) -> str:
    out = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True)
    if out.returncode != 0:
        return "?"
    return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return mean_y - slope * mean_x, slope


def extrapolate(runs: list[dict]) -> None:
    """Fill a light point's missing steps with CPU time and peak memory fitted linearly over its series'
    measured points: in voxels per case for the size series, in cases for the case series (predict
    reads one case, so there it is the mean). Wall time is not extrapolated: on a shared machine it
    follows the others' load more than the data."""
    for run in runs:
        if not run["point"]["light"]:
            continue
        series = run["point"]["series"]
        measured = [r for r in runs if r["point"]["series"] == series and not r["point"]["light"]]
        axis = "voxels_per_case" if series == "size" else "cases"
        for step in run["steps"]:
            if step["seconds"] is not None:
                continue
            for key in ("cpu_s", "peak_mib"):
                pairs = [(m[axis], s[key]) for m in measured for s in m["steps"]
                         if s["step"] == step["step"] and s[key] is not None]
                if len(pairs) < 2:
                    continue
                if series == "cases" and step["step"] == "predict":
                    step[key] = sum(y for _, y in pairs) / len(pairs)
                else:
                    a, b = linear_fit([x for x, _ in pairs], [y for _, y in pairs])
                    step[key] = max(0.0, a + b * run[axis])
                step["extrapolated"] = True
                step["note"] = f"extrapolated from {len(pairs)} points"


def clear_extrapolations(runs: list[dict]) -> None:
    """Undo :func:`extrapolate` (to redo it on a saved result)."""
    for run in runs:
        for step in run["steps"]:
            if step.get("extrapolated"):
                step.update(seconds=None, cpu_s=None, peak_mib=None, extrapolated=False, note="not run (extrapolated)")


# --------------------------------------------------------------------------- report


def cell(step: dict) -> str:
    if step["extrapolated"]:
        return f"~{step['cpu_s']:.0f} cpu s / ~{step['peak_mib']:.0f} MiB"
    if step["seconds"] is None:
        return "N/A" if step["note"].startswith("N/A") else "-"
    memory = f"{step['peak_mib']:.0f}" if step["peak_mib"] is not None else "?"
    cpu = f" ({step['cpu_s']:.1f} cpu)" if step.get("cpu_s") is not None else ""
    return f"{step['seconds']:.1f} s{cpu} / {memory} MiB"


def table(result: dict, series: str) -> str:
    runs = [r for r in result["runs"] if r["point"]["series"] == series]
    if not runs:
        return ""
    header = "| step | " + " | ".join(r["label"] + (" (light)" if r["point"]["light"] else "") for r in runs) + " |"
    lines = [header, "|---|" + "---:|" * len(runs)]
    for name in STEPS:
        cells = [cell(next(s for s in r["steps"] if s["step"] == name)) for r in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    per_voxel = [next(s for s in r["steps"] if s["step"] == "preprocessing")["extra"].get("bytes_per_voxel")
                 for r in runs]
    lines.append("| cache bytes / voxel | " + " | ".join("-" if v is None else f"{v:.2f}" for v in per_voxel) + " |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    parts = [f"`{result['src']}` at {result['commit']}; cells: wall time (CPU time) / peak RSS of the"
             " process tree (`~`: CPU time and memory extrapolated linearly in cases or in voxels per case);"
             " load average "
             f"{result['load_average'][0]:.1f} at the end"]
    if result["missing_flags"]:
        parts.append("flags this tree lacks (steps N/A): " + "; ".join(
            f"{c} {' '.join(f)}" for c, f in result["missing_flags"].items()))
    for series, title in (("cases", "Cases (32^3 voxels each)"), ("size", "Case size (5 cases)")):
        text = table(result, series)
        if text:
            parts += [f"### {title}", text]
    return "\n\n".join(parts) + "\n"


def problems(result: dict) -> list[str]:
    """What the smoke check refuses: a measured step that failed, or a cache with no bytes."""
    found = []
    for run in result["runs"]:
        for step in run["steps"]:
            if step["note"] and not step["note"].startswith(("N/A", "not run", "extrapolated")):
                found.append(f"{run['label']}: {step['step']}: {step['note']}")
            if step["step"] == "preprocessing" and not step["extra"].get("cache_bytes"):
                found.append(f"{run['label']}: the preprocessing cache is empty")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the source tree to measure (default: ours)")
    parser.add_argument("--grid", choices=("smoke", "quick", "full", "large"), default="quick")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--data-dir", type=Path, help="synthetic datasets, reused when complete (default: in --work)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the tables of a saved --json (runs nothing)")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        clear_extrapolations(result["runs"])
        extrapolate(result["runs"])
        print(markdown(result))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so the running command is killed too
    started = time.monotonic()
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="hnas-scale-")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or work / "data"
    tree_work = Path(tempfile.mkdtemp(prefix="tree-", dir=work))  # a fresh $HNAS_CACHE per call
    def save(result: dict) -> None:
        if args.json:
            args.json.write_text(json.dumps({**result, "grid": args.grid, "partial": True}, indent=1) + "\n")

    try:
        folds = SMOKE_FOLDS if args.grid == "smoke" else FOLDS
        result = measure_tree(args.src.resolve(), grid(args.grid), tree_work, data_dir, save, folds)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    result["grid"] = args.grid
    result["wall_s"] = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    found = problems(result)
    for problem in found:
        print(f"CHECK FAILED: {problem}")
    print(f"wall time {result['wall_s']:.0f} s")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
