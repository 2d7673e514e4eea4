"""Every `hnas ...` line of README.md's and docs/*.md's bash fences is parsed, and run where a test can afford it.

Two levels, one test each per command (id `page:line`):

* test_command_parses: the real argparse parser takes the line as written (a removed or renamed
  flag, an invalid choice or a bad value fails here);
* test_command_runs: `hnas.cli.main` runs it in-process, in a working folder per page where the
  page's commands run in order (later lines use what earlier ones wrote: plan.json, runs/d004_fold0,
  its retrain and cv folders), after the substitutions below (datasets, heavy values). Exit code 0
  is expected, or 1 where the line's comment says the command refuses. Comments that cite
  figures of the real data (patch 40x56x40, 4 stages, batch 7) are checked against the output.

Scaled down, each with its reason in the tables below: datasets (a 10-case cut of the real
hippocampus data; the full data only for the commands that plan), epochs, iterations, budgets,
the nnunet preset, worker processes; searches train a stand-in objective (the networks that
`hnas train` and `--folds` train are real, at 1 epoch x 1 iteration); placeholders (`RUN`,
`runs/run_a`, `case_0000.nii.gz`, `imagesTs/`, `nnUNetPlans.json`) are made in the page's folder.

Lines no test may run are PARSE_ONLY, with the reason; lines that fail today are KNOWN_FAILURES
(xfail, strict: a fixed doc makes the entry fail until it is removed), and lines whose comment
says they are what `make demo` runs are compared with hnas.demo (DEMO_MISMATCHES). The terminal
summary (tests/docs/conftest.py) lists every line with its status.
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from docs import sandbox as sb
from docs.examples import NOT_RUN, ShellLine, hnas_commands, hnas_lines_outside_bash, other_shell_lines
from hnas.cli import build_parser

COMMANDS = hnas_commands()

# ------------------------------------------------------------------------------------------------------
# What runs, what is only parsed, what fails today

#: (regex matched against the command, reason): commands only parsed, never run.
PARSE_ONLY = [
    (r"--scheduler tcp://", "needs a running Dask cluster (the scheduler tcp://head:8786 and GPU workers); "
                            "tests/pipeline/test_workers.py runs trials on a local Dask cluster"),
    (r"^hnas train --run runs/synthetic_hpo-hnas_regularized-priorband_seed0 --epochs",
     "retrains on the built-in data (20 volumes of 41x134x134, a 6-stage network): minutes on 2 cores; the same "
     "command runs at docs/cli.md's `hnas train --run runs/d004_fold0 --epochs ...` on the small run"),
    (r"^hnas predict --model runs/\.\.\./retrain/",
     "needs the retrained checkpoint of the line above (parse-only); docs/cli.md's "
     "`hnas predict --model runs/d004_fold0/retrain/...` runs the same on the small run"),
]

#: command text -> why it fails and the proposed fix: the test runs it and expects it to fail (xfail). When
#: the doc is fixed the text changes and test_tables_name_existing_commands asks to remove the entry.
KNOWN_FAILURES: dict[str, str] = {}


#: command text -> how it differs from what `make demo` runs (hnas.demo), for lines whose comment says they are
#: what `make demo` runs (test_what_make_demo_runs; xfail like KNOWN_FAILURES)
DEMO_MISMATCHES: dict[str, str] = {}


def parse_only_reason(command: ShellLine) -> str | None:
    return next((why for pattern, why in PARSE_ONLY if re.search(pattern, command.text)), None)


def expected_code(command: ShellLine) -> int:
    """1 where the comment says the command refuses (`# refused: ...`), else 0."""
    return 1 if re.search(r"\brefuse", command.comment) else 0


# ------------------------------------------------------------------------------------------------------
# Substitutions: what the docs write -> what the test runs (each row with its reason)

#: dataset paths of the docs -> which sandbox dataset (tests/docs/sandbox.py) stands in for it
DATASET_PATHS = {
    "../shared/data/Dataset004_Hippocampus": "hippocampus",  # README's tour and docs/cli.md: the repo's sibling
    "/data/Dataset004_Hippocampus": "hippocampus",  # an absolute dataset folder
    "/shared/Dataset004_Hippocampus": "hippocampus",  # the Dask example's shared storage (parse-only anyway)
    "/data/Dataset004_Hippocampus_test": "test",  # imagesTs + labelsTs of cases outside the training set
}
#: commands that only plan: "hippocampus" is the FULL real data there (fingerprinted once, figures checked);
#: every other command (search) gets SMALL: 10 real cases cut to 20x24x20, whose networks train in a second
PLANNING = {"plan", "grammar", "sample", "show"}

#: flag -> (the value the test gives, why): heavy values scaled down
SCALED = {
    "--epochs": (lambda v: "1", "1 epoch: a retrained or cross-validated network trains in about a second"),
    "--iterations-per-epoch": (lambda v: "1", "1 iteration per epoch"),
    "--min-epochs": (lambda v: "1", "rungs 1 and 3 (eta 3): a bracket of a few trials"),
    "--max-epochs": (lambda v: "3", "rungs 1 and 3"),
    "--eta": (lambda v: "3", "rungs 1 and 3"),
    "--budget": (lambda v: f"{float(v) / 11:g}", "22 -> 2, 44 -> 4 max-fidelity trainings: a few trials, and the "
                                                 "resume example still adds budget"),
    "--preset": (lambda v: "cpu" if v == "nnunet" else v,
                 "nnunet -> cpu: nnU-Net's scale (features 32..320, 8 loader processes) is sized for a GPU"),
}
#: `hnas train --workers N` -> 1: each worker process imports torch (seconds each on 2 cores);
#: tests/pipeline/test_workers.py and test_cross_validate.py cover the worker processes
TRAIN_WORKERS = "1"
#: the docs' trial ids -> trials the small run has (`--trial 17 23`, `trial_00017_1000ep`)
TRIAL_IDS = {17: 1, 23: 2}
#: `hnas search` without --budget/--max-trials/--time-limit (the built-in data's default budget): at most 3 trials
SEARCH_LIMIT = ["--max-trials", "3"]
#: every `hnas search` trains with tests/reliability/run_folders.py's stand-in objective (a checkpoint file and
#: a loss per trial, no network): the searched runs' files, settings and history are real, and the networks the
#: later commands train (`hnas train`, `--folds`) train for real. tests/test_search_e2e.py trains real trials.
FAKE_SEARCH_TRAINING = True
#: the training log's progress.png is not drawn (hnas.train.training_log.draw_progress -> None): matplotlib takes
#: ~0.9 s per drawing on 2 cores, twice per 1-epoch training; tests/train covers the plot, training_log.txt is written
NO_PROGRESS_PLOT = True
#: `hnas predict ... -o predictions/` -> predictions_<line>/: the examples are alternatives writing the same
#: label maps, and predict refuses label maps already in its output folder without --overwrite (documented)
PREDICT_OUTPUT = "{folder}_{line}"
#: `hnas export-nnunet RUN` of a run searched with the cpu preset (the scaled-down search above) -> a run of the
#: same data searched with --preset nnunet (trials faked): the docs' runs are nnU-Net-scale, and export refuses a
#: cpu-preset run without --allow-preset (documented)
EXPORT_AT_NNUNET_SCALE = True

#: relative paths the docs take for granted -> (what is made, its settings, why), made in a page's working folder
#: when its commands name them
PREPARED = {
    "RUN": ("run", {}, "a finished search on SMALL (cpu preset, trials faked); the cross-validation lines train on it"),
    "runs/run_a": ("run", {"preset": "nnunet"},
                   "a search on SMALL at nnU-Net's scale (trials faked), so export-nnunet takes it as it is"),
    "runs/run_b": ("run", {"optimizer": "random"}, "a second run for the overlaid report (trials faked)"),
    "runs/d004_priorband": ("run", {"optimizer": "priorband"}, "a priorband run on SMALL (trials faked)"),
    "runs/d004_random": ("run", {"optimizer": "random"}, "a random-search run on SMALL (trials faked)"),
    "case_0000.nii.gz": ("image", {}, "an image of SMALL"),
    "imagesTs": ("images", {}, "TEST's image, named as the docs name it (imagesTs/hippocampus_002_0000.nii.gz)"),
    "nnUNetPlans.json": ("plans", {}, "nnU-Net's plans of SMALL (3d_fullres at nnU-Net's scale, dataset.json beside)"),
    "nnUNet_preprocessed/Dataset004_Hippocampus/nnUNetPlans.json": ("plans", {}, "the same, where nnU-Net keeps it"),
}

#: (regex on a comment, regex its output must match, {0} = the figure): figures of the real data a comment cites
FIGURES = [
    (r"patch (\d+x\d+x\d+)", r"patch size\s+{0}\n"),
    (r"(\d+) stages", r"\nstages\s+{0}\n"),
    (r"batch (\d+)", r"batch size\s+{0}\n"),
    (r"N = (\d+)", r"grammar for {0} stages"),
]


def cited_figures(command: ShellLine) -> list[tuple[str, str]]:
    """(figure, output regex) of every figure the command's comment cites."""
    return [(match.group(1), template.format(re.escape(match.group(1))))
            for pattern, template in FIGURES for match in re.finditer(pattern, command.comment)]


