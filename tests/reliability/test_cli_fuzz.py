"""Fuzzing the `hnas` command line with bad invocations: every one must end in a clean refusal.

A seeded generator builds a few hundred invocations from broken inputs (garbage bytes, truncated
gzip, non-UTF-8 text, empty files, directories where files belong and files where folders
belong, negative or huge numbers, unknown choices). Each is built to be refused BEFORE any work
starts: it carries at least one element that no correct implementation can accept (a dataset or
run folder that cannot be read, an option argparse rejects, an output under a regular file), so
no invocation ever trains. The contract under test is the CLI's: exit 2 with argparse's usage,
or exit 1 with one ``hnas: error: ...`` message; never exit 0, never a Python traceback.

``benchmarks/reliability_campaign.py`` imports :func:`build_fixtures` and
:func:`bad_invocations` to run the same invocations as subprocesses against any checkout.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import random
import sqlite3
from pathlib import Path

import pytest

SEED = 20261204
N_INVOCATIONS = 220


# --------------------------------------------------------------------------- fixtures on disk

def _write_nifti(path: Path, array, affine=None) -> Path:
    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def _dataset(root: Path, n_cases: int = 3, shape=(16, 20, 18)) -> Path:
    """A tiny nnU-Net raw dataset (built with nibabel only, so any checkout can read it)."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "left": 1, "right": 2},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    for index in range(n_cases):
        image = np.zeros(shape, dtype=np.int16)
        image[2:-2, 2:-2, 2:-2] = rng.integers(10, 100, size=tuple(s - 4 for s in shape))
        label = np.zeros(shape, dtype=np.uint8)
        label[4:8, 4:8, 4:8] = 1
        label[4:8, 8:10, 4:8] = 2
        _write_nifti(root / "imagesTr" / f"case_{index}_0000.nii.gz", image)
        _write_nifti(root / "labelsTr" / f"case_{index}.nii.gz", label)
    return root


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def _plan_json(path: Path) -> Path:
    """A valid 3-stage plan, written as plain JSON (the format of `hnas plan -o`)."""
    path.write_text(json.dumps({
        "dataset_name": "Fuzz", "dims": 3, "patch_size": [32, 32, 32], "spacing": [1.0, 1.0, 1.0],
        "median_shape": [32, 32, 32], "n_stages": 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "kernel_sizes": [[3, 3, 3]] * 3, "features_per_stage": [8, 16, 32], "conv_blocks_per_stage": [2, 2, 2],
        "conv_decoder_blocks_per_stage": [2, 2], "residual_blocks_per_stage": [1, 3, 4],
        "residual_decoder_blocks_per_stage": [1, 1], "batch_size": 2, "n_input_channels": 1, "n_classes": 3,
        "normalization": ["zscore"], "base_features": 8, "max_features": 32, "transpose_forward": None}))
    return path


GARBAGE = bytes(range(256)) * 3
NON_UTF8 = "start: architecture\n// caf\u00e9 \u00e0 la cr\u00e8me\n".encode("latin-1") + b"\xff\xfe\x80\n"


def _bad_run(root: Path, sqlite_bytes: bytes | None, run_json: bytes | None = None, plan: Path | None = None) -> Path:
    """A run folder with a broken piece: its search.sqlite, or its run.json."""
    root.mkdir(parents=True, exist_ok=True)
    # its settings name a dataset that does not exist, so nothing can fall back to the built-in data
    settings = {"dataset": str(root / "no_such_dataset"), "preset": "cpu", "seed": 0}
    (root / "run.json").write_bytes(run_json if run_json is not None else json.dumps(settings).encode())
    if plan is not None:
        (root / "plan.json").write_text(plan.read_text())
        (root / "grammar.lark").write_text("start: architecture\n")
    if sqlite_bytes is not None:
        (root / "search.sqlite").write_bytes(sqlite_bytes)
    return root


def _foreign_sqlite(path: Path) -> bytes:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE recipes (name TEXT)")
        db.commit()
    data = path.read_bytes()
    path.unlink()
    return data


