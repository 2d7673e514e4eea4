"""Each local worker process's share of the machine (search trials and cross-validation folds alike)."""

from __future__ import annotations

import os


def worker_environments(workers: int) -> list[dict[str, str]] | None:
    """Each local worker process's share of the machine, so parallel trials do not crowd one device.

    With CUDA, worker ``i`` sees one GPU (round-robin over the visible ones; without this every
    worker trains on GPU 0). On a CPU, each gets ``cores // workers`` torch threads (Dask starts
    workers with one). ``None`` for a single worker: it has the machine to itself.
    """
    if workers < 2:
        return None
    import torch  # only here: a single worker, and `hnas --help`, need no torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = ([d.strip() for d in visible.split(",") if d.strip()] if visible
               else [str(i) for i in range(torch.cuda.device_count())])
        return [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(workers)]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


def describe_workers(worker_env: list[dict[str, str]]) -> str:
    """``on GPUs 0, 1`` or ``4 torch thread(s) each``."""
    if "CUDA_VISIBLE_DEVICES" in worker_env[0]:
        return "on GPUs " + ", ".join(env["CUDA_VISIBLE_DEVICES"] for env in worker_env)
    return f"{worker_env[0]['OMP_NUM_THREADS']} torch thread(s) each"
