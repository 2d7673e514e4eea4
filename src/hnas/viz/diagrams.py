"""Pictures of derivations and networks: graphviz when `dot` exists, readable text otherwise.

Both diagrams are built from plain data (a lark Tree, a UNetSpec), so drawing never needs
torch or a built network.

A derivation has one node per rule and word, and the per-stage rules sit side by side: the full
tree of a 6-stage U-Net is about 2,500 pt wide. The compact tree (:func:`compact_derivation`)
is what pages show: chains of single-child rules become one box, a rule's one-word choices
share one box, and sibling rules numbered one per stage (``conv_block1`` .. ``conv_block6``)
collapse into one box listing the stages' blocks. :func:`render_derivation` writes both.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
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


# ------------------------------------------------------------------- compact derivation tree

_NUMBERED = re.compile(r"(.*?\D)(\d+)")


@dataclass(frozen=True)
class StageRun:
    """Sibling rules numbered one per stage (``conv_block1`` .. ``conv_block6``), drawn as one box.

    ``groups`` are the runs of consecutive stages that chose the same words: (first, last, words).
    """

    rule: str  # the shared prefix, "conv_block"
    first: int
    last: int
    groups: tuple[tuple[int, int, str], ...]

    @property
    def name(self) -> str:
        return f"{self.rule}{self.first}-{self.last}"

    @property
    def n_stages(self) -> int:
        return self.last - self.first + 1

    def lines(self) -> list[str]:
        """``conv_block1-6 = 2b`` when all stages agree, else one line per run of equal stages."""
        return [f"{self.rule}{a}{'' if a == b else f'-{b}'} = {words}" for a, b, words in self.groups]


@dataclass(frozen=True)
class CompactNode:
    """One box of the compact tree: a rule (or chain of rules), a group of choices, or a StageRun."""

    kind: str  # "rule", "choices" or "stages"
    lines: tuple[str, ...]
    children: tuple[CompactNode, ...] = ()
    stage_run: StageRun | None = None

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _rule_name(node: Tree) -> str:
    return node.data if isinstance(node.data, str) else node.data.value


def _is_choice(node) -> bool:
    """A rule that derived exactly one word (``enc_norm = instance_norm``)."""
    return isinstance(node, Tree) and len(node.children) == 1 and isinstance(node.children[0], Token)


def _words(node: Tree) -> str:
    return " ".join(str(token) for token in node.scan_values(lambda v: isinstance(v, Token)))


def _stage_number(node) -> tuple[str, int] | None:
    match = _NUMBERED.fullmatch(_rule_name(node)) if isinstance(node, Tree) else None
    return (match.group(1), int(match.group(2))) if match else None


def _stage_runs(subtrees: list[Tree]) -> list[list[Tree]]:
    """Split sibling subtrees into runs: consecutive rules ``prefix<k>``, ``prefix<k+1>``, ... together."""
    runs: list[list[Tree]] = []
    for node in subtrees:
        key = _stage_number(node)
        previous = _stage_number(runs[-1][-1]) if runs else None
        if key and previous and key[0] == previous[0] and key[1] == previous[1] + 1:
            runs[-1].append(node)
        else:
            runs.append([node])
    return runs


def _stage_run(nodes: list[Tree]) -> StageRun:
    """The StageRun of numbered sibling rules, grouping consecutive stages with the same words."""
    rule, first = _stage_number(nodes[0])
    groups: list[tuple[int, int, str]] = []
    for offset, node in enumerate(nodes):
        number, words = first + offset, _words(node)
        if groups and groups[-1][2] == words:
            groups[-1] = (groups[-1][0], number, words)
        else:
            groups.append((number, number, words))
    return StageRun(rule, first, first + len(nodes) - 1, tuple(groups))


def _fixed_words(tokens: list[Token]) -> str:
    """``'conv_encoder', 'down' x5``: the words a rule itself writes, repeats counted."""
    return ", ".join(f"'{word}'" + (f" x{count}" if count > 1 else "")
                     for word, count in Counter(str(t) for t in tokens).items())


def compact_derivation(tree: Tree) -> CompactNode:
    """The derivation with chains merged, choices grouped and per-stage rules collapsed (see module doc)."""
    chain = [_rule_name(tree)]
    while len(tree.children) == 1 and isinstance(tree.children[0], Tree) and not _is_choice(tree.children[0]):
        tree = tree.children[0]
        chain.append(_rule_name(tree))
    if _is_choice(tree):
        return CompactNode("choices", (f"{' -> '.join(chain)} = {tree.children[0]}",))
    tokens = [c for c in tree.children if isinstance(c, Token)]
    lines = (" -> ".join(chain),) + ((_fixed_words(tokens),) if tokens else ())
    return CompactNode("rule", lines, tuple(_compact_children([c for c in tree.children if isinstance(c, Tree)])))


def _compact_children(subtrees: list[Tree]) -> list[CompactNode]:
    """Runs of numbered rules become StageRun boxes; neighbouring choices share one box."""
    children: list[CompactNode] = []
    for run in _stage_runs(subtrees):
        if len(run) > 1:
            collapsed = _stage_run(run)
            children.append(CompactNode("stages", (f"{collapsed.n_stages} stages ({collapsed.name})",
                                                   *collapsed.lines()), stage_run=collapsed))
        elif _is_choice(run[0]) and children and children[-1].kind == "choices":
            children[-1] = CompactNode("choices", children[-1].lines + compact_derivation(run[0]).lines)
        else:
            children.append(compact_derivation(run[0]))
    return children


def collapsed_stages(tree: Tree) -> list[StageRun]:
    """The per-stage rules the compact tree collapsed, in drawing order."""
    return [node.stage_run for node in compact_derivation(tree).walk() if node.stage_run is not None]


def derivation_size(tree: Tree) -> int:
    """Nodes of the full derivation picture: one per rule and one per word."""
    return len(list(tree.iter_subtrees())) + len(list(tree.scan_values(lambda v: isinstance(v, Token))))


_COMPACT_STYLE = {"rule": {"shape": "box", "style": "rounded"},
                  "choices": {"shape": "box", "style": "filled", "fillcolor": "#e8f1fb"},
                  "stages": {"shape": "box", "style": "filled", "fillcolor": "#fdf0dc"}}


def compact_derivation_graph(tree: Tree, *, title: str | None = None):
    """A graphviz Digraph of :func:`compact_derivation`: readable at page width (~800 pt) for 6 stages."""
    import graphviz

    graph = graphviz.Digraph("derivation", graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "10",
                                                       "nodesep": "0.25", "ranksep": "0.35"},
                             node_attr={"fontname": "Helvetica", "fontsize": "10"})
    if title:
        graph.attr(label=title, labelloc="t")
    counter = iter(range(1_000_000))

    def add(node: CompactNode) -> str:
        name = f"n{next(counter)}"
        label = "".join(line + "\\l" for line in node.lines)  # graphviz's \l ends a left-justified line
        graph.node(name, label, **_COMPACT_STYLE[node.kind])
        for child in node.children:
            graph.edge(name, add(child))
        return name

    add(compact_derivation(tree))
    return graph


@dataclass(frozen=True)
class DerivationPictures:
    """What :func:`render_derivation` wrote: the compact picture and the full tree beside it."""

    compact: Path  # the picture, or the text tree when `dot` is missing
    full: Path | None  # the uncollapsed picture; None without `dot` (the text tree is complete)
    stage_runs: tuple[StageRun, ...]
    full_nodes: int


def full_derivation_path(path: str | Path) -> Path:
    """Where the full tree goes beside the compact one: ``tree.svg`` -> ``tree_full.svg``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_full{path.suffix}")


def render_derivation(tree: Tree, path: str | Path, *, title: str | None = None) -> DerivationPictures:
    """Draw the compact tree to ``path`` and the full one to :func:`full_derivation_path`.

    Without `dot` only the text tree is written (at ``path`` with suffix .txt): being one line
    per node, it is readable at any size and already complete.
    """
    text = derivation_text(tree)
    compact = render(compact_derivation_graph(tree, title=title), path, text_fallback=text)
    full = None
    if compact.suffix != ".txt":
        full = render(derivation_graph(tree, title=title), full_derivation_path(path), text_fallback=text)
    return DerivationPictures(compact, full, tuple(collapsed_stages(tree)), derivation_size(tree))


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