def _checkpoints(root: Path) -> dict[str, Path]:
    import torch

    root.mkdir(parents=True, exist_ok=True)
    foreign, incomplete = root / "foreign.pt", root / "incomplete.pt"
    torch.save({"state_dict": {"weight": torch.zeros(2, 2)}, "epoch": 3}, foreign)
    torch.save({"plan": "{}", "spec": "{}"}, incomplete)
    truncated = root / "truncated.pt"
    truncated.write_bytes(foreign.read_bytes()[:100])
    garbage, empty, text = root / "garbage.pt", root / "empty.pt", root / "text.pt"
    garbage.write_bytes(GARBAGE)
    empty.write_bytes(b"")
    text.write_text("not a checkpoint\n")
    return {"ckpt_foreign": foreign, "ckpt_incomplete": incomplete, "ckpt_truncated": truncated,
            "ckpt_garbage": garbage, "ckpt_empty": empty, "ckpt_text": text}


def build_fixtures(root: Path) -> dict[str, Path]:
    """Every broken input the generator draws from, built once under ``root``."""
    import numpy as np

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    f["file"] = root / "a_file.txt"
    f["file"].write_text("a regular file\n")
    f["dir"] = root / "a_dir"
    f["dir"].mkdir(exist_ok=True)
    f["missing"] = root / "does" / "not" / "exist"
    f["under_file"] = f["file"] / "below" / "out"
    f["plan"] = _plan_json(root / "plan.json")
    f["ds_ok"] = _dataset(root / "ds_ok")

    # broken datasets: every one must be refused by `plan`, `grammar --dataset`, `search --dataset`
    def broken_dataset(name: str) -> Path:
        return _dataset(root / name)

    f["ds_garbage_json"] = broken_dataset("ds_garbage_json")
    (f["ds_garbage_json"] / "dataset.json").write_bytes(GARBAGE)
    f["ds_nonutf8_json"] = broken_dataset("ds_nonutf8_json")
    (f["ds_nonutf8_json"] / "dataset.json").write_bytes(NON_UTF8)
    f["ds_empty_json"] = broken_dataset("ds_empty_json")
    (f["ds_empty_json"] / "dataset.json").write_bytes(b"")
    f["ds_list_json"] = broken_dataset("ds_list_json")
    (f["ds_list_json"] / "dataset.json").write_text("[1, 2, 3]")
    f["ds_no_json"] = broken_dataset("ds_no_json")
    (f["ds_no_json"] / "dataset.json").unlink()
    f["ds_truncated_image"] = broken_dataset("ds_truncated_image")
    _truncate(f["ds_truncated_image"] / "imagesTr" / "case_1_0000.nii.gz")
    f["ds_garbage_image"] = broken_dataset("ds_garbage_image")
    (f["ds_garbage_image"] / "imagesTr" / "case_0_0000.nii.gz").write_bytes(GARBAGE)
    f["ds_gzip_garbage_image"] = broken_dataset("ds_gzip_garbage_image")
    (f["ds_gzip_garbage_image"] / "imagesTr" / "case_2_0000.nii.gz").write_bytes(gzip.compress(GARBAGE))
    f["ds_empty_label"] = broken_dataset("ds_empty_label")
    (f["ds_empty_label"] / "labelsTr" / "case_0.nii.gz").write_bytes(b"")
    f["ds_dir_image"] = broken_dataset("ds_dir_image")
    (f["ds_dir_image"] / "imagesTr" / "case_0_0000.nii.gz").unlink()
    (f["ds_dir_image"] / "imagesTr" / "case_0_0000.nii.gz").mkdir()
    f["ds_missing_label"] = broken_dataset("ds_missing_label")
    (f["ds_missing_label"] / "labelsTr" / "case_2.nii.gz").unlink()
    f["ds_nan_image"] = broken_dataset("ds_nan_image")
    nan_image = np.full((16, 20, 18), np.nan, dtype=np.float32)
    _write_nifti(f["ds_nan_image"] / "imagesTr" / "case_0_0000.nii.gz", nan_image)
    f["ds_inf_image"] = broken_dataset("ds_inf_image")
    inf_image = np.ones((16, 20, 18), dtype=np.float32)
    inf_image[3:9, 3:9, 3:9] = np.inf
    _write_nifti(f["ds_inf_image"] / "imagesTr" / "case_1_0000.nii.gz", inf_image)
    f["ds_shape_mismatch"] = broken_dataset("ds_shape_mismatch")
    _write_nifti(f["ds_shape_mismatch"] / "labelsTr" / "case_1.nii.gz", np.zeros((5, 5, 5), dtype=np.uint8))
    f["ds_bad_labels"] = broken_dataset("ds_bad_labels")
    _write_nifti(f["ds_bad_labels"] / "labelsTr" / "case_0.nii.gz", np.full((16, 20, 18), 7, dtype=np.uint8))

    # broken plans and grammars
    for name, content in (("garbage", GARBAGE), ("nonutf8", NON_UTF8), ("empty", b""), ("list", b"[1, 2]"),
                          ("foreign", b'{"configurations_missing": true}'), ("truncated", f["plan"].read_bytes()[:60])):
        f[f"plan_{name}"] = root / f"plan_{name}.json"
        f[f"plan_{name}"].write_bytes(content)
    negative = json.loads(f["plan"].read_text())
    negative["features_per_stage"] = [8, -16, 32]
    f["plan_negative_features"] = root / "plan_negative_features.json"
    f["plan_negative_features"].write_text(json.dumps(negative))
    for name, content in (("garbage", GARBAGE), ("nonutf8", NON_UTF8), ("empty", b""),
                          ("syntax", b"start: architecture\narchitecture: ((((\n"), ("gzip", gzip.compress(GARBAGE))):
        f[f"grammar_{name}"] = root / f"grammar_{name}.lark"
        f[f"grammar_{name}"].write_bytes(content)

    # broken run folders: status, train, report and export-nnunet must refuse them
    f["run_empty_dir"] = root / "run_empty_dir"
    f["run_empty_dir"].mkdir(exist_ok=True)
    f["run_empty_sqlite"] = _bad_run(root / "run_empty_sqlite", b"", plan=f["plan"])
    f["run_garbage_sqlite"] = _bad_run(root / "run_garbage_sqlite", GARBAGE, plan=f["plan"])
    f["run_foreign_sqlite"] = _bad_run(root / "run_foreign_sqlite", _foreign_sqlite(root / "foreign.sqlite"),
                                       plan=f["plan"])
    f["run_no_sqlite"] = _bad_run(root / "run_no_sqlite", None, plan=f["plan"])
    f["run_garbage_json"] = _bad_run(root / "run_garbage_json", GARBAGE, run_json=GARBAGE)
    f["run_nonutf8_json"] = _bad_run(root / "run_nonutf8_json", b"", run_json=NON_UTF8)
    f["run_sqlite_dir"] = _bad_run(root / "run_sqlite_dir", None, plan=f["plan"])
    (f["run_sqlite_dir"] / "search.sqlite").mkdir(exist_ok=True)

    # images and checkpoints for `predict`
    f["img_ok"] = _write_nifti(root / "images" / "img_ok_0000.nii.gz", np.ones((8, 8, 8), dtype=np.float32))
    f["img_truncated"] = _truncate(_write_nifti(root / "images" / "img_trunc_0000.nii.gz",
                                                np.ones((8, 8, 8), dtype=np.float32)))
    f["img_garbage"] = root / "images" / "img_garbage_0000.nii.gz"
    f["img_garbage"].write_bytes(GARBAGE)
    f.update(_checkpoints(root / "checkpoints"))
    f["plans_garbage"] = f["plan_garbage"]
    return f


