"""A run folder survives mistakes: refused searches change nothing, broken databases are named, not
overwritten, two searches never share a folder, and bad input is refused before anything is created."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from hnas.cli import main
from hnas.errors import HnasError, SearchError
from hnas.pipeline.search import search
from hnas.pipeline.spaces import make_space
from hnas.search import executors, run

from .run_folders import CHECKPOINT, settings_for, snapshot, tiny_dataset

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def checkpoints(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.glob(f"trials/*/{CHECKPOINT}"))}


# ------------------------------------------------------------------ a refused search changes nothing

def test_search_without_resume_on_a_stored_run_is_refused_and_changes_nothing(dataset, run_dir, fake):
    before = snapshot(run_dir)
    with pytest.raises(SearchError, match="already holds a search.*--resume"):
        search(settings_for(dataset, max_stages=None, seed=4), run_dir, progress=False)
    assert snapshot(run_dir) == before


def test_a_new_search_refuses_a_folder_with_checkpoints_but_no_database(dataset, run_dir, fake):
    (run_dir / "search.sqlite").unlink()
    before = snapshot(run_dir)
    with pytest.raises(SearchError, match="trials") as error:
        search(settings_for(dataset), run_dir, progress=False)
    assert str(run_dir) in str(error.value)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("content", ["nothing", "empty folder", "settings only"])
def test_resume_refuses_a_folder_without_a_run(dataset, run_dir, tmp_path, fake, content):
    target = tmp_path / "target"
    if content == "empty folder":
        target.mkdir()
    elif content == "settings only":  # a search that died before its database was written
        target.mkdir()
        shutil.copy(run_dir / "run.json", target / "run.json")
    before = snapshot(target) if target.exists() else None
    with pytest.raises(SearchError, match="no search to resume") as error:
        search(settings_for(dataset), target, resume=True, progress=False)
    assert str(target) in str(error.value)
    assert (snapshot(target) if target.exists() else None) == before


def break_database(path: Path, how: str) -> None:
    import sqlite3

    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 40)
    elif how == "foreign tables":  # a valid SQLite file, but not one hnas wrote
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
        sqlite3.connect(path).close()


BROKEN = ["empty", "truncated", "garbage", "foreign tables"]


@pytest.mark.parametrize("how", BROKEN)
def test_resume_refuses_a_broken_database_and_keeps_the_checkpoints(dataset, run_dir, fake, how):
    database = run_dir / "search.sqlite"
    break_database(database, how)
    before, kept = snapshot(run_dir), checkpoints(run_dir)
    with pytest.raises(SearchError, match="not an hnas run database") as error:
        search(settings_for(dataset, max_trials=6), run_dir, resume=True, progress=False)
    assert str(database) in str(error.value)
    assert snapshot(run_dir) == before and len(kept) == 3


def quadratic(context) -> float:
    return (context.config["initial_lr"] - 0.01) ** 2 + 1.0 / context.fidelity


def test_the_search_library_refuses_to_resume_a_broken_database(tmp_path):
    run(quadratic, make_space("hpo"), optimizer="random", max_trials=2, min_fidelity=1, max_fidelity=3,
        run_dir=tmp_path)
    break_database(tmp_path / "search.sqlite", "empty")
    with pytest.raises(SearchError, match="not an hnas run database"):
        run(quadratic, make_space("hpo"), optimizer="random", max_trials=3, min_fidelity=1, max_fidelity=3,
            run_dir=tmp_path, resume=True)
    assert (tmp_path / "search.sqlite").read_bytes() == b""


def test_a_search_killed_while_creating_its_database_leaves_none_behind(tmp_path):
    """The database is written under another name and renamed: a draft left by a kill is not a run."""
    (tmp_path / "search.sqlite.new").write_bytes(b"half a database")
    summary = run(quadratic, make_space("hpo"), optimizer="random", max_trials=2, min_fidelity=1, max_fidelity=3,
                  run_dir=tmp_path)
    assert len(summary.history) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.lock", "search.sqlite", "trials"]


COMMANDS = {
    "status": lambda run_dir, tmp: ["status", run_dir],
    "report": lambda run_dir, tmp: ["report", run_dir, "-o", tmp / "report"],
    "export-nnunet": lambda run_dir, tmp: ["export-nnunet", run_dir, "--plans", tmp / "plans.json", "-o",
                                           tmp / "out.json"],
    "train": lambda run_dir, tmp: ["train", "--run", run_dir, "--epochs", "1"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("how", BROKEN)
def test_commands_name_a_broken_database(capsys, run_dir, tmp_path, command, how):
    database = run_dir / "search.sqlite"
    break_database(database, how)
    broken = database.read_bytes()
    code = main([str(a) for a in COMMANDS[command](run_dir, tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and str(database) in err and "not an hnas run database" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert database.read_bytes() == broken


# ------------------------------------------------------------------ one search per run folder

def lock_is_free(run_dir: Path) -> bool:
    """Whether another process could take the run's lock now (it is an OS lock on search.lock)."""
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a')\ntry:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", probe, str(run_dir / "search.lock")]).returncode == 0


