"""Training you can watch: one record per epoch, a text log and a progress plot in the trial folder.

nnU-Net users read a fold's progress from ``training_log_*.txt`` and ``progress.png``; hnas writes
``training_log.txt`` and ``progress.png`` beside ``checkpoint.pt`` with the same quantities:
train and validation loss, pseudo Dice per class (on validation *patches*, not sliding window)
and its exponential moving average, learning rate and epoch time (docs/references.md,
"Per-epoch training log"). The records travel in the checkpoint, so a promoted trial's log
lists its parent's epochs too.

This module is torch-free; matplotlib is imported only to draw the plot (Agg canvas, no pyplot),
and without matplotlib only the text log is written.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hnas.errors import TrainingError

TRAINING_LOG_NAME = "training_log.txt"
PROGRESS_PLOT_NAME = "progress.png"
#: nnU-Net's EMA of the mean pseudo Dice: ema = 0.9 * ema + 0.1 * new (docs/references.md).
EMA_MOMENTUM = 0.9
#: nnU-Net runs 50 validation iterations per 250 training iterations (docs/references.md).
VALIDATION_ITERATIONS_RATIO = 5
#: progress.png is redrawn at most this often during a fit (matplotlib takes ~0.2 s), and always at its end.
PLOT_INTERVAL_SECONDS = 30.0


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured; NaN where nothing was measured (no validation batches, an absent class)."""

    epoch: int  # 1-based
    max_epochs: int  # the schedule's length (the search's maximum fidelity)
    train_loss: float
    val_loss: float
    pseudo_dice: dict[str, float]  # foreground class name -> 2TP / (2TP + FP + FN) over the epoch's patches
    mean_pseudo_dice: float
    ema_pseudo_dice: float
    learning_rate: float
    epoch_seconds: float  # training + validation wall time of the epoch

    def to_state(self) -> dict:
        """Plain JSON-able values (NaN as None) for a weights-only checkpoint."""
        return {
            "epoch": self.epoch, "max_epochs": self.max_epochs, "train_loss": _plain(self.train_loss),
            "val_loss": _plain(self.val_loss),
            "pseudo_dice": {name: _plain(value) for name, value in self.pseudo_dice.items()},
            "mean_pseudo_dice": _plain(self.mean_pseudo_dice), "ema_pseudo_dice": _plain(self.ema_pseudo_dice),
            "learning_rate": _plain(self.learning_rate), "epoch_seconds": _plain(self.epoch_seconds),
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "EpochRecord":
        """The record :meth:`to_state` wrote; a malformed entry raises TrainingError naming it."""
        try:
            return cls(epoch=int(state["epoch"]), max_epochs=int(state["max_epochs"]),
                       train_loss=_number(state["train_loss"]), val_loss=_number(state["val_loss"]),
                       pseudo_dice={str(name): _number(value) for name, value in state["pseudo_dice"].items()},
                       mean_pseudo_dice=_number(state["mean_pseudo_dice"]),
                       ema_pseudo_dice=_number(state["ema_pseudo_dice"]),
                       learning_rate=_number(state["learning_rate"]), epoch_seconds=_number(state["epoch_seconds"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrainingError(f"epoch record {state!r:.200} is malformed ({type(exc).__name__}: {exc}); expected "
                                "the fields of hnas.train.training_log.EpochRecord") from None


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _number(value) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------------- the numbers

def default_validation_iterations(iterations_per_epoch: int) -> int:
    """Validation batches per epoch: nnU-Net's ratio (50 per 250 training iterations), at least one."""
    return max(1, int(iterations_per_epoch) // VALIDATION_ITERATIONS_RATIO)


def pseudo_dice(true_positives: Sequence[int], false_positives: Sequence[int],
                false_negatives: Sequence[int]) -> list[float]:
    """Per class 2TP / (2TP + FP + FN), counts summed over all of an epoch's validation patches;
    NaN where the class is in neither prediction nor reference (nothing to score)."""
    scores = []
    for tp, fp, fn in zip(true_positives, false_positives, false_negatives, strict=True):
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator > 0 else math.nan)
    return scores


def mean_ignoring_nan(values: Sequence[float]) -> float:
    """Mean of the scored classes (NaN if none is scored), as nnU-Net's nanmean."""
    scored = [v for v in values if not math.isnan(v)]
    return sum(scored) / len(scored) if scored else math.nan


def next_ema(previous: float, new: float) -> float:
    """nnU-Net's EMA step; the first value (previous NaN) starts it, an unmeasured epoch (new NaN) keeps it."""
    if math.isnan(previous):
        return new
    if math.isnan(new):
        return previous
    return EMA_MOMENTUM * previous + (1.0 - EMA_MOMENTUM) * new


# ------------------------------------------------------------------------------- the text log

def format_epoch(record: EpochRecord) -> str:
    """One line per epoch, as nnU-Net prints it (validation parts only when validation ran)."""
    parts = [f"train loss {record.train_loss:.4f}"]
    if not math.isnan(record.val_loss):
        parts.append(f"val loss {record.val_loss:.4f}")
    if record.pseudo_dice:
        scores = ", ".join(_short(v) for v in record.pseudo_dice.values())
        parts.append(f"pseudo Dice [{scores}] (EMA {_short(record.ema_pseudo_dice)})")
    parts.append(f"lr {record.learning_rate:.3g}")
    parts.append(f"{record.epoch_seconds:.1f} s")
    return f"epoch {record.epoch}/{record.max_epochs}: " + ", ".join(parts)


def _short(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def log_text(header: Sequence[str], history: Sequence[EpochRecord]) -> str:
    """The whole training_log.txt: the header, the pseudo-Dice class names, then one line per epoch."""
    lines = list(header)
    if history and history[-1].pseudo_dice:
        lines.append("pseudo Dice classes: " + ", ".join(history[-1].pseudo_dice))
    lines.append("")
    lines += [format_epoch(record) for record in history]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file and rename it: a reader (or a crash) never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# ------------------------------------------------------------------------------- the plot

def draw_progress(history: Sequence[EpochRecord]) -> bytes | None:
    """progress.png's bytes: losses with pseudo Dice and its EMA, epoch time, learning rate
    (nnU-Net's three panels); None when matplotlib is not installed or there is nothing to draw."""
    if not history:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None

    epochs = [r.epoch for r in history]
    figure = Figure(figsize=(10, 11), layout="constrained")
    FigureCanvasAgg(figure)
    losses, seconds, rates = figure.subplots(3, 1, sharex=True)
    losses.plot(epochs, [r.train_loss for r in history], color="b", label="train loss")
    losses.plot(epochs, [r.val_loss for r in history], color="r", label="val loss")
    losses.set_ylabel("loss")
    dice = losses.twinx()
    dice.plot(epochs, [r.mean_pseudo_dice for r in history], color="g", linestyle="dotted", label="pseudo Dice")
    dice.plot(epochs, [r.ema_pseudo_dice for r in history], color="g", label="pseudo Dice (EMA)")
    dice.set_ylabel("pseudo Dice")
    handles = losses.get_legend_handles_labels()[0] + dice.get_legend_handles_labels()[0]
    losses.legend(handles=handles, loc="lower left")
    seconds.plot(epochs, [r.epoch_seconds for r in history], color="b")
    seconds.set_ylabel("epoch time (s)")
    rates.plot(epochs, [r.learning_rate for r in history], color="b")
    rates.set_ylabel("learning rate")
    rates.set_xlabel("epoch")
    rates.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


# ------------------------------------------------------------------------------- the files

class TrainingLog:
    """Keeps training_log.txt (every epoch) and progress.png (throttled) current in a trial folder.

    ``header`` lines say what is trained (dataset, fold, configuration, architecture, schedule).
    """

    def __init__(self, folder: str | Path, header: Sequence[str], *,
                 plot_interval_seconds: float = PLOT_INTERVAL_SECONDS):
        self.folder = Path(folder)
        self.header = tuple(header)
        self.plot_interval_seconds = float(plot_interval_seconds)
        self._last_plot: float | None = None

    @property
    def text_path(self) -> Path:
        return self.folder / TRAINING_LOG_NAME

    @property
    def plot_path(self) -> Path:
        return self.folder / PROGRESS_PLOT_NAME

    def update(self, history: Sequence[EpochRecord]) -> None:
        """After an epoch: rewrite the text; redraw the plot if the last one is old enough."""
        self.write_text(history)
        now = time.monotonic()
        if self._last_plot is None or now - self._last_plot >= self.plot_interval_seconds:
            self.write_plot(history)

    def finish(self, history: Sequence[EpochRecord]) -> None:
        """At the end of a fit: both files reflect every epoch."""
        self.write_text(history)
        self.write_plot(history)

    def write_text(self, history: Sequence[EpochRecord]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.text_path, log_text(self.header, history).encode())

    def write_plot(self, history: Sequence[EpochRecord]) -> None:
        picture = draw_progress(history)
        self._last_plot = time.monotonic()
        if picture is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.plot_path, picture)
