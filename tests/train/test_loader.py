"""Patch sampling: padding, foreground oversampling, determinism across workers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hnas.train.loader import BatchStream, PatchSampler, batch_loader, crop_padded, forced_foreground, patch_bounds
from hnas.train.preprocessing import preprocess_dataset

from .conftest import tiny_plan, tiny_plan_2d


@pytest.fixture(scope="module")
def data(tiny_dataset, cache_dir):
    return preprocess_dataset(tiny_dataset, tiny_plan(), cache_dir)


def test_forced_samples_are_the_last_round_b_times_rate():
    assert forced_foreground(9, 0.33) == [False] * 6 + [True] * 3
    assert forced_foreground(2, 0.33) == [False, True]
    assert forced_foreground(4, 0.0) == [False] * 4 and forced_foreground(4, 1.0) == [True] * 4


def test_small_cases_are_padded_evenly():
    low, high = patch_bounds((10, 30), (14, 20))
    assert low.tolist() == [-2, 0] and high.tolist() == [-2, 10]
    array = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    crop = crop_padded(array, (-1, 2), (4, 4))
    assert crop.shape == (1, 4, 4)
    assert crop[0, 0].tolist() == [0, 0, 0, 0] and crop[0, 1].tolist() == [2, 3, 0, 0]


def _centre_is_foreground(label: torch.Tensor) -> bool:
    """Oversampled patches hold a foreground voxel near their centre (the chosen voxel)."""
    centre = tuple(s // 2 for s in label.shape[1:])
    window = label[(0,) + tuple(slice(c - 1, c + 1) for c in centre)]
    return bool((window > 0).any())


def test_oversampling_centres_the_last_samples_on_foreground(data):
    train, _ = data.split(0)
    sampler = PatchSampler(data, train, (8, 8, 8), 3, 0.67, 0.0, seed=0)
    for index in range(15):
        batch = sampler.batch(index)
        assert batch["image"].shape == (3, 1, 8, 8, 8) and batch["label"].shape == (3, 1, 8, 8, 8)
        assert all(_centre_is_foreground(batch["label"][i]) for i in (1, 2))
    never = PatchSampler(data, train, (8, 8, 8), 3, 0.0, 0.0, seed=0)
    random_rate = np.mean([_centre_is_foreground(never.batch(i)["label"][j]) for i in range(15) for j in range(3)])
    # Structures fill ~2/3 of these tiny crops, so unforced centres often hit them too -- but not
    # every time, while all 30 forced centres above did.
    assert random_rate < 1.0


def test_batches_are_a_function_of_seed_and_index(data):
    train, _ = data.split(0)
    sampler = PatchSampler(data, train, (16, 16, 16), 2, 0.33, 1.0, seed=3)
    assert torch.equal(sampler.batch(5)["image"], sampler.batch(5)["image"])
    assert not torch.equal(sampler.batch(5)["image"], sampler.batch(6)["image"])
    stream = list(itertools.islice(iter(BatchStream(sampler, start=4)), 2))
    assert torch.equal(stream[1]["label"], sampler.batch(5)["label"])


def test_background_workers_give_the_same_stream(data):
    train, _ = data.split(0)
    sampler = PatchSampler(data, train, (16, 16, 16), 2, 0.33, 1.0, seed=1)
    loader = batch_loader(sampler, start=10, num_workers=2)
    batches = list(itertools.islice(iter(loader), 4))
    for offset, batch in enumerate(batches):
        expected = sampler.batch(10 + offset)
        assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["label"], expected["label"])


@pytest.fixture(scope="module")
def slices(tiny_dataset, cache_dir):
    return preprocess_dataset(tiny_dataset, tiny_plan_2d(), cache_dir)


def _is_slice_patch(patch: np.ndarray, volume: np.ndarray) -> bool:
    """Whether a [py, px] patch is a crop of one slice (plan axis 0) of a [S, Y, X] volume."""
    windows = np.lib.stride_tricks.sliding_window_view(volume, (1, *patch.shape))
    return bool((windows == patch[None]).all(axis=(-3, -2, -1)).any())


def test_a_2d_patch_samples_slices_with_forced_foreground(slices):
    train, _ = slices.split(0)
    sampler = PatchSampler(slices, train, (8, 8), 3, 0.67, 0.0, seed=0)
    volumes = [np.asarray(slices.load(case_id).image[0]) for case_id in train]
    for index in range(10):
        batch = sampler.batch(index)
        assert batch["image"].shape == (3, 1, 8, 8) and batch["label"].shape == (3, 1, 8, 8)
        assert all(_centre_is_foreground(batch["label"][i]) for i in (1, 2))
        patch = batch["image"][0, 0].numpy()
        assert any(_is_slice_patch(patch, volume) for volume in volumes)
    never = PatchSampler(slices, train, (8, 8), 3, 0.0, 0.0, seed=0)
    random_rate = np.mean([_centre_is_foreground(never.batch(i)["label"][j]) for i in range(10) for j in range(3)])
    assert random_rate < 0.5


def test_2d_batches_are_a_function_of_seed_and_index(slices):
    train, _ = slices.split(0)
    sampler = PatchSampler(slices, train, (16, 12), 2, 0.33, 1.0, seed=3)
    first, again = sampler.batch(5), PatchSampler(slices, train, (16, 12), 2, 0.33, 1.0, seed=3).batch(5)
    assert first["image"].shape == (2, 1, 16, 12) and first["label"].dtype == torch.int16
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], sampler.batch(6)["image"])
    stream = list(itertools.islice(iter(BatchStream(sampler, start=4)), 2))
    assert torch.equal(stream[1]["image"], first["image"])


class _InMemory(PatchSampler):
    """The sampler with every case decompressed whole and kept: what the lazy loader must reproduce."""

    def case(self, case_id):
        return self.data.load(case_id)


def test_lazily_read_patches_are_those_of_the_whole_arrays_and_no_case_is_kept(data, monkeypatch):
    opened = []
    load = type(data).load
    monkeypatch.setattr(type(data), "load", lambda self, case_id, **kw: opened.append(kw) or load(self, case_id, **kw))
    lazy = PatchSampler(data, data.case_ids, (16, 16, 16), 3, 0.33, 1.0, seed=5)
    eager = _InMemory(data, data.case_ids, (16, 16, 16), 3, 0.33, 1.0, seed=5)
    for index in range(4):
        mine, theirs = lazy.batch(index), eager.batch(index)
        assert all(torch.equal(mine[key], theirs[key]) for key in ("image", "label"))
    assert opened.count({"lazy": True}) == 12  # one open per sample: a case is never held between samples
    assert not [name for name, value in vars(lazy).items() if isinstance(value, dict)]
