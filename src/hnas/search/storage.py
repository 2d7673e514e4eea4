"""One SQLite file per run: run metadata plus one row per trial (stdlib sqlite3, WAL).

Every write is its own transaction, committed before the search loop moves on, so a killed
process loses at most the trial that was running (it stays ``pending`` and is re-run on
resume). Resuming compares the stored metadata with the new run's and refuses to mix runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hnas.errors import SearchError
from hnas.search.types import Job, Trial

DATABASE_NAME = "search.sqlite"
FORMAT_VERSION = 1
#: Metadata that must agree between a stored run and the run resuming it.
RESUME_KEYS: tuple[str, ...] = ("format", "space_hash", "architecture_identity", "seed",
                                "optimizer", "optimizer_settings", "objectives")

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


class RunStore:
    """The SQLite file of one run. Use :meth:`create_or_resume` or :meth:`open_existing`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, architecture_key: str | None):
        self.path = path
        self._db = connection
        self._architecture_key = architecture_key

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
                         resume: bool, architecture_key: str | None = None) -> "RunStore":
        """Start a run in ``run_dir`` or, with ``resume``, continue the one stored there."""
        run_dir = Path(run_dir)
        path = database_path(run_dir)
        exists = path.exists()
        if exists and not resume:
            raise SearchError(f"{run_dir} already holds a search ({path.name}); pass resume=True "
                              "(--resume) to continue it or choose another run directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(path, cls._connect(path), architecture_key)
        metadata = {"format": FORMAT_VERSION, **metadata}
        stored = store.metadata()
        if stored:
            store._check_same_run(stored, metadata)
        else:
            store._write_metadata(metadata)
        return store

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> "RunStore":
        """Read a stored run (for reports); fails when there is none."""
        path = database_path(run_dir)
        if not path.exists():
            raise SearchError(f"{run_dir} holds no search ({path.name} not found)")
        store = cls(path, cls._connect(path), None)
        store._architecture_key = store.metadata().get("architecture_key")
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def _write_metadata(self, metadata: Mapping[str, Any]) -> None:
        with self._transaction():
            self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [(k, _dumps(v)) for k, v in metadata.items()])

    @staticmethod
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

    def history(self) -> list[Trial]:
        """Every trial in id order, pending ones included."""
        rows = self._db.execute(
            "SELECT trial_id, config, fidelity, rung, bracket, parent_id, sampler, state, loss, "
            "cost, extra, error, worker, started_at, finished_at FROM trials ORDER BY trial_id"
        ).fetchall()
        return [_trial_from_row(row) for row in rows]


def _trial_from_row(row: tuple) -> Trial:
    (trial_id, config, fidelity, rung, bracket, parent_id, sampler, state, loss, cost, extra,
     error, worker, started_at, finished_at) = row
    job = Job(trial_id, json.loads(config), fidelity, rung=rung, bracket=bracket,
              parent_id=parent_id, sampler=sampler)
    return Trial(job, state=state, loss=loss, cost=cost, error=error, extra=json.loads(extra),
                 worker=worker, started_at=started_at, finished_at=finished_at)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection):
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
