"""Model summary as plain data (for ``onnxviz summary`` and pipelines) and as text.

The table has one row per framework layer, as Keras's ``model.summary()`` lists them (name, kind,
framework class, output shape, parameters), built on :mod:`onnxviz.graph.layers`; ``ops=True``
gives the op-level table instead (one row per ONNX node that computes something). Parameters
are the framework's own count where onnxviz's converters recorded it (BatchNorm folded into a conv
and all-zero biases an exporter dropped included, so the total equals Keras's
``count_params()`` / torch's ``sum(p.numel())``), else what the ONNX file holds, with one line
saying why the two may differ.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from ..common import plural

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["model_summary", "format_summary", "layer_table", "framework_table", "total_line", "PARAMS_NOTE"]

PARAMS_NOTE = ("counted from the ONNX file's weights: the framework's own count can differ where the exporter folded "
               "BatchNorm into convs or dropped all-zero biases")


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


def _short_class(name: str | None) -> str | None:
    return name.rsplit(".", 1)[-1] if name else None


def framework_table(model: "Model") -> list[dict[str, Any]]:
    """One row per framework layer (:mod:`onnxviz.graph.layers`), in the framework's order.

    Each row: name, kind, class (the framework's class, where recorded), op (the layer's main ONNX
    op), ops, shape, params (the framework's count where recorded, else the ONNX file's),
    onnx_params, tapped, vanished (the layer has no node in the ONNX graph) and note.
    """
    from .layer_draw import main_op

    graph = model.layer_graph
    tapped = {t.layer for t in model.taps if t.layer} | {
        layer.name for t in model.taps if (layer := graph.layer_of_node(t.node)) is not None}
    rows = []
    for layer in graph:
        rows.append({
            "name": layer.name,
            "kind": layer.kind,
            "class": _short_class(layer.framework_class),
            "op": main_op(layer.kind, layer.ops),
            "ops": list(layer.ops),
            "shape": _dims(layer.shape),
            "params": layer.shown_params,
            "onnx_params": layer.params,
            "tapped": layer.name in tapped,
            "vanished": layer.vanished,
            "note": layer.note,
        })  # fmt: skip
    return rows


def model_summary(model: "Model", ops: bool = False) -> dict[str, Any]:
    """Inputs, outputs, tap plan, layer table, parameters and counts of ``model``.

    ``table`` has one row per framework layer (:func:`framework_table`), or with ``ops=True`` one
    per computing ONNX node (:func:`layer_table`). ``params`` is the framework's total where
    onnxviz's converter recorded it, else ``onnx_params``, the float weights the file holds (then
    ``params_note`` says why the framework's count may differ)."""
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
    op_counts = Counter(node.op_type for node in graph.node)
    op_rows, layer_counts = layer_table(model)
    layers = model.layer_graph
    onnx_params = sum(_param_count(i) for i in graph.initializer)
    recorded = layers.framework_params
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
        "table": op_rows if ops else framework_table(model),
        "table_level": "ops" if ops else "layers",
        "params": recorded if recorded is not None else onnx_params,
        "onnx_params": onnx_params,
        "framework_params": recorded,
        "framework": layers.framework,
        "params_source": "framework" if recorded is not None else "onnx",
        "params_note": None if recorded is not None else PARAMS_NOTE,
        "vanished": [{"name": layer.name, "class": _short_class(layer.framework_class), "kind": layer.kind, "note": layer.note}
                     for layer in layers if layer.vanished],
        "counts": {
            **layer_counts,
            "layers": sum(1 for layer in layers if not layer.vanished),
            "vanished": sum(1 for layer in layers if layer.vanished),
            "nodes": len(graph.node),
            "taps": len(model.taps),
            "skipped": len(model.plan.skipped),
            "conv_family": sum(op_counts[o] for o in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv")),
            "initializers": len(graph.initializer),
            "ops": dict(op_counts.most_common()),
        },
        "external_data": model.loaded.has_external_data,
    }


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "?"
    # shape inference names dims it cannot compute unk__N: show them as unknown
    return "×".join("?" if d is None or str(d).startswith("unk__") else str(d) for d in shape)


_WHO_COUNTS = {"keras": "Keras's count_params()", "torch": "torch's sum(p.numel())"}


def total_line(summary: dict[str, Any]) -> str:
    """``Total params: 5,490 (Keras's count_params(), recorded by onnxviz's converter; the ONNX file holds 5,454)``."""
    if summary.get("params_source") != "framework":
        return f"Total params: {summary['params']:,}"
    who = _WHO_COUNTS.get(summary.get("framework") or "", "the framework's count")
    held = summary.get("onnx_params")
    extra = f"; the ONNX file holds {held:,}" if held is not None and held != summary["params"] else ""
    return f"Total params: {summary['params']:,} ({who}, recorded by onnxviz's converter{extra})"


def _table_lines(summary: dict[str, Any]) -> list[str]:
    """The table rows as text: framework layers (name, type, output shape, params), or ops."""
    if summary.get("table_level", "ops") == "ops":
        table = [("layer", "op", "output shape", "params")]
        for row in summary["table"]:
            table.append(((("* " if row["tapped"] else "  ") + row["name"]), row["op"], _fmt_shape(row["shape"]), f"{row['params']:,}"))
    else:
        table = [("  layer", "type", "output shape", "params")]
        for row in summary["table"]:
            kind = row["class"] or row["kind"]
            shape = "vanished in ONNX" if row["vanished"] else _fmt_shape(row["shape"])
            table.append(((("* " if row["tapped"] else "  ") + row["name"]), kind, shape, f"{row['params']:,}"))
    width = 56
    tw = [min(max(len(r[c]) for r in table), width) for c in range(4)]
    rule = "─" * (sum(tw) + 6)
    out = [rule]
    for k, r in enumerate(table):
        out.append("  ".join((cell[:width].rjust(tw[c]) if c == 3 else cell[:width].ljust(tw[c])) for c, cell in enumerate(r)).rstrip())
        if k == 0:
            out.append(rule)
    if summary.get("table_level") == "layers":
        notes = [(row["name"], row["note"]) for row in summary["table"] if row.get("note")]
        if notes:
            out.append(rule)
            out.extend(f"  {name}: {note}" for name, note in notes)
    out.append(rule)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A readable text table of :func:`model_summary`'s result."""
    lines = [f"model: {summary['model']}  (IR {summary['ir_version']}, opsets {summary['opsets']}, {summary['producer'] or 'unknown producer'})"]
    for inp in summary["inputs"]:
        lines.append(f"input:  {inp['name']}  {_fmt_shape(inp['shape'])}  {inp['dtype']}  {inp['layout'] or ''}".rstrip())
    for out in summary["outputs"]:
        lines.append(f"output: {out['name']}  {_fmt_shape(out['shape'])}")
    lines.append("")
    lines.extend(_table_lines(summary))
    c = summary["counts"]
    lines.append(total_line(summary) + "   (* = tapped)")
    if summary.get("params_note"):
        lines.append(f"  ({summary['params_note']})")
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
