"""Backward rules of the spatial ops: Conv, ConvTranspose, pooling and Resize.

- Conv → ConvTranspose with the same weights, strides, dilations and groups. The end pad and
  output_padding are worked out from the static shapes, so asymmetric padding (TF "SAME" on even
  sizes pads one more at the end) and strided convs whose last input rows no window reads come
  out exact. ConvTranspose → Conv, the same way round.
- MaxPool → its Indices output (added to the forward node when the model does not use it): each
  index is compared with the window positions to give a one-hot over the kernel, which a
  ConvTranspose with one-hot kernels scatters back, summing where windows overlap. No
  ScatterElements reduction is needed, so it works at any opset ≥ 11; ties go where onnxruntime's
  index points, as in PyTorch.
- AveragePool → ConvTranspose with a ones kernel of the output gradient divided by each window's
  divisor, which is read off the runtime itself (AveragePool of a ones tensor, constant-folded), so
  count_include_pad, ceil_mode and padding behave exactly as the forward does.
- Resize/Upsample → the transposed per-axis interpolation matrices, obtained by running that very
  Resize node on one-hot inputs (any mode: nearest, linear, cubic), or a block sum for
  integer-factor nearest upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from .builder import Builder, attrs
from .registry import rule


def _geometry(b: Builder, node: onnx.NodeProto, spatial_in: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and begin pads of a Conv/pool node (auto_pad resolved)."""
    a = attrs(node)
    nd = len(spatial_in)
    strides = list(a.get("strides") or [1] * nd)
    dilations = list(a.get("dilations") or [1] * nd)
    pads = list(a.get("pads") or [0] * (2 * nd))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            out = -(-spatial_in[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial_in[i], 0)
            small = total // 2
            pads[i] = small if auto == "SAME_UPPER" else total - small
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return strides, dilations, pads[:nd]


def _transpose_fit(ys: Sequence[int], xs: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int], begin: Sequence[int]) -> tuple[list[int], list[int]]:
    """End pads and output_padding making a ConvTranspose of ``ys`` come out at ``xs``."""
    ends, extra = [], []
    for y, x, kk, ss, dd, pb in zip(ys, xs, k, s, d, begin):
        full = (y - 1) * ss + dd * (kk - 1) + 1 - pb
        ends.append(max(full - x, 0))
        extra.append(max(x - full, 0))
    return ends, extra


def _transpose(b: Builder, g: str, w: str, ys: Sequence[int], xs: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int], begin: Sequence[int], group: int = 1) -> str:
    ends, extra = _transpose_fit(ys, xs, k, s, d, begin)
    return b.op(
        "ConvTranspose", [g, w], kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(begin) + ends,
        output_padding=extra if any(extra) else None, group=group,
    )  # fmt: skip


