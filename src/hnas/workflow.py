"""The user-level pipeline shared by the CLI, the demo and the notebooks.

dataset -> fingerprint -> plan -> grammar -> samples -> derivation -> spec -> cost/diagram.
Everything here is plain glue over the packages; no logic of its own worth testing twice.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from hnas.errors import HnasError, PlanError
from hnas.grammar import GrammarOptions, default_architecture, make_grammar
from hnas.grammar.generator import grammar_options
from hnas.grammar.plan import Plan

SYNTHETIC_FINGERPRINT_STEM = "hnas_fingerprint"


def cache_dir() -> Path:
    """Where hnas keeps generated data: $HNAS_CACHE, else ~/.cache/hnas."""
    return Path(os.environ.get("HNAS_CACHE", Path.home() / ".cache" / "hnas"))


def builtin_dataset() -> Path:
    """The built-in synthetic dataset (generated once, then reused)."""
    from hnas.data import ensure_synthetic_dataset

    return ensure_synthetic_dataset(cache_dir() / "synthetic")


def fingerprint_of(dataset: Path):
    """Validate a dataset folder and compute its fingerprint (cached for data under :func:`cache_dir`).

    The cache file is named by the data's content digest, so editing a case of the built-in data
    (even a label in place) computes a new fingerprint instead of reusing the old one.
    """
    from hnas.data import compute_fingerprint, load_dataset, load_fingerprint, save_fingerprint, validate_dataset
    from hnas.data.dataset import content_digest

    loaded = load_dataset(dataset)
    cached = None
    if dataset.resolve().is_relative_to(cache_dir().resolve()):
        cached = dataset / f"{SYNTHETIC_FINGERPRINT_STEM}_{content_digest(loaded)[:16]}.json"
        if cached.is_file():
            return load_fingerprint(cached)
    validate_dataset(loaded)
    fingerprint = compute_fingerprint(loaded, workers=min(4, os.cpu_count() or 1))
    if cached is not None:
        save_fingerprint(fingerprint, cached)
    return fingerprint


def is_nnunet_plans(path: Path) -> bool:
    try:
        return path.is_file() and "configurations" in json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def plan_for(source: Path | None, *, max_stages: int | None = None, dims: int = 3,
             planner: str = "default") -> Plan:
    """nnU-Net's plan for a dataset folder or an nnUNetPlans.json (default: built-in data).

    ``planner`` picks nnU-Net's planner for a dataset ("default" or "resenc_m"); a plans file
    already holds its planner's result, so asking it for another planner is an error.
    """
    from hnas.grammar.planner import make_plan, plan_from_nnunet, planner_rules

    rules = planner_rules(planner)
    if source is not None and source.is_file():
        if not is_nnunet_plans(source):
            raise PlanError(f"{str(source)!r} is a file but not nnU-Net's nnUNetPlans.json; expected a dataset "
                            "folder or a plans file with a 'configurations' entry")
        plan = plan_from_nnunet(source, configuration="3d_fullres" if dims == 3 else "2d")
        if rules.name != "default" and plan.planner != rules.name:
            raise PlanError(f"planner {planner!r} asked for, but {str(source)!r} holds plans of planner "
                            f"{plan.planner!r}; give the dataset folder to plan it with {planner!r}")
        return with_stages(plan, max_stages)
    dataset = builtin_dataset() if source is None else source
    return make_plan(fingerprint_of(dataset), max_stages, dims=dims, planner=rules.name)


def resolve_plan(dataset: Path | None, plan_file: Path | None, max_stages: int | None) -> Plan:
    """The plan a command works on: from --plan, from --dataset, or the built-in data."""
    if plan_file is None:
        return plan_for(dataset, max_stages=max_stages)
    if is_nnunet_plans(plan_file):
        return plan_for(plan_file, max_stages=max_stages)
    return with_stages(Plan.load(plan_file), max_stages)


def with_stages(plan: Plan, max_stages: int | None) -> Plan:
    """A stored plan cut to ``max_stages`` (a stored plan cannot grow: re-plan the dataset)."""
    if max_stages is None or max_stages == plan.n_stages:
        return plan
    if max_stages > plan.n_stages:
        raise PlanError(f"--max-stages {max_stages} exceeds the {plan.n_stages} stages of the stored plan; "
                        "plan the dataset itself (--dataset) to let the topology grow")
    return plan.truncated(max_stages)


def grammar_for(plan: Plan, *, extended: bool = False) -> str:
    """The plan's grammar; the plan is checked first by compiling nnU-Net's default network on it,
    so a broken plan file fails in `hnas grammar` exactly as it would in `hnas show`."""
    check_plan(plan)
    return make_grammar(plan, GrammarOptions.extended() if extended else GrammarOptions())


def check_plan(plan: Plan) -> None:
    """Raise the compiler's error (naming the field) when no network can be built on ``plan``."""
    from hnas.cfgunet import compile_architecture, cost

    grammar = make_grammar(plan, GrammarOptions())
    cost(compile_architecture(grammar, default_architecture(plan, GrammarOptions()), plan), plan.patch_size)


