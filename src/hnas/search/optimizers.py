"""Optimizers behind one ask/tell protocol (see ``hnas.search.types``).

* ``random``: uniform configurations at the maximum fidelity.
* ``successive-halving``: repeated brackets of the most exploratory shape.
* ``hyperband``: brackets cycling from the most exploratory shape to the max-fidelity-only one.
* ``priorband``: Hyperband whose new configurations mix uniform, prior and incumbent-mutation
  sampling (Mallik et al. 2023; docs/references.md, "PriorBand"), the default configuration first at b_max;
  the uniform is weighed against the prior by the same evidence as the incumbent (hnas's extension).
* ``regularized-priorband``: PriorBand with multi-objective promotions (non-dominated sorting
  + crowding distance) and an area-maximising incumbent (Auto-nnU-Net; docs/references.md, "Regularized PriorBand").
* ``bohb``, ``priorband-bo``: Hyperband / PriorBand with new configurations from BOHB's
  density model (``hnas.search.bohb``).

Every decision is a function of the history and the seed: ``ask`` rebuilds the bracket state
from the trials each time and draws from a generator seeded with ``(seed, next trial id)``, so
a replayed history yields the same jobs. Brackets are synchronous: a rung promotes once every
trial below it has finished; while one waits on pending trials the next job comes from the
next bracket, so parallel workers never idle while budget remains.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from hnas.errors import SearchError
from hnas.search.fidelity import FidelitySchedule
from hnas.search.pareto import area_incumbent, rank_by_fronts_and_crowding, rank_by_fronts_randomly
from hnas.search.space import SearchSpace
from hnas.search.types import NO_BRACKET, Job, Trial

#: How a rung ranks its finished trials for promotion.
PROMOTIONS: tuple[str, ...] = ("loss", "nds-random", "nds-crowding")
_SAMPLING_STREAM, _PROMOTION_STREAM = 0, 1
#: The tie-breaking stream of the incumbent's ranking: no bracket number (numpy refuses a negative seed).
_INCUMBENT_RANKING = 2**16


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SearchError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class HistoryIndex:
    """The history grouped the ways the optimizers look at it (built once per ask)."""

    def __init__(self, history: Sequence[Trial]):
        self.trials = history
        self.by_id: dict[int, Trial] = {}
        #: bracket -> rung -> trials
        self.by_bracket: dict[int, dict[int, list[Trial]]] = defaultdict(
            lambda: defaultdict(list))
        #: (bracket, rung) pairs that hold a pending trial
        self.pending_rungs: set[tuple[int, int]] = set()
        self.successes_by_rung: dict[int, list[Trial]] = defaultdict(list)
        self.finished_fidelity = 0.0
        by_id, by_bracket, successes = self.by_id, self.by_bracket, self.successes_by_rung
        for trial in history:  # hot path of every ask: plain attribute access only
            job = trial.job
            by_id[job.trial_id] = trial
            if job.bracket != NO_BRACKET:
                by_bracket[job.bracket][job.rung].append(trial)
                if trial.state == "pending":
                    self.pending_rungs.add((job.bracket, job.rung))
            if trial.state == "success":
                successes[job.rung].append(trial)
        for trial in history:
            if trial.state != "pending":
                parent_id = trial.job.parent_id
                parent = by_id.get(parent_id) if parent_id is not None else None
                self.finished_fidelity += trial.job.fidelity - (
                    parent.job.fidelity if parent is not None else 0.0)
        self.next_id = max(by_id, default=-1) + 1

    def added_fidelity(self, trial: Trial) -> float:
        """What a trial spends: a promotion only pays for the fidelity above its parent's."""
        parent = self.by_id.get(trial.parent_id) if trial.parent_id is not None else None
        return trial.fidelity - (parent.fidelity if parent is not None else 0.0)

    @property
    def successes(self) -> list[Trial]:
        return [t for trials in self.successes_by_rung.values() for t in trials]


def best_by_loss(trials: Sequence[Trial]) -> Trial | None:
    """Lowest loss; the earlier trial wins a tie."""
    return min(trials, key=lambda t: (t.loss, t.trial_id), default=None)


