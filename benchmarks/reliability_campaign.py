"""Issue 10's reliability campaign: hostile-but-realistic `hnas` invocations, run as subprocesses.

Every case runs ``python -m hnas.cli ...`` against the code in ``--src`` (default: this
repository's src; PYTHONPATH puts it first), so a traceback is a real one, and is classified:

- clean error: exit 1 with one ``hnas: error: ...`` message, or exit 2 with argparse's usage;
- traceback: a Python traceback in the output (or a crash by signal);
- silent: exit 0 where a refusal or a warning was required, the expected warning missing, an
  all-background prediction from NaN input, a command that ran past its time instead of refusing
  at the start;
- lost: a run folder's files changed (sha256 of every file before/after) by a command that had to
  be refused;
- ok: success where success is right (each case names what it expects).

The cases: the issue's list (data loss, silent, traceback), each with its own checker, a few
happy paths that the fixes must keep working, and the invocations of the seeded fuzz generator of
``tests/reliability/test_cli_fuzz.py``. One tiny real search (2 trials, 1 epoch of 1 iteration)
gives the finished run folder that the resume, status, report, export and predict cases copy.

    .venv/bin/python benchmarks/reliability_campaign.py                          # this tree
    .venv/bin/python benchmarks/reliability_campaign.py --src /work/before/src    # another checkout
    .venv/bin/python benchmarks/reliability_campaign.py --jobs 2 --fuzz 160 --json out.json
    .venv/bin/python benchmarks/reliability_campaign.py --groups post-search --json out.json  # issue 18 only

Issue 18's groups (``post-search provenance``, ``post-search paths``, ``post-search geometry``,
``post-search file types``; made in ``reliability_post_search.py``) probe `hnas train --folds`,
`evaluate`, `find-best` and `predict` on one small cross-validated run folder, built once from the
finished tiny run and copied per case. ``--groups`` picks groups by a part of their name.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
FUZZ_MODULE = REPO / "tests" / "reliability" / "test_cli_fuzz.py"
VERDICTS = ("ok", "clean error", "traceback", "silent", "lost")
TINY = ["--preset", "cpu", "--optimizer", "random", "--max-stages", "3", "--min-epochs", "1", "--max-epochs", "1",
        "--eta", "3", "--iterations-per-epoch", "1", "--no-progress", "--seed", "0", "--max-trials", "2"]


def _load_fuzz():
    """The fuzz test's generator and contract check, imported from its file (no package needed)."""
    spec = importlib.util.spec_from_file_location("hnas_cli_fuzz", FUZZ_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _load_fuzz()


def _load_post_search():
    """Issue 18's cases, from the file beside this one (no package needed)."""
    spec = importlib.util.spec_from_file_location("hnas_reliability_post_search",
                                                  Path(__file__).resolve().parent / "reliability_post_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POST_SEARCH = _load_post_search()
ALL_GROUPS = ("issue: data loss", "issue: silent", "issue: traceback", "must keep working", "fuzz",
              *POST_SEARCH.GROUPS)


@dataclass
class Result:
    argv: list[str]
    code: int | None  # None: killed at the time limit
    out: str
    err: str
    seconds: float


@dataclass
class Case:
    """One invocation and what it must do: 'refuse', 'warn', 'ok', or 'no-traceback' (ok or refuse)."""

    name: str
    group: str
    argv: list[str] = field(default_factory=list)
    expect: str = "refuse"
    protect: Path | None = None  # a folder whose files the command must not change
    setup: Callable[[], None] | None = None
    check: Callable[[Result], tuple[str, str] | None] | None = None  # a case's own verdict, if any
    runner: Callable[["Campaign", "Case"], tuple[Result, tuple[str, str] | None]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 240.0
    weight: float = 1.0  # rough seconds; heavy cases are started first


@dataclass
class Outcome:
    case: Case
    verdict: str
    reason: str
    result: Result
    expected: bool


# --------------------------------------------------------------------------- running


class Campaign:
    def __init__(self, src: Path, work: Path):
        self.src, self.work = src, work
        self.python = sys.executable
        self.base_env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                         "HNAS_CACHE": str(work / "cache"), "COLUMNS": "120"}

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**self.base_env, **extra}

    def run(self, argv: list[str], *, timeout: float = 240.0, env: dict[str, str] | None = None) -> Result:
        """``python -m hnas.cli argv`` in its own process group (killed whole at the time limit)."""
        start = time.monotonic()
        process = subprocess.Popen([self.python, "-m", "hnas.cli", *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=self.work, env=self.env(env or {}),
                                   start_new_session=True, text=True, errors="replace")
        try:
            out, err = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            _kill(process)
            out, err = process.communicate()
            code = None
        return Result(argv, code, out, err, time.monotonic() - start)

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen([self.python, "-m", "hnas.cli", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=self.work, env=self.env(env or {}),
                                start_new_session=True, text=True, errors="replace")


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (lock files left aside: holding a lock is allowed)."""
    if not folder.is_dir():
        return {}
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "lock" not in path.name.lower():
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [f"changed {p}" for p in before if p in after and before[p] != after[p]]
    removed = [f"removed {p}" for p in before if p not in after]
    added = [f"added {p}" for p in after if p not in before]
    return changed + removed + added


def has_traceback(result: Result) -> bool:
    return "Traceback (most recent call last)" in result.out or "Traceback (most recent call last)" in result.err


def traceback_line(result: Result) -> str:
    """The exception line that ends the (last) traceback in the output."""
    for text in (result.err, result.out):
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")
                  or line.endswith("Traceback (most recent call last):")]
        if starts:
            for line in lines[starts[-1] + 1:]:
                if line.strip() and not line.startswith((" ", "\t")):
                    return line[:240]
    return ""


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:240] if lines else ""


def classify(case: Case, result: Result, before: dict[str, str] | None, after: dict[str, str] | None,
             own: tuple[str, str] | None) -> tuple[str, str]:
    """The case's verdict and why, from the most to the least severe finding."""
    if case.protect is not None and before is not None and changes(before, after):
        diff = changes(before, after)
        return "lost", f"exit {result.code}; run folder changed: {', '.join(diff[:4])}" + (
            f" (+{len(diff) - 4} more)" if len(diff) > 4 else "")
    if own is not None and own[0] == "lost":  # a case's own finding of lost data outranks how it ended
        return own
    if has_traceback(result):
        return "traceback", f"exit {result.code}: {traceback_line(result)}"
    if result.code is None:
        return "silent", f"still running after {result.seconds:.0f} s instead of refusing at the start"
    if result.code not in (0, 1, 2):
        return "traceback", f"crashed with exit {result.code}: {last_line(result.err)}"
    if own is not None:
        return own
    if result.code == 0:
        if case.expect == "refuse":
            return "silent", "exit 0 where a refusal was required"
        if case.expect == "warn":
            if "warning" in result.err.lower():
                return "ok", "warned"
            return "silent", "exit 0 without the required warning"
        return "ok", "exit 0"
    problem = FUZZ.refusal_problem(result.code, result.out, result.err)
    if problem is not None:
        return "traceback", f"{problem}: {last_line(result.err)}"
    return "clean error", last_line(result.err)


def expected(case: Case, verdict: str) -> bool:
    if case.expect == "ok":
        return verdict == "ok"
    if case.expect in ("no-traceback", "warn"):
        return verdict in ("ok", "clean error")
    return verdict == "clean error"


def run_case(campaign: Campaign, case: Case) -> Outcome:
    if case.setup is not None:
        case.setup()
    before = snapshot(case.protect) if case.protect is not None else None
    if case.runner is not None:
        result, own = case.runner(campaign, case)
    else:
        result = campaign.run(case.argv, timeout=case.timeout, env=case.env)
        own = case.check(result) if case.check is not None else None
    after = snapshot(case.protect) if case.protect is not None else None
    verdict, reason = classify(case, result, before, after, own)
    return Outcome(case, verdict, reason, result, expected(case, verdict))


# --------------------------------------------------------------------------- fixtures


def build_world(campaign: Campaign) -> dict[str, Path]:
    """Datasets, the finished tiny run, checkpoints and images every case draws from."""
    import nibabel as nib
    import numpy as np

    work = campaign.work
    w = FUZZ.build_fixtures(work / "inputs")
    from hnas.data import make_synthetic_dataset

    w["tiny"] = make_synthetic_dataset(work / "tiny", n_cases=5, shape=(40, 48, 44), seed=1)
    master = work / "run_master"
    result = campaign.run(["search", "--dataset", str(w["tiny"]), *TINY, "--run-dir", str(master)], timeout=600)
    if result.code != 0:
        raise SystemExit(f"the tiny search that makes the finished run failed (exit {result.code}):\n"
                         f"{result.out[-2000:]}\n{result.err[-4000:]}")
    w["master"] = master
    w["ckpt"] = next(master.glob("trials/00000/*.pt"))
    w["image"] = sorted((w["tiny"] / "imagesTr").glob("*.nii.gz"))[0]
    source = nib.load(str(w["image"]))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        broken = data.copy()
        broken[broken.shape[0] // 4: broken.shape[0] // 2] = value
        w[f"image_{name}"] = work / "images" / f"image_{name}_0000.nii.gz"
        w[f"image_{name}"].parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(broken, source.affine), str(w[f"image_{name}"]))
    w["image_truncated"] = work / "images" / "truncated_0000.nii.gz"
    w["image_truncated"].write_bytes(w["image"].read_bytes()[: w["image"].stat().st_size // 2])
    _checkpoint_variants(w, work / "checkpoints")
    _semantic_datasets(w, work)
    w["dir_svg"] = work / "inputs" / "drawing.svg"
    w["dir_svg"].mkdir()
    w["plans"] = work / "nnUNetPlans.json"
    w["plans"].write_text(json.dumps(_nnunet_plans()))
    return w


def _checkpoint_variants(w: dict[str, Path], folder: Path) -> None:
    """The finished run's checkpoint with NaN weights, a reshaped tensor, a missing part, or foreign."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    payload = torch.load(w["ckpt"], map_location="cpu", weights_only=True)
    model = payload["trainer"]["model"]
    nan = {**payload, "trainer": {**payload["trainer"], "model": {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in model.items()}}}
    first = next(k for k, v in model.items() if v.dim() >= 2)
    reshaped_model = dict(model)
    reshaped_model[first] = torch.zeros(model[first].shape[0] + 1, *model[first].shape[1:])
    reshaped = {**payload, "trainer": {**payload["trainer"], "model": reshaped_model}}
    incomplete = {k: v for k, v in payload.items() if k != "trainer"}
    for name, content in (("nan", nan), ("reshaped", reshaped), ("incomplete", incomplete), ("foreign", model)):
        w[f"ckpt_{name}_weights" if name == "nan" else f"ckpt_{name}_real"] = folder / f"{name}.pt"
        torch.save(content, folder / f"{name}.pt")


def _semantic_datasets(w: dict[str, Path], work: Path) -> None:
    """Tiny datasets that read fine but need a warning or a refusal."""
    import nibabel as nib
    import numpy as np

    def copy(name: str) -> Path:
        return Path(shutil.copytree(w["ds_ok"], work / "datasets" / name))

    w["ds_nan"], w["ds_inf"] = w["ds_nan_image"], w["ds_inf_image"]
    w["ds_affine"] = copy("label_affine")
    label = w["ds_affine"] / "labelsTr" / "case_0.nii.gz"
    loaded = nib.load(str(label))
    shifted = loaded.affine.copy()
    shifted[:3, 3] += (5.0, -3.0, 2.0)
    nib.save(nib.Nifti1Image(np.asanyarray(loaded.dataobj), shifted), str(label))
    w["ds_pixdim0"] = copy("pixdim0")
    _zero_pixdim(w["ds_pixdim0"] / "imagesTr" / "case_1_0000.nii.gz")
    w["ds_constant"] = copy("constant")
    image = w["ds_constant"] / "imagesTr" / "case_2_0000.nii.gz"
    loaded = nib.load(str(image))
    nib.save(nib.Nifti1Image(np.full(loaded.shape, 42, dtype=np.int16), loaded.affine), str(image))
    w["ds_three"] = w["ds_ok"]  # 3 cases: fewer than the 5 folds
    w["ds_truncated"] = w["ds_truncated_image"]
    w["ds_nonutf8"] = w["ds_nonutf8_json"]
    plan = json.loads(w["plan"].read_text())
    for name, key, value in (("bad_patch", "patch_size", [30, 32, 32]),
                             ("negative_features", "features_per_stage", [8, -16, 32]),
                             ("zero_kernel", "kernel_sizes", [[3, 3, 3], [0, 3, 3], [3, 3, 3]])):
        w[f"plan_{name}"] = work / f"plan_{name}.json"
        w[f"plan_{name}"].write_text(json.dumps({**plan, key: value}))


def _zero_pixdim(path: Path) -> None:
    """Store pixdim[1] = 0 in a .nii.gz header (nibabel itself refuses to write it, and reads it as 1)."""
    import gzip
    import struct

    data = bytearray(gzip.decompress(path.read_bytes()))
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    data[80:84] = struct.pack(f"{order}f", 0.0)  # pixdim[1]: bytes 76.. hold pixdim[0..7] as float32
    path.write_bytes(gzip.compress(bytes(data)))


def _nnunet_plans() -> dict:
    """A small nnU-Net 2.x plans file (3d_fullres, PlainConvUNet) for `export-nnunet`."""
    kwargs = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
              "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
              "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return {"dataset_name": "Dataset900_SyntheticBrain", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "image_reader_writer": "NibabelIOWithReorient",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2, "patch_size": [40, 48, 44], "median_image_size_in_voxels": [40.0, 48.0, 44.0],
                "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False], "batch_dice": False, "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager"}


# --------------------------------------------------------------------------- the cases


class Builder:
    """Makes the cases; each gets its own folder under work/cases/<name>."""

    def __init__(self, campaign: Campaign, world: dict[str, Path]):
        self.c, self.w = campaign, world
        self.cases: list[Case] = []

    def folder(self, name: str) -> Path:
        return self.c.work / "cases" / name

    def add(self, **kwargs) -> Case:
        case = Case(**kwargs)
        self.cases.append(case)
        return case

    def run_copy(self, name: str, sqlite: bytes | None = None) -> tuple[Path, Callable[[], None]]:
        """A private copy of the finished run, made when the case starts (optionally a broken search.sqlite)."""
        target = self.folder(name) / "run"

        def setup():
            shutil.copytree(self.w["master"], target)
            if sqlite is not None:
                (target / "search.sqlite").write_bytes(sqlite)
                for extra in ("search.sqlite-wal", "search.sqlite-shm"):
                    (target / extra).unlink(missing_ok=True)
        return target, setup

    def tiny_search(self, *extra: str, dataset: Path | None = None) -> list[str]:
        return ["search", "--dataset", str(dataset or self.w["tiny"]), *TINY, *extra]


def data_loss_cases(b: Builder) -> None:
    group = "issue: data loss"
    run, setup = b.run_copy("forgotten_resume")
    b.add(name="search again on a finished run without --resume", group=group,
          argv=b.tiny_search("--run-dir", str(run)), protect=run, setup=setup, weight=20)
    run, setup = b.run_copy("forgotten_resume_seed")
    b.add(name="search again on a finished run without --resume, with another --seed", group=group,
          argv=b.tiny_search("--run-dir", str(run), "--seed", "1"), protect=run, setup=setup, weight=20)
    for flag, value in (("--seed", "1"), ("--optimizer", "hyperband"), ("--space", "hpo"), ("--confidence", "high"),
                        ("--max-epochs", "3"), ("--eta", "2"), ("--max-stages", "2")):
        name = f"resume_changed_{flag.strip('-')}"
        run, setup = b.run_copy(name)
        b.add(name=f"--resume with changed {flag} {value}", group=group, protect=run, setup=setup, weight=15,
              argv=b.tiny_search("--run-dir", str(run), "--resume", flag, value))
    truncated = b.w["master"].joinpath("search.sqlite").read_bytes()
    for what, content in (("empty", b""), ("truncated", truncated[: len(truncated) // 3]), ("garbage", FUZZ.GARBAGE)):
        run, setup = b.run_copy(f"resume_sqlite_{what}", content)
        b.add(name=f"--resume on a run whose search.sqlite is {what}", group=group, protect=run, setup=setup,
              argv=b.tiny_search("--run-dir", str(run), "--resume"), weight=15)
    folder = b.folder("resume_no_run") / "my_results"

    def user_folder():
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("a user's own file\n")
    b.add(name="--resume on a folder without a run", group=group, protect=folder, setup=user_folder,
          argv=b.tiny_search("--run-dir", str(folder), "--resume"), weight=20)
    run, setup = b.run_copy("two_processes")
    b.add(name="two processes on one run folder (second must be refused)", group=group, setup=setup,
          argv=b.tiny_search("--run-dir", str(run), "--resume", "--max-trials", "6"), runner=_two_processes,
          weight=60)


def _two_processes(campaign: Campaign, case: Case) -> tuple[Result, tuple[str, str] | None]:
    """Start a resumed search, and once it searches start the same command again: the second must be refused."""
    first = campaign.start(case.argv)
    lines: list[str] = []
    searching = threading.Event()

    def read():
        for line in first.stdout:
            lines.append(line)
            if line.startswith("search:"):
                searching.set()
        searching.set()
    threading.Thread(target=read, daemon=True).start()
    searching.wait(timeout=120)
    alive = first.poll() is None
    second = campaign.run(case.argv, timeout=case.timeout)
    _kill(first)
    first.wait()
    if not alive:
        return second, ("clean error" if second.code in (1, 2) else "silent",
                        f"the first process had ended before the second started: {last_line(''.join(lines))}")
    if second.code == 0:
        return second, ("lost", "the second process ran a search on the same run folder as the first (exit 0)")
    searched = any(line.startswith("search:") for line in second.out.splitlines())
    message = last_line(second.err).lower()
    if searched and not any(word in message for word in ("lock", "another", "in use", "busy")):
        ending = traceback_line(second) or last_line(second.err)
        return second, ("lost", f"the second process searched the same run folder, then failed: {ending}")
    return second, None


def silent_cases(b: Builder) -> None:
    group = "issue: silent"
    for flag, value in (("--fold", "1"), ("--iterations-per-epoch", "2"), ("--preset", "nnunet")):
        run, setup = b.run_copy(f"resume_changed_{flag.strip('-')}")
        b.add(name=f"--resume with changed {flag} {value}", group=group, setup=setup, weight=15,
              argv=b.tiny_search("--run-dir", str(run), "--resume", flag, value))
    b.add(name="preprocessing cache notices a label edited in place", group=group, expect="ok",
          runner=_label_edit, weight=40)
    for what in ("nan", "inf"):
        out = b.folder(f"predict_{what}_image") / "pred"
        b.add(name=f"predict on an image with {what.upper()} voxels", group=group,
              argv=["predict", "--model", str(b.w["ckpt"]), str(b.w[f"image_{what}"]), "-o", str(out)],
              check=_background_check(out), weight=6)
    out = b.folder("predict_nan_weights") / "pred"
    b.add(name="predict with NaN weights", group=group, check=_background_check(out), weight=6,
          argv=["predict", "--model", str(b.w["ckpt_nan_weights"]), str(b.w["image"]), "-o", str(out)])
    grammar = b.folder("sample_unannotated") / "plain.lark"

    def plain_grammar():
        grammar.parent.mkdir(parents=True)
        text = (b.w["master"] / "grammar.lark").read_text()
        grammar.write_text("".join(line for line in text.splitlines(keepends=True) if not line.startswith("//@")))
    b.add(name="sample --confidence on a grammar without annotations", group=group, expect="warn",
          setup=plain_grammar, argv=["sample", "--grammar", str(grammar), "--confidence", "high", "-n", "2"],
          check=lambda r: ("silent", "exit 0 without saying the prior is uniform")
          if r.code == 0 and "uniform" not in r.err.lower() else None)
    for what in ("nan", "inf"):
        b.add(name=f"plan a dataset with {what.upper()} voxels", group=group, argv=["plan", str(b.w[f"ds_{what}"])])
    for what, label in (("affine", "label affine != image affine"), ("pixdim0", "pixdim 0"),
                        ("constant", "a constant image")):
        b.add(name=f"plan warns about {label}", group=group, expect="warn", argv=["plan", str(b.w[f"ds_{what}"])])
    for what in ("bad_patch", "negative_features", "zero_kernel"):
        b.add(name=f"grammar --plan validates the plan ({what})", group=group,
              argv=["grammar", "--plan", str(b.w[f"plan_{what}"])])


def _background_check(out: Path) -> Callable[[Result], tuple[str, str] | None]:
    def check(result: Result):
        if result.code != 0:
            return None
        import nibabel as nib
        import numpy as np

        written = list(out.glob("*.nii*"))
        if written and not np.any(np.asanyarray(nib.load(str(written[0])).dataobj)):
            return "silent", "exit 0 with an all-background label map"
        return "ok", "exit 0 with a non-empty label map"
    return check


def _label_edit(campaign: Campaign, case: Case) -> tuple[Result, tuple[str, str] | None]:
    """Search once, edit one label file in place (same size), search again: the cache must change."""
    import nibabel as nib
    import numpy as np

    folder = campaign.work / "cases" / "label_edit"
    dataset = Path(shutil.copytree(campaign.work / "tiny", folder / "data"))
    dataset = next(p.parent for p in dataset.rglob("dataset.json"))
    env = {"HNAS_CACHE": str(folder / "cache")}
    argv = ["search", "--dataset", str(dataset), *TINY[:-1], "1"]
    first = campaign.run([*argv, "--run-dir", str(folder / "run1")], timeout=case.timeout, env=env)
    if first.code != 0:
        return first, None
    before = snapshot(folder / "cache")
    label = sorted((dataset / "labelsTr").glob("*.nii.gz"))[0]
    size = label.stat().st_size
    loaded = nib.load(str(label))
    original = np.asanyarray(loaded.dataobj)
    foreground = np.argwhere(original > 0)
    same_size = False
    for count in range(1, min(200, len(foreground))):
        edited = original.copy()
        for index in foreground[:count]:
            edited[tuple(index)] = 0
        nib.save(nib.Nifti1Image(edited, loaded.affine, loaded.header), str(label))
        if label.stat().st_size == size:
            same_size = True
            break
    second = campaign.run([*argv, "--run-dir", str(folder / "run2")], timeout=case.timeout, env=env)
    if second.code != 0:
        return second, None
    if snapshot(folder / "cache") == before:
        return second, ("silent", f"the preprocessed cache was reused after a label edit (same file size: "
                                  f"{same_size})")
    return second, ("ok", f"the cache was refreshed (same file size: {same_size})")


def traceback_cases(b: Builder) -> None:
    group = "issue: traceback"
    w = b.w
    for argv in (["sample", "--grammar", str(w["grammar_nonutf8"])], ["grammar", "--plan", str(w["plan_nonutf8"])],
                 ["show", "default", "--plan", str(w["plan_nonutf8"])], ["plan", str(w["ds_nonutf8"])]):
        b.add(name=f"non-UTF-8 file: {argv[0]}", group=group, argv=argv)
    for seed in ("-1", str(-(2 ** 40))):
        b.add(name=f"sample --seed {seed}", group=group, argv=["sample", "--plan", str(w["plan"]), "--seed", seed])
    for seed in ("-1", str(2 ** 64)):
        run = b.folder(f"search_seed_{seed}") / "run"
        b.add(name=f"search --seed {seed}", group=group, weight=15,
              argv=b.tiny_search("--run-dir", str(run), "--max-trials", "1", "--seed", seed))
    _output_cases(b, group)
    b.add(name="truncated .nii.gz: plan", group=group, argv=["plan", str(w["ds_truncated"])])
    b.add(name="truncated .nii.gz: grammar", group=group, argv=["grammar", "--dataset", str(w["ds_truncated"])])
    b.add(name="truncated .nii.gz: search", group=group, weight=10,
          argv=b.tiny_search("--run-dir", str(b.folder("trunc_search") / "run"), dataset=w["ds_truncated"]))
    b.add(name="truncated .nii.gz: predict", group=group,
          argv=["predict", "--model", str(w["ckpt"]), str(w["image_truncated"]), "-o", str(b.folder("tp") / "o")])
    run = b.folder("three_cases") / "run"
    b.add(name="search on a dataset with fewer cases than folds", group=group, weight=20,
          argv=b.tiny_search("--run-dir", str(run), dataset=w["ds_three"]),
          check=lambda r: ("silent", "refused only after training had started")
          if r.code in (1, 2) and (run / "trials").exists() else None)
    b.add(name="search --scheduler that is not an address", group=group, weight=15,
          argv=b.tiny_search("--run-dir", str(b.folder("scheduler") / "run"), "--scheduler", "not an address"))
    b.add(name="search --run-dir that is a file", group=group, weight=10,
          argv=b.tiny_search("--run-dir", str(w["file"])))
    b.add(name="search --run-dir under a file", group=group, weight=10,
          argv=b.tiny_search("--run-dir", str(w["file"] / "run")))
    if os.geteuid() != 0:  # root writes into read-only folders: the case cannot be staged
        readonly = b.folder("readonly") / "run"

        def make_readonly():
            readonly.mkdir(parents=True)
            readonly.chmod(0o555)
        b.add(name="search --run-dir read-only", group=group, setup=make_readonly, weight=10,
              argv=b.tiny_search("--run-dir", str(readonly)))
    truncated = w["master"].joinpath("search.sqlite").read_bytes()
    for what, content in (("empty", b""), ("truncated", truncated[: len(truncated) // 3]), ("garbage", FUZZ.GARBAGE)):
        for command in ("status", "report", "export-nnunet"):
            run, setup = b.run_copy(f"{command}_sqlite_{what}", content)
            argv = {"status": ["status", str(run)], "report": ["report", str(run), "-o", str(run.parent / "rep")],
                    "export-nnunet": ["export-nnunet", str(run), "--plans", str(w["plans"]), "-o",
                                      str(run.parent / "plans.json")]}[command]
            b.add(name=f"{command} on a run with an {what} search.sqlite", group=group, setup=setup, argv=argv)
    for what in ("incomplete_real", "reshaped_real", "foreign_real"):
        b.add(name=f"predict with a {what.split('_')[0]} checkpoint", group=group,
              argv=["predict", "--model", str(w[f"ckpt_{what}"]), str(w["image"]), "-o", str(b.folder(what) / "o")])
    existing = b.folder("predict_existing") / "out"

    def existing_output():
        existing.mkdir(parents=True)
        (existing / w["image"].name.replace("_0000", "")).write_bytes(b"an older result")
    b.add(name="predict into a folder where the output file exists", group=group, expect="no-traceback",
          setup=existing_output, argv=["predict", "--model", str(w["ckpt"]), str(w["image"]), "-o", str(existing)])
    import torch

    if not torch.cuda.is_available():
        b.add(name="predict --device cuda without CUDA", group=group,
              argv=["predict", "--model", str(w["ckpt"]), str(w["image"]), "-o", str(b.folder("cuda") / "o"),
                    "--device", "cuda"])


def _output_cases(b: Builder, group: str) -> None:
    """Each writing command with an output under missing folders, at a folder, and below a regular file."""
    w = b.w
    commands = {
        "plan -o": lambda out: ["plan", str(w["ds_ok"]), "-o", out],
        "grammar -o": lambda out: ["grammar", "--plan", str(w["plan"]), "-o", out],
        "show --render": lambda out: ["show", "default", "--plan", str(w["plan"]), "--render",
                                      out if out.endswith(".svg") else out + ".svg"],
        "predict -o": lambda out: ["predict", "--model", str(w["ckpt"]), str(w["image"]), "-o", out],
        "report -o": lambda out: ["report", str(w["master"]), "-o", out],
        "export-nnunet -o": lambda out: ["export-nnunet", str(w["master"]), "--plans", str(w["plans"]), "-o", out],
    }
    folder_outputs = ("predict -o", "report -o")
    for command, make in commands.items():
        slug = command.split()[0]
        b.add(name=f"{command} under missing folders", group=group, expect="no-traceback",
              argv=make(str(b.folder(f"out_missing_{slug}") / "a" / "b" / "out")))
        if command in folder_outputs:
            b.add(name=f"{command} at an existing file", group=group, argv=make(str(w["file"])))
        else:
            folder = w["dir_svg"] if command == "show --render" else w["dir"]  # a folder with the file's name
            b.add(name=f"{command} at an existing folder", group=group, expect="no-traceback",
                  argv=make(str(folder)))
        b.add(name=f"{command} below a regular file", group=group, argv=make(str(w["file"] / "sub" / "out")))


def happy_cases(b: Builder) -> None:
    group = "must keep working"
    w = b.w
    run, setup = b.run_copy("status_ok")
    b.add(name="status of a finished run", group=group, expect="ok", argv=["status", str(run)], setup=setup)
    b.add(name="plan a small dataset", group=group, expect="ok", argv=["plan", str(w["ds_ok"])])
    b.add(name="grammar of a plan", group=group, expect="ok", argv=["grammar", "--plan", str(w["plan"])])
    b.add(name="sample from a plan", group=group, expect="ok", argv=["sample", "--plan", str(w["plan"]), "--seed", "3"])
    b.add(name="show the default network", group=group, expect="ok", argv=["show", "default", "--plan", str(w["plan"])])
    b.add(name="predict with a trial checkpoint", group=group, expect="ok", weight=6,
          argv=["predict", "--model", str(w["ckpt"]), str(w["image"]), "-o", str(b.folder("predict_ok") / "o")])
    run, setup = b.run_copy("resume_ok")
    b.add(name="resume a finished run with the same settings", group=group, expect="ok", setup=setup, weight=15,
          argv=b.tiny_search("--run-dir", str(run), "--resume"))


def fuzz_cases(b: Builder, n: int) -> None:
    for index, argv in enumerate(FUZZ.bad_invocations(b.w, n=n)):
        b.add(name=f"fuzz #{index}", group="fuzz", argv=argv, timeout=120)


# --------------------------------------------------------------------------- report


def table(outcomes: list[Outcome]) -> str:
    groups = sorted({o.case.group for o in outcomes}, key=lambda g: (g == "fuzz", g == "must keep working", g))
    lines = ["| cases | tried | ok | clean error | traceback | silent | lost |", "|---|---:|---:|---:|---:|---:|---:|"]
    for group in [*groups, "all"]:
        chosen = [o for o in outcomes if group in ("all", o.case.group)]
        counts = [sum(o.verdict == v for o in chosen) for v in VERDICTS]
        label = f"**{group}**" if group == "all" else group
        lines.append(f"| {label} | {len(chosen)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def display(argv: list[str], work: Path) -> str:
    return "hnas " + " ".join(repr(a) if (not a or " " in a) else a for a in argv).replace(str(work), "W")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the hnas source tree to test")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--fuzz", type=int, default=160, help="fuzz invocations added to the issue's cases")
    parser.add_argument("--json", type=Path, help="write every case's details here")
    parser.add_argument("--only", metavar="TEXT", help="run only the cases whose name contains TEXT")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--groups", nargs="+", metavar="GROUP",
                        help="run only these groups, each named by a part of its name (case-insensitive), e.g. "
                             "'post-search' or 'geometry'; groups: " + "; ".join(ALL_GROUPS))
    args = parser.parse_args(argv)
    src = args.src.resolve()
    if not (src / "hnas" / "cli.py").is_file():
        parser.error(f"--src {src} holds no hnas/cli.py")
    groups = set(ALL_GROUPS)
    if args.groups:
        unknown = [g for g in args.groups if not any(g.lower() in name.lower() for name in ALL_GROUPS)]
        if unknown:
            parser.error(f"--groups {unknown} match no group; expected parts of: {'; '.join(ALL_GROUPS)}")
        groups = {name for name in ALL_GROUPS if any(g.lower() in name.lower() for g in args.groups)}
    sys.path.insert(0, str(src))  # the fixtures' own hnas calls use the code under test too
    started = time.monotonic()
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="hnas_campaign_"))
    work.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(src, work)
    print(f"building fixtures and a finished tiny run in {work} ...", file=sys.stderr)
    world = build_world(campaign)
    builder = Builder(campaign, world)
    data_loss_cases(builder)
    silent_cases(builder)
    traceback_cases(builder)
    happy_cases(builder)
    fuzz_cases(builder, args.fuzz)
    builder.cases = [c for c in builder.cases if c.group in groups]
    chosen = groups & set(POST_SEARCH.GROUPS)
    if chosen:
        print("cross-validating the tiny run (2 models x 2 folds) for the post-search cases ...", file=sys.stderr)
        POST_SEARCH.build(sys.modules[__name__], campaign, world)
        POST_SEARCH.Cases(sys.modules[__name__], builder).all(chosen)
    if args.only:
        builder.cases = [c for c in builder.cases if args.only in c.name]
    cases = sorted(builder.cases, key=lambda c: -c.weight)
    print(f"{len(cases)} cases, {args.jobs} at a time ...", file=sys.stderr)
    outcomes: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_case, campaign, case): case for case in cases}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            outcomes.append(future.result())
            if done % 25 == 0:
                print(f"  {done}/{len(cases)} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    order = {id(c): i for i, c in enumerate(builder.cases)}
    outcomes.sort(key=lambda o: order[id(o.case)])
    wall = time.monotonic() - started
    print(f"# hnas reliability campaign: {src}\n")
    print(table(outcomes))
    failing = [o for o in outcomes if not o.expected]
    print(f"\n{len(failing)} of {len(outcomes)} cases not as required:\n")
    for o in failing:
        print(f"- [{o.verdict}] {o.case.group}: {o.case.name}: {o.reason.replace(str(work), 'W')}\n"
              f"    `{display(o.case.argv, work)}`")
    print(f"\nwall time {wall:.0f} s (W = {work})")
    if args.json:
        args.json.write_text(json.dumps({"src": str(src), "work": str(work), "wall_s": wall, "cases": [
            {"name": o.case.name, "group": o.case.group, "expect": o.case.expect, "verdict": o.verdict,
             "as_required": o.expected, "reason": o.reason, "argv": o.result.argv, "exit": o.result.code,
             "seconds": round(o.result.seconds, 2), "stdout_tail": o.result.out[-2000:],
             "stderr_tail": o.result.err[-4000:]} for o in outcomes]}, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
