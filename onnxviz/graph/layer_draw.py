"""The graph drawn like Keras's ``plot_model(show_shapes=True)``: one box per framework layer
(:mod:`onnxviz.graph.layers`), never one per ONNX op.

Each box holds the layer's name, its type (the framework class where recorded, else its kind and
main op) and its input and output shapes; the exporter's helper nodes (shape arithmetic,
transposes, bias adds) are inside the layer they serve. Tapped layers are red, and so are the
edges that carry a tapped tensor. A layer the framework has but the ONNX graph lost (a Dropout, a
padding folded into the next conv, a BatchNorm folded into the conv before it) is a dashed box
where the framework had it, with what became of it. Model strings go through the caller's
``quote`` (DOT escaping lives in :mod:`.draw`); node ids are generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .index import node_key

if TYPE_CHECKING:
    from ..run.model import Model
    from .layers import Layer

__all__ = ["layers_dot", "layer_box_lines", "main_op"]

_TAPPED = ', fillcolor="#ffd9d0", color="#c0392b", penwidth=1.6'
_VANISHED = ', style="rounded,dashed", fillcolor="#ffffff", fontcolor="#6b7680", color="#9aa3ab"'


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    return "×".join("?" if d is None or str(d).startswith("unk__") else str(d) for d in shape)


_HELPERS = frozenset({"Constant", "Identity", "Shape", "Gather", "Cast", "Unsqueeze", "Squeeze", "Concat", "Slice",
                      "ConstantOfShape", "Range", "Expand", "Size", "Transpose", "Dropout"})


def main_op(kind: str, ops: tuple[str, ...] | list[str]) -> str | None:
    """The op that makes a layer what it is (its kind): the Conv of a conv layer, the MatMul or
    Gemm of a dense one, the Reshape/Flatten of a reshape; else its first op that is no helper."""
    from .layers import MERGE_OPS, POOL_OPS

    tests = {
        "conv": lambda op: "Conv" in op,
        "dense": lambda op: op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"),
        "pool": lambda op: op in POOL_OPS or op in ("ReduceMean", "ReduceMax"),
        "merge": lambda op: op in MERGE_OPS,
        "norm": lambda op: "Norm" in op or op == "LRN",
        "padding": lambda op: op == "Pad",
        "resize": lambda op: op in ("Resize", "Upsample"),
    }
    test = tests.get(kind)
    hits = [op for op in ops if test(op)] if test else []
    if hits:
        return hits[0]
    if kind == "reshape":
        shaped = [op for op in ops if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth")]
        if shaped:
            return shaped[-1]
    compute = [op for op in ops if op not in _HELPERS]
    return compute[0] if compute else (ops[-1] if ops else None)


def layer_box_lines(layer: "Layer", input_shapes: list[Any]) -> list[str]:
    """The text lines of a layer's box: name, type, input and output shapes (or what became of it)."""
    cls = layer.framework_class.rsplit(".", 1)[-1] if layer.framework_class else None
    main = main_op(layer.kind, layer.ops)
    kind = cls or (f"{layer.kind} ({main})" if main and main.lower() != layer.kind else layer.kind)
    lines = [layer.name, kind]
    if layer.vanished:
        lines.append("vanished in ONNX" + (f": {layer.note}" if layer.note else ""))
        return lines
    if input_shapes:
        shown = ", ".join(_shape(s) for s in input_shapes[:3]) + (", …" if len(input_shapes) > 3 else "")
        lines.append(f"input: {shown}")
    lines.append(f"output: {_shape(layer.shape)}")
    return lines


def _shapes(graph: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


def layers_dot(model: "Model", quote: Callable[..., str]) -> str:
    """DOT source of the layer graph (module docs)."""
    graph = model.proto.graph
    layers = model.layer_graph
    shapes = _shapes(graph)
    tap_tensors = {t.tensor for t in model.taps}
    tapped = {t.layer for t in model.taps if t.layer} | {
        layer.name for t in model.taps if (layer := layers.layer_of_node(t.node)) is not None}
    ids = {layer.name: f"l{k}" for k, layer in enumerate(layers)}
    producer: dict[str, str] = {}  # tensor -> DOT id of the layer (or input) that makes it
    for node in graph.node:
        owner = layers.layer_of_node(node_key(node))
        for out in node.output:
            if out and owner is not None:
                producer[out] = ids[owner.name]
    lines = [
        "digraph model {",
        '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=10];',
        '  edge [color="#777777"];',
    ]
    for k, spec in enumerate(model.inputs):
        lines.append(f'  in{k} [label={quote("input " + spec.name, _shape(spec.shape))}, shape=ellipse, fillcolor="#dde8f6"];')
        producer[spec.name] = f"in{k}"
    edges: dict[tuple[str, str], bool] = {}  # (from, to) -> carries a tapped tensor
    for layer in layers:
        lid = ids[layer.name]
        ins = [t for t in layer.inputs if t in producer and producer[t] != lid]
        style = _VANISHED if layer.vanished else (_TAPPED if layer.name in tapped else "")
        lines.append(f"  {lid} [label={quote(*layer_box_lines(layer, [shapes.get(t) for t in ins]))}{style}];")
        for t in ins:
            key = (producer[t], lid)
            edges[key] = edges.get(key, False) or t in tap_tensors
    dashed: set[tuple[str, str]] = set()
    drawn = [layer for layer in layers if not layer.vanished]
    order = list(layers)
    for k, layer in enumerate(order):  # vanished layers sit between their neighbours in the framework's order
        if not layer.vanished:
            continue
        before = next((ids[x.name] for x in reversed(order[:k]) if not x.vanished), None)
        after = next((ids[x.name] for x in order[k + 1:] if not x.vanished), None)
        lid = ids[layer.name]
        if before and after and (before, after) in edges:
            tapped_edge = edges.pop((before, after))
            edges[(before, lid)] = tapped_edge
            edges[(lid, after)] = tapped_edge
            dashed |= {(before, lid), (lid, after)}
        elif before or after:
            pair = (before, lid) if before else (lid, after)
            edges[pair] = False  # type: ignore[index]
            dashed.add(pair)  # type: ignore[arg-type]
    for (a, b), hot in edges.items():
        attrs = []
        if hot:
            attrs.append('color="#c0392b", penwidth=2.2')
        if (a, b) in dashed:
            attrs.append("style=dashed")
        lines.append(f"  {a} -> {b}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for k, name in enumerate(model.plan.model_outputs):
        lines.append(f'  out{k} [label={quote("output " + name, _shape(shapes.get(name)))}, shape=ellipse, fillcolor="#dff3e3"];')
        if name in producer:
            lines.append(f"  {producer[name]} -> out{k};")
    if not drawn:
        lines.append(f'  empty [label={quote("no layers")}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