# --------------------------------------------------------------------------- the generator

# Datasets that cannot even be read: safe for `search` (nothing can reach training with them).
UNREADABLE_DATASETS = ("ds_garbage_json", "ds_nonutf8_json", "ds_empty_json", "ds_list_json", "ds_no_json",
                       "ds_truncated_image", "ds_garbage_image", "ds_gzip_garbage_image", "ds_empty_label",
                       "ds_dir_image", "ds_missing_label", "file", "missing", "under_file")
# ... and datasets that read but must fail validation (NaN/inf voxels, label shape or values).
BAD_DATASETS = UNREADABLE_DATASETS + ("ds_nan_image", "ds_inf_image", "ds_shape_mismatch", "ds_bad_labels")
UNREADABLE_PLANS = ("plan_garbage", "plan_nonutf8", "plan_empty", "plan_list", "plan_foreign", "plan_truncated",
                    "dir", "missing", "under_file")
BAD_PLANS = UNREADABLE_PLANS + ("plan_negative_features",)  # read, but `show` and `grammar` must validate it
BAD_GRAMMARS = ("grammar_garbage", "grammar_nonutf8", "grammar_empty", "grammar_syntax", "grammar_gzip", "dir",
                "missing", "under_file")
BAD_RUNS = ("run_empty_dir", "run_empty_sqlite", "run_garbage_sqlite", "run_foreign_sqlite", "run_no_sqlite",
            "run_garbage_json", "run_nonutf8_json", "run_sqlite_dir", "file", "missing", "under_file", "dir")
