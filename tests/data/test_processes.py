"""The worker-process helper shared by the fingerprint and preprocessing."""

import os

import pytest

from hnas.data.processes import map_in_processes
from hnas.errors import DatasetError


def _square(value: int) -> int:
    return value * value


def _die(value: int) -> int:
    os._exit(3)  # what the kernel's OOM killer or an unguarded script leaves the pool with


def test_results_come_back_in_the_order_of_the_jobs():
    assert map_in_processes(_square, range(7), 2, what="squaring", chunksize=2) == [0, 1, 4, 9, 16, 25, 36]


def test_a_worker_that_dies_is_one_line_naming_the_step_the_guard_and_the_setting():
    with pytest.raises(DatasetError) as error:
        map_in_processes(_die, [1, 2], 2, what="preprocessing the cases", setting="--preprocessing-workers 1")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("a worker process preprocessing the cases ended abruptly")
    assert 'if __name__ == "__main__":' in message and "(--preprocessing-workers 1)" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
