"""When a graph is too large for Graphviz: the tapped layers only, joined where data flows between them.

Graphviz's layout time grows much faster than the node count (here: 1,000 nodes 0.4 s, 3,000 nodes
3 s, 6,000 nodes 61 s), so drawing a 20,000-node graph would hit any time limit. Past a node
budget, :func:`overview_dot` draws each tapped layer as a box, with an edge from every tapped
layer (or graph input) to each nearest tapped layer (or graph output) downstream of it, and a
title saying how many nodes were left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import plural
from ..errors import OnnxvizError

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["overview_dot", "MAX_DRAWN_NODES"]

MAX_DRAWN_NODES = 2500  # about 2-3 s of layout on this project's machines


def overview_dot(model: "Model", quote, max_nodes: int = MAX_DRAWN_NODES) -> str:
    """DOT source of the tapped layers only (``quote``: the label quoting of :mod:`.draw`)."""
    graph = model.proto.graph
    taps = list(model.taps)
    if len(taps) + len(model.inputs) + len(model.plan.model_outputs) > max_nodes:
        raise OnnxvizError(
            f"the graph is too large to draw: {plural(len(graph.node), 'node')} and {plural(len(taps), 'tapped layer')}, "
            f"more than the {max_nodes:,} Graphviz lays out in reasonable time; write DOT (-o graph.dot) instead"
        )
    tap_of_tensor = {t.tensor: f"t{k}" for k, t in enumerate(taps)}
    origin: dict[str, frozenset[str]] = {}  # tensor -> nearest tapped layers / inputs upstream
    for k, spec in enumerate(model.inputs):
        origin[spec.name] = frozenset({f"in{k}"})
    empty: frozenset[str] = frozenset()
    for node in graph.node:  # graph order is topological in a valid model
        sources = empty.union(*(origin.get(name, empty) for name in node.input)) if node.input else empty
        for out in node.output:
            origin[out] = frozenset({tap_of_tensor[out]}) if out in tap_of_tensor else sources
    title = f"tapped layers only ({len(taps):,} of {plural(len(graph.node), 'node')})"
    lines = [
        "digraph model {",
        f"  labelloc=t; label={quote(title)};",
        '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#ffd9d0", color="#c0392b", fontname="Helvetica", fontsize=10];',
        '  edge [color="#777777"];',
    ]
    for k, spec in enumerate(model.inputs):
        lines.append(f'  in{k} [label={quote("input " + spec.name)}, shape=ellipse, fillcolor="#dde8f6", color="#777777"];')
    edges: set[tuple[str, str]] = set()
    producer = {out: n for n in graph.node for out in n.output}
    for k, tap in enumerate(taps):
        lines.append(f"  t{k} [label={quote(tap.op, tap.label)}];")
        node = producer.get(tap.tensor)
        # the tap's own upstream: what fed the node that produced it (its chain's start when tapped at the activation)
        upstream = empty
        if node is not None:
            upstream = empty.union(*(origin.get(name, empty) for name in node.input))
        for src in sorted(upstream - {f"t{k}"}):
            edges.add((src, f"t{k}"))
    for k, name in enumerate(model.plan.model_outputs):
        lines.append(f'  out{k} [label={quote("output " + name)}, shape=ellipse, fillcolor="#dff3e3", color="#777777"];')
        for src in sorted(origin.get(name, empty)):
            edges.add((src, f"out{k}"))
    lines += [f"  {a} -> {b};" for a, b in sorted(edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"
