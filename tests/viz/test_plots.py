"""Plot data (incumbent trajectory, Pareto series) and the pictures drawn from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from hnas.search import Job, Trial
from hnas.viz.plots import (
    PlotError,
    incumbent_trajectory,
    pareto_series,
    plot_cost_over_time,
    plot_importance,
    plot_pareto,
    training_time_spent,
)


def assert_picture(path: Path, min_bytes: int = 8000) -> None:
    """A real plot: a sizeable PNG whose pixels are not one flat colour."""
    assert path.is_file() and path.stat().st_size > min_bytes
    pixels = imread(path)[..., :3]
    assert pixels.std() > 0.05
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def trial(trial_id, fidelity, loss, cost, *, parent=None, finished_at=None, sampler="random"):
    job = Job(trial_id, {"x": trial_id}, fidelity, rung=0, parent_id=parent, sampler=sampler)
    pending = Trial.pending(job)
    finished = finished_at if finished_at is not None else float(trial_id)
    if loss is None:
        return pending.failed("boom", finished_at=finished)
    return pending.succeeded(loss, cost, finished_at=finished)


# A small multi-fidelity history: 0 and 1 at 1 epoch, 2 fails, 3 promotes 1 to 3 epochs (its cost
# accumulates: 3 s total, 2 s added), 4 is a new 3-epoch trial that finishes before 3.
HISTORY = [
    trial(0, 1, 0.6, 1.0),
    trial(1, 1, 0.5, 1.0),
    trial(2, 1, None, None),
    trial(3, 3, 0.3, 3.0, parent=1, finished_at=10.0),
    trial(4, 3, 0.4, 2.5, finished_at=5.0),
]


def test_training_time_counts_only_what_a_promotion_added():
    by_id = {t.trial_id: t for t in HISTORY}
    assert [training_time_spent(t, by_id) for t in HISTORY] == [1.0, 1.0, 0.0, 2.0, 2.5]


def test_incumbent_trajectory_follows_the_searchs_incumbent_in_finishing_order():
    # finishing order 0, 1, (2 failed), 4, 3; the incumbent is the best at the highest fidelity so far,
    # so it gets *worse* (0.5 -> 0.4) when the first 3-epoch result arrives
    assert incumbent_trajectory(HISTORY) == [(1.0, 0.6), (2.0, 0.5), (4.5, 0.4), (6.5, 0.3)]
    assert incumbent_trajectory([]) == []
    assert incumbent_trajectory([trial(0, 1, None, None)]) == []


def test_pareto_series_marks_front_default_and_incumbent():
    series = pareto_series("run", HISTORY, default_trial_id=0, incumbent_id=3)
    assert series.trial_ids == (0, 1, 3, 4)
    assert series.points == ((1.0, 0.6), (1.0, 0.5), (3.0, 0.3), (2.5, 0.4))
    assert [series.trial_ids[i] for i in series.front] == [1, 4, 3]  # by runtime; 0 is dominated by 1
    assert series.trial_ids[series.default] == 0 and series.trial_ids[series.incumbent] == 3
    assert pareto_series("run", HISTORY, default_trial_id=2).default is None  # failed: not plotted


def test_plots_are_written_and_not_blank(tmp_path):
    curves = {"PriorBand": incumbent_trajectory(HISTORY), "random search": [(2.0, 0.7), (9.0, 0.45)]}
    assert_picture(plot_cost_over_time(curves, tmp_path / "a" / "cost.png"))
    series = [pareto_series("PriorBand", HISTORY, default_trial_id=0, incumbent_id=3),
              pareto_series("random", HISTORY[:2])]
    assert_picture(plot_pareto(series, tmp_path / "pareto.png"))
    assert_picture(plot_importance({"initial_lr": 0.7, "epochs": 0.2, "loss": 0.1}, tmp_path / "imp.png",
                                   title="importance"), min_bytes=4000)


def test_plots_refuse_empty_data_with_a_clear_error(tmp_path):
    with pytest.raises(PlotError, match="no run has a successful trial"):
        plot_cost_over_time({"a": []}, tmp_path / "c.png")
    with pytest.raises(PlotError, match="no run has a successful trial"):
        plot_pareto([pareto_series("a", [])], tmp_path / "p.png")
    with pytest.raises(PlotError, match="cannot write"):
        plot_importance({"x": 1.0}, tmp_path / "p.unknownformat", title="x")
