"""The Plan: nnU-Net's network topology and training geometry for one dataset.

A Plan is pure data (JSON round-trip). Strides, kernel sizes and features come from here,
never from an architecture string: a k-stage network uses the Plan's first k entries.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from hnas.errors import PlanError

# ResEnc M encoder blocks per stage (nnU-Net ResEnc presets); stages beyond the list use 6.
RESENC_M_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6)
DEFAULT_PLANNER = "default"


@dataclass(frozen=True)
class Plan:
    """Everything the grammar, the compiler and the trainer need from planning."""

    dataset_name: str
    dims: int
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    median_shape: tuple[int, ...]
    n_stages: int
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    features_per_stage: tuple[int, ...]
    conv_blocks_per_stage: tuple[int, ...]
    conv_decoder_blocks_per_stage: tuple[int, ...]
    residual_blocks_per_stage: tuple[int, ...]
    residual_decoder_blocks_per_stage: tuple[int, ...]
    batch_size: int
    n_input_channels: int
    n_classes: int
    # per channel, one of hnas.train.preprocessing.NORMALIZATION_SCHEMES ("zscore", "ct", "minmax", ...)
    normalization: tuple[str, ...]
    base_features: int = 32
    max_features: int = 320
    # nnU-Net's transpose_forward: data axis order (z, y, x) -> plan axis order (largest spacing
    # first). A 2D plan slices along axis transpose_forward[0]. None means the data's own order.
    transpose_forward: tuple[int, ...] | None = None
    # Whose rules sized patch and batch: "default" (nnUNetPlans, PlainConvUNet) or "resenc_m"
    # (nnUNetResEncUNetMPlans); an imported nnU-Net plan of another planner keeps its plans name.
    planner: str = DEFAULT_PLANNER

    def to_dict(self) -> dict:
        """Plain data; a default-planner plan omits ``planner``, so its JSON is the same as before
        the field existed (stored run plans and checkpoints compare plans by their JSON)."""
        data = asdict(self)
        if data["planner"] == DEFAULT_PLANNER:
            del data["planner"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        names = {f.name for f in fields(cls)}
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = names - set(data) - optional
        if missing:
            raise PlanError(f"plan is missing fields {sorted(missing)}; expected all of {sorted(names)}")
        unknown = set(data) - names
        if unknown:
            raise PlanError(f"plan has unknown fields {sorted(unknown)}; expected only {sorted(names)}")
        _check_field_types(data)
        return cls(**{k: _as_tuples(v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PlanError(f"plan is JSON {type(data).__name__} {text.strip()[:40]!r}; expected an object of plan "
                            "fields from `hnas plan -o`")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file {str(path)!r} does not exist; expected a JSON file from `hnas plan`")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PlanError(f"plan file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); expected a JSON file from `hnas plan -o`") from None
        except OSError as exc:
            raise PlanError(f"plan file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except PlanError as exc:
            raise PlanError(f"plan file {str(path)!r}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    def truncated(self, n_stages: int) -> "Plan":
        """The same plan with only its first ``n_stages`` stages (fewer poolings).

        The patch stays valid: it is divisible by the strides of the stages kept.
        """
        if not 1 <= n_stages <= self.n_stages:
            raise PlanError(f"cannot cut a {self.n_stages}-stage plan to {n_stages!r} stages; "
                            f"expected 1..{self.n_stages}")
        data = self.to_dict()
        data.update(
            n_stages=n_stages, strides=self.strides[:n_stages], kernel_sizes=self.kernel_sizes[:n_stages],
            features_per_stage=self.features_per_stage[:n_stages],
            conv_blocks_per_stage=self.conv_blocks_per_stage[:n_stages],
            conv_decoder_blocks_per_stage=self.conv_decoder_blocks_per_stage[:n_stages - 1],
            residual_blocks_per_stage=self.residual_blocks_per_stage[:n_stages],
            residual_decoder_blocks_per_stage=self.residual_decoder_blocks_per_stage[:n_stages - 1],
        )
        return Plan.from_dict(data)


_INT_FIELDS = ("dims", "n_stages", "batch_size", "n_input_channels", "n_classes", "base_features", "max_features")
_TEXT_FIELDS = ("dataset_name", "planner")


def _check_field_types(data: dict) -> None:
    """Wrong JSON types fail here, naming the field, instead of as a TypeError deep in the generator.

    Values (positive, one entry per stage, ...) are checked where they are used: the compiler's spec.
    """
    for name, value in data.items():
        if name in _INT_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        elif name in _TEXT_FIELDS:
            ok, expected = isinstance(value, str), "a string"
        else:
            ok = isinstance(value, (list, tuple)) or (name == "transpose_forward" and value is None)
            expected = "a list"
        if not ok:
            raise PlanError(f"plan field {name!r} is {value!r}; expected {expected}")


def _as_tuples(value):
    """JSON lists back to the tuples the frozen dataclass uses."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value
