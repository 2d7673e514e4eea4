"""What a post-processing decision records and how it reads back (cases found by `make mutation`).

Dice values are counted by hand (2 |A and B| / (|A| + |B|)); the evidence is what find-best writes
to ``best_configuration.json``, so its keys and wording are part of the contract.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from hnas.errors import TrainingError
from hnas.train import evaluation
from hnas.train.postprocessing import (Postprocessing, class_dice, decide_postprocessing, largest_component,
                                       mean_over_classes)

LABELS = (("background", 0), ("anterior", 1), ("posterior", 2))


def islands_case():
    """Truth: anterior (64 voxels) touching posterior (32); prediction adds an 8-voxel posterior island."""
    truth = np.zeros((12, 12, 12), dtype=np.int16)
    truth[2:6, 2:6, 2:6] = 1
    truth[6:8, 2:6, 2:6] = 2
    prediction = truth.copy()
    prediction[10:12, 10:12, 10:12] = 2
    return prediction, truth


def test_the_evidence_records_every_tried_step_with_its_dice():
    prediction, truth = islands_case()
    decision = decide_postprocessing([prediction], [truth], LABELS)
    posterior_before = 2 * 32 / (40 + 32)
    assert decision.evidence == (
        {"region": [1, 2], "compared": "mean foreground Dice", "before": pytest.approx((1 + posterior_before) / 2),
         "after": pytest.approx(1.0), "kept": True},
        {"region": [1], "compared": "Dice of anterior", "before": pytest.approx(1.0), "after": pytest.approx(1.0),
         "kept": False},
        {"region": [2], "compared": "Dice of posterior", "before": pytest.approx(1.0), "after": pytest.approx(1.0),
         "kept": False},
    )


def test_a_step_that_leaves_dice_unchanged_is_not_kept():
    _, truth = islands_case()  # one component per class: every step changes nothing
    decision = decide_postprocessing([truth.copy()], [truth], LABELS)
    assert decision.regions == ()
    assert [step["kept"] for step in decision.evidence] == [False, False, False]


def test_with_one_foreground_class_only_the_class_step_is_tried():
    truth = np.zeros((10, 10, 10), dtype=np.int16)
    truth[1:4, 1:4, 1:4] = 1  # 27 voxels
    prediction = truth.copy()
    prediction[8, 8, 8] = 1  # a false island
    decision = decide_postprocessing([prediction], [truth], (("background", 0), ("organ", 1)))
    assert decision.regions == ((1,),)
    assert decision.evidence == ({"region": [1], "compared": "Dice of organ",
                                  "before": pytest.approx(2 * 27 / (28 + 27)), "after": pytest.approx(1.0),
                                  "kept": True},)


def test_class_dice_never_computes_hd95(monkeypatch):
    """Selecting post-processing needs only Dice; HD95 costs ~10x more (evaluation.case_metrics)."""
    def refuse(*args, **kwargs):
        raise AssertionError("HD95 computed while choosing post-processing")
    monkeypatch.setattr(evaluation, "compute_hausdorff_distance", refuse)
    prediction, truth = islands_case()
    assert class_dice([(prediction, truth)], LABELS) == pytest.approx({"anterior": 1.0, "posterior": 64 / 72})


def test_a_class_absent_everywhere_is_nan_without_a_warning():
    truth = np.zeros((4, 4, 4), dtype=np.int16)
    truth[0, 0, 0] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's mean of nothing warns; the undefined score is nan by rule
        dice = class_dice([(truth.copy(), truth)], LABELS)
        assert dice["anterior"] == 1.0 and math.isnan(dice["posterior"])
        assert math.isnan(mean_over_classes({"anterior": math.nan, "posterior": math.nan}))


def test_single_voxel_components_keep_the_first_not_the_background():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[0, 0, 0] = mask[4, 4, 4] = True  # two components of one voxel each: the first is kept
    kept = largest_component(mask)
    assert kept.sum() == 1 and kept[0, 0, 0]


def test_largest_component_returns_a_new_array():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[1, 1, 1] = True  # one component: returned unchanged, but not the caller's array
    kept = largest_component(mask)
    kept[0, 0, 0] = True
    assert mask.sum() == 1


def test_describe_names_the_steps_in_order():
    assert Postprocessing(((1, 2), (2,))).describe() == (
        "keep the largest connected component of labels 1+2, then label 2")
    assert Postprocessing(((3,),)).describe() == "keep the largest connected component of label 3"
    assert Postprocessing().describe() == (
        "no post-processing (no largest-component step improved cross-validation Dice)")


def test_the_dict_form_carries_description_and_evidence_and_reads_back():
    prediction, truth = islands_case()
    decision = decide_postprocessing([prediction], [truth], LABELS)
    stored = decision.to_dict()
    assert set(stored) == {"regions", "description", "evidence"}
    assert stored["description"] == decision.describe() and stored["regions"] == [[1, 2]]
    assert len(stored["evidence"]) == 3 and stored["evidence"][0]["kept"] is True
    restored = Postprocessing.from_dict(stored)
    assert restored.regions == decision.regions
    assert restored.evidence == tuple(stored["evidence"])
    assert Postprocessing.from_dict({"regions": [[1]]}).evidence == ()


def test_a_non_mapping_is_refused_naming_the_default_source():
    for data in ([[1, 2]], "regions", None):
        with pytest.raises(TrainingError, match=r"^post-processing holds regions"):
            Postprocessing.from_dict(data)


def test_unmatched_predictions_and_truths_are_counted_in_the_refusal():
    prediction, truth = islands_case()
    with pytest.raises(TrainingError) as refused:
        decide_postprocessing([prediction, prediction], [truth], LABELS)
    assert str(refused.value) == "2 predictions for 1 reference label maps; expected one per case"


def test_bad_regions_are_refused_with_an_example():
    with pytest.raises(TrainingError) as refused:
        Postprocessing.from_dict({"regions": [[]]}, "postprocessing.json")
    assert str(refused.value) == ("postprocessing.json holds regions [[]]; expected a list of non-empty lists of "
                                  "label values, e.g. [[1, 2], [2]]")


def test_an_undefined_dice_is_stored_as_null():
    truth = np.zeros((6, 6, 6), dtype=np.int16)
    truth[1:3, 1:3, 1:3] = 1  # the posterior is absent from every case: its Dice is nan
    decision = decide_postprocessing([truth.copy()], [truth], LABELS)
    posterior = decision.evidence[-1]
    assert posterior["compared"] == "Dice of posterior" and math.isnan(posterior["before"])
    stored = decision.to_dict()["evidence"][-1]
    assert stored["before"] is None and stored["after"] is None
    json.dumps(decision.to_dict(), allow_nan=False)  # strict JSON: no NaN token