# ------------------------------------------------------------------------------------------------------
# The sandbox and the per-page sessions


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    out: str
    err: str
    seconds: float
    skipped: str | None = None  # why it was not run (a substitution failed)

    def describe(self) -> str:
        return (f"hnas {shlex.join(self.argv)}\nexit {self.code} after {self.seconds:.1f} s\n--- stdout\n"
                f"{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}")


class Sandbox:
    """Datasets, cache and the working folder of every page (tests/docs/sandbox.py makes the data)."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.source = sb.hippocampus_source()
        self.small = sb.make_small(root / "data", self.source)
        self.test = sb.make_test_set(root / "test", self.source)
        self.full = sb.make_full(self.cache, self.source)
        self.real = self.source is not None  # FULL is the real data: the comments' figures are checked
        self.nnunet_runs: dict[str, Path] = {}
        self.sessions: dict[str, PageSession] = {}

    def dataset(self, key: str, subcommand: str) -> Path:
        if key == "test":
            return self.test
        return self.full if subcommand in PLANNING else self.small

    def nnunet_run(self, name: str) -> Path:
        if name not in self.nnunet_runs:
            self.nnunet_runs[name] = sb.make_run(self.small, self.root / "nnunet_runs" / name, preset="nnunet")
        return self.nnunet_runs[name]

    def session(self, page: str) -> "PageSession":
        if page not in self.sessions:
            self.sessions[page] = PageSession(self, page, [c for c in COMMANDS if c.page == page])
        return self.sessions[page]


class PageSession:
    """A page's commands, run in order in the page's own working folder; each runs once, when a test needs it
    or a later line of the page does."""

    def __init__(self, sandbox: Sandbox, page: str, commands: list[ShellLine]):
        self.sandbox, self.commands = sandbox, commands
        self.cwd = sandbox.root / "pages" / page.replace("/", "_")
        self.cwd.mkdir(parents=True)
        self.outcomes: dict[str, Outcome] = {}
        self._prepare()

    def _prepare(self) -> None:
        tokens = {t for c in self.commands for t in shlex.split(c.text)}

        def named(path: str) -> bool:
            return any(t == path or t.startswith(path + "/") for t in tokens)

        for path, (kind, settings, _) in PREPARED.items():
            if not named(path):
                continue
            target = self.cwd / path
            if kind == "run":
                sb.make_run(self.sandbox.small, target, **settings)
            elif kind == "image":
                target.write_bytes(sorted((self.sandbox.small / "imagesTr").iterdir())[0].read_bytes())
            elif kind == "images":
                target.mkdir()
                wanted = sorted(Path(t).name for t in tokens if t.startswith(f"{path}/") and "*" not in t)
                for index, image in enumerate(sorted((self.sandbox.test / "imagesTs").iterdir())):
                    name = wanted[index] if index < len(wanted) else image.name  # the docs' names first
                    (target / name).write_bytes(image.read_bytes())
            elif kind == "plans":
                sb.write_nnunet_plans(self.sandbox.small, target)
            else:
                raise ValueError(f"PREPARED[{path!r}]: unknown kind {kind!r}")

    def outcome(self, command: ShellLine) -> Outcome:
        """The command's outcome, running it (and the page's earlier lines not run yet) first."""
        for earlier in self.commands:
            if earlier.id not in self.outcomes and parse_only_reason(earlier) is None:
                self.outcomes[earlier.id] = self._run(earlier)
            if earlier.id == command.id:
                break
        return self.outcomes[command.id]

    def failed_before(self, command: ShellLine) -> list[str]:
        """Earlier lines of the page whose run went otherwise than expected (known failures aside)."""
        ids = [c.id for c in self.commands]
        return [c.id for c in self.commands[:ids.index(command.id)] if c.id in self.outcomes
                and c.text not in KNOWN_FAILURES and self.outcomes[c.id].code != expected_code(c)]

    def _run(self, command: ShellLine) -> Outcome:
        from hnas.cli import main

        with contextlib.chdir(self.cwd):
            try:
                argv = self.substitute(command)
            except LookupError as error:
                return Outcome([], None, "", "", 0.0, skipped=str(error))
            out, err = io.StringIO(), io.StringIO()
            started = time.perf_counter()
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err):
                if argv[0] == "search" and FAKE_SEARCH_TRAINING:
                    from reliability.run_folders import fake_training

                    fake_training(patch)
                if NO_PROGRESS_PLOT:
                    patch.setattr("hnas.train.training_log.draw_progress", lambda history: None, raising=False)
                try:
                    code = main(argv)
                except SystemExit as exit_:  # argparse: 2 with the usage
                    code = exit_.code
                except Exception:  # a traceback is a failure whatever the expected code
                    code = None
                    err.write(traceback.format_exc())
            return Outcome(argv, code, out.getvalue(), err.getvalue(), time.perf_counter() - started)

    def substitute(self, command: ShellLine) -> list[str]:
        """The argv the test runs for ``command`` (module docstring, the tables above)."""
        tokens = shlex.split(command.text)[1:]
        subcommand, argv, flag = tokens[0], [], None
        for token in tokens:
            if token in DATASET_PATHS:
                token = str(self.sandbox.dataset(DATASET_PATHS[token], subcommand))
            elif flag in SCALED:
                token = SCALED[flag][0](token)
            elif flag == "--workers" and subcommand == "train":
                token = TRAIN_WORKERS
            elif flag == "--trial" and token.isdigit():
                token = str(TRIAL_IDS.get(int(token), token))
            elif flag == "-o" and subcommand == "predict":
                token = PREDICT_OUTPUT.format(folder=token.rstrip("/"), line=command.line) + "/"
            token = model_name(token)
            if "..." in token:
                token = unique_match(token.replace("...", "*"))
            if token.startswith("-"):
                flag = token
            elif flag not in ("--trial", "--models", "--folds", "--model"):
                flag = None  # a flag of one value has taken it; positional arguments follow
            # a shell glob expands as bash would (sorted; left as it is when nothing matches)
            argv += (sorted(glob.glob(token)) or [token]) if "*" in token else [token]
        if subcommand == "search" and not {"--budget", "--max-trials", "--time-limit", "--resume"} & set(argv):
            argv += SEARCH_LIMIT
        if subcommand == "export-nnunet" and EXPORT_AT_NNUNET_SCALE and "--allow-preset" not in argv:
            run = Path(argv[1])
            if (run / "preset.json").is_file() and '"name": "cpu"' in (run / "preset.json").read_text():
                argv[1] = str(self.sandbox.nnunet_run(run.name))
        return argv


def model_name(token: str) -> str:
    """`trial_00017_1000ep` -> `trial_00001_1ep`, `default_1000ep` -> `default_1ep` (TRIAL_IDS, --epochs 1)."""
    def trial(match: re.Match) -> str:
        return f"trial_{TRIAL_IDS.get(int(match.group(1)), int(match.group(1))):05d}_1ep"

    return re.sub(r"default_\d+ep", "default_1ep", re.sub(r"trial_(\d{5})_\d+ep", trial, token))


def unique_match(pattern: str) -> str:
    """The one path a `...` placeholder stands for (LookupError: none, or several)."""
    found = sorted(glob.glob(pattern))
    if len(found) != 1:
        raise LookupError(f"the placeholder path {pattern.replace('*', '...')!r} matches {found or 'nothing'} in the "
                          "page's working folder; expected exactly one")
    return found[0]


#: torch runs 1 thread in these tests: on 2 cores shared with other tests, 2 OpenMP threads wait on each other
#: (a cross-validation fold measured 2x slower with 2)
TORCH_THREADS = 1


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, request):
    import torch

    root = tmp_path_factory.mktemp("docs_commands")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HNAS_CACHE", str(root / "cache"))  # the user's ~/.cache/hnas stays untouched
        patch.setenv("nnUNet_raw", str(root / "data"))  # `Dataset004_Hippocampus` names SMALL, as nnU-Net would
        (root / "tmp").mkdir()
        patch.setattr(tempfile, "tempdir", str(root / "tmp"))
        sb.copy_builtin_data(root / "cache", getattr(request.config, "cache", None))  # None: -p no:cacheprovider
        torch.set_num_threads(TORCH_THREADS)
        try:
            yield Sandbox(root)
        finally:
            torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------
# The tests


def test_every_shell_line_is_run_or_listed():
    """A bash line is an `hnas` command (tested below) or listed in NOT_RUN with its reason."""
    unlisted = [f"{line.id}: {line.text}" for line in other_shell_lines() if line.not_run_reason() is None]
    assert not unlisted, ("shell lines in bash fences that no test runs; make them `hnas ...` lines or add them to "
                          f"NOT_RUN in tests/docs/examples.py with the reason: {unlisted}")
    stale = [prefix for prefix in NOT_RUN if not any(line.text.startswith(prefix) for line in other_shell_lines())]
    assert not stale, f"NOT_RUN entries that no doc line uses any more (remove them): {stale}"
    assert not hnas_lines_outside_bash(), ("`hnas` lines in fences that are not ```bash (tests read only bash "
                                           f"fences): {hnas_lines_outside_bash()}")
    assert COMMANDS, "no `hnas` command found in the docs"


def test_tables_name_existing_commands():
    """Every PARSE_ONLY pattern and KNOWN_FAILURES entry still names a doc line (a fixed doc drops its entry)."""
    texts = [c.text for c in COMMANDS]
    stale = [p for p, _ in PARSE_ONLY if not any(re.search(p, t) for t in texts)]
    stale += [t for t in [*KNOWN_FAILURES, *DEMO_MISMATCHES] if t not in texts]
    assert not stale, f"entries of tests/docs/test_commands.py that match no doc line any more (remove them): {stale}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_command_parses(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output-path checks see an empty folder
    argv = shlex.split(command.text)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{command.id}: `{command.text}` is refused by hnas's argument parser (exit {exit_.code})")
    assert getattr(args, "handler", None), f"{command.id}: `{command.text}` names no subcommand"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_command_runs(command, sandbox):
    why = parse_only_reason(command)
    if why:
        pytest.skip(f"parse-only: {why}")
    outcome = sandbox.session(command.page).outcome(command)
    if outcome.skipped:
        pytest.fail(f"{command.id}: {outcome.skipped}")
    expected = expected_code(command)
    figures = cited_figures(command)
    missing = [figure for figure, pattern in figures if not re.search(pattern, outcome.out)]
    ok = outcome.code == expected and not (sandbox.real and missing)
    if command.text in KNOWN_FAILURES:
        if ok:
            pytest.fail(f"{command.id} now passes: remove it from KNOWN_FAILURES ({KNOWN_FAILURES[command.text]})")
        pytest.xfail(f"known failure: {KNOWN_FAILURES[command.text]}; output:\n{outcome.err[-500:]}")
    earlier = sandbox.session(command.page).failed_before(command)
    context = f"\n(earlier lines of the page that failed, whose files this line may need: {earlier})" if earlier else ""
    assert outcome.code == expected, f"{command.id}: expected exit {expected}{context}\n{outcome.describe()}"
    if figures and not sandbox.real:
        pytest.skip(f"ran, but cites figures of the real hippocampus data {[f for f, _ in figures]}, which is "
                    "absent (set HNAS_HIPPOCAMPUS): the synthetic stand-in has other figures")
    assert not missing, f"{command.id}: the comment cites {missing}, the output says otherwise\n{outcome.describe()}"


DEMO_LINES = [c for c in COMMANDS if "make demo" in c.comment]


@pytest.mark.parametrize("command", DEMO_LINES, ids=lambda c: c.id)
def test_what_make_demo_runs(command):
    """A line whose comment says it is what `make demo` runs asks `hnas search` what hnas.demo asks."""
    import inspect

    from hnas import demo

    max_stages = inspect.signature(demo.run).parameters["max_stages"].default
    wanted = ["search", "--max-stages", str(max_stages), *demo.DEMO_SEARCH_ARGS]

    def settings(argv):
        return {k: v for k, v in vars(build_parser().parse_args(argv)).items() if k not in ("run_dir", "handler")}

    same = settings(shlex.split(command.text)[1:]) == settings(wanted)
    if command.text in DEMO_MISMATCHES:
        if same:
            pytest.fail(f"{command.id} now matches the demo: remove it from DEMO_MISMATCHES")
        pytest.xfail(f"known: {DEMO_MISMATCHES[command.text]}")
    assert same, f"{command.id}: `{command.text}` is not what `make demo` runs: `hnas {shlex.join(wanted)}`"


# ------------------------------------------------------------------------------------------------------
# The summary (printed by tests/docs/conftest.py at the end of the run)


def status(command: ShellLine) -> str:
    why = parse_only_reason(command)
    if why:
        return f"parse-only: {why}"
    if command.text in KNOWN_FAILURES:
        return f"xfail: {KNOWN_FAILURES[command.text]}"
    notes = []
    if expected_code(command):
        notes.append("expects the documented refusal (exit 1)")
    if cited_figures(command):
        notes.append(f"figures checked: {', '.join(f for f, _ in cited_figures(command))}")
    tokens = shlex.split(command.text)
    if tokens[1] == "search":
        notes.append("trials faked")
    if command.text in DEMO_MISMATCHES and command in DEMO_LINES:
        notes.append(f"xfail, not what `make demo` runs: {DEMO_MISMATCHES[command.text]}")
    return "executed" + (f" ({'; '.join(notes)})" if notes else "")


def summary_lines() -> list[str]:
    """One line per command (id, status, the command), then the notes and reasons, then the lines not run."""
    lines, notes = [], []
    for command in COMMANDS:
        kind, _, detail = status(command).partition(" ")
        lines.append(f"{command.id:<16} {kind.rstrip(':'):<10} {command.text}")
        if detail:
            notes.append(f"{command.id:<16} {detail[1:-1] if detail.startswith('(') else detail}")
    counts = {kind: sum(status(c).startswith(kind) for c in COMMANDS) for kind in ("executed", "parse-only", "xfail")}
    lines.append(f"{len(COMMANDS)} hnas commands: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    lines += notes
    lines += [f"{line.id:<16} not run: {line.text} ({line.not_run_reason()})" for line in other_shell_lines()]
    return lines


def test_summary_classifies_every_command():
    """Every command is executed, parse-only with a reason, or a known failure; the table is the run's summary."""
    lines = summary_lines()
    kinds = [line.split()[1] for line in lines[:len(COMMANDS)]]
    assert set(kinds) <= {"executed", "parse-only", "xfail"}, kinds
    assert all(status(c).startswith(("executed", "parse-only: ", "xfail: ")) for c in COMMANDS)
