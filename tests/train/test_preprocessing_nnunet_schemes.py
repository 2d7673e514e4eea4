"""nnU-Net's NoNormalization and RGBTo01Normalization as the schemes "none" and "rgb_to_0_1"."""

from __future__ import annotations

import numpy as np
import pytest

from hnas.errors import DatasetError
from hnas.train import preprocessing
from hnas.train.preprocessing import NORMALIZATION_SCHEMES, ChannelNormalization, preprocess_image

from .conftest import tiny_plan


def test_nnunet_schemes_are_offered():
    assert {"none", "rgb_to_0_1"} <= set(NORMALIZATION_SCHEMES)


def test_none_keeps_the_intensities_as_float32():
    image = np.array([[-5, 0], [7, 1000]], dtype=np.int16)
    out = ChannelNormalization("none").apply(image)
    assert out.dtype == np.float32 and np.array_equal(out, [[-5.0, 0.0], [7.0, 1000.0]])
    assert image[1, 1] == 1000  # a copy: the input stays as it was


def test_rgb_to_0_1_divides_by_255():
    out = ChannelNormalization("rgb_to_0_1").apply(np.array([0, 51, 102, 255], dtype=np.uint8))
    assert out.dtype == np.float32 and np.allclose(out, [0.0, 0.2, 0.4, 1.0])


@pytest.mark.parametrize("values, shown", [([-1.0, 3.0], r"\[-1, 3\]"), ([0.0, 255.5], r"\[0, 255.5\]")])
def test_rgb_to_0_1_refuses_values_outside_8_bit(values, shown):
    with pytest.raises(DatasetError, match=f"rgb_to_0_1 has values in {shown}; expected 8-bit RGB values in"):
        ChannelNormalization("rgb_to_0_1").apply(np.array(values))


def test_nnunet_schemes_match_nnunets_classes():
    schemes = pytest.importorskip("nnunetv2.preprocessing.normalization.default_normalization_schemes")
    image = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6)).astype(np.float64)
    for ours, theirs in (("none", schemes.NoNormalization), ("rgb_to_0_1", schemes.RGBTo01Normalization)):
        expected = theirs(use_mask_for_norm=False, intensityproperties={}).run(image.copy())
        assert np.array_equal(ChannelNormalization(ours).apply(image), expected)


def test_plans_name_the_nnunet_schemes_and_preprocess_with_them():
    plan = tiny_plan(n_input_channels=2, normalization=("none", "rgb_to_0_1"))
    norms = preprocessing.normalization_for(plan, None)
    assert norms == (ChannelNormalization("none"), ChannelNormalization("rgb_to_0_1"))
    assert all(ChannelNormalization.from_dict(n.to_dict()) == n for n in norms)
    image = np.zeros((2, 16, 16, 16), dtype=np.float32)
    image[:, 4:12, 4:12, 4:12] = np.array([100.0, 255.0])[:, None, None, None]
    out, _, _ = preprocess_image(image, (1.0, 1.0, 1.0), plan, norms)
    assert out.shape == (2, 8, 8, 8)  # cropped to the non-zero box, already at the plan's spacing
    assert np.allclose(out[0], 100.0) and np.allclose(out[1], 1.0)
