"""Where objectives run: in-process (serial), local worker processes, or Dask distributed.

Each executor takes :class:`TrialContext` objects and hands back :class:`Outcome` objects; it
never raises for a failing trial. An objective that raises, returns NaN or something that is
not a result, or whose worker process dies, becomes a failed outcome carrying the error text.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import multiprocessing
import os
import pickle
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hnas.errors import SearchError
from hnas.search.storage import json_default

EXECUTORS: tuple[str, ...] = ("serial", "processes", "dask")
#: One environment per worker process (e.g. its own GPU, or its share of the CPU threads); ``None``: inherit.
WorkerEnv = Sequence[Mapping[str, str]] | None
#: Dask settings while a local cluster runs. Dask's Nanny starts daemonic worker processes by
#: default, and a daemonic process may not start children: the DataLoader's augmentation workers
#: (8 in the nnunet preset) would be dropped. The Nanny still stops its worker on close, and the
#: worker exits by itself when the Nanny's process dies.
LOCAL_WORKER_CONFIG = {"distributed.worker.daemon": False}


@dataclass(frozen=True)
class TrialContext:
    """What an objective gets: the job plus where to keep (and find) its files.

    ``trial_dir`` is this trial's own folder under the run directory. For a promotion,
    ``previous_trial_dir`` is the parent's folder (continue from its checkpoint) and
    ``previous_cost`` the parent's cost (e.g. training seconds so far, to accumulate).
    ``max_fidelity`` lets schedules run over the whole budget, so continuing is consistent.
    """

    trial_id: int
    config: Mapping[str, Any]
    fidelity: float
    max_fidelity: float
    rung: int
    bracket: int
    trial_dir: Path
    parent_id: int | None = None
    previous_trial_dir: Path | None = None
    previous_cost: float | None = None
    previous_fidelity: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    """The result of one evaluation, as it travels back from a worker."""

    trial_id: int
    state: str
    loss: float | None = None
    cost: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


Objective = Callable[[TrialContext], Any]


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def interpret_result(value: Any, context: TrialContext) -> tuple[float, float, dict[str, Any]]:
    """``(loss, cost, extra)`` from what an objective returned; SearchError when unusable.

    A number is the loss; a dict needs ``loss`` and may give ``cost`` (default: the
    fidelity, which for a continued trial is the fidelity accumulated so far) and any
    JSON-able extra information.
    """
    if isinstance(value, Mapping):
        if "loss" not in value:
            raise SearchError(f"the objective returned a dict without 'loss': keys {sorted(value)}")
        extra = {k: v for k, v in value.items() if k not in ("loss", "cost")}
        try:
            extra = json.loads(json.dumps(extra, default=json_default))
        except (TypeError, ValueError) as error:
            raise SearchError(f"the objective's extra information is not JSON-able: {error}") from None
        loss, cost = value["loss"], value.get("cost", context.fidelity)
    else:
        loss, cost, extra = value, context.fidelity, {}
    numbers = {}
    for name, number in (("loss", loss), ("cost", cost)):
        try:
            numbers[name] = float(number)
        except (TypeError, ValueError):
            raise SearchError(f"the objective's {name} {number!r} is not a number (expected a "
                              "float or a dict with 'loss' and optionally 'cost')") from None
        if not math.isfinite(numbers[name]):
            raise SearchError(f"the objective returned a non-finite {name} ({numbers[name]})")
    return numbers["loss"], numbers["cost"], extra


def evaluate(objective: Objective, context: TrialContext) -> Outcome:
    """Run one trial; every failure of the objective becomes a failed Outcome."""
    started = time.time()
    try:
        Path(context.trial_dir).mkdir(parents=True, exist_ok=True)
        loss, cost, extra = interpret_result(objective(context), context)
    except (Exception, SystemExit) as error:  # the objective is user code: anything may fail
        text = (str(error) if isinstance(error, SearchError)
                else "".join(traceback.format_exception(error)).strip())
        return Outcome(context.trial_id, "failed", error=text, worker=_worker_name(),
                       started_at=started, finished_at=time.time())
    return Outcome(context.trial_id, "success", loss=loss, cost=cost, extra=extra,
                   worker=_worker_name(), started_at=started, finished_at=time.time())


def _lost(context: TrialContext, reason: str) -> Outcome:
    return Outcome(context.trial_id, "failed", error=reason, finished_at=time.time())


class Executor(Protocol):
    capacity: int

    @property
    def running(self) -> int: ...

    def submit(self, context: TrialContext) -> None: ...

    def wait(self) -> list[Outcome]:
        """Block until at least one submitted trial has finished; return those that have."""

    def close(self) -> None: ...


class SerialExecutor:
    """Runs each trial in this process when waited for (the default; deterministic)."""

    capacity = 1

    def __init__(self, objective: Objective):
        self._objective = objective
        self._queue: list[TrialContext] = []

    @property
    def running(self) -> int:
        return len(self._queue)

    def submit(self, context: TrialContext) -> None:
        self._queue.append(context)

    def wait(self) -> list[Outcome]:
        return [evaluate(self._objective, self._queue.pop(0))]

    def close(self) -> None:
        self._queue.clear()


def _require_picklable(objective: Objective, executor: str) -> None:
    try:
        pickle.dumps(objective)
    except Exception as error:
        raise SearchError(f"executor {executor!r} runs the objective in other processes, so it "
                          f"must be picklable (a module-level function or class instance): "
                          f"{error}") from None


def _check_worker_env(worker_env: WorkerEnv, workers: int) -> list[dict[str, str]] | None:
    if worker_env is None:
        return None
    envs = [dict(env) for env in worker_env]
    if len(envs) != workers or not all(isinstance(k, str) and isinstance(v, str) for e in envs for k, v in e.items()):
        raise SearchError(f"worker_env has {len(envs)} entries; expected one mapping of str to str per worker "
                          f"({workers})")
    return envs


def set_environment(env: Mapping[str, str]) -> None:
    """A worker's initializer: runs before the first trial imports torch, so CUDA and OpenMP read it."""
    os.environ.update(env)


