"""Largest-connected-component post-processing and nnU-Net's keep-only-if-it-helps rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hnas.errors import TrainingError
from hnas.train.postprocessing import (Postprocessing, class_dice, decide_postprocessing, keep_largest_region,
                                       largest_component)

LABELS = (("background", 0), ("anterior", 1), ("posterior", 2))


def volume() -> np.ndarray:
    return np.zeros((12, 12, 12), dtype=np.int16)


def test_largest_component_counts_diagonal_neighbours():
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # one component under full connectivity
    mask[5, 5, 4:6] = True  # two voxels apart from it
    kept = largest_component(mask)
    assert kept.sum() == 3 and kept[1, 1, 1] and not kept[5, 5, 5]
    assert not largest_component(np.zeros((3, 3), dtype=bool)).any()


def test_a_region_of_several_labels_is_one_component():
    labels = volume()
    labels[2:5, 2:5, 2:5] = 1
    labels[5:7, 2:5, 2:5] = 2  # touches label 1: same foreground component
    labels[10, 10, 10] = 2  # an island
    joined = keep_largest_region(labels, (1, 2))
    assert joined[10, 10, 10] == 0 and (joined[5:7, 2:5, 2:5] == 2).all() and (joined[2:5, 2:5, 2:5] == 1).all()
    alone = keep_largest_region(labels, (1,))
    assert np.array_equal(alone, labels)  # label 1 has one component; label 2 is not touched


def islands_case():
    """Truth: anterior and posterior touching; prediction: truth plus a far posterior island."""
    truth = volume()
    truth[2:6, 2:6, 2:6] = 1
    truth[6:8, 2:6, 2:6] = 2
    prediction = truth.copy()
    prediction[10:12, 10:12, 10:12] = 2
    return prediction, truth


def test_foreground_step_is_kept_when_it_removes_false_islands():
    prediction, truth = islands_case()
    decision = decide_postprocessing([prediction], [truth], LABELS)
    assert decision.regions == ((1, 2),)
    assert decision.evidence[0]["kept"] and decision.evidence[0]["after"] > decision.evidence[0]["before"]
    # on the cleaned maps the per-class steps change nothing, and an equal Dice is not an improvement
    assert [step["kept"] for step in decision.evidence[1:]] == [False, False]
    assert np.array_equal(decision.apply(prediction), truth)


def test_a_class_step_is_kept_where_the_foreground_step_would_hurt():
    truth = volume()
    truth[1:4, 1:4, 1:4] = 1
    truth[7:11, 7:11, 7:11] = 2  # two separate organs: one foreground region would drop the anterior
    prediction = truth.copy()
    prediction[1, 10, 10] = 1  # a false anterior island
    decision = decide_postprocessing([prediction], [truth], LABELS)
    assert decision.regions == ((1,),)
    assert [step["kept"] for step in decision.evidence] == [False, True, False]


def test_nothing_is_kept_when_the_truth_has_two_parts():
    truth = volume()
    truth[1:4, 1:4, 1:4] = 1
    truth[8:11, 8:11, 8:11] = 1  # a real second part
    decision = decide_postprocessing([truth.copy()], [truth], LABELS)
    assert decision.regions == ()
    assert "no post-processing" in decision.describe()


def test_class_dice_leaves_absent_classes_out():
    prediction, truth = islands_case()
    empty = volume()
    dice = class_dice(iter([(prediction, truth), (empty, empty)]), LABELS)
    assert dice["anterior"] == pytest.approx(1.0)  # the empty case (nan) does not count as 0 or 1
    assert dice["posterior"] == pytest.approx(2 * 32 / (32 + 40))


def test_decision_round_trips_through_json_and_bad_regions_are_named():
    prediction, truth = islands_case()
    decision = decide_postprocessing([prediction], [truth], LABELS)
    stored = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert Postprocessing.from_dict(stored) == decision
    with pytest.raises(TrainingError, match=r"'1'.*expected a list"):
        Postprocessing.from_dict({"regions": [["1"]]}, "best_configuration.json")


def test_class_steps_are_tried_on_the_foreground_processed_maps():
    """nnU-Net tries the per-class step on the result of the kept foreground step, not on the raw prediction.

    Truth: anterior (64 voxels) with posterior (32) touching it. Prediction: the truth, plus a small false
    posterior piece (8 voxels) stuck to the far side of the anterior, plus a large false posterior island
    (48 voxels) away from everything. Step 1 removes the island. On its result the posterior has two parts,
    the true 32 and the false 8: keeping the largest is right. On the raw prediction the posterior's largest
    part is the false island, so the same per-class step would throw the true posterior away (Dice 0).
    """
    truth = volume()
    truth[2:6, 2:6, 2:6] = 1  # 64 voxels
    truth[6:8, 2:6, 2:6] = 2  # 32 voxels, touching the anterior
    prediction = truth.copy()
    prediction[0:2, 2:4, 2:4] = 2  # 8 false voxels touching the anterior only
    prediction[8:12, 8:12, 9:12] = 2  # 48 false voxels, not touching the rest (y gap 6..7)
    decision = decide_postprocessing([prediction], [truth], LABELS)
    assert decision.regions == ((1, 2), (2,))
    foreground, anterior, posterior = decision.evidence
    # hand-computed Dice: posterior 2*32 / (88 + 32) before, 2*32 / (40 + 32) after step 1, 1 after step 2
    assert foreground["before"] == pytest.approx((1 + 64 / 120) / 2)
    assert foreground["after"] == pytest.approx((1 + 64 / 72) / 2) and foreground["kept"]
    assert anterior["before"] == anterior["after"] == pytest.approx(1.0) and not anterior["kept"]
    assert posterior["before"] == pytest.approx(64 / 72) and posterior["after"] == pytest.approx(1.0)
    assert posterior["kept"]
    assert np.array_equal(decision.apply(prediction), truth)
