"""Reductions in the graph: ReduceMax, ArgMax, ReduceMin, ReduceSum, ReduceSumSquare appended to
the model after each tapped tensor, so that onnxruntime computes the N×C numbers where the
activations are — on CUDA only those numbers (and the few values the histogram samples) leave the
GPU, instead of N×C×H×W activations.

Per tap (flattened to N×C×positions): the maximum and its position, the minimum, the sum, the sum
of squared deviations from each row's own mean (ReduceMean, Sub, ReduceSumSquare: a float32 sum of
squares alone loses precision), the count of positive values, and the fixed subgrid of values the
histogram takes (Slice with steps). Taps that cannot be reduced this way (quantized, or of unknown
rank or size) are exposed raw and reduced in numpy. :func:`rows_from_graph` turns a run's outputs
into the same :class:`~.rows.RowStats` as the numpy path: identical maxima, positions, counts and
histograms, moments equal up to float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..graph.taps import Tap
from .rows import RowStats, rows_from_parts, sample_slices

__all__ = ["GraphReduction", "build_reduction", "spatial_shapes"]

_PARTS = ("max", "argmax", "min", "sum", "m2", "positive")


@dataclass(frozen=True)
class GraphReduction:
    """The model with reductions appended, and which output holds what."""

    proto: onnx.ModelProto
    outputs: dict[str, dict[str, str]]  # tap tensor → part → output name ("samples" too)
    raw: tuple[str, ...]  # tap tensors exposed as they are (reduced in numpy)
    spatial: dict[str, tuple[int, ...]]

    @property
    def output_names(self) -> list[str]:
        return [name for parts in self.outputs.values() for name in parts.values()] + list(self.raw)

    def rows(self, tensor: str, results: dict[str, np.ndarray]) -> RowStats:
        names = self.outputs[tensor]
        hw = max(1, math.prod(self.spatial[tensor]))
        return rows_from_parts({part: results[names[part]] for part in _PARTS}, results[names["samples"]], hw)


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


def spatial_shapes(proto: onnx.ModelProto, input_name: str, input_shape: tuple[int, ...], tensors: list[str]) -> dict[str, tuple[int, ...]]:
    """Spatial dims of ``tensors`` when the input has ``input_shape`` (onnx shape inference on the
    weightless graph); tensors whose dims stay unknown are left out."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]
    for vi in fixed.graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            for dim, value in zip(dims, input_shape):
                dim.Clear()
                dim.dim_value = int(value)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    found: dict[str, tuple[int, ...]] = {}
    for name in tensors:
        vi = known.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        values = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
        if len(values) >= 3 and all(v > 0 for v in values[2:]):
            found[name] = tuple(values[2:])
    return found


def build_reduction(
    proto: onnx.ModelProto, taps: tuple[Tap, ...], spatial: dict[str, tuple[int, ...]], grid: int, quantized: set[str]
) -> GraphReduction:
    """A copy of ``proto`` whose outputs are the reductions of every tap (see the module docs)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    del graph.output[:]
    opset = _opset(model)
    prefix = "onnxviz_reduce"
    consts: dict[str, str] = {}

    def const(name: str, values: list[int] | float, dtype: type = np.int64) -> str:
        full = f"{prefix}/{name}"
        if full not in consts:
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype), full))
            consts[full] = full
        return full

    def reduce(op: str, source: str, out: str, keepdims: int = 0) -> None:
        axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
        if axes_as_input:
            graph.node.append(helper.make_node(op, [source, const("reduce_axes", [2])], [out], keepdims=keepdims, name=out))
        else:
            graph.node.append(helper.make_node(op, [source], [out], axes=[2], keepdims=keepdims, name=out))

    outputs: dict[str, dict[str, str]] = {}
    raw: list[str] = []
    for index, tap in enumerate(taps):
        shape = spatial.get(tap.tensor)
        if tap.tensor in quantized or shape is None or tap.tensor in outputs:
            if tap.tensor not in raw:
                raw.append(tap.tensor)
            continue
        base = f"{prefix}/{index}"
        source = tap.tensor
        if tap.elem_type not in (0, TensorProto.FLOAT):
            graph.node.append(helper.make_node("Cast", [source], [f"{base}/float"], to=TensorProto.FLOAT, name=f"{base}/float"))
            source = f"{base}/float"
        flat = f"{base}/flat"
        graph.node.append(helper.make_node("Reshape", [source, const("flat", [0, 0, -1])], [flat], name=flat))
        names = {part: f"{base}/{part}" for part in _PARTS}
        reduce("ReduceMax", flat, names["max"])
        graph.node.append(helper.make_node("ArgMax", [flat], [names["argmax"]], axis=2, keepdims=0, name=names["argmax"]))
        reduce("ReduceMin", flat, names["min"])
        reduce("ReduceSum", flat, names["sum"])
        reduce("ReduceMean", flat, f"{base}/mean", keepdims=1)
        graph.node.append(helper.make_node("Sub", [flat, f"{base}/mean"], [f"{base}/centred"], name=f"{base}/centred"))
        reduce("ReduceSumSquare", f"{base}/centred", names["m2"])
        graph.node.append(helper.make_node("Greater", [flat, const("zero", 0.0, np.float32)], [f"{base}/gt"], name=f"{base}/gt"))
        graph.node.append(helper.make_node("Cast", [f"{base}/gt"], [f"{base}/gtf"], to=TensorProto.FLOAT, name=f"{base}/gtf"))
        reduce("ReduceSum", f"{base}/gtf", names["positive"])
        slices = sample_slices(shape, grid)
        axes = list(range(2, 2 + len(shape)))
        starts = [s.start or 0 for s in slices]
        steps = [s.step or 1 for s in slices]
        names["samples"] = f"{base}/samples"
        graph.node.append(helper.make_node(
            "Slice",
            [source, const(f"starts{index}", starts), const(f"ends{index}", [np.iinfo(np.int64).max] * len(axes)),
             const(f"axes{index}", axes), const(f"steps{index}", steps)],
            [names["samples"]], name=names["samples"],
        ))  # fmt: skip
        outputs[tap.tensor] = names
        for part, name in names.items():
            elem = TensorProto.INT64 if part == "argmax" else TensorProto.FLOAT
            graph.output.append(helper.make_tensor_value_info(name, elem, None))
    for tensor in raw:
        graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return GraphReduction(model, outputs, tuple(raw), {t: spatial[t] for t in outputs})
