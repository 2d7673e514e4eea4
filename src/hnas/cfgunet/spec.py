"""UNetSpec: everything needed to build a U-Net, as plain data (no torch).

The search, the CLI and the cost model work on specs without importing torch; only
:func:`hnas.cfgunet.network.build` turns one into an ``nn.Module``. Specs are frozen,
hashable and round-trip through JSON, so a trial can store the exact network it trained.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import MISSING, asdict, dataclass, fields

from hnas.errors import SpecError

NORMS = ("instance", "batch")
NONLINS = ("leaky_relu", "relu", "elu", "prelu", "gelu")
KINDS = ("conv", "residual")
POOLS = ("conv", "max", "avg")
BLOCKS = ("basic", "bottleneck")
DEFAULT_DROPOUT_RATE = 0.2  # the HNAS space's dropout rate (docs/references.md, "Search spaces": 0.2)
BOTTLENECK_EXPANSION = 4  # ResNet convention: bottleneck width = features / 4 (as DNA's ResNet50)


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder's layer choices and residual/conv blocks per stage (highest resolution first)."""

    kind: str
    norm: str
    nonlin: str
    dropout: bool
    blocks_per_stage: tuple[int, ...]
    pool: str = "conv"
    block: str = "basic"
    squeeze_excitation: bool = False

    def __post_init__(self):
        _validate_or_canonicalise(self)

    def _validate(self) -> None:
        where = "encoder"
        _check_choice(where, "kind", self.kind, KINDS)
        _check_layers(where, self.norm, self.nonlin, self.dropout)
        _check_counts(where, "blocks_per_stage", self.blocks_per_stage)
        _check_choice(where, "pool", self.pool, POOLS)
        _check_choice(where, "block", self.block, BLOCKS)
        _check_bool(where, "squeeze_excitation", self.squeeze_excitation)
        if self.kind == "conv" and (self.block != "basic" or self.squeeze_excitation):
            raise SpecError(f"encoder.kind='conv' has no residual blocks, so block={self.block!r} and "
                            f"squeeze_excitation={self.squeeze_excitation!r} cannot apply; expected block='basic' "
                            f"and squeeze_excitation=False (or kind='residual')")


@dataclass(frozen=True)
class DecoderSpec:
    """The decoder's layer choices and blocks per stage (from the bottleneck up, DNA order)."""

    kind: str
    norm: str
    nonlin: str
    dropout: bool
    blocks_per_stage: tuple[int, ...]

    def __post_init__(self):
        _validate_or_canonicalise(self)

    def _validate(self) -> None:
        where = "decoder"
        _check_choice(where, "kind", self.kind, KINDS)
        _check_layers(where, self.norm, self.nonlin, self.dropout)
        _check_counts(where, "blocks_per_stage", self.blocks_per_stage)


