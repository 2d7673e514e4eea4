"""`--prior-from RUN`: a prior centred on another run's incumbent, from any dataset (docs/transfer.md).

The incumbent's hyperparameters become this space's prior centres (clipped to its ranges), and its
architecture is carried onto this dataset's grammar by :mod:`hnas.sampling.transfer`. What was
moved is said in notes. `hnas search` stores the result in run.json (``prior_from``), so a resumed
run uses the very centres it started with, whatever the source run did since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hnas.errors import SearchError
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import SearchSettings
from hnas.pipeline.spaces import GRAMMAR_SPACES, run_space
from hnas.sampling.transfer import TransferredArchitecture, transfer_architecture
from hnas.search import Trial
from hnas.search.optimizers import final_incumbent
from hnas.search.space import values_within
from hnas.search.storage import RunStore

#: The fields of run.json's ``prior_from`` record, and the JSON types each holds.
RECORD_FIELDS = {"run": (str,), "trial_id": (int,), "source_space": (str,), "source_architecture": (str, type(None)),
                 "architecture": (str, type(None)), "centres": (dict,), "notes": (list,)}


def source_incumbent(run_dir: Path) -> tuple[Trial, SearchSettings, str | None]:
    """An earlier run's incumbent, its settings and its grammar (None when it searched no architecture).

    Refuses, naming the folder, a path that is not an hnas run folder or a run without a finished trial.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise SearchError(f"--prior-from {str(run_dir)!r} does not exist; expected the run folder of an earlier "
                          "`hnas search`")
    folder = RunFolder(run_dir)
    missing = [p.name for p in (folder.settings, folder.database) if not p.is_file()]
    if not run_dir.is_dir() or missing:
        what = " or ".join(missing) or "folder"
        raise SearchError(f"--prior-from {str(run_dir)!r} is not an hnas run folder (no {what}); expected the run "
                          "folder of an earlier `hnas search`")
    settings = SearchSettings.load(run_dir)
    with RunStore.open_existing(run_dir) as store:
        trial = final_incumbent(store.history())
    if trial is None:
        raise SearchError(f"--prior-from {str(run_dir)!r} has no finished trial; expected a run with at least one "
                          "successful trial to centre the prior on")
    searched_architecture = settings.space in GRAMMAR_SPACES and isinstance(trial.config.get("architecture"), str)
    grammar = folder.grammar.read_text() if searched_architecture and folder.grammar.is_file() else None
    return trial, settings, grammar


def architecture_from(run_dir: Path, grammar: str) -> tuple[TransferredArchitecture, Trial]:
    """An earlier run's incumbent architecture carried onto ``grammar`` (`hnas sample --prior-from`)."""
    trial, settings, source_grammar = source_incumbent(run_dir)
    if source_grammar is None:
        raise SearchError(f"--prior-from {str(run_dir)!r} searched space {settings.space!r}, which has no grammar "
                          f"architecture to centre on; expected a run of {' or '.join(GRAMMAR_SPACES)}")
    return transfer_architecture(source_grammar, trial.config["architecture"], grammar), trial


def prior_record(run_dir: Path, space: str, grammar: str, confidence: str) -> dict[str, Any]:
    """What `hnas search --prior-from RUN` stores in run.json: the centres of ``space`` taken from RUN's incumbent.

    Hyperparameters both spaces have are copied (clipped to this space's ranges); the architecture is
    mapped onto ``grammar`` when both runs search one. A space sharing nothing with the source (no
    hyperparameter, no architecture) is refused: the prior would not move.
    """
    trial, settings, source_grammar = source_incumbent(run_dir)
    target = run_space(space, grammar, confidence)
    hyperparameters = {name: value for name, value in trial.config.items() if name != "architecture"}
    centres, notes = values_within(target, hyperparameters)
    notes = list(notes)
    left_out = sorted(set(hyperparameters) - set(target.names))
    if left_out:
        notes.append(f"not in space {space!r}, left out: {', '.join(left_out)}")
    source_architecture = architecture = None
    if target.architecture is not None and source_grammar is not None:
        source_architecture = trial.config["architecture"]
        mapped = transfer_architecture(source_grammar, source_architecture, grammar)
        architecture = mapped.architecture
        notes += [f"architecture: {note}" for note in mapped.notes]
    elif target.architecture is not None:
        notes.append(f"architecture: the source run searched none (space {settings.space!r}), centred on nnU-Net's")
    if not centres and architecture is None:
        raise SearchError(f"--prior-from {str(run_dir)!r} searched space {settings.space!r} "
                          f"({', '.join(sorted(trial.config))}); space {space!r} has none of its parameters "
                          f"({', '.join(target.names)}), so its prior cannot be centred there: expected a run "
                          "sharing hyperparameters or a grammar architecture with this one")
    return {"run": str(Path(run_dir).resolve()), "trial_id": trial.trial_id, "source_space": settings.space,
            "source_architecture": source_architecture, "architecture": architecture, "centres": centres,
            "notes": notes}


def check_record(record: Any, where: str) -> dict[str, Any]:
    """run.json's ``prior_from`` checked field by field (a hand-edited one is refused, not trusted)."""
    if not isinstance(record, dict) or set(record) != set(RECORD_FIELDS):
        raise SearchError(f"{where} has prior_from {record!r}; expected null or an object with the fields "
                          f"{', '.join(RECORD_FIELDS)} (the record `hnas search --prior-from` wrote)")
    for name, kinds in RECORD_FIELDS.items():
        if not isinstance(record[name], kinds) or isinstance(record[name], bool):
            raise SearchError(f"{where} has prior_from.{name} {record[name]!r}; expected the value "
                              "`hnas search --prior-from` wrote")
    return record


def check_same_source(record: dict[str, Any] | None, given: Path, run_dir: Path) -> None:
    """A resume may repeat --prior-from, but only naming the run the search started from."""
    if record is None:
        raise SearchError(f"cannot resume {str(run_dir)!r} with --prior-from {str(given)!r}: the run started "
                          "without one (run.json); leave --prior-from out, or start a new search in another --run-dir")
    if Path(given).resolve() != Path(record["run"]):
        raise SearchError(f"cannot resume {str(run_dir)!r} with --prior-from {str(given)!r}: the run's prior is "
                          f"centred on {record['run']!r} (run.json); leave --prior-from out to keep it, or start a "
                          "new search in another --run-dir")


def describe_record(record: dict[str, Any]) -> str:
    """The lines `hnas search` prints about its --prior-from centres."""
    lines = [f"prior: centred on trial {record['trial_id']} of {record['run']} (space {record['source_space']})"]
    if record["architecture"] is not None:
        lines.append(f"  architecture {record['architecture']}")
    lines += [f"  {name} = {value!r}" for name, value in sorted(record["centres"].items())]
    lines += [f"  note: {note}" for note in record["notes"]]
    return "\n".join(lines)
