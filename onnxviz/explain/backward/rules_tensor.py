"""Backward rules of layout and linear-algebra ops: reshapes, Transpose, Concat/Split/Slice/Pad,
Gather, Expand/Tile, reductions, Gemm/MatMul, inference BatchNormalization, and QDQ pairs.

Shapes are static (fixed per input shape), so every reshape is a constant Reshape and every
broadcast is undone by a ReduceSum over known axes. QuantizeLinear → DequantizeLinear pairs are
differentiated straight through (the float model they stand for), with the gradient zeroed where
the value saturates the integer range: PyTorch's FakeQuantize backward.
"""

from __future__ import annotations

import numpy as np
import onnx

from .builder import Builder, attrs
from .registry import rule


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.reshape(dys[0], b.shape(node.input[0]))] + [None] * (len(node.input) - 1)


@rule("Transpose")
def _transpose(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    perm = attrs(node).get("perm") or list(reversed(range(b.rank(node.input[0]))))
    return [b.op("Transpose", [dys[0]], perm=[int(i) for i in np.argsort(perm)])]


@rule("Expand")
def _expand(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.unbroadcast(dys[0], b.shape(node.output[0]), node.input[0]), None]


@rule("Tile")
def _tile(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x_shape, y_shape = b.shape(node.input[0]), b.shape(node.output[0])
    split = [d for xs, ys in zip(x_shape, y_shape) for d in (ys // xs, xs)]
    folded = b.reshape(dys[0], split)
    return [b.reshape(b.reduce_sum(folded, list(range(0, 2 * len(x_shape), 2)), keepdims=False), x_shape), None]


@rule("Concat")
def _concat(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    axis = attrs(node)["axis"] % b.rank(node.output[0])
    out: list[str | None] = []
    offset = 0
    for x, n in zip(node.input, need):
        size = b.shape(x)[axis]
        out.append(b.slice(dys[0], [offset], [offset + size], [axis]) if n else None)
        offset += size
    return out


@rule("Split", values=(1,))
def _split(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    axis = attrs(node).get("axis", 0) % b.rank(node.input[0])
    parts = [dy if dy is not None else b.zeros(b.shape(y), node.input[0]) for dy, y in zip(dys, node.output)]
    return [b.op("Concat", parts, axis=axis) if len(parts) > 1 else parts[0]] + [None] * (len(node.input) - 1)


def _slice_args(b: Builder, node: onnx.NodeProto) -> tuple[list[int], list[int], list[int], list[int]]:
    rank = b.rank(node.input[0])
    if b.opset < 10:
        a = attrs(node)
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        return starts, ends, axes, [1] * len(starts)
    ins = list(node.input) + [""] * (5 - len(node.input))
    starts = [int(v) for v in b.value(ins[1], "starts").ravel()]
    ends = [int(v) for v in b.value(ins[2], "ends").ravel()]
    axes = [int(v) for v in b.value(ins[3], "axes").ravel()] if ins[3] else list(range(len(starts)))
    steps = [int(v) for v in b.value(ins[4], "steps").ravel()] if ins[4] else [1] * len(starts)
    return starts, ends, [a % rank for a in axes], steps


@rule("Slice", values=(1, 2, 3, 4))
def _slice(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    shape = b.shape(x)
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(*_slice_args(b, node)):
        index[axis % len(shape)] = slice(start, end, step)
    flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[tuple(index)]
    if flat.shape != b.shape(node.output[0]):
        raise b.fail(f"slice of {list(shape)} gives {list(flat.shape)} here but {list(b.shape(node.output[0]))} at run time")
    rest = [None] * (len(node.input) - 1)
    if all(s.step in (None, 1) for s in index):
        pads = [0] * (2 * len(shape))
        for axis, s in enumerate(index):
            lo, hi, _ = s.indices(shape[axis])
            pads[axis], pads[len(shape) + axis] = lo, shape[axis] - max(hi, lo)
        return [b.pad(dys[0], pads)] + rest
    # Strided or reversed: scatter the gradient back into the flattened input (indices are unique).
    size = int(np.prod(shape))
    scattered = b.op(
        "ScatterElements", [b.zeros([size], x), b.ints(flat.ravel()), b.reshape(dys[0], [-1])], axis=0
    )
    return [b.reshape(scattered, shape)] + rest


def _pad_args(b: Builder, node: onnx.NodeProto) -> tuple[list[int], str]:
    rank = b.rank(node.input[0])
    a = attrs(node)
    mode = a.get("mode", "constant")
    if b.opset < 11:
        return list(a["pads"]), mode
    pads = [int(v) for v in b.value(node.input[1], "pads").ravel()]
    if len(node.input) > 3 and node.input[3]:
        axes = [int(v) % rank for v in b.value(node.input[3], "axes").ravel()]
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
        pads = full
    return pads, mode


@rule("Pad", values=(1, 3))
def _pad(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if any(need[1:]):
        raise b.fail("no gradient with respect to Pad's pads or constant value")
    pads, mode = _pad_args(b, node)
    x_shape = b.shape(node.input[0])
    rank = len(x_shape)
    rest = [None] * (len(node.input) - 1)
    if mode == "constant":
        crop = [max(p, 0) for p in pads]
        starts, ends = crop[:rank], [d - 0 for d in b.shape(node.output[0])]
        ends = [ends[i] - crop[rank + i] for i in range(rank)]
        g = dys[0]
        axes = [i for i in range(rank) if crop[i] or crop[rank + i]]
        if axes:
            g = b.slice(g, [starts[i] for i in axes], [ends[i] for i in axes], axes)
        return [b.pad(g, [max(-p, 0) for p in pads])] + rest
    np_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if np_mode is None:
        raise b.fail(f"Pad mode '{mode}' has no backward rule")
    g, shape = dys[0], b.shape(node.output[0])
    for axis in range(rank):
        lo, hi = pads[axis], pads[rank + axis]
        if lo or hi:
            if lo < 0 or hi < 0:
                raise b.fail(f"negative pads with mode '{mode}' have no backward rule")
            forward = np.pad(np.eye(x_shape[axis]), ((lo, hi), (0, 0)), mode=np_mode)
            g, shape = b.axis_map_backward(g, shape, axis, forward, node.input[0])
    return [g] + rest


@rule("Gather", values=(1,))
def _gather(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    shape = b.shape(x)
    axis = attrs(node).get("axis", 0) % len(shape)
    idx = b.value(node.input[1], "indices").astype(np.int64).ravel()
    idx = np.where(idx < 0, idx + shape[axis], idx)
    onehot = np.zeros((idx.size, shape[axis]))
    np.add.at(onehot, (np.arange(idx.size), idx), 1.0)
    folded = list(shape[:axis]) + [idx.size] + list(shape[axis + 1 :])
    g, _ = b.axis_map_backward(b.reshape(dys[0], folded), folded, axis, onehot, x)
    return [g, None]


def _reduce_axes(b: Builder, node: onnx.NodeProto) -> list[int]:
    rank = b.rank(node.input[0])
    a = attrs(node)
    takes_input = b.opset >= (13 if node.op_type == "ReduceSum" else 18)
    if takes_input and len(node.input) > 1 and node.input[1]:
        axes = [int(v) for v in b.value(node.input[1], "axes").ravel()]
    elif not takes_input and "axes" in a:
        axes = list(a["axes"])
    else:
        axes = []
    if not axes:
        return [] if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(int(v) % rank for v in axes)


@rule("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp", values=(1,))
def _reduce(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x, y = node.input[0], node.output[0]
    shape = b.shape(x)
    axes = _reduce_axes(b, node)
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    g = b.reshape(dys[0], kept)
    rest = [None] * (len(node.input) - 1)
    op = node.op_type
    if op == "ReduceSum":
        return [b.expand(g, shape)] + rest
    if op == "ReduceMean":
        count = int(np.prod([shape[i] for i in axes])) if axes else 1
        return [b.expand(b.op("Mul", [g, b.scalar(1.0 / count, x)]), shape)] + rest
    y_kept = b.reshape(y, kept)
    if op == "ReduceSumSquare":
        return [b.op("Mul", [b.op("Mul", [x, b.scalar(2.0, x)]), g])] + rest
    if op == "ReduceL1":
        return [b.op("Mul", [b.op("Sign", [x]), g])] + rest
    if op == "ReduceL2":  # x / ‖x‖, and 0 where the norm is 0
        safe = b.op("Max", [y_kept, b.scalar(np.finfo(np.float32).tiny, x)])
        return [b.op("Mul", [b.op("Div", [x, safe]), g])] + rest
    if op == "ReduceLogSumExp":
        return [b.op("Mul", [b.op("Exp", [b.op("Sub", [x, y_kept])]), g])] + rest
    hit = b.cast(b.op("Equal", [x, y_kept]), b.dtype(x))  # ties share evenly (torch's amax)
    count = b.reduce_sum(hit, axes, keepdims=True)
    return [b.op("Mul", [hit, b.op("Div", [g, count])])] + rest


def _space_depth_layout(b: Builder, node: onnx.NodeProto) -> tuple[list[int], list[int]]:
    """The intermediate shape after the forward op's transpose, and that transpose."""
    n, c, h, w = b.shape(node.input[0])
    k = attrs(node)["blocksize"]
    if node.op_type == "SpaceToDepth":
        return [n, k, k, c, h // k, w // k], [0, 3, 5, 1, 2, 4]
    if attrs(node).get("mode", "DCR") == "CRD":
        return [n, c // (k * k), h, k, w, k], [0, 1, 4, 2, 5, 3]
    return [n, c // (k * k), h, k, w, k], [0, 3, 4, 1, 5, 2]


@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    middle, perm = _space_depth_layout(b, node)
    back = b.op("Transpose", [b.reshape(dys[0], middle)], perm=[int(i) for i in np.argsort(perm)])
    return [b.reshape(back, b.shape(node.input[0]))]


@rule("Gemm")
def _gemm(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    ta, tb = a.get("transA", 0), a.get("transB", 0)
    dy = dys[0]
    A, B = node.input[0], node.input[1]
    dA = dB = dC = None
    if need[0]:
        dA = b.op("Gemm", [B, dy], alpha=alpha, transA=tb, transB=1) if ta else b.op("Gemm", [dy, B], alpha=alpha, transB=1 - tb)
    if need[1]:
        dB = b.op("Gemm", [dy, A], alpha=alpha, transA=1, transB=ta) if tb else b.op("Gemm", [A, dy], alpha=alpha, transA=1 - ta)
    if len(node.input) > 2 and need[2]:
        scaled = b.op("Mul", [dy, b.scalar(beta, dy)]) if beta != 1.0 else dy
        dC = b.unbroadcast(scaled, b.shape(node.output[0]), node.input[2])
    return [dA, dB, dC][: len(node.input)]


def _swap_last(b: Builder, x: str, rank: int) -> str:
    return b.op("Transpose", [x], perm=list(range(rank - 2)) + [rank - 1, rank - 2])


@rule("MatMul")
def _matmul(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    A, B = node.input
    sa, sb, sy = b.shape(A), b.shape(B), b.shape(node.output[0])
    # Work with 1-D operands promoted to matrices, as numpy's matmul does.
    a2 = tuple(sa) if len(sa) > 1 else (1, sa[0])
    b2 = tuple(sb) if len(sb) > 1 else (sb[0], 1)
    y2 = tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) + (a2[-2], b2[-1])
    g = b.reshape(dys[0], y2) if tuple(sy) != y2 else dys[0]
    a_in = b.reshape(A, a2) if len(sa) == 1 else A
    b_in = b.reshape(B, b2) if len(sb) == 1 else B
    dA = dB = None
    if need[0]:
        full = b.op("MatMul", [g, _swap_last(b, b_in, len(b2))])
        dA = b.reshape(b.unbroadcast(full, y2[:-2] + a2[-2:], a2), sa)
    if need[1]:
        full = b.op("MatMul", [_swap_last(b, a_in, len(a2)), g])
        dB = b.reshape(b.unbroadcast(full, y2[:-2] + b2[-2:], b2), sb)
    return [dA, dB]


@rule("BatchNormalization")
def _batchnorm(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    if a.get("training_mode", 0) or any(o for o in node.output[1:]):
        raise b.fail("training-mode BatchNormalization has no backward rule: export the model in inference mode")
    if any(need[1:]):
        raise b.fail("no gradient with respect to BatchNormalization's scale, bias or statistics")
    x, scale, _, _, var = node.input[:5]
    rank = b.rank(x)
    factor = b.op("Div", [scale, b.op("Sqrt", [b.op("Add", [var, b.scalar(a.get("epsilon", 1e-5), var)])])])
    factor = b.reshape(b.cast(factor, b.dtype(x)) if b.dtype(var) != b.dtype(x) else factor, [-1] + [1] * (rank - 2))
    return [b.op("Mul", [dys[0], factor])] + [None] * (len(node.input) - 1)


@rule("DequantizeLinear")
def _dequantize(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if any(need[1:]):
        raise b.fail("no gradient with respect to DequantizeLinear's scale or zero point")
    # The gradient of an integer tensor is taken with respect to the real value it stands for.
    return [dys[0]] + [None] * (len(node.input) - 1)


_RANGES = {
    onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767),
}  # fmt: skip


@rule("QuantizeLinear")
def _quantize(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if any(need[1:]):
        raise b.fail("no gradient with respect to QuantizeLinear's scale or zero point")
    a = attrs(node)
    x, q = node.input[0], node.output[0]
    if a.get("block_size", 0):
        raise b.fail("blocked quantization has no backward rule")
    qrange = _RANGES.get(b.dtype(q))
    if qrange is None:
        raise b.fail(f"quantization to {onnx.TensorProto.DataType.Name(b.dtype(q))} has no backward rule")
    rank = b.rank(x)
    scale = node.input[1]

    def per_axis(t: str) -> str:
        """``t`` in ``x``'s type, shaped to broadcast along the quantization axis."""
        like = b.cast(t, b.dtype(x)) if b.dtype(t) != b.dtype(x) else t
        if len(b.shape(t)) == 1 and b.shape(t)[0] > 1:
            axis = a.get("axis", 1) % rank
            return b.reshape(like, [-1] + [1] * (rank - 1 - axis))
        return like

    r = b.op("Round", [b.op("Div", [x, per_axis(scale)])])
    if len(node.input) > 2 and node.input[2]:
        r = b.op("Add", [r, per_axis(node.input[2])])
    low = b.op("Less", [r, b.scalar(qrange[0], x)])
    high = b.op("Greater", [r, b.scalar(qrange[1], x)])
    inside = b.op("Not", [b.op("Or", [low, high])])
    return [b.mask(inside, dys[0])] + [None] * (len(node.input) - 1)
