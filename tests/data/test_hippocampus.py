"""The real MSD hippocampus set in nnU-Net raw format (skipped when it is not on this machine)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hnas.data import analyze_dataset, load_dataset, validate_dataset

REPO = Path(__file__).resolve().parents[2]


def _hippocampus() -> Path:
    path = Path(os.environ.get("HNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Dataset004_Hippocampus"))
    if not (path / "dataset.json").is_file():
        pytest.skip(f"hippocampus dataset not found at {path} (set HNAS_HIPPOCAMPUS to its folder)")
    return path


@pytest.fixture(scope="module")
def hippocampus():
    return load_dataset(_hippocampus())


def test_loads_and_validates(hippocampus):
    expected = json.loads((hippocampus.root / "dataset.json").read_text())["numTraining"]
    assert len(hippocampus.cases) == expected
    assert hippocampus.channel_names == ("MRI",)
    assert hippocampus.labels == (("background", 0), ("Anterior", 1), ("Posterior", 2))
    validate_dataset(hippocampus)


def test_fingerprint_matches_nnunet(hippocampus):
    analysis = analyze_dataset(hippocampus)
    fp = analysis.fingerprint
    assert fp.n_cases == len(hippocampus.cases)
    assert set(fp.spacings) == {(1.0, 1.0, 1.0)}
    # nnU-Net v2 reports a median shape after crop of 36 x 50 x 35 for Dataset004_Hippocampus
    assert tuple(np.median(np.array(fp.shapes_after_crop), axis=0)) == (36, 50, 35)
    assert analysis.median_relative_size_after_cropping == 1.0  # MSD pre-cropped these volumes
    (stats,) = fp.intensity
    assert stats.min <= stats.percentile_00_5 <= stats.median <= stats.percentile_99_5 <= stats.max
