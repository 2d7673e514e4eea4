"""Warm start: earlier runs' finished trials enter a new run's history (docs/warm-start.md)."""

import os
from pathlib import Path

import pytest

from hnas.errors import SearchError
from hnas.pipeline.spaces import make_space
from hnas.search import NO_BRACKET, budget_spent, load_run, make_optimizer, run, trial_dir
from hnas.search.bohb import observations_by_rung
from hnas.search.optimizers import HistoryIndex
from hnas.search.types import ImportedFrom
from hnas.search.warm_start import import_history

from .fakes import WordArchitecture
from .test_loop import KillsTheSearch, checkpointing, comparable

SETTINGS = dict(min_fidelity=1, max_fidelity=9, eta=3)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A PriorBand run stopped inside its first bracket: rung 0 done, promotions still to come."""
    folder = tmp_path_factory.mktemp("source")
    run(checkpointing, make_space("hpo"), optimizer="priorband", budget=2, run_dir=folder, seed=1, **SETTINGS)
    return folder


def test_imported_trials_come_first_marked_with_their_source(source, tmp_path):
    before = load_run(source).history
    summary = run(checkpointing, make_space("hpo"), optimizer="priorband", budget=1, run_dir=tmp_path, seed=2,
                  warm_start=[source], **SETTINGS)
    imported = [t for t in summary.history if t.is_imported]
    assert [t.trial_id for t in imported] == list(range(len(before)))
    for old, new in zip(before, imported):
        assert new.imported == ImportedFrom(str(source.resolve()), old.trial_id)
        assert (new.config, new.fidelity, new.rung, new.loss, new.cost, new.job.sampler) == \
            (old.config, old.fidelity, old.rung, old.loss, old.cost, old.job.sampler)
        linked = trial_dir(tmp_path, new.trial_id) / "epochs.txt"
        assert os.path.samefile(linked, trial_dir(source, old.trial_id) / "epochs.txt")  # hard-linked, not retrained
    assert not any(t.is_imported for t in summary.history[len(before):])
    assert [t.imported for t in load_run(tmp_path).history] == [t.imported for t in summary.history]
    assert load_run(source).history == before  # the source is only read


def contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_promotions_of_imported_trials_continue_their_checkpoints(source, tmp_path):
    before = contents(source / "trials")
    summary = run(checkpointing, make_space("hpo"), optimizer="priorband", budget=1, run_dir=tmp_path, seed=2,
                  warm_start=[source], **SETTINGS)
    history = summary.history
    continued = [t for t in history if not t.is_imported and t.parent_id is not None
                 and history[t.parent_id].is_imported]
    assert continued, "the new run should finish the imported bracket's promotions"
    for trial in continued:  # checkpointing() asserts it found the parent's epochs: only what is added is trained
        assert trial.extra["trained"] == trial.fidelity - history[trial.parent_id].fidelity
        assert trial.bracket == history[trial.parent_id].bracket
    assert contents(source / "trials") == before  # the source's checkpoints untouched


def test_imported_fidelity_counts_against_neither_budget_nor_max_trials(source, tmp_path):
    n_imported = len(load_run(source).history)
    summary = run(checkpointing, make_space("hpo"), optimizer="priorband", budget=1, run_dir=tmp_path / "b",
                  seed=2, warm_start=[source], **SETTINGS)
    own = [t for t in summary.history if not t.is_imported]
    assert summary.stop_reason == "budget" and 1 <= summary.budget_used < 2
    assert summary.budget_used == budget_spent(summary.history, 9) == pytest.approx(
        sum(t.fidelity - (summary.history[t.parent_id].fidelity if t.parent_id is not None else 0) for t in own) / 9)
    events = []
    counted = run(checkpointing, make_space("hpo"), optimizer="priorband", max_trials=3, run_dir=tmp_path / "t",
                  seed=2, warm_start=[source], progress=events.append, **SETTINGS)
    assert len(counted.history) == n_imported + 3 and counted.stop_reason == "max_trials"
    assert [(e.trials, e.finished) for e in events] == [(1, 1), (2, 2), (3, 3)]


def test_incumbent_and_models_start_from_the_imports(tmp_path):
    space = make_space("hpo")
    source = run(checkpointing, space, optimizer="hyperband", budget=5, run_dir=tmp_path / "a", seed=3, **SETTINGS)
    imported = import_history([tmp_path / "a"], space, **SETTINGS)
    assert [t.loss for t in imported] == [t.loss for t in source.history if t.is_finished]
    priorband = make_optimizer("priorband", space, seed=4, **SETTINGS)
    index = HistoryIndex(imported)
    assert priorband.incumbent(index).imported.trial_id == min(source.successes, key=lambda t: t.loss).trial_id
    assert priorband.incumbent_sampling_active(index)  # the imports spent a full bracket's fidelity
    bohb = make_optimizer("bohb", space, seed=4, **SETTINGS)
    assert {o.trial_id for rung in observations_by_rung(index).values() for o in rung} == \
        {t.trial_id for t in imported}
    assert bohb.ask(imported).trial_id == len(imported)
    summary = run(checkpointing, space, optimizer="priorband", max_trials=1, run_dir=tmp_path / "b", seed=4,
                  warm_start=[tmp_path / "a"], **SETTINGS)
    assert summary.incumbent.loss <= source.incumbent.loss  # never worse than what was imported


def test_several_sources_keep_their_brackets_shapes(tmp_path):
    space = make_space("hpo")
    for name, seed in (("a", 1), ("b", 2)):
        run(checkpointing, space, optimizer="hyperband", budget=4, run_dir=tmp_path / name, seed=seed, **SETTINGS)
    a, b = load_run(tmp_path / "a").history, load_run(tmp_path / "b").history
    imported = import_history([tmp_path / "a", tmp_path / "b"], space, **SETTINGS)
    assert len(imported) == len(a) + len(b)
    offset = 3 * -(-(max(t.bracket for t in a) + 1) // 3)  # whole cycles of max_rung + 1 = 3 shapes
    for old, new in zip(b, imported[len(a):]):
        assert new.bracket == old.bracket + offset and new.imported.trial_id == old.trial_id
        assert new.parent_id == (None if old.parent_id is None else old.parent_id + len(a))
    hyperband = make_optimizer("hyperband", space, seed=0, **SETTINGS)
    assert hyperband.halvings(offset) == hyperband.halvings(0)


def test_resuming_a_warm_started_run_imports_nothing_again_and_is_exact(source, tmp_path):
    options = dict(optimizer="priorband", run_dir=tmp_path / "a", seed=2, warm_start=[source], **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        run(KillsTheSearch(len(load_run(source).history) + 2), make_space("hpo"), budget=3, **options)
    resumed = run(checkpointing, make_space("hpo"), budget=3, resume=True, **options)
    straight = run(checkpointing, make_space("hpo"), budget=3, **{**options, "run_dir": tmp_path / "b"})
    assert comparable(resumed.history) == comparable(straight.history)
    assert [t.imported for t in resumed.history] == [t.imported for t in straight.history]
    again = run(checkpointing, make_space("hpo"), budget=4, resume=True,
                **{**options, "warm_start": None})  # leaving the sources out continues as started
    assert sum(t.is_imported for t in again.history) == sum(t.is_imported for t in straight.history)
    with pytest.raises(SearchError, match="warm_start: stored"):
        run(checkpointing, make_space("hpo"), budget=5, resume=True, **{**options, "warm_start": [tmp_path / "b"]})


def test_a_run_of_another_space_or_schedule_is_refused_naming_the_difference(source, tmp_path):
    other = make_space("hpo+hnas", WordArchitecture())
    cases = [(other, SETTINGS, "architecture grammar"),
             (make_space("hpo"), {**SETTINGS, "max_fidelity": 27}, "fidelity schedule")]
    for space, settings, difference in cases:
        with pytest.raises(SearchError, match=difference) as refused:
            run(checkpointing, space, optimizer="priorband", budget=1, run_dir=tmp_path / "new",
                warm_start=[source], **settings)
        assert "--prior-from" in str(refused.value) and "\n" not in str(refused.value)
        assert not (tmp_path / "new").exists()


def test_missing_foreign_empty_or_repeated_sources_are_refused(source, tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "search.sqlite").write_text("not a database")
    with pytest.raises(KeyboardInterrupt):  # a run whose only trial never finished
        run(KillsTheSearch(0), make_space("hpo"), optimizer="priorband", budget=1, run_dir=tmp_path / "pending",
            **SETTINGS)
    cases = [([tmp_path / "missing"], "is not a folder"), ([tmp_path], "holds no search"),
             ([tmp_path / "foreign"], "not an hnas run database"),
             ([tmp_path / "pending"], "no finished trial"), ([source, Path(str(source) + "/.")], "named twice"),
             (source, "a list of run folders")]
    for sources, message in cases:
        with pytest.raises(SearchError, match=message):
            run(checkpointing, make_space("hpo"), budget=1, run_dir=tmp_path / "new", warm_start=sources, **SETTINGS)
        assert not (tmp_path / "new").exists()


def test_random_search_trials_import_outside_every_bracket(tmp_path):
    space = make_space("hpo")
    run(checkpointing, space, optimizer="random", max_trials=3, run_dir=tmp_path / "a", **SETTINGS)
    imported = import_history([tmp_path / "a"], space, **SETTINGS)
    assert [t.bracket for t in imported] == [NO_BRACKET] * 3
    summary = run(checkpointing, space, optimizer="hyperband", max_trials=2, run_dir=tmp_path / "b",
                  warm_start=[tmp_path / "a"], **SETTINGS)
    assert [t.bracket for t in summary.history[3:]] == [0, 0]


def test_checkpoints_are_copied_where_hard_links_fail(source, tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    summary = run(checkpointing, make_space("hpo"), optimizer="priorband", max_trials=1, run_dir=tmp_path, seed=2,
                  warm_start=[source], **SETTINGS)
    for trial in (t for t in summary.history if t.is_imported):
        copy, original = trial_dir(tmp_path, trial.trial_id), trial_dir(source, trial.imported.trial_id)
        assert contents(copy) == contents(original)
        assert not os.path.samefile(copy / "epochs.txt", original / "epochs.txt")
    assert not list(tmp_path.rglob("*.tmp"))


def _chained_runs(tmp_path, a_budget: float, a_later: float | None):
    """A, then B warm-started from A, then (``a_later``) A resumed to a larger budget."""
    space = make_space("hpo")
    run(checkpointing, space, optimizer="hyperband", budget=a_budget, run_dir=tmp_path / "a", seed=1, **SETTINGS)
    run(checkpointing, space, optimizer="hyperband", budget=a_budget + 2, run_dir=tmp_path / "b", seed=2,
        warm_start=[tmp_path / "a"], **SETTINGS)
    if a_later:
        run(checkpointing, space, optimizer="hyperband", budget=a_later, run_dir=tmp_path / "a", seed=1,
            resume=True, **SETTINGS)
    return space


def _origin_of(trial, histories: dict):
    """The trial an imported trial is a copy of: B's imports point into A (``histories``: run -> history)."""
    stored = histories[trial.imported.run][trial.imported.trial_id]
    return (str(Path(stored.imported.run).resolve()), stored.imported.trial_id) if stored.is_imported \
        else (trial.imported.run, trial.imported.trial_id)


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
@pytest.mark.parametrize("a_budget, a_later", [
    (1, None),  # A stopped inside its first bracket; B's promotions finish it
    (2, 4),  # A finished its first bracket before B started, and went on afterwards
])
def test_a_trial_reaching_the_run_through_two_sources_is_imported_once(tmp_path, order, a_budget, a_later):
    space = _chained_runs(tmp_path, a_budget, a_later)
    a, b = load_run(tmp_path / "a").history, load_run(tmp_path / "b").history
    copies_in_b = sum(t.is_imported for t in b)
    if a_later is None:
        assert copies_in_b == len(a)
    else:  # B holds some of A's trials; A went on after B started
        assert 0 < copies_in_b < len(a)
    continuing = [t for t in b if not t.is_imported and t.parent_id is not None and b[t.parent_id].is_imported]
    assert bool(continuing) == (a_later is None)  # B promotes A's trials only where A stopped mid-bracket
    imported = import_history([tmp_path / name for name in order], space, **SETTINGS)
    histories = {str((tmp_path / name).resolve()): history for name, history in (("a", a), ("b", b))}
    origins = [_origin_of(t, histories) for t in imported]
    assert len(origins) == len(set(origins)) == len(a) + len(b) - copies_in_b
    assert [t.trial_id for t in imported] == list(range(len(imported)))
    for trial in imported:
        if trial.parent_id is not None:  # a promotion stays in its parent's bracket, on its parent's config
            parent = imported[trial.parent_id]
            assert parent.trial_id < trial.trial_id
            assert (parent.bracket, parent.config) == (trial.bracket, trial.config)
            assert trial.fidelity > parent.fidelity
    hyperband = make_optimizer("hyperband", space, seed=0, **SETTINGS)
    for bracket in {t.bracket for t in imported}:  # every bracket still fits its shape in the cycle
        sizes = hyperband._bracket_sizes(hyperband.halvings(bracket))
        for rung in {t.rung for t in imported if t.bracket == bracket}:
            assert sum(t.bracket == bracket and t.rung == rung for t in imported) <= sizes.get(rung, 0)