BAD_CHECKPOINTS = ("ckpt_foreign", "ckpt_incomplete", "ckpt_truncated", "ckpt_garbage", "ckpt_empty", "ckpt_text",
                   "dir", "missing", "plan")
IMAGES = ("img_ok", "img_truncated", "img_garbage", "missing", "dir", "file")
UNWRITABLE_OUTPUTS = ("under_file",)  # no implementation can create a path below a regular file
HUGE = ("99999999999999999999999999", str(2 ** 64), "1e400")
BAD_POSITIVE = ("0", "-1", "-7", "x", "1.5", "", "nan", "--")
NEGATIVE_SEEDS = ("-1", "-2", str(-(2 ** 70)))
BAD_CHOICES = ("bogus", "", "PRIORBAND", "hpo hnas", "\u00e9", "-")
JUNK_OPTIONS = ("--frobnicate", "--dataset-dir", "-Z", "--max_stages", "--resume=yes")


class _Draw:
    """The generator's random choices over the fixture paths."""

    def __init__(self, fixtures: dict[str, Path], rng: random.Random):
        self.f, self.rng = fixtures, rng

    def path(self, names) -> str:
        return str(self.f[self.rng.choice(names)])

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, values):
        return self.rng.choice(values)

    def fresh(self, stem: str) -> str:
        """A path that does not exist yet, inside the fixture root (outputs that may be created)."""
        return str(self.f["dir"] / f"{stem}_{self.rng.randrange(10 ** 9)}")


def _fatal_option(d: _Draw, options: list[tuple[str, tuple]]) -> list[str]:
    """One option with a value argparse must reject (or one it does not know)."""
    if d.chance(0.2):
        return [d.pick(JUNK_OPTIONS)]
    flag, values = d.pick(options)
    return [flag, d.pick(values)]


def _plan_invocation(d: _Draw) -> list[str]:
    if d.chance(0.65):
        argv = ["plan", d.path(BAD_DATASETS)]
        if d.chance(0.4):
            argv += ["--dims", d.pick(("2", "3"))]
        if d.chance(0.3):
            argv += ["-o", d.pick((d.fresh("plan.json"), d.path(UNWRITABLE_OUTPUTS)))]
        return argv
    fatal = d.pick(("dims", "stages", "output", "junk"))
    argv = ["plan", str(d.f["ds_ok"])]
    if fatal == "dims":
        return argv + ["--dims", d.pick(("4", "0", "-1", "x", "2.0"))]
    if fatal == "stages":
        return argv + ["--max-stages", d.pick(BAD_POSITIVE + ("-3", "9", "12", "40"))]
    if fatal == "output":
        return argv + ["-o", d.path(UNWRITABLE_OUTPUTS)]
    return argv + _fatal_option(d, [("--dims", ("4",))])


