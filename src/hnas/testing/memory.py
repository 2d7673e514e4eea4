"""What autograd keeps for the backward pass: the measurement the training-memory estimate is checked against.

Shared by tests/cfgunet/test_cost.py and ``benchmarks/gpu_memory.py``. Imports torch, so
``hnas.testing`` does not import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def saved_for_backward(module: torch.nn.Module) -> Iterator[dict[int, int]]:
    """Within the block, {storage address: bytes} of every tensor autograd saves for backward.

    Unique storages (a view saved twice counts once); ``module``'s parameters are left out, since
    the estimate counts them as weights, not activations.
    """
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield saved
