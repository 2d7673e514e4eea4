"""Each local worker process's share of the machine (hnas.pipeline.workers)."""

from __future__ import annotations

from hnas.pipeline.workers import describe_workers, worker_environments


def test_parallel_workers_on_a_cpu_share_its_cores_as_torch_threads(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert worker_environments(1) is None  # one worker has the machine to itself
    assert worker_environments(3) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    assert worker_environments(16) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 16
    assert describe_workers(worker_environments(3)) == "2 torch thread(s) each"


def test_parallel_workers_with_cuda_each_see_one_gpu_round_robin(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_environments(3)] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")  # the user's own selection is kept
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_environments(3)] == ["3", "5", "3"]
    assert describe_workers(worker_environments(3)) == "on GPUs 3, 5, 3"
