"""`hnas find-best`: cross-validation Dice of every model in RUN/cv and of every pair's ensemble,
the best one picked and its post-processing decided (nnU-Net's find_best_configuration)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from hnas.errors import TrainingError
from hnas.train.evaluation import case_metrics

from .conftest import model_record, record_fold

LABELS = (("background", 0), ("anterior", 1), ("posterior", 2))


def test_case_metrics_can_skip_hd95_and_keep_dice():
    truth = np.zeros((8, 9, 10), dtype=np.int16)
    truth[2:6, 2:6, 2:6] = 1
    prediction = truth.copy()
    prediction[2, 2:6, 2:6] = 0
    full = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0))
    fast = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0), hd95=False)
    assert fast["anterior"]["dice"] == full["anterior"]["dice"] == pytest.approx(2 * 48 / (48 + 64))
    assert math.isnan(fast["anterior"]["hd95"]) and not math.isnan(full["anterior"]["hd95"])
    assert math.isnan(fast["posterior"]["dice"])  # absent from both: nnU-Net's nan


# ---------------------------------------------------------------- constructed cross-validation folders

SHAPE = (10, 10, 12)


def truth_of(index: int) -> np.ndarray:
    """Anterior and posterior blocks touching, shifted a little per case."""
    label = np.zeros(SHAPE, dtype=np.int16)
    label[2:6, 2 + index % 2:6, 2:6] = 1
    label[6:8, 2:6, 2:6] = 2
    return label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five labelled 10x10x12 cases in nnU-Net raw format: one validation case per fold."""
    from hnas.data.io import write_volume

    root = tmp_path_factory.mktemp("data") / "Dataset990_Blocks"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        label = truth_of(index)
        write_volume(rng.normal(size=SHAPE).astype(np.float32) + label, (1.0, 1.0, 1.0),
                     root / "imagesTr" / f"case_{index:03d}_0000.nii.gz")
        write_volume(label, (1.0, 1.0, 1.0), root / "labelsTr" / f"case_{index:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": dict(LABELS), "numTraining": 5, "file_ending": ".nii.gz"}))
    return root


def one_hot(label: np.ndarray, confidence: float) -> np.ndarray:
    probabilities = np.full((3,) + label.shape, (1 - confidence) / 2, dtype=np.float32)
    for value in range(3):
        probabilities[value][label == value] = confidence
    return probabilities


def write_model(cv_dir, name, dataset_dir, folds, make_probabilities, complete=True):
    """RUN/cv/<name> as `hnas train --folds` leaves it, without checkpoints: label maps + float16 softmax."""
    from hnas.data import fold_split, load_dataset, write_label_map

    data = load_dataset(dataset_dir)
    folder = cv_dir / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(model_record(name, folds, epochs=2)))
    for fold in folds:
        validation = folder / f"fold_{fold}" / "validation"
        validation.mkdir(parents=True)
        for case_id in fold_split(data.case_ids, fold)[1]:
            index = int(case_id.split("_")[1])
            probabilities = make_probabilities(truth_of(index)).astype(np.float16)
            np.savez_compressed(validation / f"{case_id}.npz", probabilities=probabilities)
            if complete or fold != folds[-1]:
                write_label_map(np.argmax(probabilities, axis=0).astype(np.int16),
                                data.case(case_id).image_files[0], validation / f"{case_id}.nii.gz")
    for fold in folds:
        record_fold(folder, fold, dataset_dir)
    return folder


def misses_anterior_front(truth):
    """Unsure there: the front slice of the anterior is called background (0.55 vs 0.45)."""
    probabilities = one_hot(truth, 0.9)
    front = np.zeros_like(truth, dtype=bool)
    front[2] = truth[2] == 1
    probabilities[:, front] = np.array([0.55, 0.45, 0.0])[:, None]
    return with_island(probabilities)


def misses_posterior_back(truth):
    probabilities = one_hot(truth, 0.9)
    back = np.zeros_like(truth, dtype=bool)
    back[7] = truth[7] == 2
    probabilities[:, back] = np.array([0.55, 0.0, 0.45])[:, None]
    return with_island(probabilities)


