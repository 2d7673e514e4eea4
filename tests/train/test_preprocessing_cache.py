"""The preprocessing cache's files: blosc2 arrays chunked like nnU-Net's, read lazily, written by any number
of processes with the same bytes, and an older (``.npy``) cache preprocessed again rather than misread."""

from __future__ import annotations

import json

import blosc2
import numpy as np
import pytest

from hnas.data import processes
from hnas.errors import TrainingError
from hnas.train import preprocessing
from hnas.train.preprocessing import (CACHE_FORMAT, FILTERS, MANIFEST, blosc2_layout, compression,
                                      default_workers, load_preprocessed, preprocess_dataset)

from .conftest import tiny_plan, tiny_plan_2d


def _files(root) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


class _CountedPool(processes.ProcessPoolExecutor):
    started: list = []

    def __init__(self, max_workers, **options):
        self.started.append(max_workers)
        super().__init__(max_workers, **options)


def test_parallel_preprocessing_writes_the_same_bytes_as_serial(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "ProcessPoolExecutor", _CountedPool)
    serial = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path / "serial", workers=1)
    assert _CountedPool.started == []
    monkeypatch.setattr(preprocessing, "POOL_START_SECONDS", -1.0)  # a pool even for these tiny cases
    parallel = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path / "parallel", workers=2)
    assert _CountedPool.started == [2]
    assert serial.key == parallel.key  # the number of workers is in no key
    files = _files(serial.root)
    assert files == _files(parallel.root)
    assert len([name for name in files if name.endswith(".b2nd")]) == 2 * len(serial.case_ids)


def test_cases_that_take_milliseconds_are_not_worth_a_pool(tiny_dataset, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a process pool was started for six 24^3 cases")

    monkeypatch.setattr(processes, "ProcessPoolExecutor", refuse)
    data = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path, workers=8)
    assert len(data.case_ids) == 6


@pytest.mark.parametrize("workers", [0, -2, 1.5, "2", True, None])
def test_a_bad_number_of_workers_is_refused_naming_it(tiny_dataset, tmp_path, workers):
    with pytest.raises(TrainingError, match=f"preprocessing workers is {workers!r}; expected a positive integer"):
        preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path, workers=workers)
    assert not (tmp_path / "Dataset900_SyntheticBrain").exists()  # refused before anything is written


def test_a_bad_number_of_workers_in_the_training_setup_is_refused(tiny_dataset, tmp_path):
    from hnas.train import TrainSetup

    def setup(workers):
        return TrainSetup(dataset=tiny_dataset, plan=tiny_plan(), grammar="", cache_dir=tmp_path,
                          preprocessing_workers=workers)

    with pytest.raises(TrainingError, match="preprocessing workers is 0"):
        setup(0)
    assert setup(3).preprocessing_workers == 3 and setup(None).preprocessing_workers is None  # None: the default


