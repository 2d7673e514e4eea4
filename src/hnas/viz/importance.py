"""Hyperparameter importance of a run: functional ANOVA (fANOVA) over its finished trials.

fANOVA (Hutter, Hoos & Leyton-Brown, ICML 2014) fits a random forest to (configuration -> loss)
and splits the variance of its prediction into each parameter's marginal share. We use optuna's
maintained implementation (:class:`optuna.importance.FanovaImportanceEvaluator`, backed by
scikit-learn's forest) on an in-memory optuna study built from the trials; nothing is sampled.

What goes in, per successful trial:

* every search-space parameter that is active in *all* of them. A conditional parameter that some
  trials lack (``momentum`` when not every trial used SGD) is left out and listed as excluded:
  fANOVA's marginals need a value everywhere, and imputing one would invent data;
* the architecture string, as derived features compiled from the run's grammar and plan: stage
  count, encoder type, total encoder blocks, total decoder blocks (the string itself has no useful
  order or distance). Without the grammar and plan the architecture is excluded;
* ``epochs`` (the fidelity) when trials ran at more than one: promotions and low rungs differ in
  loss mostly because of it, and leaving it out would blame that on the hyperparameters.

Parameters with a single value over the trials carry no variance and are listed as constant.

Importance from few trials is computed but flagged: :attr:`Importance.reliable` is False below
:func:`reliable_trial_count` trials, and :attr:`Importance.reliability_note` says so in words.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hnas.errors import HnasError

#: Fewer finished trials than this give a forest too poor to split variance meaningfully.
MIN_TRIALS = 5
#: From MIN_TRIALS on, importance is computed, but flagged unreliable below
#: max(RELIABLE_MIN_TRIALS, RELIABLE_TRIALS_PER_PARAMETER x parameters entered). Measured on the
#: easiest case (loss driven by initial_lr alone, 10% noise, 20 seeds per trial count), the driver
#: ranked first with the hpo space's 7 parameters in 5/20 seeds at 5 trials, 16/20 at 10, 19-20/20
#: from 12 on; with hpo+hnas's 12 in 13/20 at 10, 16/20 at 12, 20/20 from 16 on. Its share at
#: 2 trials per parameter was still ~0.5 against ~0.7 at 40 trials. Real losses have weaker,
#: noisier effects, so 2 per parameter (and never fewer than 10) is the least we call reliable.
RELIABLE_MIN_TRIALS = 10
RELIABLE_TRIALS_PER_PARAMETER = 2
METHOD = "fANOVA (optuna FanovaImportanceEvaluator, 64 trees)"
FIDELITY = "epochs"
ARCHITECTURE_FEATURES = ("architecture: stages", "architecture: encoder", "architecture: encoder blocks",
                         "architecture: decoder blocks")


class ImportanceError(HnasError):
    """Importance cannot be computed (optuna/scikit-learn missing)."""


@dataclass(frozen=True)
class Importance:
    """Normalised importances (summing to 1, largest first) and what was left out and why."""

    values: dict[str, float]
    n_trials: int  # successful trials the importance is computed from (all fidelities)
    method: str = METHOD
    excluded: dict[str, str] = field(default_factory=dict)
    note: str | None = None  # set when no importance could be computed

    @property
    def available(self) -> bool:
        return bool(self.values)

    @property
    def min_reliable_trials(self) -> int:
        """Trials needed before these importances are trusted (see RELIABLE_MIN_TRIALS)."""
        return reliable_trial_count(len(self.values))

    @property
    def reliable(self) -> bool:
        return self.available and self.n_trials >= self.min_reliable_trials

    @property
    def reliability_note(self) -> str | None:
        """``computed from 8 trials: unreliable below 14 (...)``; None when reliable or not computed."""
        if not self.available or self.reliable:
            return None
        return (f"computed from {self.n_trials} trials: unreliable below {self.min_reliable_trials} "
                f"({RELIABLE_TRIALS_PER_PARAMETER} per parameter for {len(self.values)} parameters, "
                f"at least {RELIABLE_MIN_TRIALS})")


def reliable_trial_count(n_parameters: int) -> int:
    """Fewest trials whose importances we call reliable for ``n_parameters`` entering fANOVA."""
    return max(RELIABLE_MIN_TRIALS, RELIABLE_TRIALS_PER_PARAMETER * n_parameters)


def architecture_features(architecture: str, grammar: str, plan) -> dict[str, Any]:
    """The derived architecture features of one sentence (compiled, so they follow the grammar)."""
    from hnas.cfgunet import compile_architecture

    spec = compile_architecture(grammar, architecture, plan, dropout_rate=0.0)
    return {ARCHITECTURE_FEATURES[0]: spec.n_stages, ARCHITECTURE_FEATURES[1]: spec.encoder.kind,
            ARCHITECTURE_FEATURES[2]: sum(spec.encoder.blocks_per_stage),
            ARCHITECTURE_FEATURES[3]: sum(spec.decoder.blocks_per_stage)}


def importance_table(trials: Sequence, space_description: Sequence[Mapping[str, Any]], *, grammar: str | None = None,
                     plan=None) -> tuple[list[dict[str, Any]], list[float], dict[str, str]]:
    """Rows of feature values, their losses, and the excluded parameters with the reason."""
    successes = [t for t in trials if t.is_success]
    architecture_names = {e["name"] for e in space_description if e.get("type") == "architecture"}
    excluded: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for trial in successes:
        row: dict[str, Any] = {}
        for name, value in trial.config.items():
            if name not in architecture_names:
                row[name] = value
            elif grammar is not None and plan is not None:
                row.update(architecture_features(value, grammar, plan))
            else:
                excluded[name] = "no grammar.lark/plan.json in the run folder to derive its features"
        row[FIDELITY] = float(trial.fidelity)
        rows.append(row)
    present_everywhere = set.intersection(*(set(r) for r in rows)) if rows else set()
    for row in rows:
        for name in set(row) - present_everywhere:
            excluded[name] = "conditional: inactive in some trials"
    rows = [{k: v for k, v in r.items() if k in present_everywhere} for r in rows]
    for name in sorted(present_everywhere):
        if len({repr(r[name]) for r in rows}) < 2:
            excluded[name] = "constant over the trials" if name != FIDELITY else "one fidelity only"
    rows = [{k: v for k, v in r.items() if k not in excluded} for r in rows]
    return rows, [t.loss for t in successes], dict(sorted(excluded.items()))


def hyperparameter_importance(trials: Sequence, space_description: Sequence[Mapping[str, Any]], *,
                              grammar: str | None = None, plan=None, seed: int = 0) -> Importance:
    """fANOVA importance of each parameter for the loss over the successful ``trials``."""
    rows, losses, excluded = importance_table(trials, space_description, grammar=grammar, plan=plan)
    if len(rows) < MIN_TRIALS:
        return Importance({}, len(rows), excluded=excluded,
                          note=f"{len(rows)} successful trial(s); fANOVA needs at least {MIN_TRIALS}")
    if not rows[0]:
        return Importance({}, len(rows), excluded=excluded, note="no parameter varies over the successful trials")
    if len(set(losses)) < 2:
        return Importance({}, len(rows), excluded=excluded, note="every successful trial has the same loss")
    try:
        with warnings.catch_warnings():  # optuna imports tqdm.auto, which warns in notebooks without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            import optuna
            from optuna.importance import FanovaImportanceEvaluator
    except ImportError as exc:
        raise ImportanceError(f"hyperparameter importance needs optuna and scikit-learn ({exc}); install them "
                              "with `pip install optuna scikit-learn`") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(rows, space_description)
    study = optuna.create_study(direction="minimize")
    study.add_trials([optuna.trial.create_trial(params=_encoded(row, space_description), distributions=distributions,
                                                value=loss) for row, loss in zip(rows, losses)])
    raw = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed),
                                                  normalize=True)
    values = {name: float(value) for name, value in sorted(raw.items(), key=lambda kv: (-kv[1], kv[0]))}
    return Importance(values, len(rows), excluded=excluded)


def _described(space_description: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {entry["name"]: entry for entry in space_description}


def _encoded(row: Mapping[str, Any], space_description) -> dict[str, Any]:
    """Ordinal values become their index, so the forest splits them in order."""
    described = _described(space_description)
    return {name: (list(described[name]["values"]).index(value)
                   if described.get(name, {}).get("type") == "ordinal" else value)
            for name, value in row.items()}


def _distributions(rows: Sequence[Mapping[str, Any]], space_description) -> dict[str, Any]:
    """optuna distributions: the space's bounds and choices; observed ranges for derived features."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    described = _described(space_description)
    distributions = {}
    for name in rows[0]:
        entry = described.get(name)
        observed = [r[name] for r in rows]
        kind = entry.get("type") if entry else None
        if kind == "float":
            distributions[name] = FloatDistribution(entry["lower"], entry["upper"], log=entry["log"])
        elif kind == "int":
            distributions[name] = IntDistribution(entry["lower"], entry["upper"], log=entry["log"])
        elif kind == "categorical":
            distributions[name] = CategoricalDistribution(tuple(entry["choices"]))
        elif kind == "ordinal":
            distributions[name] = IntDistribution(0, len(entry["values"]) - 1)
        elif name == FIDELITY:
            distributions[name] = FloatDistribution(min(observed), max(observed), log=min(observed) > 0)
        elif all(isinstance(v, int) for v in observed):
            distributions[name] = IntDistribution(min(observed), max(observed))
        else:
            distributions[name] = CategoricalDistribution(tuple(sorted(set(map(str, observed)))))
    return distributions
