"""`hnas search --warm-start RUN [RUN ...]`: the earlier runs must have searched the same problem.

The engine (:mod:`hnas.search.warm_start`) imports their finished trials when the new run is
created and checks the space and the fidelity schedule. Here, before anything is written, the
rest of what makes two runs' losses comparable: the dataset's content, the validation fold and
split, the plan, the scale preset and the search space's name and prior confidence. The first
difference is named in one line, pointing to ``--prior-from`` for runs of another problem.
"""

from __future__ import annotations

from pathlib import Path

from hnas.data import load_dataset
from hnas.data.dataset import content_digest
from hnas.data.splits import default_splits
from hnas.errors import SearchError
from hnas.pipeline.layout import RunFolder, stored_splits
from hnas.pipeline.run import RunSetup, stored_preset, stored_settings
from hnas.planning import Plan
from hnas.search.warm_start import PRIOR_HINT, import_history, source_folders


def check_warm_start(setup: RunSetup) -> int:
    """Refuse warm-start runs of another problem (reads them only); the number of trials they hold to import."""
    sources = setup.settings.warm_start
    if not sources:
        return 0
    dataset = load_dataset(setup.dataset)
    ours = {"dataset": content_digest(dataset), "fold": setup.settings.fold,
            "split": setup.splits or default_splits(dataset.case_ids), "plan": setup.plan.to_dict(),
            "preset": setup.preset, "space": setup.settings.space, "confidence": setup.settings.confidence}
    for source in source_folders(sources):
        _check_same_problem(source, ours, dataset)
    space = setup.space()
    return len(import_history(sources, space, min_fidelity=setup.min_epochs, max_fidelity=setup.max_epochs,
                              eta=setup.eta))


def _check_same_problem(source: Path, ours: dict, dataset) -> None:
    folder = RunFolder(source)
    if not source.is_dir():
        raise SearchError(f"--warm-start {str(source)!r} is not a folder; expected the run folder of an earlier "
                          "`hnas search`")
    if not folder.settings.is_file() or not folder.database.is_file():
        raise SearchError(f"--warm-start {str(source)!r} is not an hnas run folder (no {folder.settings.name} or "
                          f"{folder.database.name}); expected the run folder of an earlier `hnas search`")
    settings = stored_settings(source)
    digest = settings.dataset_digest
    if digest is None and settings.dataset_path().resolve() == Path(dataset.root).resolve():
        digest = ours["dataset"]  # a run from before run.json kept the digest: the same folder counts as the same data
    theirs = {"dataset": digest, "fold": settings.fold,
              "split": stored_splits(source, dataset) or default_splits(dataset.case_ids),
              "plan": Plan.load(folder.plan).to_dict() if folder.plan.is_file() else None,
              "preset": stored_preset(source, ours["preset"]), "space": settings.space,
              "confidence": settings.confidence}
    for key, difference in ((key, _difference(key, theirs[key], ours[key])) for key in ours):
        if difference:
            raise SearchError(f"cannot warm-start from {str(source)!r}: {difference}; warm start imports runs of the "
                              f"same dataset, plan and space; {PRIOR_HINT}")


def _difference(key: str, theirs, ours) -> str | None:
    """How one aspect differs, in words (None when it does not)."""
    if theirs == ours:
        return None
    if key == "dataset":
        return "it searched another dataset (other cases, images or labels)"
    if key == "split":
        return "its validation split differs (another --splits)"
    if key == "plan":
        if theirs is None:
            return "it has no plan.json"
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        return f"its plan differs ({changed[0]}: {theirs.get(changed[0])!r} there, {ours.get(changed[0])!r} here)"
    if key == "preset":
        return f"its scale preset differs ({theirs.differences(ours)[0]}, there vs here)"
    return f"its --{key} differs ({theirs!r} there, {ours!r} here)"