LIVE_SEARCH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pytest
    from hnas.pipeline import search as search_module
    from reliability import run_folders

    class Hangs(run_folders.FakeObjective):
        def __call__(self, context):
            if context.trial_id == 3:
                print("running", flush=True)
                time.sleep(120)
            return super().__call__(context)

    with pytest.MonkeyPatch.context() as patch:
        run_folders.fake_training(patch)
        patch.setattr(search_module, "TrainObjective", Hangs)
        settings = run_folders.settings_for(Path(sys.argv[1]), max_trials=4)
        search_module.search(settings, Path(sys.argv[2]), resume=True, progress=False)
""")


def test_a_second_search_on_a_live_run_is_refused_and_a_killed_one_frees_the_folder(dataset, run_dir, fake):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    live = subprocess.Popen([sys.executable, "-c", LIVE_SEARCH, str(dataset), str(run_dir)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        for line in live.stdout:  # the search prints its settings first
            if line.startswith("running"):
                break  # the live search is inside trial 3
        before = snapshot(run_dir)
        with pytest.raises(SearchError, match="in use") as error:
            search(settings_for(dataset, max_trials=5), run_dir, resume=True, progress=False)
        assert str(run_dir) in str(error.value) and f"pid {live.pid}" in str(error.value)
        assert snapshot(run_dir) == before
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    assert lock_is_free(run_dir)
    summary = search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    assert len(summary.history) == 4 and all(t.is_success for t in summary.history)


def test_the_lock_is_released_after_a_search_and_after_an_error(dataset, run_dir, fake):
    search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    assert lock_is_free(run_dir)
    with pytest.raises(HnasError, match="serial executor"):  # fails inside the search, with the lock held
        search(settings_for(dataset, max_trials=5, workers=2), run_dir, resume=True, progress=False,
               executor="serial")
    assert lock_is_free(run_dir)


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """Data-loader workers are forked from the search: its lock must still end with the search."""
    import multiprocessing
    import time

    from hnas.search.storage import RunLock

    lock = RunLock(tmp_path).acquire()
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    try:
        assert not lock_is_free(tmp_path)
        lock.release()
        assert lock_is_free(tmp_path)
    finally:
        child.kill()
        child.join()


def test_the_search_library_refuses_a_folder_another_process_searches(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\nf = open(sys.argv[1], 'a+')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(120)\n",
         str(tmp_path / "search.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert "locked" in holder.stdout.readline()
        with pytest.raises(SearchError, match="in use by another"):
            run(quadratic, make_space("hpo"), optimizer="random", max_trials=1, min_fidelity=1, max_fidelity=1,
                run_dir=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "search.sqlite").exists()


# ------------------------------------------------------------------ refused before anything is created

@pytest.mark.parametrize("address", ["foo", "http://x:y", "tcp://host:notaport", "tcp://host", "tcp://:8786",
                                     "tcp://host:70000", ""])
def test_a_scheduler_that_is_not_an_address_is_refused_before_anything_is_created(dataset, tmp_path, fake,
                                                                                  address):
    pytest.importorskip("distributed")
    with pytest.raises(SearchError, match="scheduler") as error:
        search(settings_for(dataset, scheduler=address), tmp_path / "new", progress=False)
    assert repr(address) in str(error.value)
    assert not (tmp_path / "new").exists()
    with pytest.raises(SearchError, match="scheduler"):
        executors.make_executor("dask", lambda context: 0.0, scheduler=address)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "localhost:8786", "tls://scheduler.example:8786",
                                     "tcp://[::1]:8786", "inproc://10.0.0.1/123/1"])
def test_scheduler_addresses_dask_can_reach_are_accepted(address):
    pytest.importorskip("distributed")
    executors.validate_scheduler_address(address)


def test_a_dataset_with_fewer_cases_than_folds_is_refused_before_anything_is_created(tmp_path, fake):
    small = tiny_dataset(tmp_path / "data", n_cases=3)
    with pytest.raises(HnasError, match="3 cases.*5 folds") as error:
        search(settings_for(small), tmp_path / "new", progress=False)
    assert str(small) in str(error.value)
    assert not (tmp_path / "new").exists()


def test_a_run_dir_that_is_a_file_or_under_a_file_is_refused(dataset, tmp_path, fake):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for target in (a_file, a_file / "run"):
        for resume in (False, True):
            with pytest.raises(SearchError, match="file") as error:
                search(settings_for(dataset), target, resume=resume, progress=False)
            assert str(a_file) in str(error.value)
    assert a_file.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root ignores permissions")
@pytest.mark.parametrize("where", ["inside", "itself"])
def test_a_read_only_run_dir_is_refused_cleanly(where):
    root = Path(tempfile.mkdtemp())  # not under pytest's tmp_path: that is private to this user
    try:
        locked = root / "locked"
        locked.mkdir()
        target = locked / "run" if where == "inside" else locked
        locked.chmod(0o555)
        root.chmod(0o755)
        command = [sys.executable, "-m", "hnas.cli", "search", "--dataset", str(root / "data"), "--run-dir",
                   str(target), "--no-progress"]
        if os.geteuid() == 0:  # run as nobody, for whom the folder is read-only
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + command
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "HNAS_CACHE": str(root / "cache")})
        assert result.returncode == 1, result.stderr
        assert str(target) in result.stderr and "writ" in result.stderr and "Traceback" not in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(root)
