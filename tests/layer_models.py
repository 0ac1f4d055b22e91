"""Small ONNX graphs written the way real exporters write them (TorchScript and dynamo torch.onnx,
tf2onnx, Paddle), to test the layer grouping without a framework installed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import OPSET, image_input, init, make, out

OPSET18 = [helper.make_opsetid("", 18)]


def _meta(node: onnx.NodeProto, **entries: str) -> onnx.NodeProto:
    for key, value in entries.items():
        prop = node.metadata_props.add()
        prop.key, prop.value = key.replace("__", "."), value
    return node


def _inits(*specs) -> list[onnx.TensorProto]:
    return [init(name, shape) for name, shape in specs]


def torchscript_net() -> onnx.ModelProto:
    """conv1 → relu → layer1.0 (conv1, relu, conv2, residual add, relu again) → pool → flatten → fc."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "conv1.weight", "conv1.bias"], ["c0"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="/relu/Relu"),
        n("Conv", ["r0", "onnx::Conv_7", "onnx::Conv_8"], ["c1"], name="/layer1/layer1.0/conv1/Conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="/layer1/layer1.0/relu/Relu"),
        n("Conv", ["r1", "onnx::Conv_9"], ["c2"], name="/layer1/layer1.0/conv2/Conv", pads=[1, 1, 1, 1]),
        n("Add", ["c2", "r0"], ["a2"], name="/layer1/layer1.0/Add"),
        n("Relu", ["a2"], ["r2"], name="/layer1/layer1.0/relu_1/Relu"),
        n("MaxPool", ["r2"], ["p"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["p"], ["f"], name="/Flatten"),
        n("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="/fc/Gemm", transB=1),
    ]
    inits = _inits(("conv1.weight", (4, 3, 3, 3)), ("conv1.bias", (4,)), ("onnx::Conv_7", (4, 4, 3, 3)), ("onnx::Conv_8", (4,)),
                   ("onnx::Conv_9", (4, 4, 3, 3)), ("fc.weight", (5, 64)), ("fc.bias", (5,)))
    model = make(nodes, [image_input(shape=("N", 3, 8, 8))], [out("y", 2)], inits)
    model.producer_name = "pytorch"
    return model


def dynamo_net() -> onnx.ModelProto:
    """The same network as the dynamo exporter writes it: name scopes in node metadata, the relu
    module called twice, ``x.mean((2, 3))`` as global pooling (opset 18: axes as an input)."""
    n = helper.make_node
    root, blk = "['', ", "['', 'layer1', 'layer1.0', "
    nodes = [
        _meta(n("Conv", ["x", "conv1.weight", "conv1.bias"], ["conv2d"], name="node_conv2d", pads=[1, 1, 1, 1]),
              pkg__torch__onnx__name_scopes=root + "'conv1', 'conv2d']"),
        _meta(n("Relu", ["conv2d"], ["relu"], name="node_relu"), pkg__torch__onnx__name_scopes=root + "'relu', 'relu']"),
        _meta(n("Conv", ["relu", "layer1.0.conv1.weight"], ["conv2d_1"], name="node_Conv_3", pads=[1, 1, 1, 1]),
              pkg__torch__onnx__name_scopes=blk + "'layer1.0.bn1', '_native_batch_norm_legit_no_training']"),
        _meta(n("Relu", ["conv2d_1"], ["relu_1"], name="node_relu_1"), pkg__torch__onnx__name_scopes=blk + "'layer1.0.relu', 'relu_1']"),
        _meta(n("Conv", ["relu_1", "layer1.0.conv2.weight"], ["conv2d_2"], name="node_conv2d_2", pads=[1, 1, 1, 1]),
              pkg__torch__onnx__name_scopes=blk + "'layer1.0.conv2', 'conv2d_2']"),
        _meta(n("Add", ["conv2d_2", "relu"], ["add"], name="node_add"), pkg__torch__onnx__name_scopes=blk + "'add']"),
        _meta(n("Relu", ["add"], ["relu_2"], name="node_relu_2"), pkg__torch__onnx__name_scopes=blk + "'layer1.0.relu', 'relu_2']"),
        _meta(n("ReduceMean", ["relu_2", "axes"], ["mean"], name="node_mean", keepdims=0), pkg__torch__onnx__name_scopes=root + "'mean']"),
        _meta(n("Gemm", ["mean", "fc.weight", "fc.bias"], ["y"], name="node_linear", transB=1),
              pkg__torch__onnx__name_scopes=root + "'fc', 'linear']"),
    ]
    inits = _inits(("conv1.weight", (4, 3, 3, 3)), ("conv1.bias", (4,)), ("layer1.0.conv1.weight", (4, 4, 3, 3)),
                   ("layer1.0.conv2.weight", (4, 4, 3, 3)), ("fc.weight", (5, 4)), ("fc.bias", (5,)))
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    model = make(nodes, [image_input(shape=("N", 3, 8, 8))], [out("y", 2)], inits, opset=OPSET18)
    model.producer_name = "pytorch"
    model.ir_version = 10
    return model


def tf2onnx_net() -> onnx.ModelProto:
    """Keras 3 through tf2onnx, channels_first conv with a separate bias Add, then a conv tf2onnx
    renamed ``Conv__12`` (its weights keep the scope), an unnamed NHWC Transpose and shape
    arithmetic before Flatten's Reshape, a Dense with bias and relu, a softmax Activation."""
    n = helper.make_node
    s = "m_1/"
    nodes = [
        n("Conv", ["x", s + "conv2d_1/convolution/ReadVariableOp:0"], [s + "conv2d_1/convolution:0"], name=s + "conv2d_1/convolution", pads=[1, 1, 1, 1]),
        n("Add", [s + "conv2d_1/convolution:0", "Reshape__7:0"], [s + "conv2d_1/BiasAdd:0"], name=s + "conv2d_1/BiasAdd"),
        n("LeakyRelu", [s + "conv2d_1/BiasAdd:0"], [s + "leaky_re_lu_1/LeakyRelu:0"], name=s + "leaky_re_lu_1/LeakyRelu", alpha=0.01),
        n("MaxPool", [s + "leaky_re_lu_1/LeakyRelu:0"], [s + "max_pooling2d_1/MaxPool2d:0"], name=s + "max_pooling2d_1/MaxPool2d", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", [s + "max_pooling2d_1/MaxPool2d:0", s + "conv2d_1_2/convolution/ReadVariableOp:0", s + "conv2d_1_2/Squeeze:0"], ["Conv__12:0"], name="Conv__12", pads=[1, 1, 1, 1]),
        n("Transpose", ["Conv__12:0"], ["Transpose__20:0"], name="Transpose__20", perm=[0, 2, 3, 1]),
        n("Shape", ["Conv__12:0"], ["Shape__21:0"], name="Shape__21"),
        n("Gather", ["Shape__21:0", "zero"], [s + "flatten_1/Shape:0"], name="Gather__22", axis=0),
        n("Unsqueeze", [s + "flatten_1/Shape:0", "zero_axes"], [s + "flatten_1/batch:0"], name=s + "flatten_1/Unsqueeze"),
        n("Concat", [s + "flatten_1/batch:0", "minus_one"], [s + "flatten_1/shape:0"], name=s + "flatten_1/Reshape/shape_Concat__23", axis=0),
        n("Reshape", ["Transpose__20:0", s + "flatten_1/shape:0"], [s + "flatten_1/Reshape:0"], name=s + "flatten_1/Reshape"),
        n("MatMul", [s + "flatten_1/Reshape:0", s + "dense_1/Cast/ReadVariableOp:0"], [s + "dense_1/MatMul:0"], name=s + "dense_1/MatMul"),
        n("Add", [s + "dense_1/MatMul:0", s + "dense_1/BiasAdd/ReadVariableOp:0"], [s + "dense_1/BiasAdd:0"], name=s + "dense_1/BiasAdd"),
        n("Relu", [s + "dense_1/BiasAdd:0"], [s + "dense_1/Relu:0"], name=s + "dense_1/Relu"),
        n("MatMul", [s + "dense_1/Relu:0", s + "dense_1_2/Cast/ReadVariableOp:0"], [s + "dense_1_2/MatMul:0"], name=s + "dense_1_2/MatMul"),
        n("Softmax", [s + "dense_1_2/MatMul:0"], ["Identity:0"], name=s + "activation_1/Softmax"),
    ]
    inits = _inits((s + "conv2d_1/convolution/ReadVariableOp:0", (4, 3, 3, 3)), ("Reshape__7:0", (1, 4, 1, 1)),
                   (s + "conv2d_1_2/convolution/ReadVariableOp:0", (4, 4, 3, 3)), (s + "conv2d_1_2/Squeeze:0", (4,)),
                   (s + "dense_1/Cast/ReadVariableOp:0", (64, 6)), (s + "dense_1/BiasAdd/ReadVariableOp:0", (6,)),
                   (s + "dense_1_2/Cast/ReadVariableOp:0", (6, 3)))
    inits += [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "zero_axes"),
              numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    model = make(nodes, [image_input(shape=("N", 3, 8, 8))], [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, [None, 3])], inits)
    model.producer_name = "tf2onnx"
    return model


def paddle_net() -> onnx.ModelProto:
    """Paddle → ONNX style: weights in Constant nodes, Conv → Add(bias reshaped at run time) →
    Identity → Relu, a pool behind Identities, a residual Add, ReduceMean over H and W, MatMul + Add."""
    n = helper.make_node

    def const(name, shape, dtype=np.float32, value=None):
        arr = np.asarray(value, dtype) if value is not None else (np.random.default_rng(len(name)).standard_normal(shape) * 0.3).astype(dtype)
        return n("Constant", [], [name], value=numpy_helper.from_array(arr, name))

    nodes = [
        const("w0", (4, 3, 3, 3)), const("b0", (4,)), const("shape_b", None, np.int64, [1, 4, 1, 1]),
        const("w1", (4, 4, 3, 3)), const("fc_w", (4, 5)), const("fc_b", (5,)),
        n("Conv", ["x", "w0"], ["conv.0"], name="Conv.0", pads=[1, 1, 1, 1]),
        n("Reshape", ["b0", "shape_b"], ["bias.0"], name="Reshape.0"),
        n("Add", ["conv.0", "bias.0"], ["add.0"], name="Add.0"),
        n("Identity", ["add.0"], ["id.0"], name="Identity.0"),
        n("Relu", ["id.0"], ["relu.0"], name="Relu.0"),
        n("MaxPool", ["relu.0"], ["pool.0"], name="MaxPool.0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Identity", ["pool.0"], ["pool.0.id"], name="Identity.1"),
        n("Conv", ["pool.0.id", "w1"], ["conv.1"], name="Conv.1", pads=[1, 1, 1, 1]),
        n("Add", ["conv.1", "relu.0"], ["res.0"], name="Add.1"),
        n("ReduceMean", ["res.0"], ["gap.0"], name="ReduceMean.0", axes=[2, 3], keepdims=0),
        n("MatMul", ["gap.0", "fc_w"], ["mm.0"], name="MatMul.0"),
        n("Add", ["mm.0", "fc_b"], ["y"], name="Add.2"),
    ]
    model = make(nodes, [image_input(shape=("N", 3, 8, 8))], [out("y", 2)], [])
    model.producer_name = "PaddlePaddle"
    return model


ALL = {"torchscript": torchscript_net, "dynamo": dynamo_net, "tf2onnx": tf2onnx_net, "paddle": paddle_net}
