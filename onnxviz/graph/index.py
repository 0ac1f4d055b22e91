"""An index of a model's main graph: producers, consumers, constants, types, and the walks that
the tap plan and the layer grouping share (a Conv's bias, its BatchNorm/activation chain, gated
activations written out as ``x * f(x)``, the QuantizeLinear closing a QDQ unit).

``constants`` are initializers and Constant outputs; ``static`` adds every tensor computed from
constants alone (a bias reshaped at run time, shape arithmetic on constants), which is what a
"constant operand" means when ops are grouped into layers.
"""

from __future__ import annotations

from collections import defaultdict

import math

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["GraphIndex", "ACTIVATIONS", "AFFINE", "PASS_THROUGH", "SUBGRAPH_OPS", "CONV_OPS", "is_conv", "node_key", "attr"]

CONV_OPS: frozenset[tuple[str, str]] = frozenset(
    {("", "Conv"), ("", "ConvTranspose"), ("", "QLinearConv"), ("", "ConvInteger"), ("com.microsoft", "FusedConv")}
)
ACTIVATIONS = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu",
        "Celu", "Tanh", "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Swish", "Erf",
    }
)  # fmt: skip
AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
# Value-preserving at inference (Paddle puts Identity after every bias Add; Dropout is identity).
PASS_THROUGH = frozenset({"Identity", "Dropout"})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
_ACTIVATIONS, _AFFINE, _PASS_THROUGH = ACTIVATIONS, AFFINE, PASS_THROUGH


def node_key(node: onnx.NodeProto) -> str:
    """How taps and layers refer to a node: its name, else its first output."""
    return node.name or (node.output[0] if node.output else node.op_type)


_CONV_TYPES = frozenset(op for _, op in CONV_OPS)


