"""Largest-connected-component post-processing and nnU-Net's keep-only-if-it-helps rule."""

from __future__ import annotations

import json
import math

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


# ---------------------------------------------------------------- the decision from per-case scalars

THREE = (("background", 0), ("liver", 1), ("tumour", 2), ("vessel", 3))


def decide_on_maps(predictions, truths, labels):
    """The oracle: nnU-Net's rule applied to whole label maps, every step's result held and rescored (the
    implementation before decisions were taken from per-case scalars). Returns regions, evidence and the
    post-processed mean Dice per class."""
    from hnas.train.evaluation import foreground_classes
    from hnas.train.postprocessing import mean_over_classes

    classes = foreground_classes(labels)
    current = list(predictions)
    baseline = class_dice(zip(current, truths), labels)
    regions, evidence = [], []
    if len(classes) > 1:
        region = tuple(value for _, value in classes)
        candidate = [keep_largest_region(p, region) for p in current]
        scores = class_dice(zip(candidate, truths), labels)
        before, after = mean_over_classes(baseline), mean_over_classes(scores)
        evidence.append({"region": list(region), "compared": "mean foreground Dice", "before": before,
                         "after": after, "kept": after > before})
        if after > before:
            regions.append(region)
            current, baseline = candidate, scores
    for name, value in classes:
        candidate = [keep_largest_region(p, (value,)) for p in current]
        scores = class_dice(zip(candidate, truths), labels)
        evidence.append({"region": [value], "compared": f"Dice of {name}", "before": baseline[name],
                         "after": scores[name], "kept": scores[name] > baseline[name]})
        if scores[name] > baseline[name]:
            regions.append((value,))
            current, baseline = candidate, scores
    return tuple(regions), evidence, class_dice(zip(current, truths), labels)


def random_case(rng, n_classes: int, shape=(9, 10, 11)):
    """Blocks of each class in the truth (some classes absent, some in two parts); the prediction: the truth
    with voxels flipped at random and false cubes of random classes."""
    truth = np.zeros(shape, dtype=np.int16)
    for value in range(1, n_classes + 1):
        for _ in range(int(rng.integers(0, 3))):
            z, y, x = (int(rng.integers(0, s - 3)) for s in shape)
            truth[z:z + 3, y:y + int(rng.integers(1, 4)), x:x + 3] = value
    prediction = truth.copy()
    flips = rng.random(shape) < 0.04
    prediction[flips] = rng.integers(0, n_classes + 1, size=int(flips.sum()))
    for _ in range(int(rng.integers(0, 3))):
        z, y, x = (int(rng.integers(0, s - 2)) for s in shape)
        prediction[z:z + 2, y:y + 2, x:x + 2] = int(rng.integers(1, n_classes + 1))
    return prediction, truth


def same_floats(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("labels", [THREE, LABELS, (("background", 0), ("organ", 1))])
def test_the_decision_from_scalars_is_the_decision_on_the_maps(labels):
    """Over 40 random sets of cases: the same regions, the same evidence and the same post-processed Dice (exact
    floats) as applying each step to every held map and scoring the results."""
    from hnas.train.postprocessing import case_evidence, decide_from_evidence

    rng = np.random.default_rng(7)
    n_classes = len(labels) - 1
    outcomes = set()
    for _ in range(40):
        predictions, truths = zip(*(random_case(rng, n_classes) for _ in range(int(rng.integers(1, 5)))))
        regions, evidence, processed = decide_on_maps(predictions, truths, labels)
        decision, dice = decide_from_evidence([case_evidence(p, t, labels) for p, t in zip(predictions, truths)],
                                              labels)
        assert decision.regions == regions
        assert len(decision.evidence) == len(evidence)
        for mine, oracle in zip(decision.evidence, evidence):
            assert {k: mine[k] for k in ("region", "compared", "kept")} == \
                {k: oracle[k] for k in ("region", "compared", "kept")}
            assert same_floats(mine["before"], oracle["before"]) and same_floats(mine["after"], oracle["after"])
        assert list(dice) == list(processed) and all(same_floats(dice[k], processed[k]) for k in dice)
        assert decide_postprocessing(list(predictions), list(truths), labels) == decision
        outcomes.add(tuple(step["kept"] for step in evidence))
    assert len(outcomes) >= min(3, 2 ** n_classes), outcomes  # several different decisions, not one


def test_case_evidence_scores_each_step_of_one_case():
    """Truth: a liver block and a two-part vessel; prediction adds a far liver island and a vessel speck
    touching the liver. Hand-counted Dice for each of the four sets."""
    from hnas.train.postprocessing import case_evidence

    truth = np.zeros((12, 12, 12), dtype=np.int16)
    truth[2:6, 2:6, 2:6] = 1  # 64 liver voxels
    truth[6, 2:4, 2] = 3  # vessel piece touching the liver: 2 voxels
    truth[10, 10, 2:5] = 3  # a second vessel piece, far away: 3 voxels
    prediction = truth.copy()
    prediction[10:12, 0:2, 10:12] = 1  # 8 false liver voxels, an island
    evidence = case_evidence(prediction, truth, THREE)
    assert evidence.as_is["liver"] == pytest.approx(2 * 64 / (72 + 64)) and evidence.as_is["vessel"] == 1.0
    assert math.isnan(evidence.as_is["tumour"]) and math.isnan(evidence.alone["tumour"])
    assert evidence.alone == pytest.approx({"liver": 1.0, "tumour": math.nan, "vessel": 2 * 3 / (3 + 5)},
                                           nan_ok=True)
    # the foreground step keeps the liver with its touching vessel piece: the far piece (3 voxels) goes
    assert evidence.foreground == pytest.approx({"liver": 1.0, "tumour": math.nan, "vessel": 2 * 2 / (2 + 5)},
                                                nan_ok=True)
    assert evidence.after_foreground == pytest.approx(evidence.foreground, nan_ok=True)
    single = case_evidence(prediction, truth, (("background", 0), ("liver", 1)))
    assert single.foreground is None and single.after_foreground is None and single.alone == {"liver": 1.0}
    with pytest.raises(TrainingError, match=r"shape \(12, 12\) for a reference label map of shape \(12, 12, 12\)"):
        case_evidence(prediction[0], truth, THREE)


def test_a_class_in_one_piece_is_not_rescored(monkeypatch):
    """Its step changes nothing, so its Dice is reused: only a class that loses voxels is scored again."""
    from hnas.train import postprocessing

    prediction, truth = islands_case()  # the posterior has an island, the anterior is one piece
    scored = []
    original = postprocessing.mask_dice
    monkeypatch.setattr(postprocessing, "mask_dice", lambda p, t: scored.append(int(p.sum())) or original(p, t))
    evidence = postprocessing.case_evidence(prediction, truth, LABELS)
    # the posterior's own step on the raw map (32 + 8 -> its larger part, the 32 true voxels); after the
    # foreground step, which already removed the island, no class changes
    assert scored == [32]
    assert evidence.alone == {"anterior": 1.0, "posterior": 1.0}
    assert evidence.after_foreground == evidence.foreground == {"anterior": 1.0, "posterior": 1.0}


def test_mean_dice_per_class_keeps_case_order_and_leaves_nan_out():
    from hnas.train.postprocessing import mean_dice_per_class

    cases = [{"anterior": 0.5, "posterior": math.nan}, {"anterior": 0.25, "posterior": 1.0}]
    assert mean_dice_per_class(cases, LABELS) == {"anterior": 0.375, "posterior": 1.0}
    empty = mean_dice_per_class([], LABELS)
    assert list(empty) == ["anterior", "posterior"] and all(math.isnan(v) for v in empty.values())