def with_island(probabilities):
    """Both models see a confident false posterior island in a far corner."""
    probabilities[:, 0, 9, 10:] = np.array([0.0, 0.0, 1.0])[:, None]
    return probabilities


def poor(truth):
    return one_hot(np.zeros_like(truth), 0.9)  # background everywhere


@pytest.fixture
def run_dir(tmp_path, dataset):
    from hnas.pipeline.run import SearchSettings

    run = tmp_path / "run"
    run.mkdir()
    SearchSettings(dataset=str(dataset)).save(run)
    cv = run / "cv"
    write_model(cv, "default_2ep", dataset, [0, 1, 2], misses_anterior_front)
    write_model(cv, "trial_00004_2ep", dataset, [0, 1, 2], misses_posterior_back)
    write_model(cv, "trial_00007_2ep", dataset, [0, 1, 2], poor)
    write_model(cv, "trial_00009_2ep", dataset, [0, 1, 2], lambda t: one_hot(t, 1.0), complete=False)
    return run


def test_the_pair_that_corrects_each_other_wins_and_its_islands_are_removed(run_dir):
    from hnas.pipeline.find_best import find_best

    result = find_best(run_dir, log=lambda _: None)
    names = [c["name"] for c in result["candidates"]]
    assert result["folds"] == [0, 1, 2] and result["cases"] == 3
    # three usable models, three pairs; the perfect model's fold 2 lacks label maps: skipped, not scored
    assert len(names) == 6 and "trial_00009_2ep" not in " ".join(names)
    assert [s["name"] for s in result["skipped"]] == ["trial_00009_2ep"]
    best = result["best"]
    assert best["members"] == ["default_2ep", "trial_00004_2ep"]
    singles = {c["name"]: c["dice"] for c in result["candidates"] if len(c["members"]) == 1}
    assert best["dice"] > max(singles.values())
    assert singles["trial_00007_2ep"] == 0.0 and names.index("trial_00007_2ep") > names.index("default_2ep")
    # the shared false island: removing it as one foreground region restores the truth exactly
    assert result["postprocessing"]["regions"] == [[1, 2]]
    assert best["dice_postprocessed"] == pytest.approx(1.0) and best["dice"] < 1.0
    stored = json.loads((run_dir / "cv" / "best_configuration.json").read_text())
    assert stored == result
    assert not (run_dir / "cv" / "default_2ep" / "postprocessing.json").exists()  # the best is an ensemble


def test_the_stored_best_configuration_is_what_predict_loads(run_dir):
    from hnas.pipeline.find_best import find_best
    from hnas.pipeline.predict import model_source

    find_best(run_dir, log=lambda _: None)
    for name in ("default_2ep", "trial_00004_2ep"):  # the constructed folders have no checkpoints
        for fold in (0, 1, 2):
            (run_dir / "cv" / name / f"fold_{fold}" / "checkpoint.pt").write_bytes(b"")
    source = model_source(run_dir / "cv" / "best_configuration.json")
    assert [p.parent.parent.name for p in source.checkpoints] == ["default_2ep"] * 3 + ["trial_00004_2ep"] * 3
    assert source.weights == pytest.approx((1 / 6,) * 6) and source.postprocessing.regions == ((1, 2),)
    (run_dir / "cv" / "trial_00004_2ep" / "fold_2" / "checkpoint.pt").unlink()  # a listed fold lost its weights
    with pytest.raises(TrainingError, match="lists fold 2, but .*fold_2' holds no checkpoint.pt"):
        model_source(run_dir / "cv" / "best_configuration.json")


