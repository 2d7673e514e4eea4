"""`hnas search --prior-from RUN` and `hnas sample --prior-from RUN`: a prior centred on another run's incumbent."""

from __future__ import annotations

import json

import pytest

from conftest import isotropic_plan
from hnas.errors import SearchError
from hnas.grammar import make_grammar, parse
from hnas.pipeline import search as search_module
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import SearchSettings, resolve
from hnas.pipeline.sample import sample
from hnas.pipeline.transfer import prior_record
from hnas.sampling.transfer import transfer_architecture
from hnas.search import load_run
from reliability.run_folders import fake_training, run_cli, settings_for, snapshot, tiny_dataset
from viz.run_helpers import GRAMMAR as SOURCE_GRAMMAR
from viz.run_helpers import make_run


def _failing(context):
    raise RuntimeError("out of memory")


def _residual_wins(context) -> dict:
    """Residual encoders score best, so the incumbent is no nnU-Net default."""
    loss = (0.2 if "res_encoder" in context.config["architecture"] else 0.6) + 0.1 / context.fidelity
    return {"loss": loss, "cost": float(context.fidelity)}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished hpo+hnas search over a 4-stage grammar (synthetic objective, no training)."""
    return make_run(tmp_path_factory.mktemp("source") / "run", optimizer="random", max_trials=8,
                    objective=_residual_wins)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five tiny cases: their plan has two stages, so the grammar differs from the source's four."""
    return tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fake(monkeypatch):
    fake_training(monkeypatch)


def _search(dataset, run_dir, *extra):
    return ("search", "--dataset", dataset, "--run-dir", run_dir, "--max-stages", "2", "--optimizer", "random",
            "--preset", "cpu", "--max-trials", "2", "--min-epochs", "1", "--max-epochs", "3",
            "--iterations-per-epoch", "1", "--no-progress", *extra)


def test_a_search_is_centred_on_the_source_incumbent_and_records_it(capsys, tmp_path, fake, source, dataset):
    incumbent = load_run(source).incumbent
    code, out, err = run_cli(capsys, *_search(dataset, tmp_path / "run", "--prior-from", source))
    assert code == 0, err
    record = json.loads(RunFolder(tmp_path / "run").settings.read_text())["prior_from"]
    assert record["run"] == str(source.resolve()) and record["trial_id"] == incumbent.trial_id
    assert record["source_architecture"] == incumbent.config["architecture"]
    settings = SearchSettings.load(tmp_path / "run")
    hash(settings)  # the later steps cache what a run resolves to by its settings
    setup = resolve(settings)
    mapped = transfer_architecture(SOURCE_GRAMMAR, incumbent.config["architecture"], setup.grammar)
    assert record["architecture"] == mapped.architecture and parse(setup.grammar, mapped.architecture)
    hyperparameters = {k: v for k, v in incumbent.config.items() if k != "architecture"}
    assert record["centres"] == hyperparameters  # the same space: nothing clipped
    # The run's space has its prior modes there: the default configuration is the incumbent, carried over.
    assert setup.space().default_config() == {**hyperparameters, "architecture": mapped.architecture}
    assert f"prior: centred on trial {incumbent.trial_id} of {source.resolve()}" in out


def test_a_resume_keeps_the_stored_centres_and_refuses_another_source(capsys, tmp_path, fake, source, dataset):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *_search(dataset, run_dir, "--prior-from", source))[0] == 0
    stored = json.loads(RunFolder(run_dir).settings.read_text())["prior_from"]
    other = make_run(tmp_path / "other", max_trials=3, seed=1)
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "search", "--resume", run_dir, "--max-trials", "3", "--no-progress",
                           "--prior-from", other)
    assert code == 1 and f"centred on {str(source.resolve())!r}" in err and len(err.strip().splitlines()) == 1
    assert snapshot(run_dir) == before
    for again in ((), ("--prior-from", source)):  # left out or repeated: the stored record
        code, _, err = run_cli(capsys, "search", "--resume", run_dir, "--max-trials", "3", "--no-progress", *again)
        assert code == 0, err
        assert json.loads(RunFolder(run_dir).settings.read_text())["prior_from"] == stored


