"""Facts the backward graph is built on: element types, static shapes and parameter values.

Types and constant values come from the model (inputs, initializers, Constant nodes, inferred
value_info). Shapes, and the values of parameter tensors computed at run time (a Reshape's shape
made by Shape→Gather→Concat, say), are fixed by one probe run of the forward model with the real
input: onnx's shape inference cannot always tell them, and a wrong guess could broadcast
silently. The backward graph is therefore valid for that input shape; callers cache it per shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Facts", "static_facts", "inferred_shapes", "probe"]

_SMALL = 4096  # elements: constants up to this size are read as values


@dataclass
class Facts:
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32 if attr.name == "value_float" else np.int64)
        if attr.name in ("value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32 if attr.name == "value_floats" else np.int64)
    return None


def static_facts(model: onnx.ModelProto, initializer: Callable[[str], np.ndarray | None]) -> Facts:
    """Types of every tensor the model declares, shapes of initializers, and small constant values.

    ``initializer(name)`` returns an initializer's value wherever it is stored.
    """
    facts = Facts()
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            facts.types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        facts.types[init.name] = init.data_type
        facts.shapes[init.name] = tuple(int(d) for d in init.dims)
        if int(np.prod(init.dims)) <= _SMALL:
            value = initializer(init.name)
            if value is not None:
                facts.values[init.name] = np.asarray(value)
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = _constant_value(node)
            if value is not None:
                facts.values[node.output[0]] = value
                facts.shapes[node.output[0]] = tuple(value.shape)
                facts.types[node.output[0]] = helper.np_dtype_to_tensor_dtype(value.dtype)
    return facts


def inferred_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Static shapes onnx's shape inference finds once the inputs have the feeds' shapes (only
    fully known ones; anything it cannot tell is left to the probe run)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for vi in list(fixed.graph.input) + list(fixed.graph.output):
        if vi.name in feeds and vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            shape.Clear()
            for d in feeds[vi.name].shape:
                shape.dim.add().dim_value = int(d)
        elif vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    try:
        fixed = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    found: dict[str, tuple[int, ...]] = {}
    for vi in list(fixed.graph.value_info) + list(fixed.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if all(d > 0 for d in dims):
                found[vi.name] = tuple(dims)
    return found


def probe(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    shapes_of: Iterable[str],
    values_of: Iterable[str],
    facts: Facts,
    run: Callable[[onnx.ModelProto, list[str], Mapping[str, np.ndarray]], list[Any]],
) -> Facts:
    """Fill ``facts`` with the shapes and types of ``shapes_of`` and the values of ``values_of``,
    running the forward model once (``run(model, output_names, feeds)``) for what is not known."""
    for name, value in feeds.items():
        facts.shapes[name] = tuple(value.shape)
        facts.types[name] = helper.np_dtype_to_tensor_dtype(value.dtype)
        if value.size <= _SMALL and not np.issubdtype(value.dtype, np.floating):
            facts.values.setdefault(name, value)
    want_values = [n for n in dict.fromkeys(values_of) if n and n not in facts.values]
    want_shapes = [n for n in dict.fromkeys(shapes_of) if n and n not in facts.shapes]
    wanted = list(dict.fromkeys(want_values + want_shapes))
    if not wanted:
        return facts
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    existing = {o.name for o in probed.graph.output}
    for name in wanted:
        if name not in existing:
            probed.graph.output.append(helper.make_empty_tensor_value_info(name))
    arrays = run(probed, wanted, feeds)
    keep = set(want_values)
    for name, array in zip(wanted, arrays):
        array = np.asarray(array)
        facts.shapes[name] = tuple(int(d) for d in array.shape)
        facts.types[name] = helper.np_dtype_to_tensor_dtype(array.dtype)
        if name in keep or (array.size <= _SMALL and not np.issubdtype(array.dtype, np.floating)):
            facts.values[name] = np.array(array)
    return facts
