"""Finite-difference checks of onnxviz's backward graphs on small synthetic ONNX graphs.

The gradient under test runs in onnxruntime in float64 where every op of the forward and backward
graph has a float64 CPU kernel, else in float32 (Conv, ConvTranspose, pooling and most activations
have none). The reference is a central finite difference in float64 over every input element,
computed with onnx's ``ReferenceEvaluator`` (numpy, any dtype) on the same graph — or, with
``engine="ort"``, with onnxruntime itself in float32 (for ops whose float32 forward is exactly
linear, where a large step is exact). The error is the largest absolute difference divided by the
largest gradient magnitude; :func:`fd_error` returns it with the dtype the gradient ran in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxviz.errors import OnnxvizError
from onnxviz.explain import GradientProgram

_ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}


def build(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    inits: Mapping[str, np.ndarray] | None = None,
    outputs: Sequence[str] = ("y",),
    opset: int = 17,
    dtype: type = np.float32,
) -> onnx.ModelProto:
    """A model of ``nodes``; float initializers and all inputs in ``dtype``."""
    elem = _ELEM[np.dtype(dtype)]
    if elem == onnx.TensorProto.DOUBLE:  # the float64 reference graph casts to double, not float
        nodes = [_cast_to(node, elem) for node in nodes]
    tensors = []
    for name, value in (inits or {}).items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype(dtype)
        tensors.append(numpy_helper.from_array(value, name))
    graph = helper.make_graph(
        list(nodes), "check", [helper.make_tensor_value_info(n, elem, list(s)) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs], tensors,
    )  # fmt: skip
    ir = 10 if opset >= 21 else 9 if opset >= 19 else 8
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    # Outputs need a type for the checker: take it from shape inference.
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in inferred.graph.value_info}
    for out in model.graph.output:
        if out.name in known:
            out.CopyFrom(known[out.name])
        else:
            out.CopyFrom(helper.make_tensor_value_info(out.name, elem, None))
            out.type.tensor_type.shape.SetInParent()
    return model


def _cast_to(node: onnx.NodeProto, elem: int) -> onnx.NodeProto:
    if node.op_type != "Cast":
        return node
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for attr in copy.attribute:
        if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
            attr.i = elem
    return copy


def _reference(model: onnx.ModelProto, target: str):
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(model)
    return lambda feeds: np.asarray(ref.run([target], feeds)[0], dtype=np.float64)


def _ort(model: onnx.ModelProto, target: str):
    import onnxruntime as ort

    if target not in {o.name for o in model.graph.output}:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.append(helper.make_empty_tensor_value_info(target))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda feeds: np.asarray(session.run([target], {k: v.astype(np.float32) for k, v in feeds.items()})[0], dtype=np.float64)


def fd_error(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    inits: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    wrt: Sequence[str] | None = None,
    target: str = "y",
    feeds: Mapping[str, np.ndarray] | None = None,
    engine: str = "ref",
    eps: float | None = None,
    seed: int = 0,
    positive: bool = False,
) -> tuple[float, type]:
    """Largest relative error of onnxviz's gradient of Σ seed·target against finite differences,
    and the dtype the gradient ran in."""
    rng = np.random.default_rng(seed)
    if feeds is None:
        feeds = {n: rng.standard_normal(tuple(s)) for n, s in inputs.items()}
        if positive:
            feeds = {k: np.abs(v) + 0.5 for k, v in feeds.items()}
    feeds64 = {k: np.asarray(v, dtype=np.float64) for k, v in feeds.items()}
    wrt = list(wrt or inputs)
    model32 = build(nodes, inputs, inits, (target,), opset, np.float32)
    dtype: type = np.float32
    if engine == "ref":
        try:  # the whole forward + backward graph in float64, where onnxruntime has the kernels
            program = GradientProgram(build(nodes, inputs, inits, (target,), opset, np.float64), wrt=wrt, target=target)
            program.run(feeds64, seed=np.zeros(1))
            dtype = np.float64
        except OnnxvizError:
            pass
    if dtype is np.float32:
        program = GradientProgram(model32, wrt=wrt, target=target)
    run_feeds = {k: v.astype(dtype) for k, v in feeds64.items()}
    probe = program.run(run_feeds, seed=np.zeros(1, dtype))
    out_seed = rng.standard_normal(probe.target.shape)
    result = program.run(run_feeds, seed=out_seed)

    if engine == "ref":
        f = _reference(build(nodes, inputs, inits, (target,), opset, np.float64), target)
        step = eps or 1e-6
    else:
        f = _ort(model32, target)
        step = eps or 1e-2
    worst = 0.0
    for name in wrt:
        base = feeds64[name]
        fd = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            up, down = dict(feeds64), dict(feeds64)
            up[name] = base.copy()
            up[name][index] += step
            down[name] = base.copy()
            down[name][index] -= step
            fd[index] = ((f(up) - f(down)) * out_seed).sum() / (2 * step)
        got = result.grads[name].astype(np.float64)
        assert got.shape == base.shape, (name, got.shape, base.shape)
        scale = max(np.abs(fd).max(), 1e-12)
        worst = max(worst, float(np.abs(got - fd).max() / scale))
    return worst, dtype