class PriorWarning(UserWarning):
    """A prior was asked for but the grammar cannot centre it (sampling is uniform there)."""


def read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise HnasError(f"{what} file {str(path)!r} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HnasError(f"{what} file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                        f"offset {exc.start}); expected a text file from `hnas {what} -o`") from None
    except OSError as exc:
        raise HnasError(f"{what} file {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def write_text(path: Path, text: str, what: str) -> Path:
    """Write an output file, creating its folder; an unwritable path is an error naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HnasError(f"cannot write the {what} to {str(path)!r}: {exc.strerror or exc}; expected a writable "
                        "file path") from None
    return path


def sample(grammar: str, n: int, *, seed: int = 0, uniform: bool = False, confidence: str = "medium") -> list[str]:
    """``n`` sentences, uniform per production or from the prior around nnU-Net's defaults.

    The prior's centres are the grammar's ``//@ default`` annotations; a grammar without them
    (hand-written, or stripped) can only be sampled uniformly, which is said, not done silently.
    """
    from hnas.sampling import Prior, PriorSampler, UniformSampler

    rng = np.random.default_rng(seed)
    if uniform:
        sampler = UniformSampler(grammar)
    else:
        prior = Prior.from_grammar(grammar, confidence)
        _warn_uncentred(prior, confidence)
        sampler = PriorSampler(prior)
    return [sampler.sample_string(rng) for _ in range(n)]


def _warn_uncentred(prior, confidence: str) -> None:
    """Generated grammars annotate the choices nnU-Net decides (others stay uniform by design);
    a grammar with no annotation at all gives a uniform prior whatever the confidence."""
    if prior.structure.choices and not prior.centres:
        warnings.warn(f"the grammar has no '//@ default' annotations, so the {confidence!r} prior is uniform (like "
                      "--uniform); generate the grammar with `hnas grammar` to sample around nnU-Net's defaults",
                      PriorWarning, stacklevel=3)


def resolve_architecture(plan: Plan, grammar: str, text: str) -> str:
    """'default' means nnU-Net's own network for the plan."""
    return default_architecture(plan, grammar_options(grammar)) if text.strip() == "default" else text


def describe_plan(plan: Plan) -> str:
    rows = [
        ("dataset", plan.dataset_name), ("dims", f"{plan.dims}D"), ("planner", plan.planner),
        ("patch size", "x".join(map(str, plan.patch_size))),
        ("spacing", "x".join(f"{s:g}" for s in plan.spacing)),
        ("median shape", "x".join(map(str, plan.median_shape))),
        ("stages", str(plan.n_stages)), ("batch size", str(plan.batch_size)),
        ("strides", " ".join("x".join(map(str, s)) for s in plan.strides)),
        ("kernels", " ".join("x".join(map(str, k)) for k in plan.kernel_sizes)),
        ("features", " ".join(map(str, plan.features_per_stage))),
        ("channels -> classes", f"{plan.n_input_channels} -> {plan.n_classes}"),
        ("normalization", ", ".join(plan.normalization)),
    ]
    return _table(rows)


def _table(rows) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def describe_architecture(grammar: str, plan: Plan, text: str, *, dropout_rate: float = 0.2) -> str:
    """What `hnas show` prints: derivation tree, network table, parameters and FLOPs."""
    from hnas.cfgunet import cost, spec_from_tree
    from hnas.grammar import parse, unparse
    from hnas.viz.diagrams import derivation_text, network_text

    tree = parse(grammar, resolve_architecture(plan, grammar, text))
    spec = spec_from_tree(tree, plan, dropout_rate=dropout_rate)
    measured = cost(spec, plan.patch_size)
    summary = _table([
        ("architecture", unparse(tree)),
        ("stages", str(spec.n_stages)),
        ("parameters", f"{measured.parameters:,}"),
        ("FLOPs / patch", f"{measured.flops / 1e9:,.2f} GFLOP (forward, patch {'x'.join(map(str, plan.patch_size))})"),
        ("activations", f"{measured.activation_bytes / 2**20:,.1f} MiB (forward, float32, batch 1)"),
    ])
    return "\n\n".join([derivation_text(tree), network_text(spec, plan.patch_size), summary])


def render_architecture(grammar: str, plan: Plan, text: str, path: Path) -> list[Path]:
    """Draw the derivation tree to ``path`` and the network to ``<stem>_network<suffix>``."""
    from hnas.cfgunet import spec_from_tree
    from hnas.grammar import parse
    from hnas.viz.diagrams import derivation_graph, derivation_text, network_graph, network_text, render

    tree = parse(grammar, resolve_architecture(plan, grammar, text))
    spec = spec_from_tree(tree, plan)
    network_path = path.with_name(f"{path.stem}_network{path.suffix}")
    return [
        render(derivation_graph(tree), path, text_fallback=derivation_text(tree)),
        render(network_graph(spec, plan.patch_size), network_path, text_fallback=network_text(spec, plan.patch_size)),
    ]
