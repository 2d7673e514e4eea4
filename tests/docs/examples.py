"""The documentation's examples, as data: every shell line of a ```bash fence and every ```python block.

Pages are README.md and docs/*.md. A bash fence's lines are joined where they end in a backslash,
a trailing `# comment` is split off (kept: some comments cite figures), and each line is either an
`hnas ...` command (executed or parsed by tests/docs/test_commands.py) or one of the commands
listed in NOT_RUN with the reason no test runs it. A line that is neither fails
test_every_shell_line_is_run_or_listed, so a new example cannot slip by untested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def pages() -> list[Path]:
    """README.md, then docs/*.md in name order."""
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def page_name(page: Path) -> str:
    """README.md, docs/cli.md: the page's path in the repository (a page elsewhere: its file name)."""
    return page.relative_to(REPO).as_posix() if page.is_relative_to(REPO) else page.name


#: Shell lines of bash fences that no test runs, each with its reason (matched as a prefix of the line,
#: comment removed). Everything else in a bash fence must be an `hnas` command.
NOT_RUN = {
    "make demo": "the full demo: 5-6 minutes of training on 2 cores (tests/test_demo.py covers its pieces)",
    "make test": "the whole test suite",
    "dask scheduler": "starts a long-running Dask scheduler (a server); `hnas search --scheduler` is parsed only",
    "CUDA_VISIBLE_DEVICES=0 dask worker": "starts a long-running Dask worker that connects to a scheduler",
    "nnUNetv2_train": "nnU-Net's own training: hours on a GPU, on data nnU-Net preprocessed (nnunetv2 is installed "
                      "without its dependencies); tests/cfgunet/test_nnunet_export.py builds the exported network "
                      "in nnU-Net's factory",
    "pip install": "installs packages (the Makefile installs these; tests never touch the environment)",
}


@dataclass(frozen=True)
class ShellLine:
    """One logical line of a bash fence: backslash continuations joined, the comment split off."""

    page: str  # README.md, docs/cli.md
    line: int  # 1-based line of its first physical line
    text: str  # the command, comment removed, continuations joined with single spaces
    comment: str  # the trailing comment without '#', '' if none

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_hnas(self) -> bool:
        return self.text.startswith("hnas ")

    def not_run_reason(self) -> str | None:
        return next((why for prefix, why in NOT_RUN.items() if self.text.startswith(prefix)), None)


@dataclass(frozen=True)
class PythonBlock:
    page: str
    line: int  # 1-based line of the ```python fence
    code: str


FENCE = re.compile(r"^```\s*([\w+-]*)")  # ```bash, ```python, ``` (an info string may follow)


def fences(page: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line of the opening fence, lines inside) of every fenced block of a page."""
    found, language, start, body = [], None, 0, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        match = FENCE.match(line.strip()) if line.lstrip().startswith("```") else None
        if language is None and match:
            language, start, body = match.group(1), number, []
        elif language is not None and line.strip() == "```":
            found.append((language, start, body))
            language = None
        elif language is not None:
            body.append(line)
    assert language is None, f"{page_name(page)}:{start}: a fence is never closed"
    return found


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment) of a shell line: a '#' outside quotes that starts a word begins the comment."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ""


def shell_lines(page: Path) -> list[ShellLine]:
    """Every logical line of the page's ```bash fences."""
    lines = []
    for language, start, body in fences(page):
        if language != "bash":
            continue
        pending, first = "", 0
        for offset, raw in enumerate(body, 1):
            number = start + offset
            if not pending:
                first = number
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1].strip() + " "
                continue
            text, comment = split_comment(pending + raw.strip())
            pending = ""
            if text:
                lines.append(ShellLine(page_name(page), first, " ".join(text.split()) if '"' not in text
                                       and "'" not in text else text, comment))
        assert not pending, f"{page_name(page)}:{first}: a backslash continues past the end of the fence"
    return lines


def hnas_commands() -> list[ShellLine]:
    """Every `hnas ...` line of every page's bash fences, in page order."""
    return [line for page in pages() for line in shell_lines(page) if line.is_hnas]


def other_shell_lines() -> list[ShellLine]:
    return [line for page in pages() for line in shell_lines(page) if not line.is_hnas]


def hnas_lines_outside_bash() -> list[str]:
    """`file:line` of `hnas ...` lines in fences that are not bash (sh, shell, console, ...): they would escape
    the tests. (Plain ``` fences hold grammar text and architecture strings, never commands.)"""
    found = []
    for page in pages():
        for language, start, body in fences(page):
            if language in ("bash", "python"):
                continue
            found += [f"{page_name(page)}:{start + i}" for i, line in enumerate(body, 1)
                      if re.match(r"\s*(\$ )?hnas ", line)]
    return found


def python_blocks(page: Path) -> list[PythonBlock]:
    return [PythonBlock(page_name(page), start, "\n".join(body) + "\n")
            for language, start, body in fences(page) if language == "python"]


def python_pages() -> list[Path]:
    """Pages with at least one ```python block."""
    return [page for page in pages() if python_blocks(page)]
