"""Gradients against ``tf.GradientTape`` on Keras models converted by onnxviz.converters (tf2onnx):
"same" padding on even sizes (TF pads one more at the end), depthwise and separable convs,
ReLU6, BatchNormalization, max pooling with "same" padding, a residual Add, LeNet-5 with tanh and
average pooling. Input gradients and gradients at a layer, ≤ 1e-4 relative.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import require_in_ci

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = require_in_ci("keras")
tf = require_in_ci("tensorflow")

import keras_models  # noqa: E402
import onnxviz  # noqa: E402
from keras import layers  # noqa: E402
from onnxviz.converters import convert  # noqa: E402

TOL = 1e-4


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-12))


def mobile_head():
    """Stride-2 "same" convs on even sizes, BN, ReLU6, "same" max pooling, a residual Add."""
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inp)  # pads (0, 1): end > begin
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    y = layers.Conv2D(8, 1, padding="same", activation="relu", name="expand")(x)
    x = layers.Add(name="residual")([x, y])
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    return inp, x


TAIL = [
    lambda: layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw"),
    lambda: layers.BatchNormalization(name="dw_bn"),
    lambda: layers.ReLU(6.0, name="dw_relu6"),
    lambda: layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep"),
    lambda: layers.GlobalAveragePooling2D(name="gap"),
    lambda: layers.Dense(5, name="logits"),
]


def _randomize_bn(model):
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.uniform(-0.2, 0.2, beta.shape),
                               rng.uniform(-0.5, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape)])  # fmt: skip


def test_mobilenet_style_keras_model_equals_gradient_tape(tmp_path):
    keras.utils.set_random_seed(0)
    inp, head = mobile_head()
    tail_layers = [make() for make in TAIL]
    x = head
    for layer in tail_layers:
        x = layer(x)
    model = keras.Model(inp, layers.Softmax(name="probs")(x))
    _randomize_bn(model)
    head_model = keras.Model(inp, head)
    path = tmp_path / "mobile.onnx"
    convert(model, path)

    images = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    xt = tf.constant(images)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        a = head_model(xt, training=False)  # the tail starts at the depthwise conv
        tape.watch(a)
        dw = tail_layers[0](a)
        tape.watch(dw)
        z = dw
        for layer in tail_layers[1:]:
            z = layer(z, training=False)
        top = tf.argmax(z, axis=1)
        objective = tf.reduce_sum(tf.gather(z, top, axis=1, batch_dims=1))
    g_input, g_dw = tape.gradient(objective, [xt, dw])

    onnx_model = onnxviz.load(path, tap="conv")
    assert "dw" in [t.name for t in onnx_model.taps]
    r = onnxviz.gradients(onnx_model, images, wrt=["input", "dw"], outputs=["dw"])
    assert r.classes.tolist() == top.numpy().tolist()
    assert _rel(r.target, z.numpy()) <= TOL  # the logits, not the softmax
    assert _rel(r.grads["input"], g_input.numpy()) <= TOL
    ours = r.grads["dw"]
    if ours.shape != g_dw.shape:  # the ONNX conv output is NCHW
        ours = ours.transpose(0, 2, 3, 1)
        assert _rel(r.outputs["dw"].transpose(0, 2, 3, 1), dw.numpy()) <= TOL
    assert _rel(ours, g_dw.numpy()) <= TOL


def test_lenet5_keras_logits_under_softmax_activation(tmp_path):
    """Dense(activation="softmax"): the default target is the Dense's pre-softmax output."""
    keras.utils.set_random_seed(0)
    model = keras_models.lenet5()
    path = tmp_path / "lenet.onnx"
    convert(model, path)
    images = np.random.default_rng(3).random((3, 28, 28, 1), dtype=np.float32)
    features = keras.Model(model.inputs, model.get_layer("F6").output)
    dense = model.get_layer("output")
    xt = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = tf.matmul(features(xt), dense.kernel) + dense.bias
        objective = tf.reduce_sum(logits[:, 4])
    expected = tape.gradient(objective, xt).numpy()
    r = onnxviz.gradients(path, images, wrt="input", classes=4)
    assert _rel(r.target, logits.numpy()) <= TOL
    assert _rel(r.grads["input"], expected) <= TOL


@pytest.mark.slow
def test_vgg16_style_keras_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_models.vgg16_style()
    path = tmp_path / "vgg.onnx"
    convert(model, path)
    images = np.random.default_rng(4).random((2, 48, 48, 3), dtype=np.float32)
    xt = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt)
        objective = tf.reduce_sum(out[:, 7])
    r = onnxviz.gradients(path, images, wrt="input", classes=7)
    assert _rel(r.grads["input"], tape.gradient(objective, xt).numpy()) <= TOL
