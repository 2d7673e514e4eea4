"""Checkpoints load with ``torch.load(weights_only=True)``: a pickled object that would run code is refused.

The hostile object is harmless: unpickling it creates a marker folder. The positive control shows that
an unrestricted ``torch.load`` of the same file does run it, so the refusal test cannot pass vacuously.
"""

from __future__ import annotations

import os

import pytest
import torch

from hnas.errors import HnasError, TrainingError
from hnas.train.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint


class RunsCodeWhenUnpickled:
    """``pickle`` calls ``os.mkdir(marker)`` to rebuild this object: code execution on load, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def hostile_checkpoint(path, marker):
    """A checkpoint that is otherwise well-formed (format tag, version, weights) plus the hostile object."""
    return save_checkpoint(path, {"trainer": {"model": {"weight": torch.ones(2)}, "epoch": 1},
                                  "plan": "{}", "note": RunsCodeWhenUnpickled(marker)})


def test_a_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(HnasError) as refused:
        load_checkpoint(path)
    assert isinstance(refused.value, TrainingError)
    assert "cannot be loaded safely" in str(refused.value) and str(path) in str(refused.value)
    assert not marker.exists()
    with pytest.raises(TrainingError):  # a folder means its checkpoint.pt: the same refusal
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_the_hostile_object_does_run_code_under_an_unrestricted_load(tmp_path):
    """The control: without weights_only the same file runs its code, so the test above is meaningful."""
    marker = tmp_path / "code_ran"
    path = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_a_plain_checkpoint_round_trips(tmp_path):
    save_checkpoint(tmp_path / "trial" / "checkpoint.pt",
                    {"trainer": {"model": {"weight": torch.arange(3.0)}, "epoch": 2, "losses": [0.5, None]}})
    payload = load_checkpoint(tmp_path / "trial")
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert torch.equal(payload["trainer"]["model"]["weight"], torch.arange(3.0))
    assert payload["trainer"]["epoch"] == 2 and payload["trainer"]["losses"] == [0.5, None]
    assert [p.name for p in (tmp_path / "trial").iterdir()] == ["checkpoint.pt"]  # no temporary file left
