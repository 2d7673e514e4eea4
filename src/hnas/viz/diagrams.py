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


def _fmt(values) -> str:
    return "x".join(str(v) for v in values)


def stage_sizes(spec, patch_size) -> list[tuple[int, ...]]:
    """Feature-map size at each encoder stage for an input of ``patch_size``."""
    sizes, current = [], tuple(patch_size)
    for stride in spec.strides:
        current = tuple(max(1, c // s) for c, s in zip(current, stride))
        sizes.append(current)
    return sizes


def network_rows(spec, patch_size=None) -> list[tuple[str, ...]]:
    """One row per network stage: side, stage, blocks, features, stride, kernel, feature-map size."""
    sizes = stage_sizes(spec, patch_size) if patch_size else [None] * spec.n_stages
    enc, dec = spec.encoder, spec.decoder
    enc_block = "conv" if enc.kind == "conv" else f"res-{enc.block}{'+se' if enc.squeeze_excitation else ''}"
    rows = []
    for i in range(spec.n_stages):
        rows.append(("encoder", str(i), f"{enc.blocks_per_stage[i]}x {enc_block}", str(spec.features_per_stage[i]),
                     _fmt(spec.strides[i]), _fmt(spec.kernel_sizes[i]), _fmt(sizes[i]) if sizes[i] else "-"))
    for j, blocks in enumerate(dec.blocks_per_stage):
        stage = spec.n_stages - 2 - j
        rows.append(("decoder", str(stage), f"{blocks}x {dec.kind}", str(spec.features_per_stage[stage]),
                     "up " + _fmt(spec.strides[stage + 1]), _fmt(spec.kernel_sizes[stage]),
                     _fmt(sizes[stage]) if sizes[stage] else "-"))
    return rows


def network_text(spec, patch_size=None) -> str:
    """The compiled network as a fixed-width table plus its layer choices."""
    header = ("side", "stage", "blocks", "features", "stride", "kernel", "map size")
    rows = [header] + network_rows(spec, patch_size)
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    enc, dec = spec.encoder, spec.decoder
    lines.append("")
    lines.append(f"encoder: {enc.kind}, {enc.norm} norm, {enc.nonlin}, "
                 f"{'dropout ' + str(spec.dropout_rate) if enc.dropout else 'no dropout'}, {enc.pool} downsampling")
    lines.append(f"decoder: {dec.kind}, {dec.norm} norm, {dec.nonlin}, "
                 f"{'dropout ' + str(spec.dropout_rate) if dec.dropout else 'no dropout'}, "
                 f"deep supervision {'on' if spec.deep_supervision else 'off'}")
    return "\n".join(lines)


def network_graph(spec, patch_size=None, *, title: str | None = None):
    """A graphviz U-shaped diagram: encoder column, decoder column, skips and outputs."""
    import graphviz

    graph = graphviz.Digraph("network", graph_attr={"rankdir": "TB", "nodesep": "0.6", "fontsize": "10"},
                             node_attr={"fontname": "Helvetica", "fontsize": "10", "shape": "box",
                                        "style": "rounded,filled"},
                             edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    if title:
        graph.attr(label=title, labelloc="t")
    rows = network_rows(spec, patch_size)
    graph.node("input", f"input\\n{spec.input_channels} ch" + (f"\\n{_fmt(patch_size)}" if patch_size else ""),
               shape="ellipse", fillcolor="white")
    previous = "input"
    for side, stage, blocks, features, stride, kernel, size in rows:
        name = f"{side[0]}{stage}"
        color = "#dbe9f6" if side == "encoder" else "#fde2c8"
        graph.node(name, f"{side} {stage}\\n{blocks}\\n{features} ch, k {kernel}\\n{stride}"
                   + ("" if size == "-" else f"\\n{size}"), fillcolor=color)
        graph.edge(previous, name)
        if side == "decoder":
            # Same rank as the encoder stage it merges with: the picture becomes a U.
            with graph.subgraph() as level:
                level.attr(rank="same")
                level.node(f"e{stage}")
                level.node(name)
            graph.edge(f"e{stage}", name, style="dashed", label="skip")
            if spec.deep_supervision or stage == "0":
                out = f"out{stage}"
                graph.node(out, f"seg {stage}\\n{spec.n_classes} classes", shape="ellipse", fillcolor="white")
                graph.edge(name, out)
        previous = name
    return graph
