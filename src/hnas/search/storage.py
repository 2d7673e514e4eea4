"""One SQLite file per run: run metadata plus one row per trial (stdlib sqlite3, WAL).

Every write is its own transaction, committed before the search loop moves on, so a killed
process loses at most the trial that was running (it stays ``pending`` and is re-run on
resume). Resuming compares the stored metadata with the new run's and refuses to mix runs.

A file that is not a database hnas wrote (empty, truncated, random bytes, someone else's SQLite
file) is refused by name before anything reads or writes it: SQLite would otherwise open an empty
file as a fresh database and a resume would silently start over. A search holds an OS lock on
``search.lock`` beside the database, so two processes never write one run.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from hnas.errors import SearchError
from hnas.search.types import ImportedFrom, Job, Trial

DATABASE_NAME = "search.sqlite"
TRIALS_FOLDER = "trials"
LOCK_NAME = "search.lock"
FORMAT_VERSION = 1
#: Metadata that must agree between a stored run and the run resuming it.
RESUME_KEYS: tuple[str, ...] = ("format", "space_hash", "architecture_identity", "seed",
                                "optimizer", "optimizer_settings", "objectives", "config_filter")
#: What a run database needs before anything reads it: its tables and the metadata load_run uses.
REQUIRED_TABLES: tuple[str, ...] = ("meta", "trials")
REQUIRED_METADATA: tuple[str, ...] = ("format", "optimizer_settings")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    architecture TEXT,
    fidelity REAL NOT NULL,
    rung INTEGER NOT NULL,
    bracket INTEGER NOT NULL,
    parent_id INTEGER REFERENCES trials(trial_id),
    sampler TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'success', 'failed')),
    loss REAL,
    cost REAL,
    extra TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 1
);
"""
#: A warm start's provenance: created with a run that imports trials, so other runs keep the tables they had.
_IMPORTS_SCHEMA = ("CREATE TABLE IF NOT EXISTS imports (trial_id INTEGER PRIMARY KEY REFERENCES trials(trial_id), "
                   "source_run TEXT NOT NULL, source_trial INTEGER NOT NULL)")

#: Created by the first refused draw only, so runs without a filter keep the tables they always had.
_PRUNED_SCHEMA = "CREATE TABLE IF NOT EXISTS pruned (trial_id INTEGER PRIMARY KEY, configurations INTEGER NOT NULL)"


def json_default(value: Any) -> Any:
    """numpy scalars and arrays (e.g. per-class Dice) become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=json_default)


def database_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / DATABASE_NAME


def trial_dir(run_dir: str | Path, trial_id: int) -> Path:
    """A trial's own folder (its checkpoint and logs): ``trials/00042``."""
    return Path(run_dir) / TRIALS_FOLDER / f"{trial_id:05d}"


def check_database(path: str | Path) -> None:
    """Refuse a file that is not a run database hnas wrote, naming it; reads, never writes it."""
    problem = _database_problem(Path(path))
    if problem:
        raise SearchError(f"{path} is not an hnas run database ({problem}); expected the {DATABASE_NAME} an "
                          "`hnas search` wrote: restore it from a backup, or search in another folder")


def _database_problem(path: Path) -> str | None:
    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        # mode=rw: never create the file; a normal close also removes the -wal/-shm files a read makes
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30.0)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [name for name in REQUIRED_TABLES if name not in tables]
            if missing:
                return f"it has no {' or '.join(missing)} table"
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                return f"SQLite's integrity check: {' '.join(str(verdict).split())}"
            keys = {row[0] for row in db.execute("SELECT key FROM meta")}
            missing = [key for key in REQUIRED_METADATA if key not in keys]
            if missing:
                return f"its metadata lacks {missing}"
    except sqlite3.OperationalError as error:  # cannot open, busy, I/O: the access, not the content
        raise SearchError(f"cannot read {path} (SQLite: {error}); expected a run database this user can read, "
                          "in a folder it can write") from None
    except sqlite3.DatabaseError as error:  # not a database, or a malformed one
        return f"SQLite: {error}"
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    return None