def single_process_pool(env: Mapping[str, str]) -> concurrent.futures.ProcessPoolExecutor:
    """One spawned worker process started with ``env``: a slot whose death fails only its own job."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=set_environment, initargs=(dict(env),))


class ProcessExecutor:
    """``workers`` local processes (spawn start method), one trial each at a time.

    Each worker slot is its own single-process pool, so a worker that dies (segfault,
    ``os._exit``, out-of-memory kill) fails exactly the trial it was running; the slot then
    gets a fresh process, with the slot's ``worker_env`` again.
    """

    def __init__(self, objective: Objective, workers: int, worker_env: WorkerEnv = None):
        _require_picklable(objective, "processes")
        self.capacity = workers
        self._worker_env = _check_worker_env(worker_env, workers)
        self._objective = objective
        self._pools: list[concurrent.futures.ProcessPoolExecutor | None] = [None] * workers
        self._running: dict[concurrent.futures.Future, tuple[int, TrialContext]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def _pool(self, slot: int) -> concurrent.futures.ProcessPoolExecutor:
        if self._pools[slot] is None:
            self._pools[slot] = single_process_pool(self._worker_env[slot] if self._worker_env else {})
        return self._pools[slot]

    def submit(self, context: TrialContext) -> None:
        busy = {slot for slot, _ in self._running.values()}
        slot = next(s for s in range(self.capacity) if s not in busy)
        future = self._pool(slot).submit(evaluate, self._objective, context)
        self._running[future] = (slot, context)

    def wait(self) -> list[Outcome]:
        done, _ = concurrent.futures.wait(self._running,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        outcomes = []
        for future in sorted(done, key=lambda f: self._running[f][1].trial_id):
            slot, context = self._running.pop(future)
            try:
                outcomes.append(future.result())
            except BrokenProcessPool:
                outcomes.append(_lost(context, f"the worker process running trial "
                                               f"{context.trial_id} died unexpectedly"))
                self._replace(slot)
            except Exception as error:
                outcomes.append(_lost(context, f"{type(error).__name__}: {error}"))
        return outcomes

    def _replace(self, slot: int) -> None:
        pool, self._pools[slot] = self._pools[slot], None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers; after an error (trials still running) do not wait for them."""
        wait = not self._running
        for slot in range(self.capacity):
            pool, self._pools[slot] = self._pools[slot], None
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)
        self._running.clear()