@dataclass(frozen=True)
class UNetSpec:
    """A complete U-Net: topology from the Plan, layer choices from the derivation."""

    dims: int
    input_channels: int
    n_classes: int
    n_stages: int
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    encoder: EncoderSpec
    decoder: DecoderSpec
    dropout_rate: float = DEFAULT_DROPOUT_RATE
    deep_supervision: bool = True

    def __post_init__(self):
        _validate_or_canonicalise(self)

    def _validate(self) -> None:
        _check_int("spec", "dims", self.dims, allowed=(2, 3))
        _check_int("spec", "input_channels", self.input_channels)
        _check_int("spec", "n_classes", self.n_classes)
        _check_int("spec", "n_stages", self.n_stages, minimum=2)
        self._check_topology()
        if not isinstance(self.encoder, EncoderSpec):
            raise SpecError(f"spec.encoder must be an EncoderSpec, got {self.encoder!r}")
        if not isinstance(self.decoder, DecoderSpec):
            raise SpecError(f"spec.decoder must be a DecoderSpec, got {self.decoder!r}")
        _check_length("encoder.blocks_per_stage", self.encoder.blocks_per_stage, self.n_stages, "n_stages")
        _check_length("decoder.blocks_per_stage", self.decoder.blocks_per_stage, self.n_stages - 1, "n_stages - 1")
        if type(self.dropout_rate) is not float or not 0.0 <= self.dropout_rate < 1.0:
            raise SpecError(f"spec.dropout_rate={self.dropout_rate!r}; expected a number in [0, 1)")
        _check_bool("spec", "deep_supervision", self.deep_supervision)
        if self.encoder.block == "bottleneck" and min(self.features_per_stage) < BOTTLENECK_EXPANSION:
            raise SpecError(f"spec.features_per_stage={self.features_per_stage!r} is too narrow for bottleneck blocks; "
                            f"expected every stage to have >= {BOTTLENECK_EXPANSION} features")

    def _check_topology(self) -> None:
        _check_counts("spec", "features_per_stage", self.features_per_stage)
        _check_length("features_per_stage", self.features_per_stage, self.n_stages, "n_stages")
        for name in ("strides", "kernel_sizes"):
            per_stage = getattr(self, name)
            if type(per_stage) is not tuple:
                raise SpecError(f"spec.{name}={per_stage!r}; expected one list of {self.dims} integers per stage")
            _check_length(name, per_stage, self.n_stages, "n_stages")
            odd = name == "kernel_sizes"
            for stage, sizes in enumerate(per_stage):
                if type(sizes) is not tuple or len(sizes) != self.dims:
                    raise SpecError(f"spec.{name}[{stage}]={sizes!r}; expected {self.dims} positive integers "
                                    f"(one per axis, dims={self.dims})")
                for size in sizes:
                    if type(size) is not int or size < 1:
                        raise SpecError(f"spec.{name}[{stage}]={sizes!r}; expected {self.dims} positive integers "
                                        f"(one per axis, dims={self.dims})")
                    if odd and not size % 2:
                        raise SpecError(f"spec.kernel_sizes[{stage}]={sizes!r}; expected odd sizes ('same' "
                                        f"padding keeps the skip and upsampled maps aligned)")

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetSpec":
        if not isinstance(data, dict):
            raise SpecError(f"a UNetSpec must be read from a dict, got {type(data).__name__} {data!r}")
        values = _fields_of(cls, data, "spec")
        values["encoder"] = EncoderSpec(**_fields_of(EncoderSpec, values["encoder"], "spec.encoder"))
        values["decoder"] = DecoderSpec(**_fields_of(DecoderSpec, values["decoder"], "spec.decoder"))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "UNetSpec":
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise SpecError(f"a UNetSpec must be JSON text, got {text!r:.80}: {exc}") from None
        return cls.from_dict(data)

    # ----------------------------------------------------------------- derived values

    @property
    def total_strides(self) -> tuple[int, ...]:
        """Per-axis product of all strides: patch sizes must be multiples of it."""
        total = [1] * self.dims
        for stride in self.strides:
            total = [t * s for t, s in zip(total, stride)]
        return tuple(total)

    @property
    def bottleneck_channels(self) -> tuple[int, ...] | None:
        """Inner width of bottleneck blocks per stage (None for basic blocks)."""
        if self.encoder.block != "bottleneck":
            return None
        return tuple(f // BOTTLENECK_EXPANSION for f in self.features_per_stage)


# --------------------------------------------------------------------- validation helpers


def _validate_or_canonicalise(spec) -> None:
    """Validate in one pass; only if that fails, canonicalise and validate again.

    Canonical values (tuples of plain ints, a float rate) are what the compiler produces, so
    its hot path pays for a single check. Lists from JSON and numpy numbers from planners are
    converted on the slow path, so specs compare, hash and serialise alike.
    """
    try:
        spec._validate()
    except SpecError:
        if not _canonicalise(spec):
            raise
        spec._validate()


def _canonicalise(spec) -> bool:
    """Lists -> tuples, numpy integers -> int, a numeric dropout rate -> float; True if anything changed."""
    changed = False
    for field in fields(spec):
        value = getattr(spec, field.name)
        plain = float(value) if field.name == "dropout_rate" and _is_real(value) else _plain(value)
        if plain is not value:
            object.__setattr__(spec, field.name, plain)
            changed = True
    return changed


def _plain(value):
    """``value`` itself when already plain, else its plain-Python copy."""
    if isinstance(value, (list, tuple)):
        items = tuple(_plain(v) for v in value)
        if type(value) is tuple and all(a is b for a, b in zip(items, value)):
            return value
        return items
    if isinstance(value, numbers.Integral) and type(value) not in (int, bool):
        return int(value)
    return value


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and type(value) not in (float, bool)


def _check_choice(where: str, name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices or not isinstance(value, str):
        raise SpecError(f"{where}.{name}={value!r}; expected one of {list(choices)}")


def _check_bool(where: str, name: str, value) -> None:
    if type(value) is not bool:
        raise SpecError(f"{where}.{name}={value!r}; expected true or false")


def _check_layers(where: str, norm, nonlin, dropout) -> None:
    _check_choice(where, "norm", norm, NORMS)
    _check_choice(where, "nonlin", nonlin, NONLINS)
    _check_bool(where, "dropout", dropout)


def _check_int(where: str, name: str, value, minimum: int = 1, allowed: tuple[int, ...] | None = None) -> None:
    if type(value) is not int or value < minimum or (allowed is not None and value not in allowed):
        expected = f"one of {list(allowed)}" if allowed else f"an integer >= {minimum}"
        raise SpecError(f"{where}.{name}={value!r}; expected {expected}")


def _check_counts(where: str, name: str, values) -> None:
    if type(values) is tuple:
        for value in values:
            if type(value) is not int or value < 1:
                break
        else:
            return
    raise SpecError(f"{where}.{name}={values!r}; expected a list of positive integers")


def _check_length(name: str, values, expected: int, what: str) -> None:
    if len(values) != expected:
        raise SpecError(f"spec.{name}={values!r} has {len(values)} entries; expected {expected} ({what})")


def _fields_of(cls, data, where: str) -> dict:
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    names = [f.name for f in fields(cls)]
    required = {f.name for f in fields(cls) if f.default is MISSING}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SpecError(f"{where} has unknown fields {unknown}; expected only {names}")
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{where} is missing fields {missing}; expected {names}")
    return dict(data)
