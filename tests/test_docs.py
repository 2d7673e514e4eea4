"""The documentation's examples run, and every CLI subcommand is documented."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import pytest

from hnas.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXECUTED = ("grammar.md", "search-spaces.md", "python-api.md")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


@pytest.mark.parametrize("name", EXECUTED)
def test_python_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    blocks = python_blocks(DOCS / name)
    assert blocks, f"{name} has no python example"
    namespace = {"__name__": "__docs__"}
    for block in blocks:  # one script: later blocks use earlier names
        exec(compile(block, str(DOCS / name), "exec"), namespace)


def test_every_subcommand_is_documented():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = subparsers.choices
    cli = (DOCS / "cli.md").read_text()
    missing = [name for name in commands if f"## hnas {name}\n" not in cli]
    assert not missing, f"docs/cli.md lacks a section for {missing}"
