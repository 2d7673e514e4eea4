"""Augmentation probabilities scale with aug_factor; 0 switches everything off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hnas.train.augmentation import (BASE_PROBABILITIES, Augmenter, SpatialDraw, augmentation_probabilities,
                                     rotation_limit)

PATCH = (16, 20, 12)


def test_probabilities_scale_and_cap():
    assert augmentation_probabilities(1.0) == BASE_PROBABILITIES
    tripled = augmentation_probabilities(3.0)
    assert tripled["gamma"] == pytest.approx(0.9) and tripled["low_resolution"] == pytest.approx(0.75)
    assert augmentation_probabilities(5.0)["low_resolution"] == 1.0
    assert tripled["noise"] == pytest.approx(0.3)
    assert set(augmentation_probabilities(0.0).values()) == {0.0}


def test_factor_zero_returns_the_crop_unchanged():
    augmenter = Augmenter(PATCH, 0.0)
    rng = np.random.default_rng(0)
    image, label = torch.randn(1, *PATCH), torch.randint(0, 3, (1, *PATCH)).float()
    for _ in range(20):
        draw = augmenter.draw_spatial(rng)
        assert not draw.active and draw.region(PATCH) == PATCH
        out_image, out_label = augmenter(image, label, draw, rng)
        assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_region_covers_the_rotated_and_scaled_patch():
    draw = SpatialDraw(angles=(0.5, -0.5, 0.3), scale=1.4)
    region = draw.region(PATCH)
    assert all(r > p and (r - p) % 2 == 0 for r, p in zip(region, PATCH))
    assert SpatialDraw(None, 0.7).region(PATCH) == PATCH  # zooming in samples inside the patch


def test_rotated_patch_has_no_empty_corners_and_labels_stay_labels():
    augmenter = Augmenter(PATCH, 1.0)
    draw = SpatialDraw(angles=(0.52, 0.52, -0.52), scale=1.4)
    region = draw.region(PATCH)
    image = torch.full((1, *region), 5.0)
    label = torch.randint(0, 3, (1, *region)).float()
    out_image, out_label = augmenter._spatial(image, label, draw)
    assert tuple(out_image.shape[1:]) == PATCH and tuple(out_label.shape[1:]) == PATCH
    assert torch.allclose(torch.as_tensor(out_image), torch.tensor(5.0), atol=1e-4)  # no zero padding reached
    assert set(torch.unique(torch.as_tensor(out_label)).tolist()) <= {0.0, 1.0, 2.0}


def test_augmentation_is_a_function_of_the_generator():
    augmenter = Augmenter(PATCH, 3.0)
    image, label = torch.randn(1, *PATCH), torch.randint(0, 3, (1, *PATCH)).float()

    def run(seed):
        rng = np.random.default_rng(seed)
        return augmenter(image.clone(), label.clone(), SpatialDraw(None, None), rng)

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == image.shape and torch.isfinite(first[0]).all()


PLANE = (16, 20)


def test_2d_rotation_is_one_angle_in_nnunet_range():
    assert rotation_limit(PATCH) == pytest.approx(math.radians(30))
    assert rotation_limit(PLANE) == pytest.approx(math.pi)  # nnU-Net's 2d: any in-plane angle
    assert rotation_limit((16, 40)) == pytest.approx(math.radians(15))  # elongated patch
    augmenter, rng = Augmenter(PLANE, 5.0), np.random.default_rng(0)
    draws = [augmenter.draw_spatial(rng) for _ in range(20)]
    assert all(d.angles is not None and len(d.angles) == 1 for d in draws)
    assert max(abs(d.angles[0]) for d in draws) > math.radians(30)


def test_2d_patches_keep_shape_dtype_and_label_values():
    augmenter, rng = Augmenter(PLANE, 10.0), np.random.default_rng(1)  # every transform fires (probability 1)
    for _ in range(10):
        draw = augmenter.draw_spatial(rng)
        region = draw.region(PLANE)
        image = torch.randn(2, *region)
        label = torch.randint(0, 3, (1, *region)).float()
        out_image, out_label = augmenter(image, label, draw, rng)
        assert out_image.shape == (2, *PLANE) and out_label.shape == (1, *PLANE)
        assert out_image.dtype == torch.float32 and torch.isfinite(out_image).all()
        assert set(torch.unique(out_label).tolist()) <= {0.0, 1.0, 2.0}


def test_2d_rotated_patch_has_no_empty_corners():
    augmenter = Augmenter(PLANE, 1.0)
    draw = SpatialDraw(angles=(math.pi / 4,), scale=1.4)
    region = draw.region(PLANE)
    out_image, out_label = augmenter._spatial(torch.full((1, *region), 5.0), torch.ones(1, *region), draw)
    assert tuple(out_image.shape[1:]) == PLANE
    assert torch.allclose(torch.as_tensor(out_image), torch.tensor(5.0), atol=1e-4)
    assert bool((torch.as_tensor(out_label) == 1).all())