def _plan_source(d: _Draw, plans=BAD_PLANS) -> list[str]:
    """A bad --dataset or --plan (never none: that would plan the built-in data)."""
    if d.chance(0.5):
        return ["--dataset", d.path(BAD_DATASETS)]
    return ["--plan", d.path(plans)]


def _grammar_invocation(d: _Draw) -> list[str]:
    if d.chance(0.6):
        argv = ["grammar", *_plan_source(d)]
        if d.chance(0.3):
            argv += ["--max-stages", d.pick(("2", "3", "9") + HUGE[:1])]
        if d.chance(0.3):
            argv += ["-o", d.pick((d.fresh("g.lark"), d.path(UNWRITABLE_OUTPUTS)))]
        return argv
    argv = ["grammar", "--plan", str(d.f["plan"])]
    if d.chance(0.3):
        argv.append("--extended")
    fatal = d.pick(("stages", "output", "both", "junk"))
    if fatal == "stages":
        return argv + ["--max-stages", d.pick(BAD_POSITIVE + ("9", "4") + HUGE[:2])]
    if fatal == "output":
        return argv + ["-o", d.path(UNWRITABLE_OUTPUTS)]
    if fatal == "both":  # --dataset and --plan are mutually exclusive
        return argv + ["--dataset", d.path(("ds_ok", "missing"))]
    return argv + _fatal_option(d, [("--max-stages", BAD_POSITIVE)])


def _sample_invocation(d: _Draw) -> list[str]:
    mode = d.pick(("grammar", "source", "seed", "options"))
    if mode == "grammar":
        argv = ["sample", "--grammar", d.path(BAD_GRAMMARS)]
    elif mode == "source":
        argv = ["sample", *_plan_source(d, UNREADABLE_PLANS)]
    elif mode == "seed":  # a negative seed must be refused, whatever else is right
        argv = ["sample", "--plan", str(d.f["plan"]), "--seed", d.pick(NEGATIVE_SEEDS)]
    else:
        argv = ["sample", "--plan", str(d.f["plan"])] + d.pick((
            ["-n", d.pick(BAD_POSITIVE)], ["--confidence", d.pick(BAD_CHOICES)],
            ["--uniform", "--confidence", d.pick(("low", "high"))], ["--seed", d.pick(("x", "1.5", ""))],
            ["--grammar", str(d.f["grammar_syntax"])], [d.pick(JUNK_OPTIONS)]))
    if d.chance(0.3):
        argv += ["-n", d.pick(("1", "3"))]
    if d.chance(0.2) and mode in ("grammar", "source"):
        argv += ["--seed", d.pick(HUGE[:2] + ("7",))]
    if d.chance(0.2) and "--confidence" not in argv:
        argv.append("--uniform")
    return argv


BAD_WORDS = ("swish", "unet", "default default", "", " ", "unet conv_encoder", "\u00e9\u00e9", "unet " * 40,
             "unet conv_encoder instance_norm relu no_dropout 9b")


def _show_invocation(d: _Draw) -> list[str]:
    mode = d.pick(("source", "word", "render", "options"))
    if mode == "source":
        return ["show", d.pick(("default", "unet")), *_plan_source(d)]
    argv = ["show"]
    if mode == "word":
        return argv + [d.pick(BAD_WORDS), "--plan", str(d.f["plan"])]
    if mode == "render":
        return argv + ["default", "--plan", str(d.f["plan"]), "--render", d.path(UNWRITABLE_OUTPUTS) + ".svg"]
    return argv + ["default", "--plan", str(d.f["plan"])] + d.pick((
        ["--dropout-rate", d.pick(("x", "", "0.1.2"))], ["--max-stages", d.pick(BAD_POSITIVE + ("9",))],
        [d.pick(JUNK_OPTIONS)]))


