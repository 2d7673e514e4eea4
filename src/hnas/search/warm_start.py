"""Warm start: the finished trials of earlier runs of the same search enter a new run's history.

They are imported once, when the new run is created (docs/warm-start.md): fresh trial ids 0..k-1
in the order of the sources and of their ids there, each marked with its source run and trial id
(:class:`ImportedFrom`), promotions pointing at their imported parents, brackets shifted by whole
Hyperband cycles so every imported bracket keeps its shape and its place in the cycle. The
optimizers then rebuild their state from them like from any history. Each imported trial's folder
(its checkpoint) is hard-linked into the new run, so a promotion continues it; the sources are
only read.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from hnas.errors import SearchError
from hnas.search.fidelity import FidelitySchedule
from hnas.search.space import SearchSpace
from hnas.search.storage import RunStore, check_database, database_path, trial_dir
from hnas.search.types import NO_BRACKET, ImportedFrom, Trial

#: What a later pointer says a run of another dataset, plan or space should use instead.
PRIOR_HINT = "to learn from a run of another dataset, plan or space, use it as a prior instead (--prior-from)"


def source_folders(sources: Iterable[str | Path]) -> list[Path]:
    """The source runs as absolute folders, in the given order; a folder named twice is refused."""
    if isinstance(sources, (str, Path)):
        raise SearchError(f"warm_start must be a list of run folders, got the single {str(sources)!r}; "
                          "expected e.g. [run_dir]")
    folders = [Path(source).resolve() for source in sources]
    seen = set()
    for folder in folders:
        if folder in seen:
            raise SearchError(f"warm start run {str(folder)!r} is named twice; expected each run once")
        seen.add(folder)
    return folders


def import_history(sources: Iterable[str | Path], space: SearchSpace, *, min_fidelity: float,
                   max_fidelity: float, eta: int) -> list[Trial]:
    """The finished trials of ``sources`` as a new run's first trials (nothing is written).

    Each source must be a run folder with a finished trial, searched over the same space
    (parameters and architecture grammar) with the same fidelity schedule; otherwise SearchError
    names the run and the first difference. A trial that reaches the new run through two of the
    sources (B was warm-started from A, and both are given) is imported once.
    """
    schedule = FidelitySchedule(min_fidelity, max_fidelity, eta)
    cycle = schedule.max_rung + 1  # Hyperband's bracket shapes repeat every max_rung + 1 brackets
    expected = {"architecture_identity": space.architecture.distribution.identity if space.architecture else None,
                "space_hash": space.hash, "schedule": _schedule_of(schedule)}
    sources_finished = []
    for folder in source_folders(sources):
        metadata, history = _read_source(folder)
        _check_same_search(folder, metadata, expected)
        finished = [trial for trial in history if trial.is_finished]
        if not finished:
            raise SearchError(f"warm start run {str(folder)!r} has no finished trial to import; expected a run "
                              "with at least one finished trial")
        sources_finished.append((folder, finished))
    origin = _origins(sources_finished)
    imported: list[Trial] = []
    by_origin: dict[_Key, Trial] = {}
    bracket_offset = 0
    for folder, finished in sources_finished:
        imported += _renumbered(folder, finished, origin, by_origin, bracket_offset=bracket_offset)
        top = max(trial.bracket for trial in finished)
        bracket_offset += cycle * math.ceil((top + 1) / cycle) if top != NO_BRACKET else 0
    return imported


#: A trial of some run: (its run folder, its id there).
_Key = tuple[str, int]


def _origins(sources_finished: Sequence[tuple[Path, Sequence[Trial]]]):
    """key -> the trial it is a copy of, following earlier imports through the given sources.

    A source's imported trial points at the run and trial it came from; when that run is given too,
    its trial is the same one (and may itself be a copy). Chains through runs not given stop there.
    """
    points_to = {(str(folder), trial.trial_id): (str(Path(trial.imported.run).resolve()), trial.imported.trial_id)
                 for folder, finished in sources_finished for trial in finished if trial.imported is not None}

    def origin(key: _Key) -> _Key:
        seen = set()
        while key in points_to and key not in seen:
            seen.add(key)
            key = points_to[key]
        return key
    return origin


def _read_source(folder: Path) -> tuple[dict, list[Trial]]:
    if not folder.is_dir():
        raise SearchError(f"warm start run {str(folder)!r} is not a folder; expected the run folder of an earlier "
                          "search")
    if not database_path(folder).is_file():
        raise SearchError(f"warm start run {str(folder)!r} holds no search ({database_path(folder).name} not "
                          "found); expected the run folder of an earlier search")
    check_database(database_path(folder))
    with RunStore.open_existing(folder) as store:
        return store.metadata(), store.history()


def _schedule_of(schedule: FidelitySchedule) -> dict:
    return {"min_fidelity": schedule.min_fidelity, "max_fidelity": schedule.max_fidelity, "eta": schedule.eta}


def _check_same_search(folder: Path, metadata: dict, expected: dict) -> None:
    """Refuse a source searched over another space or schedule, naming the first difference."""
    settings = metadata.get("optimizer_settings") or {}
    stored = {"architecture_identity": metadata.get("architecture_identity"), "space_hash": metadata.get("space_hash"),
              "schedule": {key: settings.get(key) for key in expected["schedule"]}}
    words = {"architecture_identity": "architecture grammar (the plan or --max-stages)",
             "space_hash": "search space", "schedule": "fidelity schedule (min, max fidelity, eta)"}
    for key, word in words.items():
        if stored[key] != expected[key]:
            raise SearchError(f"cannot warm-start from {str(folder)!r}: its {word} differs ({_short(stored[key])} "
                              f"there, {_short(expected[key])} here); warm start imports runs of the same "
                              f"dataset, plan and space; {PRIOR_HINT}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _renumbered(folder: Path, finished: Sequence[Trial], origin, new: dict[_Key, Trial], *,
                bracket_offset: int) -> list[Trial]:
    """``folder``'s trials not imported yet, renumbered after those in ``new`` (which they join).

    A bracket whose trials came in through another source keeps the number they got there, so
    this source's promotions in it stay in their parents' bracket; other brackets shift by
    ``bracket_offset``.
    """
    trials = []
    bracket_taken: dict[int, int] = {}
    for trial in finished:
        key = origin((str(folder), trial.trial_id))
        if key in new:  # the same trial came in through another source
            if trial.bracket != NO_BRACKET:
                bracket_taken[trial.bracket] = new[key].bracket
            continue
        parent = trial.parent_id
        parent_key = None if parent is None else origin((str(folder), parent))
        if parent_key is not None and parent_key not in new:
            raise SearchError(f"warm start run {str(folder)!r}: trial {trial.trial_id} continues trial {parent}, "
                              "which is not a finished trial there; expected a run database hnas wrote")
        bracket = trial.bracket if trial.bracket == NO_BRACKET else \
            bracket_taken.get(trial.bracket, trial.bracket + bracket_offset)
        job = replace(trial.job, trial_id=len(new), bracket=bracket,
                      parent_id=None if parent_key is None else new[parent_key].trial_id)
        new[key] = replace(trial, job=job, imported=ImportedFrom(str(folder), trial.trial_id))
        trials.append(new[key])
    return trials


def link_imported_folders(history: Sequence[Trial], run_dir: str | Path) -> None:
    """Give every imported trial its source trial's files (checkpoint, logs) in its own folder.

    Hard links where the file system allows (a copy otherwise); files already there are kept, so a
    search killed while linking completes them on resume. A source gone since leaves what was linked.
    """
    for trial in history:
        if trial.imported is None:
            continue
        source = trial_dir(trial.imported.run, trial.imported.trial_id)
        if source.is_dir():
            shutil.copytree(source, trial_dir(run_dir, trial.trial_id), copy_function=_link_or_copy,
                            dirs_exist_ok=True)


def _link_or_copy(source: str, target: str) -> None:
    if os.path.lexists(target):
        return
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy, then rename into place
        draft = f"{target}.{os.getpid()}.tmp"
        shutil.copy2(source, draft)
        os.replace(draft, target)
