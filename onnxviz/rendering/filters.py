"""The filter viewer: Conv-family weights read straight from the ONNX initializers (no framework).

A weight is followed back through what exporters put in front of it — Identity, Transpose,
Cast, Reshape with a constant shape, DequantizeLinear, Constant — and QLinearConv / ConvInteger
weights are dequantized with their scales and zero points. Weights computed at run time from
inputs are reported as not viewable, with the reason.

Layouts (``mode=``): ``"rgb"`` (a first layer with 3 input channels: one RGB tile per filter),
``"all"`` (per output filter, a row of its input-channel kernels), ``"mean"`` (per output filter,
the mean over its input channels), and ``"auto"`` (rgb for a 3-channel first layer, one tile per
filter for depthwise convs, all kernels when there are at most 256, else the mean). ConvTranspose
weights (in, out/group, k…) are shown per output channel like a Conv's; 1-D kernels as C×k rows;
3-D kernels by their middle depth slice.

Ranges (``norm=``): ``"filter"`` (default) maps each output filter's weights — all its
input-channel kernels together — to the full colour range, so kernels of one filter compare;
``"layer"`` uses one range for the whole layer (seed 004's ``(w - min) / (max - min)`` over the
layer), so filters compare with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxvizError
from .grid import RGBImage, RenderedImage, render, render_rgb

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["FilterBank", "filter_banks", "render_filters", "filter_caption", "weight_stats", "MODES", "FILTER_NORMS"]

MODES = ("auto", "rgb", "all", "mean")
FILTER_NORMS = ("filter", "layer")
NEAR_ZERO = 1e-3  # |w| below this fraction of max |w| counts as near zero


@dataclass(frozen=True)
class FilterBank:
    """One Conv layer's weights (real-valued, in the op's own layout), or why they cannot be shown."""

    name: str
    node: str
    op: str
    weights: np.ndarray | None
    group: int = 1
    bn_folded: str | None = None
    reason: str | None = None  # set when weights is None
    integer_units: bool = False  # ConvInteger without a scale: weights in integer units

    @property
    def viewable(self) -> bool:
        return self.weights is not None

    @property
    def label(self) -> str:
        from ..graph.naming import display_label

        return display_label(self.name, self.bn_folded)

    def stats(self) -> dict[str, Any]:
        """:func:`weight_stats` of the weights (computed once; {} when not viewable)."""
        return dict(self._stats)

    @cached_property
    def _stats(self) -> dict[str, Any]:
        return weight_stats(self.weights) if self.weights is not None else {}


def weight_stats(w: np.ndarray) -> dict[str, Any]:
    """min, max, mean, std and the share of near-zero weights (|w| < 1e-3 · max |w|), over the
    finite weights (null when there are none), and the counts of NaN and ±Inf weights."""
    from ..common import json_number

    w64 = w.astype(np.float64, copy=False)
    finite = np.isfinite(w64)
    n_nan = int(np.isnan(w64).sum())
    n_inf = int(w64.size - finite.sum()) - n_nan
    values = w64 if (n_nan + n_inf) == 0 else w64[finite]
    if values.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "near_zero": None, "count": int(w64.size), "nan": n_nan, "inf": n_inf}
    with np.errstate(over="ignore", invalid="ignore"):
        peak = float(np.abs(values).max())
        near = float((np.abs(values) < NEAR_ZERO * peak).mean()) if peak > 0 else 1.0
        stats = {"min": values.min(), "max": values.max(), "mean": values.mean(), "std": values.std()}
    return {**{k: json_number(v) for k, v in stats.items()}, "near_zero": near, "count": int(w64.size), "nan": n_nan, "inf": n_inf}


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


class _Constants:
    """Resolve a tensor name to a constant array by following the nodes that produce it."""

    def __init__(self, model: onnx.ModelProto, base_dir: str, weights: dict[str, np.ndarray] | None = None) -> None:
        graph = model.graph
        self.weights = weights or {}
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.inputs = {i.name for i in graph.input} - set(self.inits)
        self.base_dir = base_dir

    def resolve(self, name: str, depth: int = 0) -> tuple[np.ndarray | None, str | None]:
        if not name:
            return None, "missing input"
        if name in self.weights:
            return self.weights[name], None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name], self.base_dir), None
        if name in self.inputs:
            return None, f"weights come from the graph input '{name}'"
        node = self.producer.get(name)
        if node is None or depth > 16:
            return None, f"weights '{name}' have no constant producer"
        op = node.op_type
        if op == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t), None
            return None, "Constant without a tensor value"
        if op in ("Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze", "DequantizeLinear"):
            x, why = self.resolve(node.input[0], depth + 1)
            if x is None:
                return None, why
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if op == "Transpose":
                return np.transpose(x, attrs.get("perm")), None
            if op == "Cast":
                return x.astype(helper.tensor_dtype_to_np_dtype(attrs["to"])), None
            if op in ("Reshape", "Squeeze", "Unsqueeze"):
                return self._reshape(op, x, node, attrs, depth)
            if op == "DequantizeLinear":
                scale, why = self.resolve(node.input[1], depth + 1)
                if scale is None:
                    return None, why
                zero = self.resolve(node.input[2], depth + 1)[0] if len(node.input) > 2 and node.input[2] else None
                return _dequantize(x, scale, zero, attrs.get("axis", 1)), None
            return x, None
        return None, f"weights computed at run time by {op} '{node.name or name}'"

    def _reshape(self, op: str, x: np.ndarray, node: onnx.NodeProto, attrs: dict[str, Any], depth: int) -> tuple[np.ndarray | None, str | None]:
        if op == "Reshape":
            shape, why = self.resolve(node.input[1], depth + 1)
            if shape is None:
                return None, why
            shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
            return x.reshape(shape), None
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes_arr, why = self.resolve(node.input[1], depth + 1)
            if axes_arr is None:
                return None, why
            axes = [int(a) for a in axes_arr]
        if op == "Squeeze":
            return (np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))), None
        return np.expand_dims(x, axis=tuple(axes or ())), None


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float32)
    zero_f = np.zeros_like(scale) if zero is None else np.asarray(zero, dtype=np.float32)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_f = scale.reshape(shape), zero_f.reshape(shape)
    return (q.astype(np.float32) - zero_f) * scale


def _conv_weight(consts: _Constants, node: onnx.NodeProto) -> tuple[np.ndarray | None, str | None, bool]:
    if node.op_type == "QLinearConv":
        q, why = consts.resolve(node.input[3])
        if q is None:
            return None, why, False
        scale, why = consts.resolve(node.input[4])
        if scale is None:
            return None, why, False
        zero = consts.resolve(node.input[5])[0] if len(node.input) > 5 else None
        return _dequantize(q, scale, zero, 0), None, False
    w, why = consts.resolve(node.input[1] if len(node.input) > 1 else "")
    if w is None:
        return None, why, False
    if node.op_type == "ConvInteger":
        zero = consts.resolve(node.input[3])[0] if len(node.input) > 3 and node.input[3] else None
        return _dequantize(w, np.ones((), np.float32), zero, 0), None, True
    return w.astype(np.float32, copy=False), None, False


def filter_banks(model: "Model") -> list[FilterBank]:
    """The weights of every tapped Conv layer of ``model`` (same names and order as its conv taps)."""
    proto = model.proto
    model.loaded.check_unchanged()  # the weights are read from the model's files now
    nodes = {node.name or node.output[0]: node for node in proto.graph.node}
    consts = _Constants(proto, str(model.loaded.base_dir) if model.loaded.base_dir else "", model.loaded.weights)
    banks = []
    for tap in model.taps:
        node = nodes[tap.node]
        if node.op_type not in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv"):
            continue  # pooling, dense, merge... taps have no filters to show
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        weights, why, integer = _conv_weight(consts, node)
        if weights is not None and weights.ndim < 3:
            weights, why = None, f"unexpected weight shape {weights.shape}"
        banks.append(
            FilterBank(
                name=tap.name, node=tap.node, op=tap.op, weights=weights, group=int(group),
                bn_folded=tap.bn_folded, reason=why, integer_units=integer,
            )
        )
    return banks


def filter_caption(bank: FilterBank) -> list[str]:
    """Text lines for a filter image: shape, statistics, and the folded-BatchNorm note."""
    if not bank.viewable:
        return [f"{bank.label}: not viewable: {bank.reason}"]
    st = bank.stats()
    lines = [
        f"{bank.label}  {bank.op} {tuple(bank.weights.shape)}",
        f"min {_fmt(st['min'])}  max {_fmt(st['max'])}  mean {_fmt(st['mean'])}  std {_fmt(st['std'])}  "
        f"near-zero {_fmt(st['near_zero'], '.1%')}",
    ]
    if st["nan"] or st["inf"]:
        lines.append(f"nan {st['nan']:,}  inf {st['inf']:,} (drawn magenta; statistics over the finite weights)")
    if bank.bn_folded:
        lines.append("weights include folded BatchNorm scale")
    if bank.integer_units:
        lines.append("integer units (zero point removed, no scale)")
    return lines


def _per_output(bank: FilterBank) -> np.ndarray:
    """Weights as (out, in/group, k…): ConvTranspose's (in, out/group, k…) swapped per group."""
    w = bank.weights
    assert w is not None
    if bank.op != "ConvTranspose":
        return w
    g = bank.group
    cin, cout_g = w.shape[:2]
    k = w.shape[2:]
    per_group = w.reshape(g, cin // g, cout_g, *k).swapaxes(1, 2)  # (g, out/g, in/g, k…)
    return per_group.reshape(g * cout_g, cin // g, *k)


def render_filters(
    bank: FilterBank,
    *,
    mode: str = "auto",
    max_filters: int | None = 64,
    max_inputs: int = 16,
    cmap: str | None = "gray",
    min_tile: int | None = 24,
    labels: bool = False,
    norm: str = "filter",
    inputs: Sequence[int] | None = None,
    **options: Any,
) -> RenderedImage | RGBImage:
    """Render a layer's filters through the shared renderer (see module docs for ``mode`` and ``norm``).

    ``inputs``: only these input channels of each filter (``[0]``: seed 003's ``filter[0, :, :]``,
    one tile per filter)."""
    if mode not in MODES:
        raise OnnxvizError(f"unknown filter mode {mode!r}: use {', '.join(MODES)}")
    if norm not in FILTER_NORMS:
        raise OnnxvizError(f"unknown filter normalisation {norm!r}: use {', '.join(FILTER_NORMS)}")
    per_tile = "channel" if norm == "filter" else "layer"  # where a tile is a whole filter
    if not bank.viewable:
        raise OnnxvizError(f"filters of {bank.name} are not viewable: {bank.reason}")
    w = _per_output(bank)
    if w.ndim == 5:
        w = w[:, :, w.shape[2] // 2]  # 3-D kernels: middle depth slice
    m = w.shape[0] if max_filters is None else min(w.shape[0], max_filters)
    w = w[:m]
    if w.ndim == 3:  # 1-D kernels: each filter is an (in × k) image of rows
        return render(w, cmap=cmap, min_tile=min_tile, labels=labels, norm=per_tile, **options)
    cin = w.shape[1]
    if inputs is not None:
        idx = np.asarray(list(inputs), dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= cin:
            raise OnnxvizError(f"input channels {list(inputs)} out of range: the filters of {bank.name} have {cin} (0..{cin - 1})")
        w, cin = w[:, idx], int(idx.size)
        if mode == "auto" or (mode == "rgb" and cin != 3):
            mode = "all"
    if mode == "auto":
        mode = "rgb" if (cin == 3 and bank.group == 1) else ("all" if cin * m <= 256 else "mean")
    if mode == "rgb":
        if cin != 3:
            raise OnnxvizError(f"rgb filters need 3 input channels; {bank.name} has {cin}")
        return render_rgb(np.moveaxis(w, 1, -1), min_tile=min_tile, norm="tile" if norm == "filter" else "layer",
                          **{k: v for k, v in options.items() if k in ("padding", "ncols", "pad_color")})
    if mode == "mean" or cin == 1:
        with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: a NaN mean, drawn as NaN
            mean = w.mean(axis=1)
        return render(mean, cmap=cmap, min_tile=min_tile, labels=labels, norm=per_tile, **options)
    if norm == "filter":
        w = _unit_per_filter(w)  # then one shared 0..1 range keeps each filter's own scaling
    shown = min(cin, max_inputs)
    kernels = w[:, :shown].reshape(m * shown, *w.shape[2:])
    options.setdefault("ncols", shown)
    return render(kernels, cmap=cmap, min_tile=min_tile, norm="layer", **options)


def _unit_per_filter(w: np.ndarray) -> np.ndarray:
    """Each output filter's weights mapped to 0..1 by its own finite min and max (NaN/Inf kept)."""
    from .levels import _finite_minmax

    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    lo, hi, _ = _finite_minmax(flat)
    span = np.where(hi > lo, hi - lo, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        unit = (flat - lo[:, None]) / span[:, None]
    unit[(hi <= lo)[:, None] & np.isfinite(flat)] = 0.0  # a constant filter is one flat colour
    return unit.reshape(w.shape).astype(np.float32)