SEARCH_EXTRAS = (
    ("--space", ("hpo", "hnas", "pipeline") + BAD_CHOICES), ("--optimizer", ("random", "bohb") + BAD_CHOICES),
    ("--confidence", ("low", "high") + BAD_CHOICES), ("--preset", ("cpu", "nnunet", "gpu", "auto ")),
    ("--budget", ("1", "0", "-1", "nan", "inf", "x")), ("--time-limit", ("10", "0", "-5", "x")),
    ("--max-trials", ("1",) + BAD_POSITIVE), ("--min-epochs", ("1",) + BAD_POSITIVE),
    ("--max-epochs", ("1",) + BAD_POSITIVE + HUGE[:1]), ("--eta", ("3", "1", "0", "-2")),
    ("--iterations-per-epoch", ("1",) + BAD_POSITIVE), ("--fold", ("0", "4", "5", "-1", "x")),
    ("--workers", ("1", "2", "0", "-4")), ("--scheduler", ("not an address", "tcp://", "http://[::1", "x" * 300)),
    ("--seed", NEGATIVE_SEEDS + HUGE[:2] + ("x",)), ("--max-stages", ("2", "0", "-1") + HUGE[:1]),
)


def _search_invocation(d: _Draw) -> list[str]:
    """Always an unreadable --dataset (so nothing can train), plus a random mix of other options."""
    argv = ["search", "--dataset", d.path(UNREADABLE_DATASETS), "--no-progress"]
    for flag, values in d.rng.sample(SEARCH_EXTRAS, d.rng.randint(0, 4)):
        argv += [flag, d.pick(values)]
    if d.chance(0.4):
        argv += ["--run-dir", d.pick((d.path(("file", "under_file", "run_garbage_sqlite", "run_empty_sqlite")),
                                      d.fresh("run")))]
    if d.chance(0.3):
        argv.append("--resume")
    return argv


def _status_invocation(d: _Draw) -> list[str]:
    if d.chance(0.85):
        return ["status", d.path(BAD_RUNS)]
    return d.pick((["status"], ["status", d.path(BAD_RUNS), d.pick(JUNK_OPTIONS)]))


def _train_invocation(d: _Draw) -> list[str]:
    if d.chance(0.7):
        argv = ["train", "--run", d.path(BAD_RUNS), "--epochs", d.pick(("1", "2") + BAD_POSITIVE[:3])]
        if d.chance(0.4):
            argv += ["--trial", d.pick(("0", "-1", "99", "x"))]
        return argv
    return d.pick((["train", "--run", d.path(BAD_RUNS)], ["train", "--epochs", "1"],
                   ["train", "--run", d.path(BAD_RUNS), "--epochs", d.pick(BAD_POSITIVE)]))


def _predict_invocation(d: _Draw) -> list[str]:
    if d.chance(0.85):
        argv = ["predict", "--model", d.path(BAD_CHECKPOINTS)]
        argv += [d.path(IMAGES) for _ in range(d.rng.randint(1, 2))]
        argv += ["-o", d.pick((d.fresh("pred"), d.path(("file", "under_file", "dir"))))]
        if d.chance(0.4):
            argv += ["--device", d.pick(("cpu", "auto", "cuda", "tpu", "", "cuda:99"))]
        return argv
    return d.pick((["predict", "--model", d.path(BAD_CHECKPOINTS)], ["predict", d.path(IMAGES), "-o", d.fresh("p")],
                   ["predict", "--model", d.path(BAD_CHECKPOINTS), "-o", d.fresh("p")]))


def _report_invocation(d: _Draw) -> list[str]:
    argv = ["report"] + [d.path(BAD_RUNS) for _ in range(d.rng.randint(1, 3))]
    if d.chance(0.5):
        argv += ["-o", d.pick((d.fresh("report"), d.path(("file", "under_file"))))]
    return argv


