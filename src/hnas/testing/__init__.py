"""Objective functions and helpers for testing optimizers; not part of the search engine.

:mod:`hnas.testing.hartmann` holds the multi-fidelity Hartmann functions that the optimizer
tests and ``benchmarks/bench_priorband.py`` run on. Nothing in ``hnas.search`` imports this
package, and this package imports nothing heavier than numpy, so a foreign virtualenv
(``benchmarks/neps_runner.py``'s NePS one) can load it with ``hnas`` on its path.
:mod:`hnas.testing.memory` (torch: what autograd saves for backward, against which the
training-memory estimate is checked) is imported only by those who name it.
"""
