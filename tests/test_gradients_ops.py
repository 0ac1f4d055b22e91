"""Every backward rule against finite differences on a synthetic graph, with the tricky
attributes: asymmetric and SAME pads, strides whose last rows no window reads, dilations, groups
and depthwise, ceil_mode, count_include_pad, strided and reversed slices, broadcasting.

Reference: central differences in float64 through onnx's ReferenceEvaluator; the gradient under
test runs in onnxruntime in float64 where all its kernels exist (relative error ≤ 1e-6 of the
largest gradient entry), else in float32 (≤ 1e-4).
``engine="ort"`` cases difference onnxruntime's own float32 forward instead (exact for linear
ops with a unit step; used where the reference evaluator's forward differs from onnxruntime's).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from gradcheck import build, fd_error

import onnxviz
from onnxviz.errors import GradientError, InputError, UnsupportedOpError
from onnxviz.explain import GradientProgram, supported_ops

N = helper.make_node
R = np.random.default_rng(7)
TOL = 1e-4  # the gradient in float32
TOL64 = 1e-6  # the gradient in float64 (where every op of both graphs has a float64 kernel)


def w(*shape):
    return R.standard_normal(shape)


def ints(*v):
    return np.asarray(v, dtype=np.int64)


X4 = {"x": (2, 3, 7, 8)}
# onnxruntime's own float32 forward as the reference: exact for linear maps with a unit step; for
# smooth ops where onnx's ReferenceEvaluator differs from onnxruntime (its Erf is an approximation,
# its opset-11 Softmax ignores the 2-D coercion, its LRN mixes up channels), a small step and a
# 1e-3 tolerance.
LINEAR = {"engine": "ort", "eps": 1.0}
SMOOTH = {"engine": "ort", "eps": 1e-3, "tol": 1e-3}
CONV_W = w(4, 3, 3, 3)

# id → (nodes, inputs, initializers, options)
CASES = {
    # --- Conv family ---------------------------------------------------------------------
    "conv_asymmetric_pads": ([N("Conv", ["x", "W"], ["y"], pads=[0, 1, 2, 1])], X4, {"W": CONV_W}, {}),
    "conv_end_pads_exceed_begin": ([N("Conv", ["x", "W"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])], {"x": (1, 3, 8, 8)}, {"W": CONV_W}, {}),
    "conv_same_upper_even": ([N("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], {"x": (1, 3, 8, 6)}, {"W": CONV_W}, {}),
    "conv_same_lower": ([N("Conv", ["x", "W"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])], {"x": (1, 3, 8, 6)}, {"W": CONV_W}, {}),
    "conv_stride_unread_rows": ([N("Conv", ["x", "W", "B"], ["y"], strides=[2, 3])], {"x": (1, 3, 8, 9)}, {"W": CONV_W, "B": w(4)}, {}),
    "conv_dilation": ([N("Conv", ["x", "W"], ["y"], dilations=[2, 2], pads=[2, 1, 1, 2])], X4, {"W": CONV_W}, {}),
    "conv_groups": ([N("Conv", ["x", "W"], ["y"], group=2, strides=[2, 1], pads=[1, 1, 1, 1])], {"x": (1, 4, 7, 6)}, {"W": w(6, 2, 3, 3)}, {}),
    "conv_depthwise": ([N("Conv", ["x", "W"], ["y"], group=3, pads=[1, 1, 1, 1], strides=[2, 2])], {"x": (2, 3, 8, 8)}, {"W": w(3, 1, 3, 3)}, {}),
    "conv_1x1": ([N("Conv", ["x", "W"], ["y"])], X4, {"W": w(5, 3, 1, 1)}, {}),
    "conv_1d": ([N("Conv", ["x", "W"], ["y"], strides=[2], pads=[1, 2])], {"x": (2, 3, 11)}, {"W": w(4, 3, 3)}, {}),
    "conv_3d": ([N("Conv", ["x", "W"], ["y"], strides=[1, 2, 1], pads=[0, 1, 1, 1, 0, 0])], {"x": (1, 2, 4, 5, 4)}, {"W": w(3, 2, 2, 3, 2)}, {}),
    "conv_transpose": ([N("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0])], {"x": (1, 3, 4, 5)}, {"W": w(3, 2, 3, 3), "B": w(2)}, {}),
    "conv_transpose_groups_dilation": ([N("ConvTranspose", ["x", "W"], ["y"], group=2, dilations=[2, 1], strides=[1, 2])], {"x": (1, 4, 4, 4)}, {"W": w(4, 3, 2, 2)}, LINEAR),
    "conv_transpose_output_shape": ([N("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], output_shape=[9, 8])], {"x": (1, 3, 4, 4)}, {"W": w(3, 2, 3, 3)}, LINEAR),
    "conv_transpose_paddle_2x2": ([N("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], kernel_shape=[2, 2])], {"x": (1, 3, 3, 4)}, {"W": w(3, 2, 2, 2)}, {}),
    # --- pooling -------------------------------------------------------------------------
    "maxpool_overlap_pads": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], X4, {}, {}),
    "maxpool_ceil_mode": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)], X4, {}, {}),
    "maxpool_dilation": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2], pads=[0, 1, 1, 0])], X4, {}, {}),
    "maxpool_same_upper_opset11": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_UPPER")], {"x": (1, 2, 5, 6)}, {}, {"opset": 11}),
    "maxpool_1d": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2])], {"x": (2, 2, 9)}, {}, {}),
    "maxpool_with_indices_used": ([N("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]), N("Cast", ["i"], ["f"], to=1), N("Add", ["p", "f"], ["y"])], X4, {}, {}),
    "avgpool_count_include_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)], X4, {}, {}),
    "avgpool_exclude_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2])], X4, {}, {}),
    "avgpool_ceil_mode": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0], count_include_pad=1)], X4, {}, LINEAR),
    "avgpool_ceil_exclude": ([N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], {"x": (1, 2, 5, 7)}, {}, LINEAR),
    "avgpool_same_upper": ([N("AveragePool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER")], X4, {}, {}),
    "avgpool_paddle_3x2": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[3, 2], pads=[0, 0, 0, 0])], {"x": (1, 2, 7, 8)}, {}, {"opset": 11}),
    "global_average_pool": ([N("GlobalAveragePool", ["x"], ["y"])], X4, {}, {}),
    "global_max_pool": ([N("GlobalMaxPool", ["x"], ["y"])], X4, {}, {}),
    # --- dense ---------------------------------------------------------------------------
    "gemm_transB_bias": ([N("Gemm", ["a", "B", "C"], ["y"], transB=1, alpha=0.7, beta=1.3)], {"a": (3, 5)}, {"B": w(4, 5), "C": w(4)}, {}),
    "gemm_transA_both_inputs": ([N("Gemm", ["a", "b"], ["y"], transA=1)], {"a": (5, 3), "b": (5, 4)}, {}, {}),
    "gemm_transA_transB": ([N("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1)], {"a": (5, 3), "b": (4, 5), "c": (1, 4)}, {}, {}),
    "matmul_2d": ([N("MatMul", ["a", "B"], ["y"])], {"a": (3, 5)}, {"B": w(5, 4)}, {}),
    "matmul_batched_broadcast": ([N("MatMul", ["a", "b"], ["y"])], {"a": (2, 1, 3, 4), "b": (5, 4, 2)}, {}, {}),
    "matmul_vector": ([N("MatMul", ["a", "b"], ["y"])], {"a": (4,), "b": (2, 4, 3)}, {}, {}),
    # --- elementwise with broadcasting ---------------------------------------------------
    "add_broadcast": ([N("Add", ["x", "b"], ["y"])], {"x": (2, 3, 4, 5), "b": (3, 1, 1)}, {}, {}),
    "sub_broadcast": ([N("Sub", ["b", "x"], ["y"])], {"x": (2, 3, 4, 5), "b": (1, 5)}, {}, {}),
    "mul_broadcast": ([N("Mul", ["x", "b"], ["y"])], {"x": (2, 3, 4), "b": (2, 1, 4)}, {}, {}),
    "div_broadcast": ([N("Div", ["x", "b"], ["y"])], {"x": (2, 3, 4), "b": (4,)}, {}, {"positive": True}),
    "sum_mean_variadic": ([N("Sum", ["x", "b", "c"], ["s"]), N("Mean", ["s", "b"], ["y"])], {"x": (2, 3), "b": (3,), "c": (2, 1)}, {}, {}),
    "max_min_variadic": ([N("Max", ["x", "b"], ["m"]), N("Min", ["m", "c"], ["y"])], {"x": (2, 3), "b": (3,), "c": (2, 1)}, {}, {}),
    "where": ([N("Greater", ["x", "b"], ["c"]), N("Where", ["c", "x", "b"], ["y"])], {"x": (3, 4), "b": (4,)}, {}, {}),
    "pow_both": ([N("Pow", ["x", "e"], ["y"])], {"x": (3, 4), "e": (4,)}, {}, {"positive": True}),
    # --- activations ---------------------------------------------------------------------
    "relu": ([N("Relu", ["x"], ["y"])], X4, {}, {}),
    "leaky_relu": ([N("LeakyRelu", ["x"], ["y"], alpha=0.1)], X4, {}, {}),
    "prelu_slope_too": ([N("PRelu", ["x", "s"], ["y"])], {"x": (2, 3, 4, 4), "s": (3, 1, 1)}, {}, {}),
    "clip_inputs": ([N("Clip", ["x", "lo", "hi"], ["y"])], X4, {"lo": np.array(-0.5), "hi": np.array(0.7)}, {}),
    "clip_relu6_one_bound": ([N("Clip", ["x", "lo"], ["y"])], X4, {"lo": np.array(0.1)}, {}),
    "sigmoid": ([N("Sigmoid", ["x"], ["y"])], X4, {}, {}),
    "silu_written_out": ([N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["y"])], X4, {}, {}),
    "tanh": ([N("Tanh", ["x"], ["y"])], X4, {}, {}),
    "hard_sigmoid": ([N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], {"x": (2, 3, 8, 8)}, {}, {}),
    "hard_swish": ([N("HardSwish", ["x"], ["y"])], {"x": (2, 3, 8, 8)}, {}, {"feeds": {"x": R.standard_normal((2, 3, 8, 8)) * 4}}),
    "hard_swish_written_out": ([N("HardSigmoid", ["x"], ["s"], alpha=1 / 6), N("Mul", ["x", "s"], ["y"])], {"x": (2, 3, 8, 8)}, {}, {"feeds": {"x": R.standard_normal((2, 3, 8, 8)) * 4}}),
    "gelu_op": ([N("Gelu", ["x"], ["y"])], X4, {}, {"opset": 20, **SMOOTH}),
    "gelu_tanh_op": ([N("Gelu", ["x"], ["y"], approximate="tanh")], X4, {}, {"opset": 20}),
    "gelu_written_out": ([N("Div", ["x", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]), N("Mul", ["x", "a"], ["m"]), N("Mul", ["m", "half"], ["y"])], X4, {"r2": np.array(1.4142135623730951), "one": np.array(1.0), "half": np.array(0.5)}, SMOOTH),
    "elu": ([N("Elu", ["x"], ["y"], alpha=0.8)], X4, {}, {}),
    "selu": ([N("Selu", ["x"], ["y"])], X4, {}, {}),
    "celu": ([N("Celu", ["x"], ["y"], alpha=1.3)], X4, {}, {}),
    "softplus_softsign": ([N("Softplus", ["x"], ["s"]), N("Softsign", ["s"], ["y"])], X4, {}, {}),
    "mish": ([N("Mish", ["x"], ["y"])], X4, {}, {"opset": 18}),
    "exp_log_sqrt_reciprocal": ([N("Exp", ["x"], ["e"]), N("Log", ["x"], ["l"]), N("Sqrt", ["x"], ["s"]), N("Reciprocal", ["x"], ["r"]), N("Sum", ["e", "l", "s", "r"], ["y"])], {"x": (3, 4)}, {}, {"positive": True}),
    "abs_neg": ([N("Abs", ["x"], ["a"]), N("Neg", ["x"], ["n"]), N("Mul", ["a", "n"], ["y"])], X4, {}, {}),
    "softmax_axis1": ([N("Softmax", ["x"], ["y"], axis=1)], X4, {}, {}),
    "softmax_opset11_coerced": ([N("Softmax", ["x"], ["y"], axis=2)], X4, {}, {"opset": 11, **SMOOTH}),
    "log_softmax": ([N("LogSoftmax", ["x"], ["y"], axis=-1)], {"x": (3, 7)}, {}, {}),
    # --- layout --------------------------------------------------------------------------
    "reshape_flatten_transpose": ([N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), N("Flatten", ["t"], ["f"], axis=2), N("Reshape", ["f", "s"], ["y"])], X4, {"s": ints(4, -1)}, {}),
    "squeeze_unsqueeze": ([N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u", "a"], ["y"])], X4, {"a": ints(1)}, {}),
    "squeeze_unsqueeze_opset11": ([N("Unsqueeze", ["x"], ["u"], axes=[0]), N("Squeeze", ["u"], ["y"], axes=[0])], X4, {}, {"opset": 11}),
    "concat": ([N("Concat", ["x", "c", "x"], ["y"], axis=1)], X4, {"c": w(2, 1, 7, 8)}, {}),
    "split_unused_output": ([N("Split", ["x", "s"], ["a", "b", "c"], axis=3), N("Mul", ["a", "c"], ["y"])], X4, {"s": ints(3, 2, 3)}, {}),
    "split_opset11_attr": ([N("Split", ["x"], ["a", "b"], axis=1, split=[1, 2]), N("Add", ["b", "a"], ["y"])], X4, {}, {"opset": 11}),
    "slice_contiguous": ([N("Slice", ["x", "s", "e", "a"], ["y"])], X4, {"s": ints(1, -5), "e": ints(3, 100), "a": ints(1, 3)}, {}),
    "slice_strided": ([N("Slice", ["x", "s", "e", "a", "st"], ["y"])], X4, {"s": ints(1, 0), "e": ints(7, 8), "a": ints(2, 3), "st": ints(2, 3)}, {}),
    "slice_reversed": ([N("Slice", ["x", "s", "e", "a", "st"], ["y"])], X4, {"s": ints(-1, 6), "e": ints(-100, 1), "a": ints(1, 2), "st": ints(-1, -2)}, {}),
    "pad_constant_negative": ([N("Pad", ["x", "p"], ["y"])], X4, {"p": ints(0, 0, 2, -1, 0, 1, -2, 3)}, LINEAR),
    "pad_reflect": ([N("Pad", ["x", "p"], ["y"], mode="reflect")], X4, {"p": ints(0, 0, 2, 1, 0, 0, 1, 3)}, {}),
    "pad_edge_axes": ([N("Pad", ["x", "p", "", "a"], ["y"], mode="edge")], X4, {"p": ints(2, 1, 3, 0), "a": ints(2, 3)}, {"opset": 18}),
    "expand_tile": ([N("Expand", ["x", "s"], ["e"]), N("Tile", ["e", "r"], ["y"])], {"x": (3, 1)}, {"s": ints(2, 3, 4), "r": ints(1, 2, 3)}, {}),
    "gather_duplicate_indices": ([N("Gather", ["x", "i"], ["y"], axis=1)], X4, {"i": ints(0, 2, 2, -1)}, {}),
    "reduce_mean_sum_keepdims": ([N("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1), N("ReduceSum", ["x", "a"], ["s"], keepdims=0), N("Unsqueeze", ["s", "a"], ["u"]), N("Add", ["m", "u"], ["y"])], X4, {"a": ints(1)}, {}),
    "reduce_mean_axes_input_opset18": ([N("ReduceMean", ["x", "a"], ["y"], keepdims=0)], X4, {"a": ints(-1, 1)}, {"opset": 18}),
    "reduce_max_min": ([N("ReduceMax", ["x"], ["a"], axes=[1], keepdims=1), N("ReduceMin", ["x"], ["b"], axes=[3], keepdims=1), N("Add", ["a", "b"], ["y"])], X4, {}, {}),
    "batchnorm_inference": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], X4, {"s": w(3), "b": w(3), "m": w(3), "v": np.abs(w(3)) + 0.5}, {}),
    "identity_dropout_cast": ([N("Identity", ["x"], ["i"]), N("Dropout", ["i"], ["d"]), N("Cast", ["d"], ["c"], to=11), N("Cast", ["c"], ["y"], to=1)], X4, {}, {}),
    # --- Resize --------------------------------------------------------------------------
    "resize_nearest_2x_asymmetric": ([N("Resize", ["x", "roi", "sc"], ["y"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")], {"x": (1, 2, 4, 5)}, {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)}, {"opset": 11, **LINEAR}),
    "resize_nearest_sizes_half_pixel": ([N("Resize", ["x", "", "", "sz"], ["y"], mode="nearest")], {"x": (1, 2, 5, 4)}, {"sz": ints(1, 2, 8, 7)}, LINEAR),
    "resize_linear_align_corners": ([N("Resize", ["x", "", "sc"], ["y"], mode="linear", coordinate_transformation_mode="align_corners")], {"x": (1, 2, 4, 5)}, {"sc": np.array([1, 1, 1.5, 2], np.float32)}, LINEAR),
    "resize_cubic_down": ([N("Resize", ["x", "", "", "sz"], ["y"], mode="cubic")], {"x": (1, 1, 9, 8)}, {"sz": ints(1, 1, 5, 6)}, LINEAR),
    # --- normalizations, space/depth, more reductions ---------------------------------------
    "layer_norm_wrt_scale_bias": ([N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-2, epsilon=1e-3)], {"x": (2, 3, 4, 5), "s": (4, 5), "b": (5,)}, {}, {}),
    "layer_norm_stats_used": ([N("LayerNormalization", ["x", "s"], ["n", "m", "i"], axis=1), N("Mul", ["n", "i"], ["y"])], {"x": (2, 3, 4)}, {"s": w(3, 4)}, {}),
    "instance_norm": ([N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)], {"x": (2, 3, 4, 5), "s": (3,), "b": (3,)}, {}, {}),
    "lrn": ([N("LRN", ["x"], ["y"], size=3, alpha=0.3, beta=0.75, bias=1.5)], {"x": (2, 5, 3, 4)}, {}, SMOOTH),
    "lrn_size5": ([N("LRN", ["x"], ["y"], size=5, alpha=0.2, beta=0.6)], {"x": (1, 6, 3, 3)}, {}, SMOOTH),
    "reduce_l1_l2_sumsquare_logsumexp": ([N("ReduceL1", ["x"], ["a"], axes=[1]), N("ReduceL2", ["x"], ["b"], axes=[1]), N("ReduceSumSquare", ["x"], ["c"], axes=[1]),
                                          N("ReduceLogSumExp", ["x"], ["d"], axes=[1]), N("Sum", ["a", "b", "c", "d"], ["y"])], {"x": (2, 5, 3)}, {}, {}),
    "depth_to_space_dcr_crd": ([N("DepthToSpace", ["x"], ["a"], blocksize=2), N("DepthToSpace", ["x"], ["b"], blocksize=2, mode="CRD"), N("Mul", ["a", "b"], ["y"])], {"x": (2, 8, 3, 2)}, {}, {}),
    "space_to_depth": ([N("SpaceToDepth", ["x"], ["y"], blocksize=2)], {"x": (2, 3, 4, 6)}, {}, {}),
    "thresholded_relu": ([N("ThresholdedRelu", ["x"], ["y"], alpha=0.4)], X4, {}, {}),
    # --- piecewise constant ----------------------------------------------------------------
    "floor_passes_nothing": ([N("Floor", ["x"], ["f"]), N("Add", ["f", "x"], ["y"])], {"x": (3, 4)}, {}, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backward_rule_matches_finite_differences(case):
    nodes, inputs, inits, options = CASES[case]
    options = dict(options)
    tol = options.pop("tol", TOL)
    err, dtype = fd_error(nodes, inputs, inits, **options)
    if dtype is np.float64:
        tol = TOL64
    assert err <= tol, f"{case}: relative error {err:.2e} ({np.dtype(dtype).name})"


def test_every_rule_is_exercised():
    """Each op in the rule table appears in at least one finite-difference case (or is listed
    here with the test that covers it)."""
    used = {node.op_type for nodes, *_ in CASES.values() for node in nodes}
    covered_elsewhere = {"QuantizeLinear", "DequantizeLinear", "Ceil", "Round", "Sign", "Upsample"}
    missing = set(supported_ops()) - used - covered_elsewhere
    assert not missing, f"no finite-difference case for {sorted(missing)}"


def test_qdq_is_straight_through_with_saturation_mask():
    """QuantizeLinear → DequantizeLinear: the float model's gradient, zero where the value saturates
    the integer range (PyTorch's FakeQuantize backward)."""
    shape = (1, 2, 6, 6)
    weights = {"W": w(3, 2, 3, 3), "s": np.array(0.02, np.float32), "z": np.array(0, np.int8)}
    conv = N("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])
    qdq = [conv, N("QuantizeLinear", ["c", "s", "z"], ["q"]), N("DequantizeLinear", ["q", "s", "z"], ["d"]), N("Relu", ["d"], ["y"])]
    x = R.standard_normal(shape).astype(np.float32)
    seed = R.standard_normal((1, 3, 6, 6)).astype(np.float32)
    r = GradientProgram(build(qdq, {"x": shape}, weights, opset=13), wrt="x", target="y", outputs=["c"]).run(x, seed=seed)
    c = r.outputs["c"]
    inside = (np.round(c / 0.02) >= -128) & (np.round(c / 0.02) <= 127)
    assert 0.05 < inside.mean() < 0.95  # some values saturate, some do not
    passed = seed * inside * (np.clip(np.round(c / 0.02), -128, 127) > 0)  # Relu of the dequantized value
    plain = GradientProgram(build([N("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], {"x": shape}, weights, opset=13), wrt="x", target="y")
    np.testing.assert_allclose(r.grads["x"], plain.run(x, seed=passed).grads["x"], rtol=1e-5, atol=1e-6)


def test_unsupported_op_is_one_line_naming_op_and_node():
    nodes = [N("Conv", ["x", "W"], ["c"]), N("LpNormalization", ["c"], ["n"], name="the_norm"), N("Relu", ["n"], ["y"])]
    model = onnxviz.load(build(nodes, {"x": (1, 3, 5, 5)}, {"W": w(2, 3, 3, 3)}))
    with pytest.raises(UnsupportedOpError) as info:
        GradientProgram(model, target="y").run(np.zeros((1, 3, 5, 5), np.float32))
    message = str(info.value)
    assert "LpNormalization" in message and "the_norm" in message and "\n" not in message
    # a layer after the unsupported op differentiates fine: only the path matters
    r = GradientProgram(model, wrt="n", target="y").run(np.ones((1, 3, 5, 5), np.float32), seed=np.ones((1, 2, 3, 3), np.float32))
    assert r.grads["n"].shape == (1, 2, 3, 3)


def test_quantized_operator_is_refused_with_a_hint():
    nodes = [N("QuantizeLinear", ["x", "s", "z"], ["q"]), N("QLinearConv", ["q", "s", "z", "W", "s", "z", "s", "z"], ["qc"], name="qconv"),
             N("DequantizeLinear", ["qc", "s", "z"], ["y"])]  # fmt: skip
    inits = {"s": np.array(0.1, np.float32), "z": np.array(0, np.uint8), "W": np.ones((2, 3, 3, 3), np.uint8)}
    model = onnxviz.load(build(nodes, {"x": (1, 3, 5, 5)}, inits, opset=13))
    with pytest.raises(UnsupportedOpError, match="QLinearConv.*qconv.*QDQ"):
        GradientProgram(model, target="y").run(np.zeros((1, 3, 5, 5), np.float32), seed=np.ones((1, 2, 3, 3), np.float32))


def test_gradient_of_unrelated_tensor_is_zero_and_errors_are_gradient_errors():
    nodes = [N("Relu", ["x"], ["y"]), N("Sigmoid", ["x2"], ["z"])]
    model = build(nodes, {"x": (2, 3), "x2": (2, 3)}, outputs=("y", "z"))
    r = GradientProgram(model, wrt=["x", "x2"], target="y").run({"x": np.ones((2, 3), np.float32), "x2": np.ones((2, 3), np.float32)}, classes=[0, 2])
    assert np.all(r.grads["x2"] == 0) and r.grads["x"][0, 0] == 1 and r.grads["x"][1, 2] == 1 and r.grads["x"].sum() == 2
    with pytest.raises(GradientError, match="neither a layer nor a tensor"):
        GradientProgram(model, wrt="nope", target="y")
    with pytest.raises(GradientError, match="ambiguous"):
        GradientProgram(model, wrt="input", target="y")


def test_gradients_need_no_framework(tmp_path):
    """A gradient computation in a process where importing torch, tensorflow or keras fails."""
    import subprocess
    import sys

    nodes = [N("Conv", ["x", "W"], ["c"], pads=[0, 0, 1, 1], strides=[2, 2]), N("Relu", ["c"], ["r"]),
             N("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), N("Flatten", ["p"], ["f"]), N("Gemm", ["f", "F"], ["l"], transB=1),
             N("Softmax", ["l"], ["y"])]  # fmt: skip
    model = build(nodes, {"x": (1, 3, 8, 8)}, {"W": w(4, 3, 3, 3), "F": w(5, 16)})
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    script = f"""
import sys
for name in ("torch", "tensorflow", "keras", "tf2onnx", "jax"):
    sys.modules[name] = None  # any import of these now raises ImportError
import numpy as np, onnxviz
x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
r = onnxviz.gradients({str(path)!r}, x, wrt="input")
assert r.target_name == "l" and r.grads["input"].shape == x.shape and np.abs(r.grads["input"]).max() > 0
print("ok", r.classes.tolist())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_probe_run_and_wrong_inferred_shapes(monkeypatch):
    """Shapes onnx's inference finds need no probe run; a probe run gives the same gradients; and
    a shape inference got wrong is caught by the first run's shape check and rebuilt from a probe."""
    import onnxviz.explain.program as program_module

    nodes = [N("Conv", ["x", "W"], ["c"], pads=[0, 0, 1, 1], strides=[2, 2]), N("Relu", ["c"], ["r"]),
             N("GlobalAveragePool", ["r"], ["g"]), N("Flatten", ["g"], ["y"])]  # fmt: skip
    model = build(nodes, {"x": (2, 3, 8, 8)}, {"W": w(4, 3, 3, 3)})
    x = R.standard_normal((2, 3, 8, 8)).astype(np.float32)
    reference = GradientProgram(model, wrt=["x", "c"], target="y").run(x, classes=[1, 3])
    probes: list[int] = []
    real_probe = program_module.probe

    def counting_probe(*args, **kwargs):
        probes.append(1)
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(program_module, "probe", counting_probe)
    monkeypatch.setattr(program_module, "inferred_shapes", lambda proto, feeds: {"c": (2, 4, 3, 3), "r": (2, 4, 3, 3)})
    fixed = GradientProgram(model, wrt=["x", "c"], target="y")
    r = fixed.run(x, classes=[1, 3])
    assert len(probes) == 2  # the wrong shapes were used once, then a probe run fixed them
    assert all(c.probed_all for c in fixed._compiled.values())
    for name in ("x", "c"):
        np.testing.assert_allclose(r.grads[name], reference.grads[name], rtol=1e-6, atol=1e-7)


def test_parameter_computed_from_input_values_is_refused():
    """A Gather whose indices come from the data (ArgMax) would be fixed at the probe run's value."""
    nodes = [N("ReduceMean", ["x"], ["m"], axes=[0], keepdims=0), N("ArgMax", ["m"], ["i"], axis=0, keepdims=1),
             N("Gather", ["x", "i"], ["y"], axis=1, name="picks")]  # fmt: skip
    model = build(nodes, {"x": (2, 4)})
    with pytest.raises(UnsupportedOpError, match="Gather node 'picks'.*computed from the input's values"):
        GradientProgram(model, wrt="x", target="y").run(np.ones((2, 4), np.float32), seed=np.ones((2, 1), np.float32))
    shape_only = [N("Shape", ["x"], ["s"]), N("Slice", ["s", "one", "two"], ["k"]), N("Sub", ["k", "one"], ["i"]),
                  N("Gather", ["x", "i"], ["y"], axis=1)]  # fmt: skip
    model = build(shape_only, {"x": (2, 4)}, {"one": ints(1), "two": ints(2)})
    r = GradientProgram(model, wrt="x", target="y").run(np.ones((2, 4), np.float32), seed=np.ones((2, 1), np.float32))
    assert r.grads["x"][:, 3].tolist() == [1.0, 1.0] and r.grads["x"][:, :3].sum() == 0


def test_class_axis_for_sequence_outputs():
    """A [N, T, K] output (a text recogniser's): classes along the last axis, a class's score its
    mean over time; the top class is chosen in the graph as with explicit classes."""
    weights = w(4, 5)
    model = build([N("MatMul", ["x", "W"], ["y"])], {"x": (2, 3, 4)}, {"W": weights})
    x = R.standard_normal((2, 3, 4)).astype(np.float32)
    program = GradientProgram(model, wrt="x", target="y", class_axis=-1)
    top = program.run(x)
    y = x.astype(np.float64) @ weights
    expected_classes = y.mean(axis=1).argmax(axis=1)
    assert top.classes.tolist() == expected_classes.tolist()
    np.testing.assert_allclose(top.scores, y.mean(axis=1)[np.arange(2), expected_classes], rtol=1e-5)
    for k in range(2):
        np.testing.assert_allclose(top.grads["x"][k], np.broadcast_to(weights[:, expected_classes[k]] / 3, (3, 4)), rtol=1e-5)
    explicit = program.run(x, classes=expected_classes)
    np.testing.assert_allclose(explicit.grads["x"], top.grads["x"], rtol=1e-6)
    with pytest.raises(InputError, match="out of range.*5 along axis 2"):
        program.run(x, classes=[0, 5])


def test_program_keeps_its_model_unless_cached_weakly():
    """A program made from a Model the caller drops keeps working; the one-call API's cache holds
    programs by their model weakly, so dropping the model frees it (and its sessions)."""
    import gc
    import weakref

    import onnxviz
    from onnxviz.explain import program as program_module

    nodes = [N("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])]
    path_model = build(nodes, {"x": (1, 2, 5, 5)}, {"W": w(3, 2, 3, 3)})
    x = R.standard_normal((1, 2, 5, 5)).astype(np.float32)
    program = GradientProgram(onnxviz.load(path_model), wrt="x", target="y")
    gc.collect()
    assert program.run(x, classes=1).grads["x"].shape == x.shape
    model = onnxviz.load(path_model)
    onnxviz.gradients(model, x, wrt="x", target="y", classes=2)
    assert model in program_module._PROGRAMS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
