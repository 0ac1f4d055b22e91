"""Receptive fields of tapped layers, from the graph's convolution and pooling geometry.

Along each spatial axis, position ``p`` of a map sees the input pixels centred on
``offset + p · stride`` over ``size`` pixels. Walking the graph from the image input, a Conv or
pooling node with kernel ``k`` (dilated: ``d·(k-1)+1``), stride ``s`` and leading padding ``b``
turns ``(size, stride, offset)`` into ``(size + (k-1)·stride, stride·s, offset + ((k-1)/2 - b)·stride)``;
element-wise and per-channel nodes (activations, BatchNorm, Add, Concat over channels, Quantize…)
keep it, and where branches meet (a residual Add) the union of their fields is taken. A layer
reached through a node whose geometry onnxviz does not model (Resize, Reshape, attention…) gets
a simpler rule instead, marked ``exact: False``: a window twice the map-to-input scale, centred on
the scaled position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

__all__ = ["ReceptiveField", "receptive_fields", "fallback_field"]

_WINDOWED = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"}
_KEEP = {
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Tanh", "Gelu",
    "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Abs",
    "Neg", "Max", "Min", "Sum", "Mean", "BatchNormalization", "Dropout", "Identity", "Cast", "QuantizeLinear",
    "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "Where", "Erf", "Floor", "Ceil",
    "Round", "Reciprocal", "Sign", "Concat", "LRN", "Softmax", "Shrink", "Not", "Equal", "Greater", "Less", "And", "Or",
}  # fmt: skip


@dataclass(frozen=True)
class ReceptiveField:
    """Per spatial axis (H, W): the field's size and the stride and offset of its centre, in input pixels."""

    size: tuple[float, float]
    stride: tuple[float, float]
    offset: tuple[float, float]
    exact: bool = True

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` (exclusive) of the input pixels map position (y, x) sees, clipped to the image."""
        edges = []
        for pos, size, stride, offset, limit in zip((y, x), self.size, self.stride, self.offset, (height, width)):
            centre = offset + pos * stride
            lo = math.floor(centre - (size - 1) / 2 + 1e-9)
            hi = math.floor(centre + (size - 1) / 2 + 1e-9) + 1
            edges.append((max(0, min(lo, limit - 1)), max(1, min(hi, limit))))
        (top, bottom), (left, right) = edges
        return top, left, max(bottom, top + 1), max(right, left + 1)

    def as_dict(self) -> dict[str, object]:
        return {"size": list(self.size), "stride": list(self.stride), "offset": list(self.offset), "exact": self.exact}


def fallback_field(input_hw: tuple[int, int], map_hw: tuple[int, int]) -> ReceptiveField:
    """The simpler rule: a window twice the map-to-input scale, centred on the scaled position."""
    stride = tuple(i / max(m, 1) for i, m in zip(input_hw, map_hw))
    return ReceptiveField(
        size=tuple(max(2.0 * s, 1.0) for s in stride), stride=stride, offset=tuple((s - 1) / 2 for s in stride), exact=False  # type: ignore[arg-type]
    )


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _kernel(node: onnx.NodeProto, attrs: dict[str, object], shapes: dict[str, list[int]]) -> list[int] | None:
    if "kernel_shape" in attrs:
        return [int(v) for v in attrs["kernel_shape"]]  # type: ignore[union-attr]
    weight = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}.get(node.op_type)
    if weight is not None and len(node.input) > weight and node.input[weight] in shapes:
        return shapes[node.input[weight]][2:]
    return None


def _window(rf: tuple, node: onnx.NodeProto, shapes: dict[str, list[int]]) -> tuple | None:
    axes, fields = rf
    if axes != (2, 3):
        return None
    attrs = _attrs(node)
    kernel = _kernel(node, attrs, shapes)
    if kernel is None or len(kernel) != 2:
        return None
    strides = [int(v) for v in attrs.get("strides", [1, 1])]  # type: ignore[union-attr]
    dilations = [int(v) for v in attrs.get("dilations", [1, 1])]  # type: ignore[union-attr]
    pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]  # type: ignore[union-attr]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    out = []
    for axis in range(2):
        size, jump, offset = fields[axis]
        k_eff = dilations[axis] * (kernel[axis] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = k_eff - 1
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad == "VALID":
            begin = 0
        else:
            begin = pads[axis]
        out.append((size + (k_eff - 1) * jump, jump * strides[axis], offset + ((k_eff - 1) / 2 - begin) * jump))
    return axes, tuple(out)


def _union(states: list[tuple]) -> tuple | None:
    axes = {s[0] for s in states}
    if len(axes) != 1:
        return None
    fields = []
    for axis in range(2):
        lo = min(s[1][axis][2] - (s[1][axis][0] - 1) / 2 for s in states)
        hi = max(s[1][axis][2] + (s[1][axis][0] - 1) / 2 for s in states)
        jump = max(s[1][axis][1] for s in states)
        fields.append((hi - lo + 1, jump, (lo + hi) / 2))
    return states[0][0], tuple(fields)


def _pad(state: tuple, node: onnx.NodeProto, consts: dict[str, list[int]]) -> tuple | None:
    attrs = _attrs(node)
    pads = attrs.get("pads")
    if pads is None and len(node.input) > 1:
        pads = consts.get(node.input[1])
    if pads is None:
        return None
    axes, fields = state
    rank = len(pads) // 2
    out = []
    for k, axis in enumerate(axes):
        if axis >= rank:
            return None
        size, jump, offset = fields[k]
        out.append((size, jump, offset - int(pads[axis]) * jump))
    return axes, tuple(out)


def receptive_fields(model: onnx.ModelProto, input_name: str, layout: str, tensors: list[str]) -> dict[str, ReceptiveField]:
    """The receptive field of each of ``tensors`` that the walk reaches with known geometry."""
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    consts: dict[str, list[int]] = {}
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.INT64 and len(init.dims) == 1 and init.dims[0] <= 16:
            try:
                consts[init.name] = [int(v) for v in numpy_helper.to_array(init)]
            except Exception:
                pass
    start = ((2, 3) if layout == "NCHW" else (1, 2), ((1.0, 1.0, 0.0), (1.0, 1.0, 0.0)))
    state: dict[str, tuple] = {input_name: start}
    for node in graph.node:
        known = [state[i] for i in node.input if i in state]
        if not known:
            continue
        op = node.op_type
        result: tuple | None = None
        if op in _WINDOWED and node.input and node.input[0] in state:
            result = _window(state[node.input[0]], node, shapes)
        elif op == "Transpose" and len(known) == 1:
            perm = [int(v) for v in _attrs(node).get("perm", [])]  # type: ignore[union-attr]
            axes = known[0][0]
            if perm and all(a in perm for a in axes):
                result = (tuple(perm.index(a) for a in axes), known[0][1])
        elif op == "Pad" and node.input[0] in state:
            result = _pad(state[node.input[0]], node, consts)
        elif op in _KEEP:
            if op == "Concat" and int(_attrs(node).get("axis", 1)) % 4 in known[0][0]:  # type: ignore[arg-type]  # along H or W
                result = None
            else:
                result = _union(known)
        if result is not None:
            for out in node.output:
                state[out] = result
    fields = {}
    for tensor in tensors:
        if tensor in state and state[tensor][0] == (2, 3):
            (rh, jh, oh), (rw, jw, ow) = state[tensor][1]
            fields[tensor] = ReceptiveField((rh, rw), (jh, jw), (oh, ow))
    return fields