def final_incumbent(history: Sequence[Trial]) -> Trial | None:
    """The reported incumbent: best loss among successes at the highest fidelity reached.

    Losses at lower fidelities are not comparable with full-fidelity ones, so they never
    win once a higher fidelity has a result (docs/references.md, "Regularized PriorBand").
    """
    successes = [t for t in history if t.is_success]
    if not successes:
        return None
    top = max(t.fidelity for t in successes)
    return best_by_loss([t for t in successes if t.fidelity == top])


class _Optimizer:
    name = "optimizer"
    #: > 0 while :meth:`redraw` asks again for a trial whose first draws a configuration filter refused.
    _redraw = 0

    def __init__(self, space: SearchSpace, *, min_fidelity: float, max_fidelity: float,
                 eta: int = 3, seed: int = 0):
        if not isinstance(space, SearchSpace):
            raise SearchError(f"{self.name} needs a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.schedule = FidelitySchedule(min_fidelity, max_fidelity, eta)
        self.seed = _check_seed(seed)

    def settings(self) -> dict[str, Any]:
        return {"optimizer": self.name, "min_fidelity": self.schedule.min_fidelity,
                "max_fidelity": self.schedule.max_fidelity, "eta": self.schedule.eta}

    def tell(self, trial: Trial) -> None:
        """State lives in the history, so telling only checks the trial really finished."""
        if not trial.is_finished:
            raise SearchError(f"tell() expects a finished trial; trial {trial.trial_id} is "
                              f"still {trial.state}")

    def ask(self, history: Sequence[Trial]) -> Job | None:
        raise NotImplementedError

    def _sampling_rng(self, trial_id: int) -> np.random.Generator:
        redraw = [self._redraw] if self._redraw else []  # no redraw: the stream runs always had
        return np.random.default_rng([self.seed, _SAMPLING_STREAM, trial_id, *redraw])

    def redraw(self, history: Sequence[Trial], attempt: int) -> Job | None:
        """``ask`` with the sampling stream of redraw ``attempt`` (0: the ordinary ask), for
        :mod:`hnas.search.feasibility`; a function of history, seed and attempt, so resumes redraw alike."""
        self._redraw = attempt
        try:
            return self.ask(history)
        finally:
            self._redraw = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings()}, seed={self.seed})"


class RandomSearch(_Optimizer):
    """Uniform configurations, each evaluated once at the maximum fidelity."""

    name = "random"

    def ask(self, history: Sequence[Trial]) -> Job | None:
        trial_id = max((t.trial_id for t in history), default=-1) + 1
        config = self.space.sample_uniform(self._sampling_rng(trial_id))
        return Job(trial_id, config, self.schedule.fidelity(self.schedule.max_rung),
                   rung=self.schedule.max_rung, bracket=NO_BRACKET, sampler="random")


