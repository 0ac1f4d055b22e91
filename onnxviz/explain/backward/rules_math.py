"""Backward rules of elementwise ops: arithmetic with broadcasting, activations, Softmax.

Activations use their output where it determines the derivative (Relu's ``y > 0``, Sigmoid's
``y(1-y)``), so the forward Conv+activation fusions onnxruntime makes stay intact. Kinks follow
PyTorch: Relu, Clip and HardSigmoid pass no gradient at their edges; Max/Min split a tie evenly.
"""

from __future__ import annotations

import math

import onnx

from .builder import Builder, attrs
from .registry import rule

G = "list[str | None]"


def _each(b: Builder, node: onnx.NodeProto, need: list[bool], grads: list[str | None]) -> list[str | None]:
    """Unbroadcast each needed input's gradient (computed in the output's shape)."""
    out_shape = b.shape(node.output[0])
    return [b.unbroadcast(g, out_shape, x) if (n and g is not None) else None for x, n, g in zip(node.input, need, grads)]


def _mul(b: Builder, *xs: str) -> str:
    out = xs[0]
    for x in xs[1:]:
        out = b.op("Mul", [out, x])
    return out


@rule("Add", "Sum")
def _add(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return _each(b, node, need, [dys[0]] * len(node.input))


@rule("Mean")
def _mean(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    g = b.op("Mul", [dys[0], b.scalar(1.0 / len(node.input), dys[0])])
    return _each(b, node, need, [g] * len(node.input))


@rule("Sub")
def _sub(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    return _each(b, node, need, [dy, b.op("Neg", [dy]) if need[1] else None])


@rule("Mul")
def _mul_rule(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    a, c = node.input
    return _each(b, node, need, [b.op("Mul", [dy, c]) if need[0] else None, b.op("Mul", [dy, a]) if need[1] else None])


@rule("Div")
def _div(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    a, c = node.input
    da = b.op("Div", [dy, c]) if need[0] else None
    dc = b.op("Neg", [b.op("Div", [b.op("Mul", [dy, node.output[0]]), c])]) if need[1] else None
    return _each(b, node, need, [da, dc])


@rule("Neg")
def _neg(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.op("Neg", [dys[0]])]


@rule("Identity", "Dropout")
def _identity(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        if bool(b.value(node.input[2], "training_mode").any()):
            raise b.fail("training-mode Dropout is random: export the model in inference mode")
    return [dys[0]] + [None] * (len(node.input) - 1)


@rule("Cast")
def _cast(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.cast(dys[0], b.dtype(node.input[0]))]


@rule("Floor", "Ceil", "Round", "Sign")
def _flat(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [None]  # piecewise constant: zero almost everywhere


def _positive(b: Builder, x: str) -> str:
    return b.op("Greater", [x, b.scalar(0.0, x)])


@rule("Relu")
def _relu(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.gate(_positive(b, node.output[0]), dys[0])]


@rule("LeakyRelu")
def _leaky(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    alpha = attrs(node).get("alpha", 0.01)
    return [b.where(_positive(b, node.input[0]), dy, b.op("Mul", [dy, b.scalar(alpha, dy)]))]


@rule("ThresholdedRelu")
def _thresholded(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    return [b.mask(b.op("Greater", [x, b.scalar(attrs(node).get("alpha", 1.0), x)]), dys[0])]


@rule("PRelu")
def _prelu(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    x, slope = node.input
    pos = _positive(b, x)
    dx = b.where(pos, dy, b.op("Mul", [dy, slope])) if need[0] else None
    ds = b.unbroadcast(b.mask(b.op("Not", [pos]), b.op("Mul", [dy, x])), b.shape(x), slope) if need[1] else None
    return [dx, ds]


@rule("Elu", "Selu", "Celu")
def _elu(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, x, y = dys[0], node.input[0], node.output[0]
    a = attrs(node)
    if node.op_type == "Selu":
        alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
        neg = b.op("Mul", [dy, b.op("Add", [y, b.scalar(alpha * gamma, y)])])
        return [b.where(_positive(b, x), b.op("Mul", [dy, b.scalar(gamma, dy)]), neg)]
    if node.op_type == "Celu":  # y = max(0,x) + min(0, alpha*(exp(x/alpha)-1)); dy/dx = exp(x/alpha) for x<0
        alpha = a.get("alpha", 1.0)
        neg = b.op("Mul", [dy, b.op("Exp", [b.op("Div", [x, b.scalar(alpha, x)])])])
        return [b.where(_positive(b, x), dy, neg)]
    alpha = a.get("alpha", 1.0)
    return [b.where(_positive(b, x), dy, b.op("Mul", [dy, b.op("Add", [y, b.scalar(alpha, y)])]))]


@rule("Sigmoid")
def _sigmoid(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    y = node.output[0]
    return [_mul(b, dys[0], y, b.op("Sub", [b.scalar(1.0, y), y]))]


@rule("Tanh")
def _tanh(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    y = node.output[0]
    return [b.op("Mul", [dys[0], b.op("Sub", [b.scalar(1.0, y), b.op("Mul", [y, y])])])]


@rule("HardSigmoid")
def _hard_sigmoid(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    y = node.output[0]
    inside = b.op("And", [_positive(b, y), b.op("Less", [y, b.scalar(1.0, y)])])
    return [b.mask(inside, b.op("Mul", [dys[0], b.scalar(attrs(node).get("alpha", 0.2), y)]))]


@rule("HardSwish")
def _hard_swish(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, x = dys[0], node.input[0]
    slope = b.op("Add", [b.op("Div", [x, b.scalar(3.0, x)]), b.scalar(0.5, x)])  # d/dx x(x+3)/6
    ramp = b.where(b.op("Greater", [x, b.scalar(3.0, x)]), b.scalar(1.0, x), slope)
    return [b.mask(b.op("Not", [b.op("Less", [x, b.scalar(-3.0, x)])]), b.op("Mul", [dy, ramp]))]


@rule("Softplus")
def _softplus(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.op("Mul", [dys[0], b.op("Sigmoid", [node.input[0]])])]


@rule("Softsign")
def _softsign(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    d = b.op("Add", [b.scalar(1.0, x), b.op("Abs", [x])])
    return [b.op("Div", [dys[0], b.op("Mul", [d, d])])]


@rule("Exp")
def _exp(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.op("Mul", [dys[0], node.output[0]])]


@rule("Log")
def _log(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.op("Div", [dys[0], node.input[0]])]


@rule("Sqrt")
def _sqrt(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    y = node.output[0]
    return [b.op("Div", [dys[0], b.op("Mul", [y, b.scalar(2.0, y)])])]


@rule("Reciprocal")
def _reciprocal(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    y = node.output[0]
    return [b.op("Neg", [_mul(b, dys[0], y, y)])]


@rule("Abs")
def _abs(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    return [b.op("Mul", [dys[0], b.op("Sign", [node.input[0]])])]


@rule("Pow")
def _pow(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, (x, e), y = dys[0], node.input, node.output[0]
    dx = de = None
    if need[0]:
        e_like = b.cast(e, b.dtype(x)) if b.dtype(e) != b.dtype(x) else e
        dx = _mul(b, dy, e_like, b.op("Pow", [x, b.op("Sub", [e_like, b.scalar(1.0, x)])]))
    if need[1]:
        de = _mul(b, dy, y, b.op("Log", [x]))
    return _each(b, node, need, [dx, de])


_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _gauss(b: Builder, x: str, scale: float) -> str:
    """``scale · exp(-x²/2)``."""
    sq = b.op("Mul", [x, x])
    return b.op("Mul", [b.op("Exp", [b.op("Mul", [sq, b.scalar(-0.5, x)])]), b.scalar(scale, x)])


@rule("Erf")
def _erf(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    sq = b.op("Mul", [x, x])
    d = b.op("Mul", [b.op("Exp", [b.op("Neg", [sq])]), b.scalar(2.0 / math.sqrt(math.pi), x)])
    return [b.op("Mul", [dys[0], d])]


@rule("Gelu")
def _gelu(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, x = dys[0], node.input[0]
    one, half = b.scalar(1.0, x), b.scalar(0.5, x)
    if attrs(node).get("approximate", "none") == "tanh":
        x2 = b.op("Mul", [x, x])
        inner = _mul(b, b.op("Add", [x, _mul(b, x2, x, b.scalar(0.044715, x))]), b.scalar(_SQRT_2_PI, x))
        t = b.op("Tanh", [inner])
        dinner = b.op("Mul", [b.op("Add", [one, b.op("Mul", [x2, b.scalar(3 * 0.044715, x)])]), b.scalar(_SQRT_2_PI, x)])
        sech2 = b.op("Sub", [one, b.op("Mul", [t, t])])
        d = b.op("Add", [b.op("Mul", [half, b.op("Add", [one, t])]), _mul(b, half, x, sech2, dinner)])
        return [b.op("Mul", [dy, d])]
    cdf = b.op("Mul", [half, b.op("Add", [one, b.op("Erf", [b.op("Mul", [x, b.scalar(1 / math.sqrt(2.0), x)])])])])
    d = b.op("Add", [cdf, b.op("Mul", [x, _gauss(b, x, 1 / math.sqrt(2 * math.pi))])])
    return [b.op("Mul", [dy, d])]


@rule("Mish")
def _mish(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    t = b.op("Tanh", [b.op("Softplus", [x])])
    sech2 = b.op("Sub", [b.scalar(1.0, x), b.op("Mul", [t, t])])
    d = b.op("Add", [t, _mul(b, x, b.op("Sigmoid", [x]), sech2)])
    return [b.op("Mul", [dys[0], d])]


@rule("Clip")
def _clip(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if any(need[1:]):
        raise b.fail("no gradient with respect to Clip's min/max")
    x = node.input[0]
    a = attrs(node)
    lo = node.input[1] if len(node.input) > 1 and node.input[1] else (b.scalar(a["min"], x) if "min" in a else None)
    hi = node.input[2] if len(node.input) > 2 and node.input[2] else (b.scalar(a["max"], x) if "max" in a else None)
    conds = ([b.op("Greater", [x, lo])] if lo else []) + ([b.op("Less", [x, hi])] if hi else [])
    if not conds:
        return [dys[0]]
    cond = conds[0] if len(conds) == 1 else b.op("And", conds)
    return [b.mask(cond, dys[0])] + [None] * (len(node.input) - 1)


@rule("Max", "Min")
def _max_min(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, y = dys[0], node.output[0]
    if len(node.input) == 1:
        return [dy]
    one = b.scalar(1.0, y)
    hits = [b.cast(b.op("Equal", [x, y]), b.dtype(y)) for x in node.input]
    count = b.op("Sum", hits) if len(hits) > 1 else hits[0]
    share = b.op("Div", [dy, b.op("Max", [count, one])])
    return _each(b, node, need, [b.op("Mul", [share, h]) if n else None for h, n in zip(hits, need)])


@rule("Where")
def _where(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy = dys[0]
    cond = node.input[0]
    zero = b.scalar(0.0, dy)
    da = b.where(cond, dy, zero) if need[1] else None
    dc = b.where(cond, zero, dy) if need[2] else None
    return _each(b, node, need, [None, da, dc])


def _softmax_axis(b: Builder, node: onnx.NodeProto) -> tuple[int, tuple[int, ...] | None]:
    """The reduction axis, and the 2-D shape opsets < 13 coerce the input to (else None)."""
    shape = b.shape(node.input[0])
    rank = len(shape)
    if b.opset >= 13:
        return attrs(node).get("axis", -1) % rank, None
    axis = attrs(node).get("axis", 1) % rank
    outer = 1
    for d in shape[:axis]:
        outer *= d
    return 1, (outer, -1)


@rule("Softmax", "LogSoftmax")
def _softmax(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    dy, y = dys[0], node.output[0]
    axis, flat = _softmax_axis(b, node)
    if flat is not None:
        dy, y = b.reshape(dy, flat), b.reshape(y, flat)
    if node.op_type == "Softmax":
        dot = b.reduce_sum(b.op("Mul", [dy, y]), [axis])
        dx = b.op("Mul", [y, b.op("Sub", [dy, dot])])
    else:
        dx = b.op("Sub", [dy, b.op("Mul", [b.op("Exp", [y]), b.reduce_sum(dy, [axis])])])
    return [b.reshape(dx, b.shape(node.input[0])) if flat is not None else dx]
