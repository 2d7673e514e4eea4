"""Plan -> Lark grammar text: the HNAS productions of the Auto-nnU-Net paper (Appendix C.3).

The grammar is sized by the Plan's stage count N: a sentence chooses a stage count
k in [ceil(N/2), N], an encoder type with its norm / nonlinearity / dropout and blocks per
stage, and a decoder with its own norm / nonlinearity / dropout and blocks per stage.
Strides, kernels and features are *not* in the grammar; they come from the Plan.

Besides the Lark rules, the text carries annotation comments (``//@ default RULE LABEL``
and ``//@ ordinal RULE v1 v2 ...``). Lark ignores them; the sampler reads them so that a
grammar file alone is enough to build a prior centred on nnU-Net's defaults.

The text is a complete Lark grammar: ``lark.Lark(text, parser="lalr")`` with Lark's default
start rule and lexer loads it and parses the same sentences to the same trees, under a
``start`` root, as :func:`hnas.grammar.parse` (which adds word-level error messages).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from hnas.errors import GrammarError
from hnas.planning.plan import RESENC_M_BLOCKS, Plan

NORMS = ("instance_norm", "batch_norm")
NONLINS = ("leaky_relu", "relu", "elu", "prelu", "gelu")
DROPOUTS = ("no_dropout", "dropout")
POOLS = ("conv_pool", "max_pool", "avg_pool")
RES_BLOCK_TYPES = ("basic_block", "bottleneck_block")
SE_CHOICES = ("no_se", "se")
MIN_STAGES, MAX_STAGES = 2, 12
GRAMMAR_FORMAT_VERSION = 1
OPTIONS_PREFIX = "// options: "


@dataclass(frozen=True)
class GrammarOptions:
    """Which productions the grammar offers beyond the paper's HNAS space.

    The defaults reproduce the paper exactly. Every extension is something DNA can build.
    """

    max_scale: int = 2  # s_max: block counts go up to max_scale * default
    residual_decoder: bool = False  # `res_decoder` (DNA UNetResDecoder) beside `conv_decoder`
    pooling: bool = False  # encoder downsampling by strided conv, max or average pooling
    bottleneck: bool = False  # residual encoders may use bottleneck blocks
    squeeze_excitation: bool = False  # residual encoders may add squeeze-excitation

    def __post_init__(self):
        if not isinstance(self.max_scale, int) or isinstance(self.max_scale, bool) or self.max_scale < 1:
            raise GrammarError(f"max_scale must be an integer >= 1, got {self.max_scale!r}")

    @classmethod
    def extended(cls, max_scale: int = 2) -> "GrammarOptions":
        """All DNA-buildable extensions switched on."""
        return cls(max_scale=max_scale, residual_decoder=True, pooling=True, bottleneck=True,
                   squeeze_excitation=True)

    @classmethod
    def from_dict(cls, data: dict) -> "GrammarOptions":
        unknown = set(data) - set(asdict(cls()))
        if unknown:
            raise GrammarError(f"unknown grammar options {sorted(unknown)}; expected {sorted(asdict(cls()))}")
        return cls(**data)


def grammar_options(grammar: str) -> GrammarOptions:
    """The options a generated grammar was made with (paper defaults for other grammars)."""
    for line in grammar.splitlines():
        if line.startswith(OPTIONS_PREFIX):
            try:
                return GrammarOptions.from_dict(json.loads(line[len(OPTIONS_PREFIX):]))
            except json.JSONDecodeError as exc:
                raise GrammarError(f"grammar options line is not JSON: {line!r}") from exc
    return GrammarOptions()


def stage_range(n_stages: int) -> range:
    """Stage counts the grammar allows: keep at least half of the Plan's stages.

    A single stage is never offered (N=2 gives only k=2): a one-stage "U-Net" has no
    decoder stage, and DNA's decoder cannot produce a segmentation from it.
    """
    return range(max(2, math.ceil(n_stages / 2)), n_stages + 1)


def residual_default_blocks(plan: Plan, stage: int) -> int:
    """ResEnc M blocks of a stage (the Plan's, else nnU-Net's list)."""
    if stage < len(plan.residual_blocks_per_stage):
        return plan.residual_blocks_per_stage[stage]
    return RESENC_M_BLOCKS[min(stage, len(RESENC_M_BLOCKS) - 1)]


def block_token(count: int) -> str:
    return f"{count}b"


def block_terminal(count: int) -> str:
    return f"B{count}"


def make_grammar(plan: Plan, options: GrammarOptions | None = None) -> str:
    """Lark grammar text for ``plan`` (deterministic for (plan, options))."""
    options = options or GrammarOptions()
    n = plan.n_stages
    if not MIN_STAGES <= n <= MAX_STAGES:
        raise GrammarError(f"plan has {n} stages; grammars are generated for {MIN_STAGES}..{MAX_STAGES} stages")
    writer = _GrammarWriter(plan, options)
    return writer.text()


START_LINE = "start: architecture"


def grammar_hash(grammar: str) -> str:
    """Identity of a grammar: runs are tagged with it and refuse to resume on a different one.

    The ``start: architecture`` line (added so plain ``Lark(text, parser="lalr")`` loads a grammar)
    names no new sentence, so it is left out: runs written before it existed still resume.
    """
    lines = [line for line in grammar.splitlines(keepends=True) if line.strip() != START_LINE]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def default_architecture(plan: Plan, options: GrammarOptions | None = None, *, encoder: str = "conv",
                         n_stages: int | None = None) -> str:
    """The sentence that compiles to nnU-Net's own network for ``plan``.

    ``encoder="conv"`` gives PlainConvUNet, ``encoder="residual"`` gives ResidualEncoderUNet
    (ResEnc M blocks, one decoder block per stage).
    """
    options = options or GrammarOptions()
    k = plan.n_stages if n_stages is None else n_stages
    if k not in stage_range(plan.n_stages):
        raise GrammarError(f"n_stages={k!r} is outside the grammar's stage range "
                           f"{list(stage_range(plan.n_stages))}")
    if encoder == "conv":
        head = ["conv_encoder"]
        blocks = [plan.conv_blocks_per_stage[i] for i in range(k)]
        decoder_blocks = [plan.conv_decoder_blocks_per_stage[i] for i in range(k - 1)]
    elif encoder == "residual":
        head = ["res_encoder"]
        blocks = [residual_default_blocks(plan, i) for i in range(k)]
        decoder_blocks = [plan.residual_decoder_blocks_per_stage[i] for i in range(k - 1)]
    else:
        raise GrammarError(f"encoder must be 'conv' or 'residual', got {encoder!r}")
    tokens = ["unet", *head, NORMS[0], NONLINS[0], DROPOUTS[0]]
    if options.pooling:
        tokens.append(POOLS[0])
    if encoder == "residual":
        if options.bottleneck:
            tokens.append(RES_BLOCK_TYPES[0])
        if options.squeeze_excitation:
            tokens.append(SE_CHOICES[0])
    tokens += _join_blocks(blocks, "down")
    tokens += ["conv_decoder", NORMS[0], NONLINS[0], DROPOUTS[0]]
    for count in decoder_blocks:
        tokens += ["up", block_token(count)]
    return " ".join(tokens)


def _join_blocks(blocks: list[int], separator: str) -> list[str]:
    tokens: list[str] = []
    for i, count in enumerate(blocks):
        if i:
            tokens.append(separator)
        tokens.append(block_token(count))
    return tokens


class _GrammarWriter:
    """Emits rules and annotations for one (plan, options) pair."""

    def __init__(self, plan: Plan, options: GrammarOptions):
        self.plan = plan
        self.options = options
        self.n = plan.n_stages
        self.rules: list[str] = []
        self.annotations: list[str] = []
        self.block_counts: set[int] = set()

    def text(self) -> str:
        self._start()
        for k in stage_range(self.n):
            self._network(k)
        self._layer_choices()
        self._block_choices()
        header = [
            f"// hnas HNAS grammar (format {GRAMMAR_FORMAT_VERSION}) for {self.plan.dataset_name}: "
            f"{self.n} stages, {self.plan.dims}D",
            f"{OPTIONS_PREFIX}{json.dumps(asdict(self.options), sort_keys=True)}",
            "// A sentence: unet ENCODER DECODER; blocks per stage listed encoder top-down, decoder bottom-up.",
            "",
        ]
        terminals = self._terminals()
        return "\n".join(header + self.rules + [""] + terminals + ["", "%import common.WS",
                                                                     "%ignore WS", ""] + self.annotations) + "\n"

    def _rule(self, name: str, alternatives: list[str]) -> None:
        body = f"\n{' ' * len(name)} | ".join(alternatives)
        self.rules.append(f"{name}: {body}")

    def _default(self, rule: str, label: str) -> None:
        self.annotations.append(f"//@ default {rule} {label}")

    def _ordinal(self, rule: str, values) -> None:
        self.annotations.append(f"//@ ordinal {rule} {' '.join(str(v) for v in values)}")

    def _start(self) -> None:
        stages = list(stage_range(self.n))
        # Lark's own default start rule, so plain `Lark(text, parser="lalr")` loads the file;
        # our parsers start at `architecture`, which leaves `start` unused and out of their trees.
        self._rule("start", ["architecture"])
        self._rule("architecture", ["UNET network"])
        self._rule("network", [f"net{k}" for k in stages])
        self._ordinal("network", stages)
        self._default("network", f"net{self.n}")

    def _network(self, k: int) -> None:
        self._rule(f"net{k}", [f"encoder{k} decoder{k}"])
        self._rule(f"encoder{k}", [f"conv_encoder{k}", f"res_encoder{k}"])
        self._default(f"encoder{k}", f"conv_encoder{k}")
        head = "enc_norm enc_nonlin enc_dropout" + (" enc_pool" if self.options.pooling else "")
        conv_blocks = " DOWN ".join(f"conv_block{i}" for i in range(1, k + 1))
        self._rule(f"conv_encoder{k}", [f"CONV_ENCODER {head} {conv_blocks}"])
        res_head = head + (" res_block_type" if self.options.bottleneck else "") + (
            " enc_se" if self.options.squeeze_excitation else "")
        res_blocks = " DOWN ".join(f"res_block{i}" for i in range(1, k + 1))
        self._rule(f"res_encoder{k}", [f"RES_ENCODER {res_head} {res_blocks}"])
        decoders = [f"conv_decoder{k}"] + ([f"res_decoder{k}"] if self.options.residual_decoder else [])
        self._rule(f"decoder{k}", decoders)
        self._default(f"decoder{k}", f"conv_decoder{k}")
        dec_blocks = " ".join(f"UP dec_block{i}" for i in range(1, k))
        self._rule(f"conv_decoder{k}", [f"CONV_DECODER dec_norm dec_nonlin dec_dropout {dec_blocks}"])
        if self.options.residual_decoder:
            self._rule(f"res_decoder{k}", [f"RES_DECODER dec_norm dec_nonlin dec_dropout {dec_blocks}"])

    def _layer_choices(self) -> None:
        for side in ("enc", "dec"):
            self._categorical(f"{side}_norm", NORMS)
            self._categorical(f"{side}_nonlin", NONLINS)
            self._categorical(f"{side}_dropout", DROPOUTS)
        if self.options.pooling:
            self._categorical("enc_pool", POOLS)
        if self.options.bottleneck:
            self._categorical("res_block_type", RES_BLOCK_TYPES)
        if self.options.squeeze_excitation:
            self._categorical("enc_se", SE_CHOICES)

    def _categorical(self, rule: str, labels: tuple[str, ...]) -> None:
        self._rule(rule, [label.upper() for label in labels])
        self._default(rule, labels[0])

    def _block_choices(self) -> None:
        s_max = self.options.max_scale
        for i in range(1, self.n + 1):
            self._blocks(f"conv_block{i}", 2 * s_max, self.plan.conv_blocks_per_stage[i - 1])
            r_i = residual_default_blocks(self.plan, i - 1)
            self._blocks(f"res_block{i}", s_max * r_i, r_i)
        for i in range(1, self.n):
            self._blocks(f"dec_block{i}", 2 * s_max, self.plan.conv_decoder_blocks_per_stage[i - 1])

    def _blocks(self, rule: str, upper: int, default: int) -> None:
        counts = range(1, upper + 1)
        self.block_counts.update(counts)
        self._rule(rule, [block_terminal(c) for c in counts])
        self._ordinal(rule, counts)
        self._default(rule, block_token(min(max(default, 1), upper)))

    def _terminals(self) -> list[str]:
        words = ["unet", "conv_encoder", "res_encoder", "conv_decoder", "down", "up",
                 *NORMS, *NONLINS, *DROPOUTS]
        if self.options.residual_decoder:
            words.append("res_decoder")
        if self.options.pooling:
            words += POOLS
        if self.options.bottleneck:
            words += RES_BLOCK_TYPES
        if self.options.squeeze_excitation:
            words += SE_CHOICES
        lines = [f'{w.upper()}: "{w}"' for w in words]
        lines += [f'{block_terminal(c)}: "{block_token(c)}"' for c in sorted(self.block_counts)]
        return lines