def test_hyperparameters_are_clipped_to_this_space_and_named():
    """Values outside this space's ranges are clipped; a choice it lacks becomes its default; both are noted."""
    from hnas.pipeline.spaces import run_space
    from hnas.search.space import values_within

    space = run_space("hpo", None)
    centres, notes = values_within(space, {"initial_lr": 0.5, "loss": "focal", "aug_factor": 1.5, "other": 1})
    assert centres == {"initial_lr": 0.1, "loss": space["loss"].default, "aug_factor": 1.5}
    assert notes == ("initial_lr: 0.5 is outside [1e-05, 0.1], took 0.1",
                     f"loss: 'focal' is not one of {list(space['loss'].choices)}, took {space['loss'].default!r}")


def test_a_space_sharing_nothing_with_the_source_is_refused(tmp_path):
    source = make_run(tmp_path / "hnas", space="hnas", max_trials=3)
    with pytest.raises(SearchError, match="space 'hpo' has none of its parameters"):
        prior_record(source, "hpo", make_grammar(isotropic_plan(2)), "medium")


@pytest.mark.parametrize("problem", ["missing", "empty folder", "a file", "no finished trial"])
def test_a_bad_source_is_refused_in_one_line_and_nothing_is_written(capsys, tmp_path, fake, dataset, problem):
    source = tmp_path / "source"
    if problem == "empty folder":
        source.mkdir()
    elif problem == "a file":
        source.write_text("not a run")
    elif problem == "no finished trial":
        make_run(source, max_trials=2, objective=_failing)
    code, _, err = run_cli(capsys, *_search(dataset, tmp_path / "run", "--prior-from", source))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--prior-from" in err, err
    assert not (tmp_path / "run").exists()


def test_sample_draws_around_the_source_incumbent_mapped_onto_this_grammar(capsys, tmp_path, source):
    plan = isotropic_plan(6)
    plan.save(tmp_path / "plan.json")
    grammar = make_grammar(plan)
    centre = transfer_architecture(SOURCE_GRAMMAR, load_run(source).incumbent.config["architecture"], grammar)
    code, out, err = run_cli(capsys, "sample", "--plan", tmp_path / "plan.json", "-n", "4", "--seed", "3",
                             "--confidence", "high", "--prior-from", source)
    assert code == 0, err
    assert out.split("\n")[:-1] == sample(grammar, 4, seed=3, confidence="high", centre=centre.architecture)
    assert out != "\n".join(sample(grammar, 4, seed=3, confidence="high")) + "\n"
    assert centre.architecture in err and "res_encoder" in centre.architecture


def test_sample_refuses_a_source_without_an_architecture(capsys, tmp_path):
    source = make_run(tmp_path / "hpo", space="hpo", max_trials=2)
    code, out, err = run_cli(capsys, "sample", "--prior-from", source, "--plan", _plan_file(tmp_path))
    assert code == 1 and "searched space 'hpo'" in err and out == ""


def _plan_file(folder):
    isotropic_plan(3).save(folder / "plan.json")
    return folder / "plan.json"


def test_a_hand_edited_record_is_refused(tmp_path, source):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(prior_from={"run": str(source)}).save(run_dir)
    with pytest.raises(SearchError, match="prior_from"):
        SearchSettings.load(run_dir)


def test_the_search_module_takes_prior_from(tmp_path, fake, source, dataset):
    """The Python entry point: search(..., prior_from=RUN) as the CLI calls it."""
    summary = search_module.search(settings_for(dataset, max_trials=1), tmp_path / "run", progress=False,
                                   prior_from=source)
    assert summary.history and SearchSettings.load(tmp_path / "run").prior_from["run"] == str(source.resolve())


def test_a_resume_may_not_add_a_prior_the_run_started_without(capsys, tmp_path, fake, source, dataset):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *_search(dataset, run_dir))[0] == 0
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "search", "--resume", run_dir, "--max-trials", "3", "--prior-from", source)
    assert code == 1 and "the run started without one" in err and snapshot(run_dir) == before