def _flipped_conv(b: Builder, g: str, w: str, ws: Sequence[int], ys: Sequence[int], xs: Sequence[int], k: Sequence[int], d: Sequence[int], begin: Sequence[int], group: int) -> str | None:
    """A stride-1 Conv's input gradient as a Conv with the kernel flipped and its channels swapped
    (per group): onnxruntime runs that with its fast (NCHWc) Conv kernels, where ConvTranspose is
    slower. The weight transform reads only the initializer, so it is constant-folded."""
    nd = len(k)
    lo = [d[i] * (k[i] - 1) - begin[i] for i in range(nd)]
    hi = [xs[i] - ys[i] + begin[i] for i in range(nd)]
    if min(lo + hi) < 0:
        return None
    m, c_per = ws[0], ws[1]
    if group == 1:
        flipped = b.op("Transpose", [w], perm=[1, 0] + list(range(2, 2 + nd)))
    else:
        split = b.reshape(w, [group, m // group, c_per] + list(k))
        swapped = b.op("Transpose", [split], perm=[0, 2, 1] + list(range(3, 3 + nd)))
        flipped = b.reshape(swapped, [group * c_per, m // group] + list(k))
    axes = [2 + i for i in range(nd) if k[i] > 1]
    if axes:
        flipped = b.slice(flipped, [-1] * len(axes), [-(2**62)] * len(axes), axes, [-1] * len(axes))
    return b.op("Conv", [g, flipped], kernel_shape=list(k), dilations=list(d), pads=lo + hi, group=group)


@rule("Conv")
def _conv(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if need[1]:
        raise b.fail("no gradient with respect to Conv weights (they depend on the differentiated input)")
    x, w = node.input[0], node.input[1]
    xs, ws, ys = b.shape(x), b.shape(w), b.shape(node.output[0])
    k = list(attrs(node).get("kernel_shape") or ws[2:])
    s, d, begin = _geometry(b, node, xs[2:], k)
    group = attrs(node).get("group", 1)
    dx = None
    if need[0]:
        dx = _flipped_conv(b, dys[0], w, ws, ys[2:], xs[2:], k, d, begin, group) if all(v == 1 for v in s) else None
        dx = dx or _transpose(b, dys[0], w, ys[2:], xs[2:], k, s, d, begin, group)
    db = b.reduce_sum(dys[0], [0] + list(range(2, len(ys))), keepdims=False) if len(node.input) > 2 and need[2] else None
    return [dx, None, db][: len(node.input)]


@rule("ConvTranspose")
def _conv_transpose(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    if need[1]:
        raise b.fail("no gradient with respect to ConvTranspose weights (they depend on the differentiated input)")
    a = attrs(node)
    x, w = node.input[0], node.input[1]
    xs, ws, ys = b.shape(x), b.shape(w), b.shape(node.output[0])
    nd = len(xs) - 2
    k = list(a.get("kernel_shape") or ws[2:])
    s = list(a.get("strides") or [1] * nd)
    d = list(a.get("dilations") or [1] * nd)
    extra = list(a.get("output_padding") or [0] * nd)
    begin = list(a.get("pads") or [0] * (2 * nd))[:nd]
    if a.get("output_shape") or a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):  # onnx's rule for the pads an output_shape / SAME implies
            total = s[i] * (xs[2 + i] - 1) + extra[i] + (k[i] - 1) * d[i] + 1 - ys[2 + i]
            begin[i] = total // 2 if a.get("auto_pad", "NOTSET") == "SAME_UPPER" else total - total // 2
    g = dys[0]
    # Conv of the output gradient: end pads so that it yields exactly the input's size.
    ends = [(xs[2 + i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - ys[2 + i] - begin[i] for i in range(nd)]
    crop = [i for i in range(nd) if ends[i] < 0]
    if crop:  # trailing output rows that only output_padding made: no input reaches them
        g = b.slice(g, [0] * len(crop), [ys[2 + i] + ends[i] for i in crop], [2 + i for i in crop])
        ends = [max(e, 0) for e in ends]
    dx = None
    if need[0]:
        dx = b.op("Conv", [g, w], kernel_shape=k, strides=s, dilations=d, pads=begin + ends, group=a.get("group", 1))
    db = b.reduce_sum(dys[0], [0] + list(range(2, len(ys))), keepdims=False) if len(node.input) > 2 and need[2] else None
    return [dx, None, db][: len(node.input)]


def _window_positions(xs: Sequence[int], ys: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int], begin: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For each kernel offset and output position: the flat input position (-1 outside), and the
    count of in-bounds positions per output window."""
    nd = len(xs)
    offsets = np.array(list(np.ndindex(*k)), dtype=np.int64).reshape(-1, nd)  # [K, nd], row-major
    flat = np.zeros([len(offsets)] + list(ys), dtype=np.int64)
    valid = np.ones([len(offsets)] + list(ys), dtype=bool)
    for axis in range(nd):
        o = np.arange(ys[axis]).reshape([1] * (axis + 1) + [-1] + [1] * (nd - axis - 1))
        off = offsets[:, axis].reshape([-1] + [1] * nd)
        pos = o * s[axis] - begin[axis] + off * d[axis]
        valid &= (pos >= 0) & (pos < xs[axis])
        flat = flat * xs[axis] + pos
    counts = valid.sum(axis=0)
    return np.where(valid, flat, -1), counts


def _maxpool_indices(b: Builder, node: onnx.NodeProto) -> None:
    """MaxPool's optional Indices output (row-major), added when the model does not use it."""
    if len(node.output) > 1 and node.output[1]:
        return
    for attr in node.attribute:
        if attr.name == "storage_order":
            attr.i = 0  # the indices are unused elsewhere: make them row-major
    b.add_output(node, 1, "maxpool_indices", b.shape(node.output[0]), onnx.TensorProto.INT64)


@rule("MaxPool", prepare=_maxpool_indices)
def _maxpool(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    if a.get("storage_order", 0):
        raise b.fail("MaxPool with storage_order=1 has no backward rule")
    x, indices = node.input[0], node.output[1]
    xs, ys = b.shape(x), b.shape(node.output[0])
    n, c, sx, sy = xs[0], xs[1], list(xs[2:]), list(ys[2:])
    k = list(a["kernel_shape"])
    s, d, begin = _geometry(b, node, sx, k)
    positions, _ = _window_positions(sx, sy, k, s, d, begin)
    kk = positions.shape[0]
    within = b.op("Mod", [indices, b.const(np.asarray(int(np.prod(sx)), dtype=np.int64))])
    hit = b.op("Equal", [b.unsqueeze(within, [2]), b.const(positions.reshape([1, 1, kk] + sy))])
    spread = b.mask(hit, b.unsqueeze(dys[0], [2]))
    onehot = np.eye(kk).reshape([kk, 1] + k)
    dx = _transpose(b, b.reshape(spread, [n * c, kk] + sy), b.const(onehot, like=x), sy, sx, k, s, d, begin)
    return [b.reshape(dx, xs)]


@rule("AveragePool")
def _avgpool(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    x = node.input[0]
    xs, ys = b.shape(x), b.shape(node.output[0])
    n, c, sx, sy = xs[0], xs[1], list(xs[2:]), list(ys[2:])
    k = list(a["kernel_shape"])
    s, d, begin = _geometry(b, node, sx, k)
    _, counts = _window_positions(sx, sy, k, s, d, begin)
    # 1/divisor per window as the runtime computes it: AveragePool(ones) = in-bounds count / divisor.
    ones = b.const(np.ones([1, 1] + sx), like=x)
    pooled = b.op("AveragePool", [ones], **{k_: v for k_, v in a.items()})
    weight = b.op("Div", [pooled, b.const(np.maximum(counts, 1).reshape([1, 1] + sy), like=x)])
    scaled = b.reshape(b.op("Mul", [dys[0], weight]), [n * c, 1] + sy)
    dx = _transpose(b, scaled, b.const(np.ones([1, 1] + k), like=x), sy, sx, k, s, d, begin)
    return [b.reshape(dx, xs)]


@rule("GlobalAveragePool")
def _global_avg(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    xs = b.shape(node.input[0])
    scaled = b.op("Mul", [dys[0], b.scalar(1.0 / int(np.prod(xs[2:])), node.input[0])])
    return [b.expand(scaled, xs)]


@rule("GlobalMaxPool")
def _global_max(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    x = node.input[0]
    hit = b.cast(b.op("Equal", [x, node.output[0]]), b.dtype(x))  # ties share evenly
    count = b.reduce_sum(hit, list(range(2, b.rank(x))), keepdims=True)
    return [b.op("Mul", [hit, b.op("Div", [dys[0], count])])]


# -- Resize / Upsample ------------------------------------------------------------------------------
def _resize_inputs(b: Builder, node: onnx.NodeProto) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(scales, sizes) of a Resize/Upsample node, as given (either may be None)."""
    a = attrs(node)
    if node.op_type == "Upsample" and "scales" in a:
        return np.asarray(a["scales"], dtype=np.float32), None
    ins = list(node.input) + [""] * 4
    if node.op_type == "Upsample" or b.opset < 11:
        return b.value(ins[1], "scales").astype(np.float32), None
    scales = b.value(ins[2], "scales") if ins[2] else None
    sizes = b.value(ins[3], "sizes") if ins[3] else None
    scales = None if scales is None or scales.size == 0 else scales.astype(np.float32)
    sizes = None if sizes is None or sizes.size == 0 else sizes.astype(np.int64)
    return scales, sizes


def _axis_matrix(b: Builder, node: onnx.NodeProto, axis: int, copy_axis: int, n_in: int, n_out: int) -> np.ndarray:
    """The forward interpolation matrix (n_out × n_in) along ``axis``, from onnxruntime itself."""
    from ...run.session import create_session

    a = attrs(node)
    rank = b.rank(node.input[0])
    scales, sizes = _resize_inputs(b, node)
    listed = [int(v) % rank for v in a.get("axes", range(rank))]
    shape = [1] * rank
    shape[axis] = n_in
    shape[copy_axis] = n_in
    probe = np.zeros(shape, dtype=np.float32)
    for j in range(n_in):  # copy j holds the unit vector e_j along ``axis``
        index = [0] * rank
        index[axis] = index[copy_axis] = j
        probe[tuple(index)] = 1.0
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)]
    inits = []
    names = ["x"]
    if node.op_type == "Resize" and b.opset >= 11:
        names += [""] * 2 + (["sizes"] if sizes is not None else [])
        if scales is not None:
            names[2] = "scales"
        if b.opset < 13:  # roi and scales are not optional yet
            names[1] = "roi"
            inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
            if scales is None:
                names[2] = "scales"
                inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), "scales"))
    else:
        names.append("scales")
    if scales is not None:
        full = np.ones(len(listed), dtype=np.float32)
        full[listed.index(axis)] = scales[listed.index(axis)]
        inits.append(onnx.numpy_helper.from_array(full, "scales"))
    if sizes is not None:
        full_sizes = np.ones(len(listed), dtype=np.int64)
        full_sizes[listed.index(axis)] = n_out
        if copy_axis in listed:
            full_sizes[listed.index(copy_axis)] = n_in
        inits.append(onnx.numpy_helper.from_array(full_sizes, "sizes"))
    while names and names[-1] == "":
        names.pop()
    keep = {k_: v for k_, v in a.items() if k_ != "keep_aspect_ratio_policy"}
    probe_node = helper.make_node(node.op_type, names, ["y"], **keep)
    graph = helper.make_graph([probe_node], "resize_probe", inputs, [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)], ir_version=b.ir_version)
    session, _ = create_session(model.SerializeToString(), provider="cpu", optimization="basic")
    y = session.run(None, {"x": probe})[0]
    index = [0] * rank
    index[axis] = slice(None)
    index[copy_axis] = slice(None)
    matrix = y[tuple(index)]  # (n_in copies, n_out) or transposed, by axis order
    matrix = matrix if copy_axis < axis else matrix.T
    if matrix.shape != (n_in, n_out):
        raise b.fail(f"could not read the interpolation along axis {axis} ({matrix.shape} instead of {(n_in, n_out)})")
    return np.ascontiguousarray(matrix.T, dtype=np.float64)


@rule("Resize", "Upsample", values=(1, 2, 3))
def _resize(b: Builder, node: onnx.NodeProto, dys: list[str | None], need: list[bool]) -> list[str | None]:
    a = attrs(node)
    if a.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise b.fail("Resize with coordinate_transformation_mode=tf_crop_and_resize has no backward rule")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise b.fail("Resize with keep_aspect_ratio_policy has no backward rule")
    x = node.input[0]
    xs, ys = list(b.shape(x)), list(b.shape(node.output[0]))
    changed = [i for i in range(len(xs)) if xs[i] != ys[i]]
    steady = [i for i in range(len(xs)) if xs[i] == ys[i]]
    if changed and not steady:
        raise b.fail("Resize that changes every axis has no backward rule")
    g, shape = dys[0], ys
    for axis in changed:
        forward = _axis_matrix(b, node, axis, steady[0], xs[axis], ys[axis])
        factor = ys[axis] // xs[axis]
        if ys[axis] == factor * xs[axis] and np.array_equal(forward, np.kron(np.eye(xs[axis]), np.ones((factor, 1)))):
            folded = shape[:axis] + [xs[axis], factor] + shape[axis + 1 :]
            g = b.reduce_sum(b.reshape(g, folded), [axis + 1], keepdims=False)
            shape = shape[:axis] + [xs[axis]] + shape[axis + 1 :]
        else:
            g, shape_t = b.axis_map_backward(g, shape, axis, forward, x)
            shape = list(shape_t)
    return [g] + [None] * (len(node.input) - 1)
