"""Plots of a search: incumbent over training time, the error/runtime Pareto front, importance.

The data functions (:func:`incumbent_trajectory`, :func:`pareto_series`) are plain Python over
trials; the ``plot_*`` functions draw with matplotlib's object API (``Figure`` rendered by the
Agg canvas), so they never touch pyplot's global backend and work the same in scripts, tests
and notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hnas.errors import HnasError
from hnas.search import final_incumbent, pareto_front

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LOG_AXIS_RATIO = 100.0  # a positive axis spanning more than this factor is drawn on a log scale


class PlotError(HnasError):
    """A plot cannot be drawn or written (nothing to plot, unwritable path)."""


# --------------------------------------------------------------------------------------- data

def finishing_order(trials: Sequence) -> list:
    """Finished trials in the order their results arrived (trial id where no time is stored)."""
    finished = [t for t in trials if t.is_finished]
    return sorted(finished, key=lambda t: (t.finished_at if t.finished_at is not None else float("inf"), t.trial_id))


def training_time_spent(trial, by_id: Mapping[int, object]) -> float:
    """Seconds of training a successful trial added: a promotion's cost accumulates its parent's."""
    if not trial.is_success:
        return 0.0
    parent = by_id.get(trial.parent_id) if trial.parent_id is not None else None
    already = parent.cost if parent is not None and parent.is_success else 0.0
    return max(0.0, trial.cost - already)


def incumbent_trajectory(trials: Sequence) -> list[tuple[float, float]]:
    """``(cumulative training seconds, incumbent loss)`` after each successful result.

    The incumbent is the search's own (best loss at the highest fidelity reached so far), i.e.
    what the search would have returned had it stopped at that moment.
    """
    by_id = {t.trial_id: t for t in trials}
    done: list = []
    elapsed, points = 0.0, []
    for trial in finishing_order(trials):
        elapsed += training_time_spent(trial, by_id)
        if not trial.is_success:
            continue
        done.append(trial)
        points.append((elapsed, final_incumbent(done).loss))
    return points


@dataclass(frozen=True)
class ParetoSeries:
    """One run's successful trials in (runtime, 1 - Dice), its front, default and incumbent."""

    label: str
    points: tuple[tuple[float, float], ...]  # (cost, loss) of every successful trial
    trial_ids: tuple[int, ...]
    front: tuple[int, ...]  # positions into points, by cost
    default: int | None = None  # position of the default configuration's trial
    incumbent: int | None = None


def pareto_series(label: str, trials: Sequence, *, default_trial_id: int | None = None,
                  incumbent_id: int | None = None) -> ParetoSeries:
    successes = [t for t in trials if t.is_success]
    points = tuple((t.cost, t.loss) for t in successes)
    ids = tuple(t.trial_id for t in successes)
    front = pareto_front([(loss, cost) for cost, loss in points]) if points else []
    position = {trial_id: i for i, trial_id in enumerate(ids)}
    return ParetoSeries(label, points, ids, tuple(sorted((int(i) for i in front), key=lambda i: points[i])),
                        position.get(default_trial_id), position.get(incumbent_id))


# ------------------------------------------------------------------------------------ drawing

def _figure(width: float = 7.0, height: float = 4.4):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write the plot {str(path)!r}: {exc}") from exc
    return path


def _log_if_wide(axis_setter, values: Sequence[float]) -> None:
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_AXIS_RATIO:
        axis_setter("log")


def _label_curves(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int) -> None:
    """Axis labels, title, a light grid and the legend: the same frame for every run-comparison plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=legend_size)


def plot_cost_over_time(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, *,
                        title: str = "Incumbent over training time") -> Path:
    """One step curve per run: incumbent 1 - Dice against cumulative training seconds."""
    drawable = {label: points for label, points in curves.items() if points}
    if not drawable:
        raise PlotError("no run has a successful trial: there is no incumbent to plot")
    figure, ax = _figure()
    for color, (label, points) in zip(_colors(), drawable.items()):
        times, losses = zip(*points)
        ax.step(times, losses, where="post", color=color, linewidth=2, label=label)
        ax.plot(times, losses, "o", color=color, markersize=3, alpha=0.6)
    _log_if_wide(ax.set_xscale, [t for points in drawable.values() for t, _ in points])
    _label_curves(ax, "cumulative training time (s)", "incumbent 1 - Dice", title, legend_size=8)
    return _save(figure, path)


def plot_pareto(series: Sequence[ParetoSeries], path: str | Path, *,
                title: str = "1 - Dice vs training runtime") -> Path:
    """Every successful trial, each run's Pareto front, its default configuration and incumbent."""
    if not any(s.points for s in series):
        raise PlotError("no run has a successful trial: there is no Pareto front to plot")
    figure, ax = _figure()
    for color, s in zip(_colors(), series):
        if not s.points:
            continue
        costs, losses = zip(*s.points)
        ax.scatter(costs, losses, s=14, color=color, alpha=0.35, label=f"{s.label}: trials")
        front = [s.points[i] for i in s.front]
        ax.step([c for c, _ in front], [l for _, l in front], where="post", color=color, linewidth=2,
                marker="o", markersize=5, label=f"{s.label}: Pareto front")
        if s.default is not None:
            ax.scatter(*s.points[s.default], marker="*", s=260, color=color, edgecolors="black", zorder=5,
                       label=f"{s.label}: default configuration")
        if s.incumbent is not None:
            ax.scatter(*s.points[s.incumbent], marker="D", s=70, facecolors="none", edgecolors="black",
                       linewidths=1.5, zorder=6, label=f"{s.label}: incumbent")
    _log_if_wide(ax.set_xscale, [c for s in series for c, _ in s.points])
    _label_curves(ax, "training runtime (s)", "1 - Dice", title, legend_size=7)
    return _save(figure, path)


def plot_importance(values: Mapping[str, float], path: str | Path, *, title: str) -> Path:
    """Horizontal bars, most important on top."""
    if not values:
        raise PlotError("no importance values to plot")
    names = list(values)[::-1]
    figure, ax = _figure(6.5, 0.9 + 0.32 * len(names))
    ax.barh(names, [values[n] for n in names], color=COLORS[0])
    for y, name in enumerate(names):
        ax.text(values[name], y, f" {values[name]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(values.values()) * 1.15))
    ax.set_xlabel("share of the loss variance (normalised)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    return _save(figure, path)


def _colors():
    while True:
        yield from COLORS