class DaskExecutor:
    """Trials as Dask tasks: on an existing scheduler, or a LocalCluster of ``workers``.

    The local cluster allows no task retries, so a worker that dies fails its trial at once
    (``KilledWorker``) instead of taking other workers down with the same trial. Its workers
    start with ``worker_env[i]`` (their GPU, their CPU threads: Dask's default is one OpenMP
    thread per worker); an existing scheduler's workers keep the environment they were started with.
    Its worker processes are not daemonic (:data:`LOCAL_WORKER_CONFIG`), so a trial's DataLoader
    can start its augmentation workers.
    """

    def __init__(self, objective: Objective, workers: int, scheduler: str | None = None,
                 worker_env: WorkerEnv = None):
        try:
            import dask
            import distributed
        except ImportError:
            raise SearchError("executor 'dask' needs dask[distributed]; install hnas[dask]") from None
        self._distributed = distributed
        self._objective = objective
        self._cluster = None
        if scheduler:
            try:
                self._client = distributed.Client(scheduler, timeout="30s")
            except OSError as error:
                raise SearchError(f"cannot reach the Dask scheduler at {scheduler!r}: "
                                  f"{error}") from None
            threads = sum(w.get("nthreads", 1)
                          for w in self._client.scheduler_info()["workers"].values())
            self.capacity = workers if workers > 1 else max(1, threads)
        else:
            # kept until close(): a Nanny reads the daemon flag at every (re)start of its worker
            self._worker_config = dask.config.set(LOCAL_WORKER_CONFIG)
            try:
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._parent_env = _spawn_environment(dask)
                    try:
                        self._cluster = _local_cluster(distributed, workers, _check_worker_env(worker_env, workers))
                    finally:
                        _restore(self._parent_env)
                    self._client = distributed.Client(self._cluster)
            except BaseException:
                self._worker_config.__exit__(None, None, None)
                raise
            self.capacity = workers
        self._running: dict[Any, TrialContext] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, context: TrialContext) -> None:
        future = self._client.submit(evaluate, self._objective, context, pure=False,
                                     key=f"hnas-trial-{context.trial_id}-{uuid.uuid4().hex[:8]}")
        self._running[future] = context

    def wait(self) -> list[Outcome]:
        done, _ = self._distributed.wait(list(self._running), return_when="FIRST_COMPLETED")
        outcomes = []
        for future in sorted(done, key=lambda f: self._running[f].trial_id):
            context = self._running.pop(future)
            if future.status == "finished":
                outcomes.append(future.result())
            else:
                error = future.exception()
                outcomes.append(_lost(context, f"the Dask task of trial {context.trial_id} "
                                               f"failed ({type(error).__name__}: {error})"))
            future.release()
        return outcomes

    def close(self) -> None:
        for future in self._running:
            future.cancel()
        self._running.clear()
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
            _restore(self._parent_env)  # a worker restarted during the search set them again
            self._worker_config.__exit__(None, None, None)  # Dask's daemon default again


SCHEDULER_EXAMPLE = "tcp://host:8786"


def validate_scheduler_address(address: str) -> None:
    """Refuse an address Dask could never connect to, before a search touches its run folder.

    Dask itself fails only when connecting, e.g. with a bare ValueError from its parser; the
    scheme and ``host:port`` are checked here by that same parser.
    """
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.comm.registry import get_backend
    except ImportError:
        raise SearchError(f"a scheduler address ({address!r}) needs dask[distributed]; install hnas[dask]") from None
    if not isinstance(address, str) or not address.strip():
        raise SearchError(f"the scheduler address {address!r} is empty; expected one like {SCHEDULER_EXAMPLE}")
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme != "inproc":  # in-process clusters have no host and port
            host, port = parse_host_port(location)
            if not host or port is None or not 0 < int(port) < 65536:
                raise ValueError("it needs a host and a port 1..65535")
    except (ValueError, TypeError) as error:
        raise SearchError(f"the scheduler address {address!r} is not one Dask can connect to ({error}); "
                          f"expected one like {SCHEDULER_EXAMPLE}") from None


def _spawn_environment(dask) -> dict[str, str | None]:
    """This process's values of what Dask's Nanny sets here before spawning a worker (OMP_NUM_THREADS=1, ...).

    The workers need those variables at start-up; the search process does not, and left set they
    would make everything it runs later (cross-validation, a notebook's kernel) single-threaded.
    """
    keys = list(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}) + ["PYTHONHASHSEED"]
    return {key: os.environ.get(key) for key in keys}


def _restore(environment: dict[str, str | None]) -> None:
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _local_cluster(distributed, workers: int, worker_env: list[dict[str, str]] | None):
    """``workers`` one-thread worker processes on this machine, worker ``i`` with ``worker_env[i]``."""
    if worker_env is None:
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
    # LocalCluster gives every worker the same options; a SpecCluster of the same workers can differ per worker.
    options = {"nthreads": 1, "host": "127.0.0.1", "dashboard": False, "silence_logs": logging.ERROR,
               "memory_limit": int(distributed.system.MEMORY_LIMIT / workers)}  # LocalCluster's share
    specs = {i: {"cls": distributed.Nanny, "options": {**options, "env": env}} for i, env in enumerate(worker_env)}
    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard": False,
                                                           "dashboard_address": None}}
    return distributed.SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR)


def make_executor(name: str, objective: Objective, *, workers: int = 1,
                  scheduler: str | None = None, worker_env: WorkerEnv = None) -> Executor:
    """``serial`` (default), ``processes`` (local spawn workers) or ``dask``.

    ``worker_env`` (local worker processes only): one environment per worker, set before its first trial.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SearchError(f"workers must be a positive integer, got {workers!r}")
    if scheduler is not None:
        validate_scheduler_address(scheduler)
    if scheduler and name != "dask":
        raise SearchError(f"a scheduler address ({scheduler!r}) needs executor 'dask', not {name!r}")
    if name == "serial":
        if workers != 1:
            raise SearchError(f"the serial executor runs one trial at a time; for workers="
                              f"{workers} use executor 'processes' or 'dask'")
        return SerialExecutor(objective)
    if name == "processes":
        return ProcessExecutor(objective, workers, worker_env)
    if name == "dask":
        return DaskExecutor(objective, workers, scheduler, None if scheduler else worker_env)
    raise SearchError(f"unknown executor {name!r}; expected one of {list(EXECUTORS)}")
