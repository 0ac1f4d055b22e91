"""Backward rules of the normalizations that compute statistics of their input:
LayerNormalization, InstanceNormalization and LRN (inference BatchNormalization is a per-channel
scale, in :mod:`.rules_tensor`).

For a normalization ``x̂ = (x - mean) · inv`` over some axes followed by ``y = x̂ · scale + bias``,
``dx = inv · (g - mean(g) - x̂ · mean(g · x̂))`` with ``g = dy · scale``, the means over the same
axes. LayerNormalization's own Mean and InvStdDev outputs are added to the forward node and read
back; InstanceNormalization's statistics are recomputed in the backward graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from .builder import Builder, attrs
from .registry import rule


def _normalized_backward(b: Builder, xhat: str, inv: str, g: str, axes: Sequence[int]) -> str:
    mean_g = b.reduce_mean(g, axes)
    mean_gx = b.reduce_mean(b.op("Mul", [g, xhat]), axes)
    inner = b.op("Sub", [b.op("Sub", [g, mean_g]), b.op("Mul", [xhat, mean_gx])])
    return b.op("Mul", [inner, inv])


def _layer_norm_stats(b: Builder, node: onnx.NodeProto) -> None:
    x = node.input[0]
    shape = b.shape(x)
    axis = attrs(node).get("axis", -1) % len(shape)
    kept = list(shape[:axis]) + [1] * (len(shape) - axis)
    stash = attrs(node).get("stash_type", 1)
    elem = onnx.TensorProto.FLOAT if stash == 1 else b.dtype(x)
    b.add_output(node, 1, "ln_mean", kept, elem)
    b.add_output(node, 2, "ln_inv_std", kept, elem)


@rule("LayerNormalization", prepare=_layer_norm_stats)
def _layer_norm(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x, scale = node.input[0], node.input[1]
    shape = b.shape(x)
    axis = attrs(node).get("axis", -1) % len(shape)
    axes = list(range(axis, len(shape)))
    mean, inv = node.output[1], node.output[2]
    if b.dtype(mean) != b.dtype(x):
        mean, inv = b.cast(mean, b.dtype(x)), b.cast(inv, b.dtype(x))
    dy, dmean, dinv = (list(dys) + [None, None])[:3]
    xhat = b.op("Mul", [b.op("Sub", [x, mean]), inv])
    dx = None
    if need[0]:
        parts = [_normalized_backward(b, xhat, inv, b.op("Mul", [dy, scale]), axes)] if dy is not None else []
        count = float(np.prod([shape[i] for i in axes]))
        if dmean is not None:  # the Mean output is used too: d mean / dx = 1/M
            parts.append(b.expand(b.op("Mul", [b.cast(dmean, b.dtype(x)), b.scalar(1 / count, x)]), shape))
        if dinv is not None:  # d inv / dx = -inv² · x̂ / M
            factor = b.op("Mul", [b.op("Mul", [inv, inv]), b.op("Mul", [b.cast(dinv, b.dtype(x)), b.scalar(-1 / count, x)])])
            parts.append(b.op("Mul", [factor, xhat]))
        dx = parts[0] if len(parts) == 1 else b.op("Sum", parts)
    if dy is None:
        return [dx] + [None] * (len(node.input) - 1)
    dscale = b.unbroadcast(b.op("Mul", [dy, xhat]), shape, scale) if need[1] else None
    dbias = b.unbroadcast(dy, shape, node.input[2]) if len(node.input) > 2 and node.input[2] and need[2] else None
    return [dx, dscale, dbias][: len(node.input)]


@rule("InstanceNormalization")
def _instance_norm(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x, scale = node.input[0], node.input[1]
    shape = b.shape(x)
    axes = list(range(2, len(shape)))
    mean = b.reduce_mean(x, axes)
    centered = b.op("Sub", [x, mean])
    var = b.reduce_mean(b.op("Mul", [centered, centered]), axes)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.scalar(attrs(node).get("epsilon", 1e-5), x)])])])
    xhat = b.op("Mul", [centered, inv])
    per_channel = [-1] + [1] * (len(shape) - 2)
    dy = dys[0]
    dx = _normalized_backward(b, xhat, inv, b.op("Mul", [dy, b.reshape(scale, per_channel)]), axes) if need[0] else None
    keep = [0] + axes
    dscale = b.reshape(b.reduce_sum(b.op("Mul", [dy, xhat]), keep, keepdims=False), b.shape(scale)) if need[1] else None
    dbias = b.reshape(b.reduce_sum(dy, keep, keepdims=False), b.shape(node.input[2])) if need[2] else None
    return [dx, dscale, dbias]


def _channel_window_sum(b: Builder, t: str, shape: Sequence[int], before: int, after: int, like: str) -> str:
    """``Σ t[c']`` for ``c'`` in ``[c - before, c + after]``, as a Conv over the channel axis."""
    n, c = shape[0], shape[1]
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    flat = b.reshape(t, [n, 1, c, rest])
    ones = b.const(np.ones((1, 1, before + after + 1, 1)), like=like)
    summed = b.op("Conv", [flat, ones], kernel_shape=[before + after + 1, 1], pads=[before, 0, after, 0])
    return b.reshape(summed, shape)


@rule("LRN")
def _lrn(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    size, alpha, beta, bias = a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
    x, y = node.input[0], node.output[0]
    shape = b.shape(x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    square_sum = _channel_window_sum(b, b.op("Mul", [x, x]), shape, lo, hi, x)
    d = b.op("Add", [b.scalar(bias, x), b.op("Mul", [square_sum, b.scalar(alpha / size, x)])])
    dy = dys[0]
    direct = b.op("Mul", [dy, b.op("Pow", [d, b.scalar(-beta, x)])])
    # each x[c] also enters the denominators of the outputs whose window holds c
    t = b.op("Div", [b.op("Mul", [dy, y]), d])
    spread = _channel_window_sum(b, t, shape, hi, lo, x)
    cross = b.op("Mul", [b.op("Mul", [x, spread]), b.scalar(2 * alpha * beta / size, x)])
    return [b.op("Sub", [direct, cross])]