def test_the_default_is_nnunets_eight_processes_or_the_cores_if_fewer(monkeypatch):
    monkeypatch.setattr(preprocessing.os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert default_workers() == 2
    monkeypatch.setattr(preprocessing.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_workers() == preprocessing.PREPROCESSING_WORKERS == 8


@pytest.mark.parametrize("shape, patch, itemsize", [
    ((1, 100, 256, 256), (64, 128, 128), 4), ((1, 36, 50, 35), (40, 56, 40), 4), ((1, 36, 50, 35), (56, 40), 4),
    ((2, 150, 512, 512), (128, 128, 128), 4), ((1, 400, 300, 20), (160, 192, 16), 4), ((1, 5, 700, 800), (512, 512), 4),
])
def test_blocks_and_chunks_are_nnunets(shape, patch, itemsize):
    nnunet = pytest.importorskip("nnunetv2.training.dataloading.nnunet_dataset")
    blocks, chunks = nnunet.comp_blosc2_params(shape, patch, itemsize)
    assert blosc2_layout(shape, patch, itemsize) == ((1, *blocks[1:]), (1, *chunks[1:]))
    label_blocks, label_chunks = nnunet.comp_blosc2_params((1, *shape[1:]), patch, 2)
    assert blosc2_layout(shape[1:], patch, 2) == (label_blocks[1:], label_chunks[1:])  # labels have no channel axis


def test_the_filter_is_the_one_that_compresses_the_voxels_best():
    rng = np.random.default_rng(0)
    quantised = ((rng.integers(0, 40, size=(1, 32, 32, 32)) - 20.0) / 7.0).astype(np.float32)  # z-scored integers
    smooth = np.cumsum(rng.normal(size=(1, 32, 32, 32)), axis=3).astype(np.float32)  # interpolated intensities
    picked = {}
    for name, array in (("quantised", quantised), ("smooth", smooth)):
        blocks, chunks = blosc2_layout(array.shape, (32, 32, 32), 4)
        picked[name] = compression(array, blocks, chunks).filters[0]
        sizes = {f: len(blosc2.asarray(array, chunks=chunks, blocks=blocks, cparams=blosc2.CParams(
            codec=preprocessing.CODEC, clevel=preprocessing.CLEVEL, filters=[f])).schunk.to_cframe()) for f in FILTERS}
        assert sizes[picked[name]] == min(sizes.values())
    assert picked == {"quantised": blosc2.Filter.NOFILTER, "smooth": blosc2.Filter.SHUFFLE}


@pytest.mark.parametrize("make_plan", [tiny_plan, tiny_plan_2d])
def test_cases_are_compressed_chunked_and_read_lazily_as_they_were_written(tiny_dataset, tmp_path, make_plan):
    plan = make_plan()
    data = preprocess_dataset(tiny_dataset, plan, tmp_path)
    case_id = data.case_ids[0]
    eager, lazy = data.load(case_id), data.load(case_id, lazy=True)
    assert isinstance(eager.image, np.ndarray) and isinstance(lazy.image, blosc2.NDArray)
    assert isinstance(lazy.label, blosc2.NDArray) and lazy.label.dtype == np.int16
    assert (lazy.image.blocks, lazy.image.chunks) == blosc2_layout(eager.image.shape, plan.patch_size, 4)
    window = (slice(None), slice(1, 9), slice(2, 12), slice(3, 7))
    assert np.array_equal(lazy.image[window], eager.image[window]) and lazy.image[window].dtype == np.float32
    assert np.array_equal(lazy.label[window[1:]], eager.label[window[1:]])
    assert data.image_path(case_id).stat().st_size < 0.7 * eager.image.nbytes  # compressed (tiny, smooth-less data)


def test_a_foreign_array_in_the_cache_is_refused_naming_the_case(tiny_dataset, tmp_path):
    data = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path)
    case_id = data.case_ids[0]
    blosc2.asarray(np.zeros((4, 4, 4), np.float64), urlpath=str(data.label_path(case_id)), mode="w")
    for lazy in (True, False):
        with pytest.raises(TrainingError, match=f"case '{case_id}'.*not 3 axes of int16"):
            data.load(case_id, lazy=lazy)


def _as_format_1(root) -> None:
    """Make a cache folder look like one hnas wrote before format 2: .npy arrays, no "format" in the manifest."""
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["format"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    for path in root.glob("*.b2nd"):
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.unlink()


def test_an_older_npy_cache_is_preprocessed_again_in_place_not_misread(tiny_dataset, tmp_path, monkeypatch):
    first = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path)
    written = _files(first.root)
    _as_format_1(first.root)
    with pytest.raises(TrainingError, match=f"another preprocessing version or cache format; expected format "
                                            f"{CACHE_FORMAT}"):
        load_preprocessed(first.root)
    calls = []
    original = preprocessing._preprocess_case
    monkeypatch.setattr(preprocessing, "_preprocess_case", lambda *job: calls.append(job[1]) or original(*job))
    again = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path)
    assert again.root == first.root and sorted(calls) == sorted(first.case_ids)
    assert _files(again.root) == written  # the old .npy arrays are gone, the same files are back
    assert json.loads((again.root / MANIFEST).read_text())["format"] == CACHE_FORMAT