def test_top_one_picks_a_single_model_and_stores_its_decision_beside_it(run_dir, capsys):
    from hnas.cli import main

    assert main(["find-best", "--run", str(run_dir), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "| * | default_2ep |" in out and "best: default_2ep" in out
    assert "keep the largest connected component of labels 1+2" in out
    decision = json.loads((run_dir / "cv" / "default_2ep" / "postprocessing.json").read_text())
    assert decision["regions"] == [[1, 2]]


def test_a_run_without_cross_validated_models_is_refused(tmp_path, dataset, capsys):
    from hnas.cli import main
    from hnas.pipeline.run import SearchSettings

    SearchSettings(dataset=str(dataset)).save(tmp_path)
    assert main(["find-best", "--run", str(tmp_path)]) == 1
    assert "no cross-validated models" in capsys.readouterr().err


@pytest.mark.slow  # trains four tiny folds (~30 s on the loaded 2-core machine)
def test_trained_folds_to_best_configuration_to_predict(capsys, tmp_path, monkeypatch):
    """`hnas train --folds` -> `hnas find-best` -> `hnas predict --model best_configuration.json` on real checkpoints."""
    import nibabel as nib

    from hnas.cli import main
    from hnas.data import load_dataset, make_synthetic_dataset
    from hnas.pipeline.run import SearchSettings, resolve
    from hnas.pipeline.search import prepare_run_dir

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    data = make_synthetic_dataset(tmp_path / "data", n_cases=5, shape=(24, 28, 26), seed=3)
    settings = SearchSettings(dataset=str(data), preset="cpu", max_stages=3, iterations_per_epoch=1,
                              min_epochs=1, max_epochs=2)
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resolve(settings), resume=False)
    for epochs in ("1", "2"):  # two models of the default configuration: default_1ep and default_2ep
        assert main(["train", "--run", str(run_dir), "--folds", "0", "1", "--epochs", epochs, "--default"]) == 0
    capsys.readouterr()
    assert main(["find-best", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    best = json.loads((run_dir / "cv" / "best_configuration.json").read_text())
    assert {c["name"] for c in best["candidates"]} == {"default_1ep", "default_2ep", "default_1ep+default_2ep"}
    assert best["cases"] == 2 and f"best: {best['best']['name']}" in out
    image = load_dataset(data).cases[0].image_files[0]
    assert main(["predict", "--model", str(run_dir / "cv" / "best_configuration.json"), str(image), "-o",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    (written,) = (tmp_path / "out").glob("*.nii.gz")
    assert nib.load(str(written)).shape == nib.load(str(image)).shape
    assert "post-processing:" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["garbage", '{"folds": "0"}', "[1]"])
def test_a_damaged_model_json_is_named(run_dir, capsys, content):
    from hnas.cli import main

    (run_dir / "cv" / "trial_00007_2ep" / "model.json").write_text(content)
    assert main(["find-best", "--run", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "trial_00007_2ep/model.json" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04truncated"])
def test_a_damaged_softmax_file_is_named(run_dir, capsys, content):
    from hnas.cli import main
    from hnas.data import fold_split

    (case,) = fold_split([f"case_{i:03d}" for i in range(5)], 1)[1]
    (run_dir / "cv" / "default_2ep" / "fold_1" / "validation" / f"{case}.npz").write_bytes(content)
    assert main(["find-best", "--run", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert f"default_2ep/fold_1/validation/{case}.npz" in err and "Traceback" not in err


class _RunsCodeWhenUnpickled:
    """Unpickling calls ``os.mkdir(marker)``: code execution on load, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def test_a_softmax_file_holding_a_pickled_object_is_refused_without_running_it(run_dir, dataset, capsys, tmp_path):
    """find-best reads the validation .npz files with np.load's allow_pickle=False (even a file that fold.json
    vouches for: the record is rewritten after the planting, so the refusal must come from np.load)."""
    from hnas.cli import main
    from hnas.data import fold_split

    marker = tmp_path / "code_ran"
    (case,) = fold_split([f"case_{i:03d}" for i in range(5)], 1)[1]
    path = run_dir / "cv" / "default_2ep" / "fold_1" / "validation" / f"{case}.npz"
    hostile = np.empty(1, dtype=object)
    hostile[0] = _RunsCodeWhenUnpickled(marker)
    np.savez(path, probabilities=hostile)
    record_fold(run_dir / "cv" / "default_2ep", 1, dataset)
    assert main(["find-best", "--run", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert f"default_2ep/fold_1/validation/{case}.npz" in err and "Traceback" not in err
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as stored:  # the control: an unrestricted load runs the code
        stored["probabilities"]
    assert marker.is_dir()


# ---------------------------------------------------------------- streaming: today's numbers, case by case

STREAM_LABELS = (("background", 0), ("liver", 1), ("tumour", 2), ("vessel", 3))
STREAM_SHAPE = (12, 12, 14)
STREAM_CASES = 10


def stream_truth(index: int) -> np.ndarray:
    """A liver block holding a tumour, and a vessel in two separate pieces (its largest component is not all)."""
    label = np.zeros(STREAM_SHAPE, dtype=np.int16)
    shift = index % 3
    label[2:9, 2 + shift:9, 2:10] = 1
    label[4:6, 4 + shift:6 + shift, 4:7] = 2
    label[10, 1:11, 3] = 3
    label[10, 1:4 + shift, 11] = 3
    return label


def stream_softmax(truth: np.ndarray, seed: int, noise: float, islands: Sequence[int]) -> np.ndarray:
    """Confident one-hot logits plus Gaussian noise (speckle) and a few false cubes of the classes in ``islands``."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * (truth[None] == np.arange(4)[:, None, None, None]) + noise * rng.normal(size=(4,) + truth.shape)
    for value in islands:
        z, y, x = (int(rng.integers(0, s - 2)) for s in truth.shape)
        logits[value, z:z + 2, y:y + 2, x:x + 2] += 8.0
    probabilities = np.exp(logits - logits.max(axis=0))
    return (probabilities / probabilities.sum(axis=0)).astype(np.float32)


STREAM_MODELS = {  # name: (noise, island classes)
    "default_2ep": (1.1, (1, 3)),
    "trial_00003_2ep": (1.3, (2,)),
    "trial_00005_2ep": (0.9, (1, 2, 3)),
    "trial_00008_2ep": (1.6, ()),
}


def stream_dataset(root, n_cases: int = STREAM_CASES, shape=STREAM_SHAPE, truth=stream_truth):
    """A labelled nnU-Net raw folder of ``n_cases`` cases of ``truth(index)``."""
    from hnas.data.io import write_volume

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    for index in range(n_cases):
        label = truth(index)
        write_volume(rng.normal(size=shape).astype(np.float32) + label, (1.0, 1.0, 1.0),
                     root / "imagesTr" / f"case_{index:03d}_0000.nii.gz")
        write_volume(label, (1.0, 1.0, 1.0), root / "labelsTr" / f"case_{index:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": dict(STREAM_LABELS), "numTraining": n_cases,
        "file_ending": ".nii.gz"}))
    return root


def stream_run(run, dataset_dir, folds=(0, 1, 2, 3, 4), models=STREAM_MODELS, truth=stream_truth):
    """RUN/ with ``models`` cross-validated on ``folds``: seeded noisy softmax (float16) and its argmax label maps."""
    from hnas.data import fold_split, load_dataset, write_label_map
    from hnas.pipeline.run import SearchSettings

    run.mkdir(parents=True)
    SearchSettings(dataset=str(dataset_dir)).save(run)
    data = load_dataset(dataset_dir)
    for number, (name, (noise, islands)) in enumerate(models.items()):
        folder = run / "cv" / name
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps(model_record(name, folds, epochs=2)))
        for fold in folds:
            validation = folder / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            for case_id in fold_split(data.case_ids, fold)[1]:
                index = int(case_id.split("_")[1])
                softmax = stream_softmax(truth(index), 1000 * number + index, noise, islands).astype(np.float16)
                np.savez_compressed(validation / f"{case_id}.npz", probabilities=softmax)
                write_label_map(np.argmax(softmax, axis=0).astype(np.int16), data.case(case_id).image_files[0],
                                validation / f"{case_id}.nii.gz")
            record_fold(folder, fold, dataset_dir)
    return run


# find-best's output on stream_run at hnas 779af65 (before streaming), dataset and criterion left out
GOLDEN_FIND_BEST = {None: {'folds': [0, 1, 2, 3, 4],
        'cases': 10,
        'top': None,
        'candidates': [{'name': 'default_2ep+trial_00005_2ep',
                        'members': ['default_2ep', 'trial_00005_2ep'],
                        'dice': 0.7534614145755767,
                        'dice_per_class': {'liver': 0.9673605322837829,
                                           'tumour': 0.7041785538196563,
                                           'vessel': 0.588845157623291}},
                       {'name': 'trial_00003_2ep+trial_00005_2ep',
                        'members': ['trial_00003_2ep', 'trial_00005_2ep'],
                        'dice': 0.7045363535483679,
                        'dice_per_class': {'liver': 0.9660336554050446,
                                           'tumour': 0.5188356071710587,
                                           'vessel': 0.6287397980690003}},
                       {'name': 'default_2ep+trial_00003_2ep',
                        'members': ['default_2ep', 'trial_00003_2ep'],
                        'dice': 0.6881919463475544,
                        'dice_per_class': {'liver': 0.9550486266613006,
                                           'tumour': 0.5435402035713196,
                                           'vessel': 0.5659870088100434}},
                       {'name': 'trial_00005_2ep',
                        'members': ['trial_00005_2ep'],
                        'dice': 0.6584321995576223,
                        'dice_per_class': {'liver': 0.9528788566589356,
                                           'tumour': 0.5316472917795181,
                                           'vessel': 0.4907704502344131}},
                       {'name': 'trial_00005_2ep+trial_00008_2ep',
                        'members': ['trial_00005_2ep', 'trial_00008_2ep'],
                        'dice': 0.6269618918498358,
                        'dice_per_class': {'liver': 0.9480589926242828,
                                           'tumour': 0.43727047443389894,
                                           'vessel': 0.49555620849132537}},
                       {'name': 'default_2ep+trial_00008_2ep',
                        'members': ['default_2ep', 'trial_00008_2ep'],
                        'dice': 0.606229242682457,
                        'dice_per_class': {'liver': 0.938776433467865,
                                           'tumour': 0.43636454939842223,
                                           'vessel': 0.44354674518108367}},
                       {'name': 'trial_00003_2ep+trial_00008_2ep',
                        'members': ['trial_00003_2ep', 'trial_00008_2ep'],
                        'dice': 0.5503229548533758,
                        'dice_per_class': {'liver': 0.9190447270870209,
                                           'tumour': 0.32279089093208313,
                                           'vessel': 0.40913324654102323}},
                       {'name': 'default_2ep',
                        'members': ['default_2ep'],
                        'dice': 0.5200611929098765,
                        'dice_per_class': {'liver': 0.896479332447052,
                                           'tumour': 0.3367150962352753,
                                           'vessel': 0.3269891500473022}},
                       {'name': 'trial_00003_2ep',
                        'members': ['trial_00003_2ep'],
                        'dice': 0.4165650864442189,
                        'dice_per_class': {'liver': 0.8389839768409729,
                                           'tumour': 0.18499986827373505,
                                           'vessel': 0.2257114142179489}},
                       {'name': 'trial_00008_2ep',
                        'members': ['trial_00008_2ep'],
                        'dice': 0.3347898128132026,
                        'dice_per_class': {'liver': 0.743707823753357,
                                           'tumour': 0.12038367539644242,
                                           'vessel': 0.14027793928980828}}],
        'skipped': [],
        'best': {'name': 'default_2ep+trial_00005_2ep',
                 'members': ['default_2ep', 'trial_00005_2ep'],
                 'dice': 0.7534614145755767,
                 'dice_per_class': {'liver': 0.9673605322837829,
                                    'tumour': 0.7041785538196563,
                                    'vessel': 0.588845157623291},
                 'dice_postprocessed': 0.8346965213616689,
                 'dice_per_class_postprocessed': {'liver': 0.9775922358036041,
                                                  'tumour': 0.9376521706581116,
                                                  'vessel': 0.588845157623291}},
        'postprocessing': {'regions': [[1], [2]],
                           'description': 'keep the largest connected component of label 1, then label 2',
                           'evidence': [{'region': [1, 2, 3],
                                         'compared': 'mean foreground Dice',
                                         'before': 0.7534614145755767,
                                         'after': 0.6690936962763468,
                                         'kept': False},
                                        {'region': [1],
                                         'compared': 'Dice of liver',
                                         'before': 0.9673605322837829,
                                         'after': 0.9775922358036041,
                                         'kept': True},
                                        {'region': [2],
                                         'compared': 'Dice of tumour',
                                         'before': 0.7041785538196563,
                                         'after': 0.9376521706581116,
                                         'kept': True},
                                        {'region': [3],
                                         'compared': 'Dice of vessel',
                                         'before': 0.588845157623291,
                                         'after': 0.5572129309177398,
                                         'kept': False}]}},
 1: {'folds': [0, 1, 2, 3, 4],
     'cases': 10,
     'top': 1,
     'candidates': [{'name': 'trial_00005_2ep',
                     'members': ['trial_00005_2ep'],
                     'dice': 0.6584321995576223,
                     'dice_per_class': {'liver': 0.9528788566589356,
                                        'tumour': 0.5316472917795181,
                                        'vessel': 0.4907704502344131}},
                    {'name': 'default_2ep',
                     'members': ['default_2ep'],
                     'dice': 0.5200611929098765,
                     'dice_per_class': {'liver': 0.896479332447052,
                                        'tumour': 0.3367150962352753,
                                        'vessel': 0.3269891500473022}},
                    {'name': 'trial_00003_2ep',
                     'members': ['trial_00003_2ep'],
                     'dice': 0.4165650864442189,
                     'dice_per_class': {'liver': 0.8389839768409729,
                                        'tumour': 0.18499986827373505,
                                        'vessel': 0.2257114142179489}},
                    {'name': 'trial_00008_2ep',
                     'members': ['trial_00008_2ep'],
                     'dice': 0.3347898128132026,
                     'dice_per_class': {'liver': 0.743707823753357,
                                        'tumour': 0.12038367539644242,
                                        'vessel': 0.14027793928980828}}],
     'skipped': [],
     'best': {'name': 'trial_00005_2ep',
              'members': ['trial_00005_2ep'],
              'dice': 0.6584321995576223,
              'dice_per_class': {'liver': 0.9528788566589356,
                                 'tumour': 0.5316472917795181,
                                 'vessel': 0.4907704502344131},
              'dice_postprocessed': 0.7539457350969315,
              'dice_per_class_postprocessed': {'liver': 0.9702089965343476,
                                               'tumour': 0.9246231913566589,
                                               'vessel': 0.3670050173997879}},
     'postprocessing': {'regions': [[1, 2, 3], [1], [2]],
                        'description': 'keep the largest connected component of labels 1+2+3, then label 1, then '
                                       'label 2',
                        'evidence': [{'region': [1, 2, 3],
                                      'compared': 'mean foreground Dice',
                                      'before': 0.6584321995576223,
                                      'after': 0.6598186582326889,
                                      'kept': True},
                                     {'region': [1],
                                      'compared': 'Dice of liver',
                                      'before': 0.9656690180301666,
                                      'after': 0.9702089965343476,
                                      'kept': True},
                                     {'region': [2],
                                      'compared': 'Dice of tumour',
                                      'before': 0.6467819392681122,
                                      'after': 0.9246231913566589,
                                      'kept': True},
                                     {'region': [3],
                                      'compared': 'Dice of vessel',
                                      'before': 0.3670050173997879,
                                      'after': 0.3609890162944794,
                                      'kept': False}]}}}


@pytest.fixture(scope="module")
def stream_data(tmp_path_factory):
    return stream_dataset(tmp_path_factory.mktemp("stream") / "Dataset991_Stream")


@pytest.mark.parametrize("top", [None, 1])
def test_streamed_find_best_gives_the_numbers_of_holding_every_map(tmp_path, stream_data, top):
    """best_configuration.json and postprocessing.json as hnas 779af65 wrote them, which held every validation
    truth and the best's label maps in memory (GOLDEN_FIND_BEST: its output on this fixture, exact floats).
    The fixture exercises a rejected foreground step with kept and rejected class steps (all pairs) and a
    kept foreground step followed by kept class steps (top 1)."""
    from hnas.pipeline.find_best import find_best

    run = stream_run(tmp_path / "run", stream_data)
    result = find_best(run, top=top, log=lambda _: None)
    stored = json.loads((run / "cv" / "best_configuration.json").read_text())
    assert stored == result
    assert {k: v for k, v in result.items() if k not in ("dataset", "criterion")} == GOLDEN_FIND_BEST[top]
    decision = run / "cv" / result["best"]["name"] / "postprocessing.json"
    assert decision.is_file() == (top == 1)
    if top == 1:
        assert json.loads(decision.read_text()) == GOLDEN_FIND_BEST[1]["postprocessing"]


def live_arrays(monkeypatch, owner, *names):
    """Wrap ``owner``'s functions ``names``: each call records how many arrays they returned before are still
    alive. Returns that list (CPython frees an array as soon as nobody holds it)."""
    import weakref

    returned, alive = [], []
    for name in names:
        original = getattr(owner, name)

        def wrapper(*args, _original=original, **kwargs):
            alive.append(sum(ref() is not None for ref in returned))
            result = _original(*args, **kwargs)
            array = result[0] if isinstance(result, tuple) else result
            returned.append(weakref.ref(array))
            return result

        monkeypatch.setattr(owner, name, wrapper)
    return alive


def test_find_best_holds_one_case_at_a_time(tmp_path, stream_data, monkeypatch):
    """Every truth and prediction find-best reads is dropped before the next case's: at most the previous
    case's truth is alive when a map is read, whatever the number of cases (hnas 779af65 held all ten)."""
    from hnas.pipeline.find_best import CrossValidation, find_best

    run = stream_run(tmp_path / "run", stream_data)
    alive = live_arrays(monkeypatch, CrossValidation, "truth", "prediction")
    find_best(run, log=lambda _: None)
    # 10 cases x (1 truth + 4 singles), x (1 truth + 6 pairs), x (1 truth + the best): three passes
    assert len(alive) == 10 * 5 + 10 * 7 + 10 * 2
    assert max(alive) == 1


def test_a_pair_is_the_argmax_of_its_members_summed_softmax(tmp_path, stream_data):
    """The pair's label map: label values (not indices) of the argmax of the sum of the stored float16 softmax."""
    from hnas.data import load_dataset
    from hnas.pipeline.find_best import CrossValidation
    from hnas.pipeline.layout import RunFolder

    run = stream_run(tmp_path / "run", stream_data, folds=(0,),
                     models={"default_2ep": (1.1, (1, 3)), "trial_00003_2ep": (1.3, (2,))})
    cv = CrossValidation(load_dataset(stream_data), (0,), RunFolder(run))
    fold, case = cv.cases[0]
    truth = cv.truth(case)
    pair = cv.prediction(("default_2ep", "trial_00003_2ep"), fold, case, truth)
    stored = [np.load(run / "cv" / name / "fold_0" / "validation" / f"{case}.npz")["probabilities"]
              for name in ("default_2ep", "trial_00003_2ep")]
    expected = np.argmax(stored[0].astype(np.float32) + stored[1].astype(np.float32), axis=0)
    assert pair.dtype == np.int16 and np.array_equal(pair, expected)
    for name, dtype in (("default_2ep", np.float32), ("trial_00003_2ep", np.float64)):  # other stored dtypes
        np.savez_compressed(run / "cv" / name / "fold_0" / "validation" / f"{case}.npz",
                            probabilities=stream_softmax(truth, 5, 1.0, (2,)).astype(dtype))
    mixed = stream_softmax(truth, 5, 1.0, (2,))
    expected = np.argmax(mixed + mixed.astype(np.float64).astype(np.float32), axis=0)
    assert np.array_equal(cv.prediction(("default_2ep", "trial_00003_2ep"), fold, case, truth), expected)
    with pytest.raises(TrainingError, match=r"prediction of default_2ep for case .* has shape \(12, 12, 14\); its "
                                            r"label map has \(12, 14\)"):
        cv.prediction(("default_2ep",), fold, case, truth[0])


def test_with_top_one_no_pass_is_made_for_pairs(tmp_path, stream_data, monkeypatch):
    """Two passes over the ten cases (the singles, the best's post-processing): none for the empty set of pairs."""
    from hnas.pipeline.find_best import CrossValidation, find_best

    run = stream_run(tmp_path / "run", stream_data, folds=(0, 1))
    alive = live_arrays(monkeypatch, CrossValidation, "truth")
    find_best(run, top=1, log=lambda _: None)
    assert len(alive) == 2 * 4  # folds 0 and 1 hold four validation cases