class SuccessiveHalving(_Optimizer):
    """Synchronous successive halving; brackets repeat the most exploratory shape."""

    name = "successive-halving"

    def __init__(self, space: SearchSpace, *, min_fidelity: float, max_fidelity: float,
                 eta: int = 3, seed: int = 0, promotion: str = "loss"):
        super().__init__(space, min_fidelity=min_fidelity, max_fidelity=max_fidelity, eta=eta,
                         seed=seed)
        self.schedule.require_multiple_rungs(self.name)
        if promotion not in PROMOTIONS:
            raise SearchError(f"promotion must be one of {list(PROMOTIONS)}, got {promotion!r}")
        self.promotion = promotion
        self._sizes: dict[int, dict[int, int]] = {}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "promotion": self.promotion}

    def halvings(self, bracket: int) -> int:
        """How often bracket number ``bracket`` halves (its shape)."""
        return self.schedule.max_rung

    def _bracket_sizes(self, halvings: int) -> dict[int, int]:
        if halvings not in self._sizes:
            self._sizes[halvings] = self.schedule.bracket_sizes(halvings)
        return self._sizes[halvings]

    # -- ask -----------------------------------------------------------------------------------
    def ask(self, history: Sequence[Trial]) -> Job | None:
        index = HistoryIndex(history)
        opening = self._opening_job(index)
        if opening is not None:
            return opening
        brackets = sorted(index.by_bracket)
        for bracket in brackets:
            job = self._bracket_job(bracket, index)
            if job is not None:
                return job
        return self._bracket_job(brackets[-1] + 1 if brackets else 0, index)

    def _opening_job(self, index: HistoryIndex) -> Job | None:
        return None

    def _bracket_job(self, bracket: int, index: HistoryIndex) -> Job | None:
        """The bracket's next job, or None while it waits on pending trials or is complete."""
        sizes = self._bracket_sizes(self.halvings(bracket))
        by_rung = index.by_bracket.get(bracket, {})
        rungs = sorted(sizes)
        if len(by_rung.get(rungs[0], ())) < sizes[rungs[0]]:
            return self._new_job(index, rungs[0], bracket)
        for rung in rungs[1:]:
            if (bracket, rung - 1) in index.pending_rungs:
                return None
            issued = by_rung.get(rung, ())
            if len(issued) >= sizes[rung]:
                continue
            successes = [t for t in by_rung.get(rung - 1, ()) if t.state == "success"]
            quota = min(sizes[rung], len(successes))
            if len(issued) >= quota:
                continue
            promoted = {t.parent_id for t in issued}
            for parent in self.rank(successes, stream=(bracket, rung - 1))[:quota]:
                if parent.trial_id not in promoted:
                    return Job(index.next_id, dict(parent.config), self.schedule.fidelity(rung),
                               rung=rung, bracket=bracket, parent_id=parent.trial_id,
                               sampler="promotion")
        return None

    def _new_job(self, index: HistoryIndex, rung: int, bracket: int) -> Job:
        rng = self._sampling_rng(index.next_id)
        config, sampler = self._sample(rng, rung, index)
        return Job(index.next_id, config, self.schedule.fidelity(rung), rung=rung,
                   bracket=bracket, sampler=sampler)

    def _sample(self, rng: np.random.Generator, rung: int,
                index: HistoryIndex) -> tuple[dict[str, Any], str]:
        return self.space.sample_uniform(rng), "random"

    # -- ranking -------------------------------------------------------------------------------
    def rank(self, trials: Sequence[Trial], stream: tuple[int, int]) -> list[Trial]:
        """Successful ``trials`` best first under this optimizer's promotion rule.

        ``stream`` (bracket, rung) seeds the random tie-breaking of ``nds-random`` so that
        every ask sees the same order for the same rung.
        """
        if self.promotion == "loss" or len(trials) <= 1:
            return sorted(trials, key=lambda t: (t.loss, t.trial_id))
        ordered = sorted(trials, key=lambda t: t.trial_id)
        points = np.array([t.objectives for t in ordered])
        if self.promotion == "nds-random":
            rng = np.random.default_rng([self.seed, _PROMOTION_STREAM, *stream])
            return [ordered[i] for i in rank_by_fronts_randomly(points, rng)]
        ranked = [ordered[i] for i in rank_by_fronts_and_crowding(points)]
        # the most accurate config is always promoted, a cheaper twin winning a tie
        # (docs/references.md, "Regularized PriorBand")
        best = min(ordered, key=lambda t: (t.loss, t.cost, t.trial_id))
        return [best] + [t for t in ranked if t is not best]


class Hyperband(SuccessiveHalving):
    """Successive-halving brackets cycling from most exploratory to max-fidelity only."""

    name = "hyperband"

    def halvings(self, bracket: int) -> int:
        return self.schedule.max_rung - bracket % (self.schedule.max_rung + 1)


