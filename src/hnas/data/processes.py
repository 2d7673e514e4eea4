"""Per-case work in worker processes (the fingerprint, preprocessing): one place that starts them.

forkserver: safe when the caller has started threads (torch). Its server imports the caller's
``__main__`` module, so a script that calls hnas at module level, without an
``if __name__ == "__main__":`` guard, runs again in it and its workers die; a worker killed for
memory looks the same. Either way the user gets one line saying so, not a pool traceback.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from hnas.errors import DatasetError


def map_in_processes(function: Callable, jobs: Iterable, workers: int, *, what: str, chunksize: int = 1,
                     setting: str = "workers=1") -> list:
    """``[function(job) for job in jobs]`` in ``workers`` forkserver processes, in order."""
    context = multiprocessing.get_context("forkserver")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return list(pool.map(function, jobs, chunksize=chunksize))
    except BrokenProcessPool:
        raise DatasetError(f"a worker process {what} ended abruptly: it was killed (out of memory?) or could "
                           "not start (a Python script calling hnas must guard its code with "
                           "`if __name__ == \"__main__\":`, since the worker processes import the script); "
                           f"expected the workers to finish; fewer processes use less memory ({setting})") from None
