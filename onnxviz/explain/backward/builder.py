"""The emitter backward rules write with: fresh names, constants, and opset-aware ONNX ops.

A :class:`Builder` knows every tensor's static shape and element type (fixed for one input shape,
see :mod:`.probe`) and the values of the small parameter tensors rules need (Reshape shapes,
Slice starts, Resize scales…). Rules only call its helpers, so each rule stays a few lines and
never depends on the model's opset: ``reduce_sum``, ``unsqueeze``, ``slice`` and ``pad`` emit the
attribute or the input form as the opset requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import GradientError

__all__ = ["Builder", "FLOAT_TYPES", "attrs", "node_label"]

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
_PREFIX = "onnxviz_grad/"
_BOOL_OPS = frozenset({"Greater", "Less", "Equal", "And", "Or", "Not", "GreaterOrEqual", "LessOrEqual", "IsNaN", "IsInf"})


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[attr.name] = value
    return out


def node_label(node: onnx.NodeProto) -> str:
    """How errors name a node: its name, else its first output."""
    return node.name or (node.output[0] if node.output else "?")


class Builder:
    """Collects the backward nodes and constants; answers shape, type and value questions."""

    def __init__(
        self,
        opset: int,
        shapes: dict[str, tuple[int, ...]],
        types: dict[str, int],
        values: dict[str, np.ndarray],
        taken: set[str],
        ir_version: int = 8,
    ) -> None:
        self.opset = opset
        self.ir_version = ir_version
        self.shapes = shapes
        self.types = types
        self.values = values
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.node: onnx.NodeProto | None = None  # the forward node being differentiated (for errors)
        self._count = 0
        self._consts: dict[tuple[bytes, str, tuple[int, ...]], str] = {}
        self.extra_outputs: dict[tuple[str, int], str] = {}  # forward outputs added to nodes (MaxPool Indices)

    # -- names, facts ------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{_PREFIX}{self._count}_{hint}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def shape(self, name: str) -> tuple[int, ...]:
        try:
            return self.shapes[name]
        except KeyError:
            raise GradientError(f"internal: no static shape known for tensor '{name}'") from None

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def dtype(self, name: str) -> int:
        return self.types.get(name, onnx.TensorProto.FLOAT)

    def np_dtype(self, name: str) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.dtype(name)))

    def value(self, name: str, what: str = "parameter") -> np.ndarray:
        """The value of a small, non-differentiated tensor (constant or fixed by the probe run)."""
        if name in self.values:
            return self.values[name]
        label = node_label(self.node) if self.node is not None else "?"
        op = self.node.op_type if self.node is not None else "?"
        raise GradientError(f"{op} node '{label}': its {what} '{name}' is not known before running")

    def fail(self, message: str) -> GradientError:
        node = self.node
        where = f"{node.op_type} node '{node_label(node)}'" if node is not None else "backward graph"
        return GradientError(f"{where}: {message}")

    # -- emission ----------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, *, hint: str | None = None, domain: str = "", **attributes: Any) -> Any:
        """Append a node; return its output name (or names when ``n_out`` > 1)."""
        outputs = [self.fresh(hint or op_type) for _ in range(n_out)]
        kwargs = {k: v for k, v in attributes.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, domain=domain or None, **kwargs))
        elem = self._result_type(op_type, inputs, kwargs)
        if elem:
            for out in outputs:
                self.types[out] = elem
        return outputs[0] if n_out == 1 else outputs

    def _result_type(self, op_type: str, inputs: Sequence[str], kwargs: dict[str, Any]) -> int | None:
        if op_type in _BOOL_OPS:
            return onnx.TensorProto.BOOL
        if op_type in ("ArgMax", "Shape"):
            return onnx.TensorProto.INT64
        if op_type == "Cast":
            return int(kwargs["to"])
        if op_type == "Where":
            return self.types.get(inputs[1])
        if op_type == "OneHot":
            return self.types.get(inputs[2])
        known = [self.types[i] for i in inputs if i in self.types]
        floats = [t for t in known if t in FLOAT_TYPES]
        return floats[0] if floats else (known[0] if known else None)

    def const(self, value: Any, dtype: Any = None, like: str | None = None) -> str:
        """An initializer holding ``value`` (in ``like``'s element type when given); deduplicated."""
        if like is not None:
            dtype = self.np_dtype(like)
        array = np.asarray(value, dtype=dtype)
        key = (array.tobytes(), array.dtype.str, array.shape)
        found = self._consts.get(key)
        if found is not None:
            return found
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        self.types[name] = helper.np_dtype_to_tensor_dtype(array.dtype)
        self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def scalar(self, value: float, like: str) -> str:
        return self.const(np.asarray(value, dtype=self.np_dtype(like)))

    def zeros(self, shape: Sequence[int], like: str) -> str:
        """A zero tensor of ``shape`` (small constant expanded at run time)."""
        return self.op("Expand", [self.scalar(0.0, like), self.ints(shape)], hint="zeros")

    # -- opset-aware helpers -----------------------------------------------------------
    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        axes = [int(a) for a in axes]
        if not axes:
            return x
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op("ReduceSum", [x], axes=axes, keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        axes = [int(a) for a in axes]
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op("ReduceMean", [x], axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes)])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def expand(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Expand", [x, self.ints(shape)])

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], steps: Sequence[int] | None = None) -> str:
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.op("Slice", inputs)

    def pad(self, x: str, pads: Sequence[int]) -> str:
        """Zero padding; negative entries crop."""
        if not any(pads):
            return x
        return self.op("Pad", [x, self.ints(pads)], mode="constant")

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", [x], to=int(to))

    def where(self, cond: str, a: str, b: str) -> str:
        return self.op("Where", [cond, a, b])

    def mask(self, cond: str, g: str) -> str:
        """``g`` where ``cond`` holds, else 0."""
        return self.where(cond, g, self.scalar(0.0, g))

    def gate(self, cond: str, g: str) -> str:
        """``g`` times ``cond`` as 0/1: what ``mask`` gives wherever ``g`` is finite (a NaN or Inf
        ``g`` where ``cond`` is false stays NaN). onnxruntime's CPU Where is several times slower
        than Cast + Mul, and ReLU's backward runs once per activation: the hot path of a CNN."""
        return self.op("Mul", [g, self.cast(cond, self.dtype(g))])

    def unbroadcast(self, g: str, have: Sequence[int], to: str | Sequence[int]) -> str:
        """Sum ``g`` (of shape ``have``, a broadcast result's) back to tensor/shape ``to``."""
        target = tuple(self.shape(to)) if isinstance(to, str) else tuple(to)
        have = tuple(have)
        if have == target:
            return g
        lead = len(have) - len(target)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(target) if d == 1 and have[lead + i] != 1]
        out = self.reduce_sum(g, axes, keepdims=True)
        return self.reshape(out, target) if lead else out

    def add_output(self, node: onnx.NodeProto, index: int, hint: str, shape: Sequence[int], elem: int) -> str:
        """Make the forward ``node`` produce its optional output ``index`` (if it does not), with a
        fresh name; return that output's name."""
        while len(node.output) <= index:
            node.output.append("")
        if not node.output[index]:
            node.output[index] = self.fresh(hint)
        self.shapes[node.output[index]] = tuple(int(d) for d in shape)
        self.types[node.output[index]] = elem
        return node.output[index]

    def with_shape(self, name: str, shape: Sequence[int], like: str | None = None) -> str:
        """Record the static shape (and type) of an emitted tensor."""
        self.shapes[name] = tuple(int(d) for d in shape)
        if like is not None:
            self.types[name] = self.dtype(like)
        return name

    def axis_map_backward(self, g: str, shape: Sequence[int], axis: int, forward: np.ndarray, like: str) -> tuple[str, tuple[int, ...]]:
        """Backward of a linear map along one axis: ``y[..o..] = Σ_i F[o, i] x[..i..]``.

        ``g`` has ``shape`` (``shape[axis]`` = ``F.shape[0]``); returns ``Fᵀ`` applied along
        ``axis`` and the new shape. Resize, reflect/edge Pad and Gather are such maps.
        """
        rank = len(shape)
        axis %= rank
        f = self.const(np.ascontiguousarray(forward), like=like)
        new_shape = tuple(shape[:axis]) + (int(forward.shape[1]),) + tuple(shape[axis + 1 :])
        if axis == rank - 1:
            return self.op("MatMul", [g, f]), new_shape
        if axis == rank - 2:
            return self.op("MatMul", [self.const(np.ascontiguousarray(forward.T), like=like), g]), new_shape
        perm = [i for i in range(rank) if i != axis] + [axis]
        moved = self.op("MatMul", [self.op("Transpose", [g], perm=perm), f])
        back = [perm.index(i) for i in range(rank)]
        return self.op("Transpose", [moved], perm=back), new_shape
