"""Golden values that a refactoring must not change (issue 16): written before the application
layer moved, checked after every move.

* the hash of every search space (stored in search.sqlite: part of the resume contract),
* the preprocessing cache key and the fingerprint cache key of a fixed dataset,
* the text `hnas plan` and a search print for default plans (plan and scale presets),
* every `--help` text.

Regenerate (only for an intended change, and say so in the commit) with
``HNAS_UPDATE_GOLDEN=1 pytest tests/test_golden_behaviour.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import isotropic_plan
from reliability.test_cache_key import nii_dataset

GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
SPACE_NAMES = ("hpo", "hpo+nas", "hpo+hnas", "hnas", "pipeline", "hpo+pipeline")
CONFIDENCES = ("low", "medium", "high")
ANISOTROPIC = {"spacing": (3.0, 1.0, 1.0), "patch_size": (24, 160, 128), "median_shape": (40, 160, 128),
               "strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)),
               "kernel_sizes": ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))}


def _space_hashes() -> dict[str, str]:
    from hnas.grammar import make_grammar
    from hnas.pipeline.spaces import make_space
    from hnas.sampling import GrammarArchitecture

    grammar = make_grammar(isotropic_plan(5))
    hashes = {}
    for name in SPACE_NAMES:
        for confidence in CONFIDENCES:
            architecture = GrammarArchitecture(grammar, confidence) if name in ("hpo+hnas", "hnas") else None
            hashes[f"{name}/{confidence}"] = make_space(name, architecture, confidence=confidence).hash
    return hashes


def _cache_keys(root: Path) -> dict[str, str]:
    from hnas.data import load_dataset
    from hnas.data.cache import fingerprint_key
    from hnas.train.preprocessing import ChannelNormalization, preprocessing_key

    dataset = load_dataset(nii_dataset(root / "Dataset001_Golden"))
    plan = isotropic_plan(3, patch=16, base=4, top=16)
    return {"preprocessing": preprocessing_key(dataset, plan, (ChannelNormalization("zscore"),)),
            "preprocessing_2d": preprocessing_key(dataset, isotropic_plan(3, dims=2, patch=16, base=4, top=16),
                                                  (ChannelNormalization("zscore"),)),
            "fingerprint": fingerprint_key(dataset)}


def _descriptions() -> dict[str, str]:
    from hnas.pipeline.plan import describe_plan
    from hnas.planning import Plan
    from hnas.train.presets import preset

    plans = {"isotropic": isotropic_plan(5), "anisotropic": Plan(**{**isotropic_plan(5).to_dict(), **ANISOTROPIC})}
    texts = {f"plan/{name}": describe_plan(plan) for name, plan in plans.items()}
    for name in ("cpu", "nnunet"):
        for plan_name, plan in plans.items():
            texts[f"preset/{name}/{plan_name}"] = preset(name).describe(plan)
    return texts


def _help_texts() -> dict[str, str]:
    from hnas.cli import build_parser

    parser = build_parser()
    texts = {"hnas": parser.format_help()}
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in commands.choices.items():
        texts[name] = sub.format_help()
    return texts


def current(tmp_path: Path) -> dict:
    return {"space_hash": _space_hashes(), "cache_key": _cache_keys(tmp_path), "describe": _descriptions(),
            "help": _help_texts()}


@pytest.fixture
def golden(tmp_path, monkeypatch) -> tuple[dict, dict]:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal's width
    now = current(tmp_path)
    if os.environ.get("HNAS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    return now, json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("section", ["space_hash", "cache_key", "describe", "help"])
def test_behaviour_matches_the_golden_values(golden, section):
    now, stored = golden
    assert now[section] == stored[section]
