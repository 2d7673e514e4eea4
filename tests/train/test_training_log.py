"""The per-epoch training log: pseudo Dice, EMA, the log line, the records' checkpoint form, the files."""

from __future__ import annotations

import json
import math
import sys

import pytest

from hnas.errors import TrainingError
from hnas.train.training_log import (PROGRESS_PLOT_NAME, TRAINING_LOG_NAME, EpochRecord, TrainingLog,
                                     default_validation_iterations, format_epoch, log_text, mean_ignoring_nan,
                                     next_ema, pseudo_dice)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(epoch=3, **overrides) -> EpochRecord:
    fields = dict(epoch=epoch, max_epochs=9, train_loss=-0.41234, val_loss=-0.38012,
                  pseudo_dice={"organ": 0.71, "substructure": 0.55}, mean_pseudo_dice=0.63, ema_pseudo_dice=0.61,
                  learning_rate=0.009817, epoch_seconds=12.34)
    fields.update(overrides)
    return EpochRecord(**fields)


def test_pseudo_dice_is_2tp_over_2tp_fp_fn_per_class():
    # class 1: TP 3, FP 1, FN 2 -> 6/9; class 2: nothing predicted or present -> nan; class 3: all wrong -> 0
    scores = pseudo_dice([3, 0, 0], [1, 0, 4], [2, 0, 5])
    assert scores[0] == pytest.approx(6 / 9) and math.isnan(scores[1]) and scores[2] == 0.0
    assert mean_ignoring_nan(scores) == pytest.approx((6 / 9 + 0.0) / 2)
    assert math.isnan(mean_ignoring_nan([math.nan, math.nan]))


def test_ema_starts_with_the_first_value_then_weights_0_9_and_0_1():
    ema = math.nan
    seen = []
    for value in (0.5, 0.8, math.nan, 0.2):
        ema = next_ema(ema, value)
        seen.append(ema)
    assert seen == pytest.approx([0.5, 0.9 * 0.5 + 0.1 * 0.8, 0.53, 0.9 * 0.53 + 0.1 * 0.2])


def test_validation_iterations_follow_nnunets_50_per_250():
    assert default_validation_iterations(250) == 50
    assert default_validation_iterations(12) == 2
    assert default_validation_iterations(2) == 1  # at least one


def test_the_log_line_reads_like_nnunets():
    assert format_epoch(_record()) == ("epoch 3/9: train loss -0.4123, val loss -0.3801, pseudo Dice [0.7100, 0.5500] "
                                       "(EMA 0.6100), lr 0.00982, 12.3 s")
    silent = _record(val_loss=math.nan, pseudo_dice={}, mean_pseudo_dice=math.nan, ema_pseudo_dice=math.nan)
    assert format_epoch(silent) == "epoch 3/9: train loss -0.4123, lr 0.00982, 12.3 s"
    unscored = _record(pseudo_dice={"organ": math.nan, "substructure": 0.5})
    assert "pseudo Dice [nan, 0.5000]" in format_epoch(unscored)


def test_records_travel_as_plain_json_values():
    record = _record(pseudo_dice={"organ": math.nan, "substructure": 0.5}, val_loss=math.nan)
    state = record.to_state()
    text = json.dumps(state, allow_nan=False)  # NaN is stored as None
    back = EpochRecord.from_state(json.loads(text))
    assert math.isnan(back.val_loss) and math.isnan(back.pseudo_dice["organ"])
    assert back.to_state() == state and back.epoch == 3 and back.learning_rate == record.learning_rate


def test_a_malformed_record_is_named():
    state = _record().to_state()
    del state["learning_rate"]
    with pytest.raises(TrainingError, match="learning_rate.*EpochRecord"):
        EpochRecord.from_state(state)


def test_log_text_has_the_header_the_class_names_and_one_line_per_epoch():
    text = log_text(["hnas training log: D, fold 0", "architecture: unet"], [_record(1), _record(2)])
    lines = text.splitlines()
    assert lines[:4] == ["hnas training log: D, fold 0", "architecture: unet",
                         "pseudo Dice classes: organ, substructure", ""]
    assert lines[4].startswith("epoch 1/9: ") and lines[5].startswith("epoch 2/9: ") and len(lines) == 6


def test_the_plot_is_redrawn_at_most_once_per_interval_and_always_at_the_end(tmp_path):
    log = TrainingLog(tmp_path / "trial", ["header"], plot_interval_seconds=3600)
    log.update([_record(1)])
    plot = tmp_path / "trial" / PROGRESS_PLOT_NAME
    data = plot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000  # three drawn panels, not an empty canvas
    plot.unlink()
    log.update([_record(1), _record(2)])
    assert not plot.exists()  # within the interval: text only
    assert "epoch 2/9" in (tmp_path / "trial" / TRAINING_LOG_NAME).read_text()
    log.finish([_record(1), _record(2)])
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == [PROGRESS_PLOT_NAME, TRAINING_LOG_NAME]


def test_without_matplotlib_only_the_text_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    TrainingLog(tmp_path, ["header"]).finish([_record(1)])
    assert (tmp_path / TRAINING_LOG_NAME).is_file() and not (tmp_path / PROGRESS_PLOT_NAME).exists()
