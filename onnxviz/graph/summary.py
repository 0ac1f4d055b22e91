"""Model summary as plain data (for ``onnxviz summary`` and pipelines) and as text."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from ..common import plural

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["model_summary", "format_summary", "layer_table"]


def _dims(shape: Any) -> list[Any] | None:
    return None if shape is None else [d for d in shape]


# Nodes that move shapes and constants around rather than compute a layer: left out of the table.
_PLUMBING = frozenset(
    {"Constant", "Identity", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Reshape", "Concat", "Slice",
     "ConstantOfShape", "Range", "Expand", "Size", "Transpose", "Flatten", "Dropout"}
)  # fmt: skip


# Integer/bool initializers hold shapes, axes and indices, not learned parameters.
_NOT_PARAMS = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.BOOL, onnx.TensorProto.STRING})


def _param_count(init: Any) -> int:
    return 0 if init.data_type in _NOT_PARAMS else int(np.prod(init.dims))


def _shape_text(vi: Any) -> list[Any] | None:
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _path_of(node: Any) -> str | None:
    """The module path an exporter left on a node (dynamo name scopes, TorchScript node names)."""
    from .naming import _from_name_scopes, node_path_name

    return _from_name_scopes(node) or node_path_name(node.name, node.op_type)


def layer_table(model: "Model") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Op-level rows (node, op, output shape, parameters) and the seeds' ResNet counts.

    Parameters are the element counts of the weight initializers a node reads (each counted once,
    where first used; integer shape/axes constants are not parameters). Counts
    (:func:`onnxviz.graph.counts.layer_counts`): conv layers, conv layers off the shortcuts,
    downsample convs (a conv on a residual shortcut, whatever its stride), linear layers,
    pooling layers (global ReduceMean/ReduceMax included), residual blocks and stages.
    """
    from .counts import layer_counts

    graph = model.proto.graph
    inits = {i.name: i for i in graph.initializer}
    types = {vi.name: vi for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    tap_names = {t.node: t.label for t in model.taps}
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    counts = layer_counts(graph, _path_of)

    for node in graph.node:
        params = 0
        for name in node.input:
            if name in inits and name not in seen:
                seen.add(name)
                params += _param_count(inits[name])
        op = node.op_type
        if op in _PLUMBING and params == 0:
            continue
        name = node.name or (node.output[0] if node.output else op)
        rows.append(
            {
                "name": tap_names.get(name, name),
                "op": op,
                "shape": _shape_text(types.get(node.output[0])) if node.output else None,
                "params": params,
                "tapped": name in tap_names,
            }
        )
    return rows, counts


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
    table, layer_counts = layer_table(model)
    total_params = sum(_param_count(i) for i in graph.initializer)
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
                "kind": t.kind,
                "layer": t.layer,
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
        "table": table,
        "params": total_params,
        "counts": {
            **layer_counts,
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
    # shape inference names dims it cannot compute unk__N: show them as unknown
    return "×".join("?" if d is None or str(d).startswith("unk__") else str(d) for d in shape)


def format_summary(summary: dict[str, Any]) -> str:
    """A readable text table of :func:`model_summary`'s result."""
    lines = [f"model: {summary['model']}  (IR {summary['ir_version']}, opsets {summary['opsets']}, {summary['producer'] or 'unknown producer'})"]
    for inp in summary["inputs"]:
        lines.append(f"input:  {inp['name']}  {_fmt_shape(inp['shape'])}  {inp['dtype']}  {inp['layout'] or ''}".rstrip())
    for out in summary["outputs"]:
        lines.append(f"output: {out['name']}  {_fmt_shape(out['shape'])}")
    table = [("layer", "op", "output shape", "params")]
    for row in summary["table"]:
        table.append(((("* " if row["tapped"] else "  ") + row["name"]), row["op"], _fmt_shape(row["shape"]), f"{row['params']:,}"))
    tw = [min(max(len(r[c]) for r in table), 56) for c in range(4)]
    rule = "─" * (sum(tw) + 6)
    lines.append("")
    lines.append(rule)
    for k, r in enumerate(table):
        lines.append("  ".join((cell[:56].rjust(tw[c]) if c == 3 else cell[:56].ljust(tw[c])) for c, cell in enumerate(r)).rstrip())
        if k == 0:
            lines.append(rule)
    lines.append(rule)
    c = summary["counts"]
    lines.append(f"Total params: {summary['params']:,}   (* = tapped)")
    lines.append(
        f"Conv layers: {c['conv']} ({c['conv_main']} + {c['downsample']} downsample)   Linear layers: {c['linear']}   "
        f"Pooling layers: {c['pooling']}   Residual blocks: {c['blocks']}   Stages: {c['stages']}"
    )
    rows = [("#", "tap", "op", "shape", "through")]
    for i, layer in enumerate(summary["layers"]):
        rows.append((str(i), layer["label"], layer["op"], _fmt_shape(layer["shape"]), "→".join(layer["through"]) or "-"))
    widths = [min(max(len(r[c]) for r in rows), 48) for c in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(cell[:48].ljust(widths[c]) for c, cell in enumerate(r)).rstrip())
    counts = summary["counts"]
    lines.append("")
    lines.append(
        f"{plural(counts['taps'], 'tapped layer')} (tap={summary['tap']}), {plural(counts['conv_family'], 'Conv-family node')}, "
        f"{counts['skipped']} skipped, {plural(counts['nodes'], 'node')}"
    )
    for s in summary["skipped"]:
        lines.append(f"skipped: {s['node']} ({s['op']}): {s['reason']}")
    return "\n".join(lines)