class RunLock:
    """An exclusive lock on a run folder (``search.lock``), so two searches never write one run.

    It is ``fcntl.flock`` on an open file, so the kernel drops it when the process ends, SIGKILL
    included. Re-entrant within a process (``hnas search`` takes it before writing run.json, the
    search loop again for the database); a forked child (e.g. a data-loader worker) closes its copy,
    so it cannot keep the lock alive. The file keeps the holder's pid for the refusal message.
    """

    _held: dict[str, list] = {}  # lock file -> [open file, depth] of this process

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        """Take the lock (creating the folder); SearchError when another process holds it."""
        key = os.path.realpath(self.path)
        if key in RunLock._held:
            RunLock._held[key][1] += 1
        else:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise SearchError(in_use_message(self.run_dir, holder)) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            RunLock._held[key] = [handle, 1]
        self._key = key
        return self

    def _open(self):
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a+")
        except OSError as error:
            raise SearchError(f"cannot write to the run folder {str(self.run_dir)!r} ({error.strerror}); "
                              "expected a folder this user can write") from None

    def release(self) -> None:
        """Give the lock up (idempotent); the last release of this process closes the file."""
        key, self._key = self._key, None
        if key is None or key not in RunLock._held:
            return
        held = RunLock._held[key]
        held[1] -= 1
        if held[1] == 0:
            del RunLock._held[key]
            held[0].close()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_not_in_use(run_dir: str | Path) -> None:
    """SearchError when another process holds the run's lock; creates and changes nothing."""
    path = Path(run_dir) / LOCK_NAME
    if os.path.realpath(path) in RunLock._held or not path.is_file():
        return
    try:
        handle = open(path)
    except OSError:
        return  # unreadable: taking the lock will say why
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(in_use_message(run_dir, handle.read().strip())) from None


def in_use_message(run_dir: str | Path, holder: str) -> str:
    who = f"pid {holder}" if holder.isdigit() else "its pid unknown"
    return (f"run folder {str(run_dir)!r} is in use by another hnas search ({who}); wait for it to end or stop "
            "it, then resume")


def _forget_locks_in_child() -> None:
    for handle, _ in RunLock._held.values():
        handle.close()  # the child's copy only: the parent keeps the lock
    RunLock._held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


