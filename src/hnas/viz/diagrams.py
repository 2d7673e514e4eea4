"""Pictures of derivations and networks: graphviz when `dot` exists, readable text otherwise.

Both diagrams are built from plain data (a lark Tree, a UNetSpec), so drawing never needs
torch or a built network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lark import Token, Tree

from hnas.errors import HnasError

FORMATS = ("svg", "png", "pdf")


class RenderError(HnasError):
    """A diagram cannot be written (unknown format, unwritable path)."""


def has_dot() -> bool:
    """Whether graphviz's `dot` program is available to render diagrams."""
    return shutil.which("dot") is not None


def derivation_text(tree: Tree) -> str:
    """The derivation as an indented text tree; chosen words follow their rule after '='."""
    lines: list[str] = []
    _text_lines(tree, 0, lines)
    return "\n".join(lines)


def _text_lines(node: Tree, depth: int, lines: list[str]) -> None:
    words = [c for c in node.children if isinstance(c, Token)]
    subtrees = [c for c in node.children if isinstance(c, Tree)]
    label = node.data if isinstance(node.data, str) else node.data.value
    if words and not subtrees and len(words) == 1:
        lines.append(f"{'  ' * depth}{label} = {words[0]}")
        return
    lines.append(f"{'  ' * depth}{label}")
    for child in node.children:
        if isinstance(child, Tree):
            _text_lines(child, depth + 1, lines)
        else:
            lines.append(f"{'  ' * (depth + 1)}'{child}'")


def derivation_graph(tree: Tree, *, title: str | None = None):
    """A graphviz Digraph of the derivation: rules as boxes, chosen words as ellipses."""
    import graphviz

    graph = graphviz.Digraph("derivation", graph_attr={"rankdir": "TB", "fontsize": "10"},
                             node_attr={"fontname": "Helvetica", "fontsize": "10"})
    if title:
        graph.attr(label=title, labelloc="t")
    counter = iter(range(1_000_000))

    def add(node) -> str:
        name = f"n{next(counter)}"
        if isinstance(node, Token):
            graph.node(name, str(node), shape="ellipse", style="filled", fillcolor="#e8f1fb")
            return name
        graph.node(name, str(node.data), shape="box", style="rounded")
        for child in node.children:
            graph.edge(name, add(child))
        return name

    add(tree)
    return graph


def render(graph, path: str | Path, *, text_fallback: str) -> Path:
    """Write ``graph`` to ``path`` (format from the suffix). Without `dot`, writes the DOT
    source and a text rendering next to it and returns the text file's path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise RenderError(f"cannot render to {str(path)!r}: suffix {path.suffix!r}; expected one of "
                          f"{', '.join('.' + f for f in FORMATS)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RenderError(f"cannot create folder for {str(path)!r}: {exc}") from exc
    if not has_dot():
        path.with_suffix(".gv").write_text(graph.source)
        fallback = path.with_suffix(".txt")
        fallback.write_text(text_fallback + "\n")
        return fallback
    graph.render(outfile=str(path), format=fmt, cleanup=True)
    return path
