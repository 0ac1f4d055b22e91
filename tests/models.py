"""Tiny synthetic ONNX models built with onnx.helper, for the tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
RNG = np.random.default_rng(1234)


def init(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def bn_inits(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array((1 + 0.2 * RNG.standard_normal(c)).astype(np.float32), f"{prefix}.scale"),
        numpy_helper.from_array((0.1 * RNG.standard_normal(c)).astype(np.float32), f"{prefix}.bias"),
        numpy_helper.from_array((0.1 * RNG.standard_normal(c)).astype(np.float32), f"{prefix}.mean"),
        numpy_helper.from_array((0.5 + RNG.random(c)).astype(np.float32), f"{prefix}.var"),
    ]


def make(nodes, inputs, outputs, inits, name="g", opset=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=opset or OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def out(name: str, rank: int = 4) -> onnx.ValueInfoProto:
    """A float output of known rank and unknown dims."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank)


def image_input(name="x", shape=("N", 3, "H", "W")) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def conv_bn_relu(batch=None) -> onnx.ModelProto:
    """x → Conv → BN → Relu → Conv → Relu → GAP → Flatten → y (torch-style node names)."""
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="/layer1/layer1.0/conv1/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"], name="/layer1/layer1.0/bn1/BatchNormalization"),
        helper.make_node("Relu", ["b1"], ["r1"], name="/layer1/layer1.0/relu/Relu"),
        helper.make_node("Conv", ["r1", "c2.w"], ["c2"], name="/layer1/layer1.0/conv2/Conv", strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["y"], name="/flatten/Flatten"),
    ]
    inits = [init("c1.w", (4, 3, 3, 3)), init("c1.b", (4,)), init("c2.w", (6, 4, 3, 3)), *bn_inits("bn1", 4)]
    b = batch if batch is not None else "N"
    return make(nodes, [image_input(shape=(b, 3, "H", "W"))], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, 6])], inits)


def silu_chain() -> onnx.ModelProto:
    """Conv → Sigmoid/Mul (SiLU written out) → Mul by constant → Conv; and a HardSwish decomposition."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig"),
        helper.make_node("Mul", ["c1", "s1"], ["m1"], name="silu_mul"),
        helper.make_node("Mul", ["m1", "gain"], ["g1"], name="gain_mul"),
        helper.make_node("Conv", ["g1", "w2"], ["c2"], name="conv_b"),
        helper.make_node("Add", ["c2", "three"], ["a2"], name="hs_add"),
        helper.make_node("Clip", ["a2", "zero", "six"], ["cl2"], name="hs_clip"),
        helper.make_node("Mul", ["c2", "cl2"], ["m2"], name="hs_mul"),
        helper.make_node("Div", ["m2", "six"], ["y"], name="hs_div"),
    ]
    inits = [
        init("w1", (4, 3, 3, 3)), init("w2", (5, 4, 1, 1)),
        numpy_helper.from_array(np.full((4, 1, 1), 1.5, np.float32), "gain"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]  # fmt: skip
    return make(nodes, [image_input()], [out("y")], inits)


def conv_kinds() -> onnx.ModelProto:
    """Grouped conv, depthwise conv, ConvTranspose; the last Conv's output is also a graph output."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "wg"], ["c2"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "wd"], ["c3"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c3", "wt"], ["c4"], name="up", strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["y"], name="relu"),
    ]
    inits = [init("w1", (8, 3, 3, 3)), init("wg", (8, 4, 3, 3)), init("wd", (8, 1, 3, 3)), init("wt", (8, 2, 2, 2))]
    outputs = [out("y"), out("c3")]
    return make(nodes, [image_input()], outputs, inits)


def conv1d() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/encoder/conv/Conv", pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="/encoder/act/Relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "L"])
    return make(nodes, [x], [out("y", 3)], [init("w", (5, 2, 3))])


def conv3d() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv3d", pads=[1, 1, 1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6, 6])
    return make(nodes, [x], [out("y", 5)], [init("w", (3, 2, 3, 3, 3))])


def conv_in_if() -> onnx.ModelProto:
    """A main-graph Conv, and a Conv inside an If branch (cannot be tapped)."""
    then_graph = helper.make_graph(
        [helper.make_node("Conv", ["c1", "w2"], ["t_out"], name="branch_conv", pads=[1, 1, 1, 1])],
        "then", [], [out("t_out")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["c1"], ["e_out"], name="branch_id")],
        "else", [], [out("e_out")],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="main_conv", pads=[1, 1, 1, 1]),
        helper.make_node("If", ["flag"], ["y"], name="gate", then_branch=then_graph, else_branch=else_graph),
    ]
    flag = numpy_helper.from_array(np.array(True), "flag")
    return make(nodes, [image_input()], [out("y")], [init("w1", (4, 3, 3, 3)), init("w2", (4, 4, 3, 3)), flag])


def two_inputs() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["a", "w"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ca", "cb"], ["y"], name="sum"),
    ]
    inputs = [image_input("a", (1, 3, 8, 8)), image_input("b", (1, 3, 8, 8))]
    return make(nodes, inputs, [out("y")], [init("w", (2, 3, 3, 3))])


def nhwc_fixed() -> onnx.ModelProto:
    """Keras-style NHWC input fixed at 1×20×24×3, transposed to NCHW before the Conv."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "w"], ["c"], name="model/conv2d/Conv2D", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="model/conv2d/Relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20, 24, 3])
    return make(nodes, [x], [out("y")], [init("w", (4, 3, 3, 3))])


def no_conv() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return make(nodes, [image_input()], [out("y")], [])


def hostile_names() -> onnx.ModelProto:
    """Node and tensor names that try to escape paths and inject HTML."""
    bad1 = "../../etc/passwd"
    bad2 = "<script>alert(1)</script>/..\\..\\evil"
    nodes = [
        helper.make_node("Conv", ["x", "w1"], [bad1], name=bad1, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", [bad1, "w2"], ["y"], name=bad2, pads=[1, 1, 1, 1]),
    ]
    return make(nodes, [image_input()], [out("y")], [init("w1", (4, 3, 3, 3)), init("w2", (3, 4, 3, 3))])


def nan_producing() -> onnx.ModelProto:
    """Conv → Log: negative conv outputs become NaN in the second tap's input chain."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Log", ["c1"], ["l1"], name="log"),
        helper.make_node("Conv", ["l1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    return make(nodes, [image_input()], [out("y")], [init("w1", (4, 3, 3, 3)), init("w2", (2, 4, 3, 3))])