class RunStore:
    """The SQLite file of one run. Use :meth:`create_or_resume` or :meth:`open_existing`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, architecture_key: str | None,
                 lock: RunLock | None = None):
        self.path = path
        self._db = connection
        self._architecture_key = architecture_key
        self._lock = lock

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
        if "attempts" not in columns:  # runs stored before attempts were counted
            connection.execute("ALTER TABLE trials ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
        return connection

    @classmethod
    def create_or_resume(cls, run_dir: str | Path, metadata: Mapping[str, Any], *,
                         resume: bool, architecture_key: str | None = None,
                         imported: Sequence[Trial] = ()) -> "RunStore":
        """Start a run in ``run_dir`` or, with ``resume``, continue the one stored there.

        ``imported`` (a warm start's trials, ids 0..k-1) enter a new run's database with it, in the
        same write; a resumed run keeps the ones it has. The store holds the run's lock until
        :meth:`close`; another process holding it is refused.
        """
        run_dir = Path(run_dir)
        lock = RunLock(run_dir).acquire()
        try:
            connection = cls._open_for_search(database_path(run_dir), {"format": FORMAT_VERSION, **metadata},
                                              resume, _imported_rows(imported, architecture_key))
        except BaseException:
            lock.release()
            raise
        return cls(database_path(run_dir), connection, architecture_key, lock)

    @classmethod
    def _open_for_search(cls, path: Path, metadata: Mapping[str, Any], resume: bool,
                         imported: Sequence[tuple] = ()) -> sqlite3.Connection:
        if not path.exists():
            _create_database(path, metadata, imported)
            return cls._connect(path)
        if not resume:
            raise SearchError(f"{path.parent} already holds a search ({path.name}); pass resume=True "
                              "(--resume) to continue it or choose another run directory")
        check_database(path)
        connection = cls._connect(path)
        try:
            _check_same_run(_read_metadata(connection), metadata)
        except BaseException:
            connection.close()
            raise
        return connection

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> "RunStore":
        """Read a stored run (for reports); fails when there is none."""
        path = database_path(run_dir)
        if not path.exists():
            raise SearchError(f"{run_dir} holds no search ({path.name} not found)")
        check_database(path)
        store = cls(path, cls._connect(path), None)
        store._architecture_key = store.metadata().get("architecture_key")
        return store

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return _read_metadata(self._db)

    # -- trials --------------------------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self._db)

    def add(self, job: Job) -> Trial:
        """Record a job handed to a worker (state ``pending``)."""
        architecture = job.config.get(self._architecture_key) if self._architecture_key else None
        with self._transaction():
            self._db.execute(
                "INSERT INTO trials (trial_id, config, architecture, fidelity, rung, bracket, "
                "parent_id, sampler, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "'pending', ?)",
                (job.trial_id, _dumps(dict(job.config)), architecture, job.fidelity, job.rung,
                 job.bracket, job.parent_id, job.sampler, time.time()))
        return Trial.pending(job)

    def finish(self, trial: Trial) -> None:
        """Store a finished trial's outcome (a pending row becomes success or failed)."""
        if not trial.is_finished:
            raise SearchError(f"trial {trial.trial_id} is still pending; only outcomes are stored")
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE trials SET state = ?, loss = ?, cost = ?, extra = ?, error = ?, worker = ?, "
                "started_at = ?, finished_at = ? WHERE trial_id = ? AND state = 'pending'",
                (trial.state, trial.loss, trial.cost, _dumps(dict(trial.extra)), trial.error,
                 trial.worker, trial.started_at, trial.finished_at, trial.trial_id))
            if cursor.rowcount != 1:
                raise SearchError(f"trial {trial.trial_id} is not a pending trial of this run")

    def attempts(self, trial_id: int) -> int:
        """How many times a trial was handed to a worker (a resume re-runs pending trials)."""
        row = self._db.execute("SELECT attempts FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        if row is None:
            raise SearchError(f"trial {trial_id} is not in this run")
        return int(row[0])

    def count_attempt(self, trial_id: int) -> int:
        """Record that a pending trial is started again; returns its attempts so far."""
        with self._transaction():
            cursor = self._db.execute("UPDATE trials SET attempts = attempts + 1 WHERE trial_id = ? AND "
                                      "state = 'pending'", (trial_id,))
            if cursor.rowcount != 1:
                raise SearchError(f"trial {trial_id} is not a pending trial of this run")
        return self.attempts(trial_id)

    # -- configurations a filter refused (hnas.search.feasibility) --------------------------------
    def record_pruned(self, trial_id: int, configurations: int) -> None:
        """Store how many sampled configurations a filter refused before trial ``trial_id``'s.

        Keyed by the trial: a resume that asks for the same trial again replaces, never adds.
        """
        with self._transaction():
            self._db.execute(_PRUNED_SCHEMA)
            self._db.execute("INSERT OR REPLACE INTO pruned (trial_id, configurations) VALUES (?, ?)",
                             (trial_id, configurations))

    def pruned_configurations(self) -> int:
        """Sampled configurations a filter refused over the whole run (0 for runs without one)."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pruned'").fetchone() is None:
            return 0
        return int(self._db.execute("SELECT COALESCE(SUM(configurations), 0) FROM pruned").fetchone()[0])

    def history(self) -> list[Trial]:
        """Every trial in id order, pending ones included; imported ones with their source."""
        has_imports = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'imports'").fetchone() is not None
        source = "source_run, source_trial FROM trials LEFT JOIN imports USING (trial_id)" if has_imports \
            else "NULL, NULL FROM trials"
        rows = self._db.execute(
            "SELECT trials.trial_id, config, fidelity, rung, bracket, parent_id, sampler, state, loss, "
            f"cost, extra, error, worker, started_at, finished_at, {source} ORDER BY trials.trial_id"
        ).fetchall()
        return [_trial_from_row(row) for row in rows]


def _read_metadata(connection: sqlite3.Connection) -> dict[str, Any]:
    rows = connection.execute("SELECT key, value FROM meta").fetchall()
    return {key: json.loads(value) for key, value in rows}


def _create_database(path: Path, metadata: Mapping[str, Any], imported: Sequence[tuple] = ()) -> None:
    """Write a new run's database (with a warm start's imported trials) under another name, then
    rename it into place.

    So ``search.sqlite`` is complete or absent: a search killed while creating it leaves no
    half-made file that a resume would have to refuse, and never a run with half its imports.
    """
    draft = path.with_name(path.name + ".new")
    for leftover in (draft, draft.with_name(draft.name + "-wal"), draft.with_name(draft.name + "-shm")):
        leftover.unlink(missing_ok=True)
    with closing(RunStore._connect(draft)) as connection:
        if imported:
            connection.execute(_IMPORTS_SCHEMA)
        with _Transaction(connection):
            connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                   [(k, _dumps(v)) for k, v in metadata.items()])
            connection.executemany(
                "INSERT INTO trials (trial_id, config, architecture, fidelity, rung, bracket, parent_id, sampler, "
                "state, loss, cost, extra, error, worker, created_at, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [row[:-2] for row in imported])
            if imported:
                connection.executemany("INSERT INTO imports (trial_id, source_run, source_trial) VALUES (?, ?, ?)",
                                       [(row[0], *row[-2:]) for row in imported])
    os.replace(draft, path)


def _check_same_run(stored: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    differences = []
    for key in RESUME_KEYS:
        old_value, new_value = stored.get(key), new.get(key)
        if json.loads(_dumps(old_value)) == json.loads(_dumps(new_value)):
            continue
        if isinstance(old_value, Mapping) and isinstance(new_value, Mapping):
            for sub in sorted(set(old_value) | set(new_value)):
                if old_value.get(sub) != new_value.get(sub):
                    differences.append(f"{key}.{sub}: stored {old_value.get(sub)!r}, "
                                       f"now {new_value.get(sub)!r}")
        else:
            differences.append(f"{key}: stored {old_value!r}, now {new_value!r}")
    if differences:
        raise SearchError("cannot resume: this run differs from the stored one ("
                          + "; ".join(differences) + ")")


def _imported_rows(trials: Sequence[Trial], architecture_key: str | None) -> list[tuple]:
    """A warm start's finished trials as trials-table rows, their provenance last."""
    rows = []
    for trial in trials:
        if not trial.is_finished or trial.imported is None:
            raise SearchError(f"trial {trial.trial_id} cannot be imported: only finished trials with their "
                              "source are")
        job = trial.job
        rows.append((job.trial_id, _dumps(dict(job.config)),
                     job.config.get(architecture_key) if architecture_key else None, job.fidelity, job.rung,
                     job.bracket, job.parent_id, job.sampler, trial.state, trial.loss, trial.cost,
                     _dumps(dict(trial.extra)), trial.error, trial.worker, time.time(), trial.started_at,
                     trial.finished_at, trial.imported.run, trial.imported.trial_id))
    return rows


def _trial_from_row(row: tuple) -> Trial:
    (trial_id, config, fidelity, rung, bracket, parent_id, sampler, state, loss, cost, extra,
     error, worker, started_at, finished_at, source_run, source_trial) = row
    job = Job(trial_id, json.loads(config), fidelity, rung=rung, bracket=bracket,
              parent_id=parent_id, sampler=sampler)
    imported = ImportedFrom(source_run, source_trial) if source_run is not None else None
    return Trial(job, state=state, loss=loss, cost=cost, error=error, extra=json.loads(extra),
                 worker=worker, started_at=started_at, finished_at=finished_at, imported=imported)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection):
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
