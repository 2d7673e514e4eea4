"""The prior constants shared by hyperparameters (hnas.search) and grammar productions (hnas.sampling).

Paper-era PriorBand / NePS values (docs/references.md, "Prior constants"): a categorical prior
weighs its centre 2 / 4 / 6 (low / medium / high confidence) against 1 for every other choice;
a numeric or ordinal prior is a normal centred on the default with std = range x 0.5 / 0.25 /
0.125, truncated to the range. One definition, so a confidence means the same for a learning
rate and for a block count.
"""

from __future__ import annotations

from typing import Literal

Confidence = Literal["low", "medium", "high"]
CONFIDENCES: tuple[str, ...] = ("low", "medium", "high")
#: Weight of a categorical choice's centre (its default); every other choice weighs 1.
CATEGORICAL_CENTRE_WEIGHT = {"low": 2.0, "medium": 4.0, "high": 6.0}
#: Std of a numeric or ordinal prior as a fraction of its (log-)range.
STD_FRACTION = {"low": 0.5, "medium": 0.25, "high": 0.125}
