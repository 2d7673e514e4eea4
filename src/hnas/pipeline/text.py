"""Users' text files (plans, grammars) read and written with errors that name the file, and the
two-column tables the inspection commands print."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hnas.errors import HnasError


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


def key_value_table(rows: Sequence[tuple[str, str]]) -> str:
    """``key  value`` lines, the keys padded to one width."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
