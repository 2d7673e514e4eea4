"""Every user-facing failure in hnas is an :class:`HnasError`.

Messages name the bad value and what was expected, so a user can fix their input
without reading a traceback.
"""

from __future__ import annotations


class HnasError(Exception):
    """Base class of all errors hnas raises on purpose."""


class DatasetError(HnasError):
    """A dataset folder is missing, malformed or inconsistent (names the case)."""


class PlanError(HnasError):
    """A plan cannot be made or loaded (e.g. the data cannot support the stage count)."""


class GrammarError(HnasError):
    """A grammar cannot be generated or loaded."""


class InvalidArchitecture(HnasError):
    """An architecture string is not a sentence of the grammar.

    ``token``/``position`` locate the problem; ``expected`` lists what the grammar allowed.
    """

    def __init__(self, message: str, token: str | None = None, position: int | None = None,
                 expected: tuple[str, ...] = ()):
        super().__init__(message)
        self.token = token
        self.position = position
        self.expected = expected


class SamplingError(HnasError):
    """A prior or sampler was configured with invalid values."""


class SpecError(HnasError):
    """A UNetSpec is inconsistent or cannot be built."""


class SearchSpaceError(HnasError):
    """A search space parameter or configuration value is invalid (names the parameter)."""


class SearchError(HnasError):
    """A search cannot start or resume (e.g. settings differ from the stored run)."""


class TrainingError(HnasError):
    """Training or evaluation of a trial failed."""
