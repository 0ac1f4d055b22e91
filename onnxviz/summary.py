"""Model summary as plain data (for ``onnxviz summary`` and pipelines) and as text."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from onnx import helper

if TYPE_CHECKING:
    from .capture import Model

__all__ = ["model_summary", "format_summary"]


def _dims(shape: Any) -> list[Any] | None:
    return None if shape is None else [d for d in shape]


def model_summary(model: "Model") -> dict[str, Any]:
    """Inputs, outputs, tap plan and counts of ``model``."""
    proto = model.proto
    graph = proto.graph
    types = {vi.name: vi for vi in list(graph.output)}
    outputs = []
    for name in model.plan.model_outputs:
        vi = types.get(name)
        dims = None
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]
        outputs.append({"name": name, "shape": dims})
    ops = Counter(node.op_type for node in graph.node)
    return {
        "model": model.loaded.source,
        "ir_version": proto.ir_version,
        "opsets": {op.domain or "ai.onnx": op.version for op in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [
            {"name": s.name, "shape": [d for d in s.shape], "dtype": str(s.dtype), "layout": s.layout}
            for s in model.inputs
        ],
        "outputs": outputs,
        "tap": model.plan.mode,
        "layers": [
            {
                "name": t.name,
                "label": t.label,
                "bn_folded": t.bn_folded,
                "tensor": t.tensor,
                "node": t.node,
                "op": t.op,
                "shape": _dims(t.shape),
                "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else None,
                "through": list(t.through_ops),
                "reused_output": t.reused_output,
            }
            for t in model.taps
        ],
        "skipped": [{"node": s.node, "op": s.op, "reason": s.reason} for s in model.plan.skipped],
        "counts": {
            "nodes": len(graph.node),
            "taps": len(model.taps),
            "skipped": len(model.plan.skipped),
            "conv_family": sum(ops[o] for o in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv")),
            "initializers": len(graph.initializer),
            "ops": dict(ops.most_common()),
        },
        "external_data": model.loaded.has_external_data,
    }


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "?"
    return "×".join("?" if d is None else str(d) for d in shape)


def format_summary(summary: dict[str, Any]) -> str:
    """A readable text table of :func:`model_summary`'s result."""
    lines = [f"model: {summary['model']}  (IR {summary['ir_version']}, opsets {summary['opsets']}, {summary['producer'] or 'unknown producer'})"]
    for inp in summary["inputs"]:
        lines.append(f"input:  {inp['name']}  {_fmt_shape(inp['shape'])}  {inp['dtype']}  {inp['layout'] or ''}".rstrip())
    for out in summary["outputs"]:
        lines.append(f"output: {out['name']}  {_fmt_shape(out['shape'])}")
    rows = [("#", "layer", "op", "shape", "through")]
    for i, layer in enumerate(summary["layers"]):
        rows.append((str(i), layer["label"], layer["op"], _fmt_shape(layer["shape"]), "→".join(layer["through"]) or "-"))
    widths = [min(max(len(r[c]) for r in rows), 48) for c in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(cell[:48].ljust(widths[c]) for c, cell in enumerate(r)).rstrip())
    counts = summary["counts"]
    lines.append("")
    lines.append(
        f"{counts['taps']} tapped layers (tap={summary['tap']}), {counts['conv_family']} Conv-family nodes, "
        f"{counts['skipped']} skipped, {counts['nodes']} nodes"
    )
    for s in summary["skipped"]:
        lines.append(f"skipped: {s['node']} ({s['op']}): {s['reason']}")
    return "\n".join(lines)
