"""A drawing of the model graph with the tapped tensors highlighted: DOT text, SVG or PNG through
Graphviz. By default one box per framework layer with its type and shapes, like Keras's
``plot_model(show_shapes=True)`` (:mod:`.layer_draw`); ``ops=True`` draws one box per ONNX op.

Every model-supplied string is escaped for DOT; node ids are generated, never taken from the model.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from ..common import printable
from ..errors import OnnxvizError
from .layer_draw import layers_dot
from .overview import MAX_DRAWN_NODES, overview_dot

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["to_dot", "to_svg", "to_png", "drawable_dot", "drawn_count", "dot_available", "INSTALL_HINT", "run_dot", "MAX_DRAWN_NODES"]

INSTALL_HINT = "Graphviz's dot is not installed: apt-get install graphviz (or brew install graphviz / conda install graphviz)"
_SKIP = frozenset({"Constant", "Identity"})


def _escape(text: str, limit: int = 60) -> str:
    """A model string as DOT label text: cut to ``limit``, every control, bidi or other
    non-printable character written as a visible escape (they would make the SVG invalid XML, and
    a NUL fails Graphviz), then DOT's own escaping."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def _q(*lines: str) -> str:
    """A quoted DOT label: each line escaped, joined with DOT's line break."""
    return '"' + "\\n".join(_escape(line) for line in lines) + '"'


def to_dot(model: "Model", ops: bool = False) -> str:
    """DOT source: one box per framework layer (:func:`.layer_draw.layers_dot`), or with ``ops``
    one box per node (Constant/Identity left out); tapped layers and tensors in red."""
    if not ops:
        return layers_dot(model, _q)
    graph = model.proto.graph
    taps = {t.tensor: t for t in model.taps}
    tapped_nodes = {t.node: t.label for t in model.taps}
    nodes = [n for n in graph.node if n.op_type not in _SKIP]
    alias: dict[str, str] = {}
    for n in graph.node:  # route edges through the skipped Identity nodes
        if n.op_type == "Identity" and n.input:
            alias[n.output[0]] = n.input[0]

    def source(name: str) -> str:
        seen = 0
        while name in alias and seen < 64:
            name, seen = alias[name], seen + 1
        return name

    producer = {out: f"n{i}" for i, n in enumerate(nodes) for out in n.output}
    lines = ["digraph model {", '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=10];', '  edge [color="#777777"];']
    for k, inp in enumerate(model.inputs):
        lines.append(f'  in{k} [label={_q("input " + inp.name)}, shape=ellipse, fillcolor="#dde8f6"];')
        producer.setdefault(inp.name, f"in{k}")
    for i, n in enumerate(nodes):
        key = n.name or n.output[0]
        label = _q(n.op_type, tapped_nodes[key]) if key in tapped_nodes else (_q(n.op_type, n.name) if n.name else _q(n.op_type))
        fill = ', fillcolor="#ffd9d0", color="#c0392b"' if key in tapped_nodes else ""
        lines.append(f"  n{i} [label={label}{fill}];")
        for name in n.input:
            src = producer.get(source(name))
            if src is None:
                continue
            if source(name) in taps:
                lines.append(f'  {src} -> n{i} [color="#c0392b", penwidth=2.2];')
            else:
                lines.append(f"  {src} -> n{i};")
    for k, out in enumerate(model.plan.model_outputs):
        lines.append(f'  out{k} [label={_q("output " + out)}, shape=ellipse, fillcolor="#dff3e3"];')
        if source(out) in producer:
            lines.append(f"  {producer[source(out)]} -> out{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def run_dot(dot: str, fmt: str = "svg", timeout: float = 120.0) -> bytes:
    """Lay out DOT text with Graphviz's ``dot`` into ``fmt`` (svg, png); OnnxvizError with how to
    install it if missing, or with Graphviz's last message if it fails."""
    if fmt not in ("svg", "png"):
        raise OnnxvizError(f"unknown graph format {fmt!r}: use svg or png")
    if not dot_available():
        raise OnnxvizError(INSTALL_HINT)
    try:
        proc = subprocess.run(["dot", f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OnnxvizError(f"Graphviz took longer than {timeout:.0f} s to lay out the graph") from None
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise OnnxvizError(f"Graphviz failed: {message[-1][:300]}")
    return proc.stdout


def drawn_count(model: "Model", ops: bool = False) -> int:
    """Boxes the drawing would have: layers, or with ``ops`` nodes."""
    return len(model.proto.graph.node) if ops else len(model.layer_graph)


def drawable_dot(model: "Model", max_nodes: int = MAX_DRAWN_NODES, ops: bool = False) -> tuple[str, bool]:
    """DOT source Graphviz can lay out in reasonable time: the full drawing (layers, or ``ops``)
    up to ``max_nodes`` boxes, else the overview of the tapped layers (:mod:`.overview`).
    Returns (dot, simplified)."""
    if drawn_count(model, ops) <= max_nodes:
        return to_dot(model, ops), False
    return overview_dot(model, _q, max_nodes), True


def to_svg(model: "Model", timeout: float = 120.0, max_nodes: int = MAX_DRAWN_NODES, ops: bool = False) -> str:
    """SVG text of :func:`drawable_dot` through Graphviz's ``dot`` (OnnxvizError with how to install
    it if missing): past ``max_nodes`` boxes, the overview of the tapped layers; ``timeout`` bounds the layout."""
    return run_dot(drawable_dot(model, max_nodes, ops)[0], "svg", timeout).decode("utf-8", "replace")


def to_png(model: "Model", timeout: float = 120.0, max_nodes: int = MAX_DRAWN_NODES, ops: bool = False) -> bytes:
    """PNG bytes of :func:`drawable_dot` through Graphviz's ``dot``."""
    return run_dot(drawable_dot(model, max_nodes, ops)[0], "png", timeout)