class PriorBand(Hyperband):
    """Hyperband with prior- and incumbent-guided sampling of new configurations (docs/references.md, "PriorBand").

    A new configuration at rung ``r`` is uniform with probability at least
    ``p_geo = 1 / (1 + eta**r)`` (PriorBand's geometric share, kept as a floor). The rest,
    ``1 - p_geo``, goes to mutations of the incumbent (once incumbent sampling is active) by
    PriorBand's prior-vs-incumbent evidence, and what is left to the prior is split between the
    prior and the uniform distribution by how well each explains the top configurations
    (:meth:`evidence_shares`). That second split is hnas's extension (docs/references.md,
    "PriorBand"): a misleading prior hands its share to exploration as evidence against it grows.
    """

    name = "priorband"

    def __init__(self, space: SearchSpace, *, min_fidelity: float, max_fidelity: float,
                 eta: int = 3, seed: int = 0, promotion: str = "loss"):
        super().__init__(space, min_fidelity=min_fidelity, max_fidelity=max_fidelity, eta=eta,
                         seed=seed, promotion=promotion)
        self._prior_memo: dict[int, tuple[Mapping[str, Any], float]] = {}
        self._centred_memo: dict[int, tuple[Mapping[str, Any], float]] = {}
        self._uniform_memo: dict[int, tuple[Mapping[str, Any], float]] = {}
        self._centred_memo_key: tuple | None = None
        self._centred_space: SearchSpace | None = None

    def _opening_job(self, index: HistoryIndex) -> Job | None:
        if index.next_id != 0 or self._redraw:  # a refused default: trial 0 opens bracket 0 instead
            return None
        top = self.schedule.max_rung
        return Job(0, self.space.default_config(), self.schedule.fidelity(top), rung=top,
                   bracket=NO_BRACKET, sampler="default")

    def _sample(self, rng: np.random.Generator, rung: int,
                index: HistoryIndex) -> tuple[dict[str, Any], str]:
        incumbent = self.incumbent(index) if self.incumbent_sampling_active(index) else None
        p_random, _, p_incumbent = self.sampling_probabilities(rung, index, incumbent)
        draw = rng.random()
        if draw < p_random:
            return self._explore(rng, index)
        if draw < 1.0 - p_incumbent:  # p_incumbent is exactly 0 without an incumbent
            return self.space.sample_prior(rng), "prior"
        return self.space.mutate(incumbent.config, rng), "incumbent"

    def sampling_probabilities(self, rung: int, index: HistoryIndex,
                               incumbent: Trial | None) -> tuple[float, float, float]:
        """(p_random, p_prior, p_incumbent) for a new configuration at ``rung``.

        The geometric share ``1 / (1 + eta**rung)`` is uniform; the rest goes by
        :meth:`evidence_shares`, whose uniform part is added to p_random.
        """
        p_geo = 1.0 / (1.0 + self.schedule.eta ** rung)
        prior, uniform, incumbent_share = self.evidence_shares(index, incumbent)
        rest = 1.0 - p_geo
        return p_geo + rest * uniform, rest * prior, rest * incumbent_share

    def _explore(self, rng: np.random.Generator,
                 index: HistoryIndex) -> tuple[dict[str, Any], str]:
        """The p_random share: uniform here; PriorBand+BO hands it to its model."""
        return self.space.sample_uniform(rng), "random"

    def _log_pdfs(self, trials: Sequence[Trial], centre: Trial | None) -> list[float]:
        """Prior (``centre`` None) or incumbent-centred log densities, memoised per trial.

        The memo only saves time: an entry is used when the trial's config is still the same,
        and the centred memo is dropped whenever the incumbent changes.
        """
        if centre is None:
            return self._memoised(trials, self._prior_memo, self.space.prior_log_pdf)
        key = (centre.trial_id, centre.config)
        if self._centred_memo_key != key:
            self._centred_memo_key = key
            self._centred_space = self.space.centered_on(centre.config)
            self._centred_memo.clear()
        return self._memoised(trials, self._centred_memo, self._centred_space.prior_log_pdf)

    def _uniform_log_pdfs(self, trials: Sequence[Trial]) -> list[float]:
        """Log densities of the trials under the uniform distribution, memoised like the prior's."""
        return self._memoised(trials, self._uniform_memo, self.space.uniform_log_pdf)

    @staticmethod
    def _memoised(trials: Sequence[Trial], memo: dict[int, tuple[Mapping[str, Any], float]],
                  log_pdf) -> list[float]:
        values = []
        for trial in trials:
            cached = memo.get(trial.trial_id)
            if cached is None or cached[0] != trial.config:
                cached = memo[trial.trial_id] = (trial.config, log_pdf(trial.config))
            values.append(cached[1])
        return values

    def incumbent_sampling_active(self, index: HistoryIndex) -> bool:
        """Once the finished trials spent a full most-exploratory bracket's fidelity
        (promotions counted by what they add, rung 0 in full) and a b_max result exists."""
        spent_enough = index.finished_fidelity >= self.schedule.bracket_cost(self.schedule.max_rung)
        return spent_enough and bool(index.successes_by_rung.get(self.schedule.max_rung))

    def incumbent(self, index: HistoryIndex) -> Trial | None:
        """The configuration local search starts from: best loss at any rung."""
        return best_by_loss(index.successes)

    def evidence_shares(self, index: HistoryIndex,
                        incumbent: Trial | None) -> tuple[float, float, float]:
        """(prior, uniform, incumbent) shares of the non-geometric probability, summing to 1.

        Looks at the highest rung with >= eta successes, its top K = max(floor(n/eta), eta)
        configs weighted K..1, and scores each distribution by S = sum w * pdf(top): the prior,
        the uniform distribution and, when ``incumbent`` is given, the prior re-centred on it.
        The incumbent's share is PriorBand's ratio S_inc / (S_inc + S_prior); the rest is split
        between prior and uniform as S_prior : S_uniform. Scoring the uniform against the
        incumbent too (a three-way softmax, this extension's first version) took local search's
        share late in a search (benchmarks/README.md, "Recovery from a bad prior"). Without such
        a rung everything goes to the prior.
        """
        eta = self.schedule.eta
        rungs = [r for r, trials in index.successes_by_rung.items() if len(trials) >= eta]
        if not rungs:
            return 1.0, 0.0, 0.0
        rung = max(rungs)
        trials = index.successes_by_rung[rung]
        k = max(len(trials) // eta, eta)
        top = self.rank(trials, stream=(_INCUMBENT_RANKING, rung))[:k]
        log_weights = np.log(np.arange(k, 0, -1, dtype=float))
        prior_score = special.logsumexp(log_weights + self._log_pdfs(top, None))
        uniform_score = special.logsumexp(log_weights + self._uniform_log_pdfs(top))
        incumbent_score = -math.inf if incumbent is None else \
            special.logsumexp(log_weights + self._log_pdfs(top, incumbent))
        incumbent_share = _share_of_second(prior_score, incumbent_score)
        uniform = (1.0 - incumbent_share) * _share_of_second(prior_score, uniform_score)
        return 1.0 - incumbent_share - uniform, uniform, incumbent_share


def _share_of_second(first: float, second: float) -> float:
    """exp(second) / (exp(first) + exp(second)) from log scores; 0 when neither has any density."""
    if second == -math.inf:
        return 0.0
    return float(special.expit(second - first))


class RegularizedPriorBand(PriorBand):
    """PriorBand for (loss, cost): non-dominated sorting + crowding distance in promotions,
    the area-maximising Pareto point as the local-search incumbent (docs/references.md, "Regularized PriorBand")."""

    name = "regularized-priorband"

    def __init__(self, space: SearchSpace, *, min_fidelity: float, max_fidelity: float,
                 eta: int = 3, seed: int = 0):
        super().__init__(space, min_fidelity=min_fidelity, max_fidelity=max_fidelity, eta=eta,
                         seed=seed, promotion="nds-crowding")

    def incumbent(self, index: HistoryIndex) -> Trial | None:
        successes = sorted(index.successes, key=lambda t: t.trial_id)
        if not successes:
            return None
        return successes[area_incumbent([t.objectives for t in successes])]


#: Name -> optimizer class. ``hnas.search.bohb`` adds "bohb" and "priorband-bo" (subclasses of
#: the classes above, beside their density model) when ``hnas.search`` is imported.
OPTIMIZERS: dict[str, type[_Optimizer]] = {
    "random": RandomSearch,
    "successive-halving": SuccessiveHalving,
    "hyperband": Hyperband,
    "priorband": PriorBand,
    "regularized-priorband": RegularizedPriorBand,
}


def make_optimizer(name: str, space: SearchSpace, *, min_fidelity: float, max_fidelity: float,
                   eta: int = 3, seed: int = 0, **options: Any) -> _Optimizer:
    """Build an optimizer by its registry name (the names the CLI accepts).

    ``options``: ``promotion`` ("loss", "nds-random", "nds-crowding") for
    successive-halving, hyperband and priorband; e.g. multi-objective Hyperband is
    ``make_optimizer("hyperband", ..., promotion="nds-random")``. bohb and priorband-bo
    also take the density model's ``min_points``, ``top_fraction``, ``candidates``,
    ``bandwidth_factor`` and ``min_bandwidth``; bohb its ``random_fraction``.
    """
    if name not in OPTIMIZERS:
        raise SearchError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {
        "self", "space", "min_fidelity", "max_fidelity", "eta", "seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SearchError(f"optimizer {name!r} does not accept option(s) {unknown}; it accepts "
                          f"{sorted(accepted) or 'none'}")
    return cls(space, min_fidelity=min_fidelity, max_fidelity=max_fidelity, eta=eta, seed=seed,
               **options)