def _export_invocation(d: _Draw) -> list[str]:
    if d.chance(0.8):
        argv = ["export-nnunet", d.path(BAD_RUNS), "--plans", d.path(("plans_garbage", "plan", "missing", "dir")),
                "-o", d.pick((d.fresh("plans.json"), d.path(("under_file", "dir"))))]
        if d.chance(0.4):
            argv += ["--trial", d.pick(("0", "-1", "x", "99"))]
        if d.chance(0.3):
            argv += ["--configuration-name", d.pick(("", "3d_fullres", "\u00e9"))]
        return argv
    return d.pick((["export-nnunet", d.path(BAD_RUNS)], ["export-nnunet", "--plans", d.path(BAD_PLANS), "-o", "x"]))


def _top_level_invocation(d: _Draw) -> list[str]:
    return d.pick(([], [d.pick(("frobnicate", "plans", "Search", "--", "-", "\u00e9"))], [d.pick(JUNK_OPTIONS)],
                   ["--version"], ["-x", "plan"]))


GENERATORS = ((_plan_invocation, 3), (_grammar_invocation, 3), (_sample_invocation, 3), (_show_invocation, 2),
              (_search_invocation, 4), (_status_invocation, 2), (_train_invocation, 2), (_predict_invocation, 3),
              (_report_invocation, 2), (_export_invocation, 2), (_top_level_invocation, 1))


def bad_invocations(fixtures: dict[str, Path], n: int = N_INVOCATIONS, seed: int = SEED) -> list[list[str]]:
    """``n`` argv lists (without the leading ``hnas``), each of which must be refused."""
    rng = random.Random(seed)
    draw = _Draw(fixtures, rng)
    makers = [maker for maker, weight in GENERATORS for _ in range(weight)]
    return [rng.choice(makers)(draw) for _ in range(n)]


def refusal_problem(code, out: str, err: str) -> str | None:
    """Why a finished invocation breaks the CLI's contract, or None when it was a clean refusal."""
    if "Traceback" in out or "Traceback" in err:
        return "Python traceback in the output"
    if code == 2:
        return None if "usage: hnas" in err else "exit 2 without argparse's usage"
    if code == 1:
        # One error, announced once; a message may go on over lines (a dataset's list of problems),
        # and warnings may come before it.
        lines = [line for line in err.splitlines() if line.strip()]
        starts = [i for i, line in enumerate(lines) if line.startswith("hnas: error:")]
        if len(starts) == 1 and all("warning" in line.lower() for line in lines[:starts[0]]):
            return None
        return "exit 1 without exactly one 'hnas: error: ...' message on stderr"
    return f"exit {code!r}: expected a refusal (exit 1 or 2)"


# --------------------------------------------------------------------------- the test

@pytest.fixture(scope="module")
def fuzz_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    fixtures = build_fixtures(root / "inputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HNAS_CACHE", str(root / "cache"))  # nothing may touch the user's cache
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.chdir(root)  # a default run folder would land here, not in the repository
        yield bad_invocations(fixtures), fixtures


def run_in_process(argv: list[str]) -> tuple[object, str, str]:
    """``hnas.cli.main(argv)`` with stdout/stderr captured; SystemExit gives the exit code."""
    from hnas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        except Exception:  # noqa: BLE001 - an escaping exception is what this test looks for
            import traceback

            traceback.print_exc(file=err)
            code = "exception"
    return code, out.getvalue(), err.getvalue()


def test_generator_is_seeded_and_covers_every_command(fuzz_cases):
    argvs, fixtures = fuzz_cases
    assert len(argvs) >= 200
    commands = {argv[0] for argv in argvs if argv}
    assert {"plan", "grammar", "sample", "show", "search", "status", "train", "predict", "report",
            "export-nnunet"} <= commands
    assert bad_invocations(fixtures) == argvs  # seeded: a failure can be replayed
    assert bad_invocations(fixtures, seed=SEED + 1) != argvs


@pytest.mark.parametrize("index", range(N_INVOCATIONS))
def test_bad_invocation_is_refused_cleanly(fuzz_cases, index):
    argv = fuzz_cases[0][index]
    code, out, err = run_in_process(argv)
    problem = refusal_problem(code, out, err)
    assert problem is None, f"hnas {argv!r}: {problem}\n--- stdout\n{out[-1500:]}\n--- stderr\n{err[-3000:]}"
