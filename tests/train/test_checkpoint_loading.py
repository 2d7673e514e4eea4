"""What ``load_checkpoint`` and ``save_checkpoint`` promise beyond a round trip (found by `make mutation`).

* weights-only loading is hnas's decision, not torch's default: a user environment that turns
  torch's default off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) still cannot make hnas unpickle code;
* ``map_location`` reaches ``torch.load``;
* a folder that does not exist yet is created, parents included;
* a file that torch loads but that is not a dict is refused as "not an hnas checkpoint";
* a load failure names torch's own reason on one line, cut at 200 characters.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from hnas.errors import TrainingError
from hnas.train.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint


class RunsCodeWhenUnpickled:
    """Unpickling calls ``os.mkdir(marker)``: harmless evidence that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_weights_only_holds_even_when_the_environment_turns_torchs_default_off(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"note": RunsCodeWhenUnpickled(marker)})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(TrainingError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not marker.exists()


def test_map_location_reaches_torch_load(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"trainer": {"model": {"weight": torch.ones(3)}}})
    loaded = load_checkpoint(path, map_location="meta")
    assert loaded["trainer"]["model"]["weight"].is_meta
    assert loaded["trainer"]["model"]["weight"].shape == (3,)
    assert load_checkpoint(path)["trainer"]["model"]["weight"].device.type == "cpu"


def test_save_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "run" / "trials" / "00007" / "checkpoint.pt"
    assert save_checkpoint(path, {"epoch": 3}) == path
    assert load_checkpoint(path.parent)["epoch"] == 3


@pytest.mark.parametrize("content", [[1, 2, 3], "text", None, torch.zeros(2)])
def test_a_loadable_file_that_is_not_a_dict_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(TrainingError, match="is not an hnas checkpoint"):
        load_checkpoint(path)


def test_a_refused_file_names_torchs_reason_on_one_line_cut_at_200_characters(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"note": RunsCodeWhenUnpickled(tmp_path / "ran")})
    with pytest.raises(Exception) as direct:  # what torch itself says about the file: several lines
        torch.load(path, weights_only=True)
    torch_words = str(direct.value).split()
    assert "\n" in str(direct.value) and len(" ".join(torch_words)) > 200, "the oracle needs a long reason"
    with pytest.raises(TrainingError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    found = re.search(rf"\({type(direct.value).__name__}: (.*)\); expected", message, re.S)
    assert found, message
    reason = found.group(1)
    assert "\n" not in reason and "  " not in reason
    assert len(reason) == 200
    assert " ".join(torch_words).startswith(reason)
    assert reason.split()[:5] == torch_words[:5]


def test_a_missing_checkpoint_is_named_with_its_path(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(TrainingError) as refused:
        load_checkpoint(missing)
    assert str(refused.value) == (f"checkpoint {str(missing)!r} does not exist; expected a file written by "
                                  "hnas training")


def test_an_unloadable_file_says_what_torch_said_and_what_was_expected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02}q\x00.")  # a pickle, not a zip archive: torch refuses it
    with pytest.raises(Exception) as direct:
        torch.load(path, weights_only=True)
    with pytest.raises(TrainingError) as refused:
        load_checkpoint(path)
    reason = " ".join(str(direct.value).split())[:200]
    assert str(refused.value) == (
        f"checkpoint {str(path)!r} cannot be loaded safely ({type(direct.value).__name__}: {reason}); expected a "
        "complete checkpoint file written by hnas training (is it truncated or another program's file?)")


def test_a_foreign_dict_and_another_format_version_are_named(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(TrainingError) as refused:
        load_checkpoint(foreign)
    assert str(refused.value) == f"{str(foreign)!r} is not an hnas checkpoint (no format tag 'hnas-checkpoint')"
    future = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1}, future)
    with pytest.raises(TrainingError) as refused:
        load_checkpoint(future)
    assert str(refused.value) == (f"checkpoint {str(future)!r} has format version {FORMAT_VERSION + 1}; "
                                  f"expected {FORMAT_VERSION}")
