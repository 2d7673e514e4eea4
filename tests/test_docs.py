"""The documentation's examples run, and every CLI subcommand is documented.

Every ```python block of README.md and docs/*.md runs here, a page's blocks as one script (later
blocks use earlier names). The `hnas ...` lines of their ```bash fences run in
tests/docs/test_commands.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from docs.examples import page_name, python_blocks, python_pages
from docs.sandbox import HIPPOCAMPUS, hippocampus_source, make_small
from hnas.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = python_pages()  # README.md and every docs/*.md page with a ```python block
EXECUTED = ("grammar.md", "search-spaces.md", "python-api.md")  # pages whose examples have always run here


def test_every_page_with_python_examples_runs():
    names = [page_name(page) for page in PAGES]
    assert "README.md" in names and all(f"docs/{name}" in names for name in EXECUTED), names


@pytest.fixture
def one_torch_thread():
    """torch on 1 thread: on 2 cores shared with other tests, 2 OpenMP threads wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_python_examples_run(page, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # files an example writes with a relative path land here
    blocks = python_blocks(page)
    if any(HIPPOCAMPUS in block.code for block in blocks):
        # load_dataset("Dataset004_Hippocampus") finds it under $nnUNet_raw, as nnU-Net does: 10 real cases cut
        # small (tests/docs/sandbox.py), or synthetic ones without the real data
        make_small(tmp_path / "nnUNet_raw", hippocampus_source())
        monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    namespace = {"__name__": "__docs__"}
    for block in blocks:  # one script: later blocks use earlier names
        # padded so that a traceback names the page's own line numbers
        exec(compile("\n" * block.line + block.code, str(page), "exec"), namespace)


def test_every_subcommand_is_documented():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = subparsers.choices
    cli = (DOCS / "cli.md").read_text()
    missing = [name for name in commands if f"## hnas {name}\n" not in cli]
    assert not missing, f"docs/cli.md lacks a section for {missing}"