def is_conv(node: onnx.NodeProto) -> bool:
    op = node.op_type
    return op in _CONV_TYPES and (node.domain if node.domain != "ai.onnx" else "", op) in CONV_OPS


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names used inside subgraphs (possibly outer-scope references into this graph)."""
    refs: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                for inner in sub.node:
                    refs.update(inner.input)
                refs |= _outer_refs(sub)
    return refs


class GraphIndex:
    """Index of the main graph: producers, consumers, constants, types."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.graph = g
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.node:
            for name in set(node.input):
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in g.output}
        self.outer = _outer_refs(g)
        self.constants = {i.name for i in g.initializer} | {
            out for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx") for out in n.output
        }
        self.constant_size: dict[str, int] = {i.name: math.prod(i.dims) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for attr in n.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self.constant_size[n.output[0]] = math.prod(attr.t.dims)
                    elif attr.name in ("value_float", "value_int"):
                        self.constant_size[n.output[0]] = 1
        self.types: dict[str, onnx.ValueInfoProto] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.types[vi.name] = vi
        self._shapes: dict[str, tuple[tuple[int | str | None, ...] | None, int]] = {}
        self._index_more()

    # -- additions for the layer grouping -------------------------------------------------
    def _index_more(self) -> None:
        g = self.graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.position: dict[str, int] = {}
        for i, n in enumerate(g.node):
            self.position[node_key(n)] = i
            for out in n.output:
                if out:
                    self.producer[out] = n
        self.initializers = {i.name: i for i in g.initializer}
        self.graph_inputs = {i.name for i in g.input} - set(self.initializers)
        static = set(self.constants)
        for n in g.node:  # graph order is topological
            ins = [i for i in n.input if i]
            if n.op_type not in SUBGRAPH_OPS and ins and all(i in static for i in ins):
                static.update(o for o in n.output if o)
        self.static = static

    def is_static(self, tensor: str) -> bool:
        return not tensor or tensor in self.static

    def value(self, tensor: str) -> np.ndarray | None:
        """A small constant's value (inline initializer or Constant node), else None."""
        init = self.initializers.get(tensor)
        if init is not None:
            if init.data_location == onnx.TensorProto.EXTERNAL or any(e.key == "location" for e in init.external_data):
                return None
            return numpy_helper.to_array(init)
        node = self.producer.get(tensor)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    return numpy_helper.to_array(a.t)
                if a.name == "value_ints":
                    return np.asarray(a.ints)
                if a.name == "value_int":
                    return np.asarray(a.i)
        return None

    def rank(self, tensor: str) -> int | None:
        shape, _ = self.shape_of(tensor)
        return None if shape is None else len(shape)

    def bias_after(self, tensor: str, channels: int | None = None) -> onnx.NodeProto | None:
        """The Add that adds a per-channel constant to ``tensor`` (a conv's or dense layer's bias),
        when it is ``tensor``'s only consumer: tf2onnx and Paddle leave biases as separate Adds."""
        nxt = self.sole_consumer(tensor)
        if nxt is None or nxt.op_type != "Add" or nxt.domain not in ("", "ai.onnx") or len(nxt.input) != 2:
            return None
        other = nxt.input[1] if nxt.input[0] == tensor else nxt.input[0]
        if other == tensor or not self.is_static(other):
            return None
        size = self.constant_size.get(other)
        if size is None:
            shape, _ = self.shape_of(other)
            size = math.prod(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None
        if size is not None and channels is not None and size not in (channels,) and not (size == 1 and channels == 1):
            return None
        if size == 1 and channels not in (None, 1):
            return None
        return nxt

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        if tensor in self.outputs or tensor in self.outer:
            return None
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def step_kind(self, node: onnx.NodeProto, tensor: str) -> str | None:
        """How ``node`` maps ``tensor`` elementwise to its single output, or None if it does not.

        ``"pass"`` (Identity, Dropout), ``"linear"`` (BatchNormalization, per-channel affine op with
        a constant), ``"scale"`` (Mul/Div by a scalar constant), ``"act"`` (an activation).
        """
        if node.domain not in ("", "ai.onnx") or len([o for o in node.output if o]) != 1:
            return None
        op = node.op_type
        rest_constant = bool(node.input) and node.input[0] == tensor and all(i in self.constants or not i for i in node.input[1:])
        if op in _PASS_THROUGH:
            return "pass" if rest_constant else None
        if op in _ACTIVATIONS:
            return "act" if rest_constant else None
        if op == "BatchNormalization":
            return "linear" if rest_constant else None
        if op in _AFFINE and len(node.input) == 2:
            a, b = node.input
            other = b if a == tensor and b in self.constants else (a if b == tensor and a in self.constants and op in ("Add", "Mul") else None)
            if other is None:
                return None
            return "scale" if op in ("Mul", "Div") and self.constant_size.get(other) == 1 else "linear"
        return None

    def is_unary_step(self, node: onnx.NodeProto, tensor: str) -> bool:
        return self.step_kind(node, tensor) is not None

    def follow(self, tensor: str) -> tuple[str, list[onnx.NodeProto]]:
        """Walk the activation chain from a Conv output; return the last tensor and the path.

        BatchNorm and per-channel affine steps are taken before the nonlinearity only; after it
        just pass-throughs and scalar rescales (HardSwish's ``/6``, GELU's ``*0.5``), so a
        BatchNorm placed after the activation (Keras's Conv→ReLU→BN) belongs to the next layer.
        """
        path: list[onnx.NodeProto] = []
        activated = False
        while True:
            nxt = self.sole_consumer(tensor)
            kind = self.step_kind(nxt, tensor) if nxt is not None else None
            if kind == "act" and activated:
                kind = None
            if kind == "linear" and activated:
                kind = None
            if kind is not None and nxt is not None:
                activated = activated or kind == "act"
                path.append(nxt)
                tensor = nxt.output[0]
                continue
            gated = None if activated else self._gate(tensor)
            if gated is None:
                return tensor, path
            activated = True
            path.extend(gated)
            tensor = gated[-1].output[0]

    def _gate(self, tensor: str) -> list[onnx.NodeProto] | None:
        """``y = x * f(x)`` with ``f`` a unary chain (SiLU, HardSwish, Mish written out)."""
        if tensor in self.outputs or tensor in self.outer:
            return None
        users = self.consumers.get(tensor, [])
        if len(users) != 2:
            return None
        for start in users:
            mul = next(u for u in users if u is not start)
            if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or tensor not in mul.input:
                continue
            if not self.is_unary_step(start, tensor):
                continue
            chain = [start]
            out = start.output[0]
            while True:
                if out in self.outputs or out in self.outer:
                    break
                out_users = self.consumers.get(out, [])
                if len(out_users) == 1 and out_users[0] is mul:
                    if sorted(mul.input) == sorted([tensor, out]):
                        return chain + [mul]
                    break
                nxt = self.sole_consumer(out)
                if nxt is None or not self.is_unary_step(nxt, out):
                    break
                chain.append(nxt)
                out = nxt.output[0]
        return None

    def quantize_after(self, tensor: str) -> onnx.NodeProto | None:
        """The QuantizeLinear closing a QDQ node unit (DequantizeLinear → Conv → QuantizeLinear).

        onnxruntime fuses such a unit into an integer kernel whose output is the QuantizeLinear's;
        tapping the float tensor in between would stop that fusion and change the model's outputs.
        """
        nxt = self.sole_consumer(tensor)
        if nxt is not None and nxt.op_type == "QuantizeLinear" and nxt.input and nxt.input[0] == tensor:
            return nxt
        return None

    def shape_of(self, tensor: str) -> tuple[tuple[int | str | None, ...] | None, int]:
        cached = self._shapes.get(tensor)
        if cached is None:
            cached = self._shapes[tensor] = self._shape_of(tensor)
        return cached

    def _shape_of(self, tensor: str) -> tuple[tuple[int | str | None, ...] | None, int]:
        vi = self.types.get(tensor)
        if vi is None or not vi.type.HasField("tensor_type"):
            return None, 0
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None, tt.elem_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(d.dim_value)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return tuple(dims), tt.elem_type
