"""Friendly names and file-name slugs (onnxviz/naming.py)."""

from __future__ import annotations

import pytest
from onnx import helper

from onnxviz.graph.naming import friendly_name, slugify, unique_names


@pytest.mark.parametrize(
    "node_name, op, expected",
    [
        ("/layer1/layer1.0/conv1/Conv", "Conv", "layer1.0.conv1"),
        ("/features/features.0/Conv", "Conv", "features.0"),
        ("/layer1/layer1.1/downsample/downsample.0/Conv", "Conv", "layer1.1.downsample.0"),
        ("/model/model.0/conv/Conv", "Conv", "model.0.conv"),
        ("/conv1/Conv", "Conv", "conv1"),
        ("model/conv_a_1/convolution", "Conv", "model.conv_a_1"),
        ("/backbone/stem/conv/ConvTranspose_3", "ConvTranspose", "backbone.stem.conv"),
        ("Conv.0", "Conv", "Conv.0"),  # Paddle: no path, keep the node name
        ("", "Conv", "tensor_out"),  # no node name: the output tensor name
    ],
)
def test_friendly_name_from_node_names(node_name, op, expected):
    node = helper.make_node(op, ["x", "w"], ["tensor_out"], name=node_name)
    assert friendly_name(node, "tensor_out") == expected


def test_tf2onnx_scope_names():
    for name, expected in [
        ("functional_m_1/conv_a_1/convolution", "conv_a_1"),
        ("functional_m_1/sep_1/separable_conv2d/depthwise", "sep_1"),
        ("model/inner/inner_conv/Conv2D", "inner.inner_conv"),
    ]:
        node = helper.make_node("Conv", ["x", "w"], ["o"], name=name)
        assert friendly_name(node, "o", scoped=True) == expected


def test_converter_metadata_wins_and_bn_folding_is_recovered():
    from onnxviz.graph.naming import BN_FOLDED_KEY, LAYER_KEY, display_label, folded_batchnorm

    node = helper.make_node("Conv", ["x", "onnx::Conv_7"], ["o"], name="/layer1/layer1.0/conv1/Conv")
    for key, value in ((LAYER_KEY, "layer1.0.conv1"), (BN_FOLDED_KEY, "layer1.0.bn1")):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    assert friendly_name(node, "o") == "layer1.0.conv1"
    assert folded_batchnorm(node) == "layer1.0.bn1"
    assert display_label("layer1.0.conv1", "layer1.0.bn1") == "layer1.0.conv1 (+bn1)"
    assert display_label("conv1", "bn1") == "conv1 (+bn1)"
    dynamo = helper.make_node("Conv", ["x", "layer1.0.conv1.weight"], ["o"], name="node_Conv_95")
    for key, value in (
        ("pkg.torch.onnx.name_scopes", "['', 'layer1', 'layer1.0', 'layer1.0.bn1', '_native_batch_norm_legit_no_training_1']"),
        ("pkg.torch.onnx.class_hierarchy", "['M', 'torch.nn.modules.container.Sequential', 'Block', 'torch.nn.modules.batchnorm.BatchNorm2d', 'aten._native_batch_norm_legit_no_training.default']"),
    ):
        entry = dynamo.metadata_props.add()
        entry.key, entry.value = key, value
    assert folded_batchnorm(dynamo, {"layer1.0.conv1.weight"}) == "layer1.0.bn1"
    plain = helper.make_node("Conv", ["x", "w"], ["o"], name="/conv1/Conv")
    assert folded_batchnorm(plain) is None


def test_friendly_name_from_dynamo_name_scopes():
    node = helper.make_node("Conv", ["x", "w"], ["o"], name="node_conv2d_1")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "['', 'layer1', 'layer1.0', 'conv2d_1']"
    assert friendly_name(node, "o") == "layer1.0"


def test_friendly_name_from_torch_weight_name_first():
    node = helper.make_node("Conv", ["x", "layer1.0.conv1.weight"], ["o"], name="node_Conv_95")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "['', 'layer1', 'layer1.0', 'layer1.0.bn1', 'bn']"
    assert friendly_name(node, "o", {"layer1.0.conv1.weight"}) == "layer1.0.conv1"
    assert friendly_name(node, "o", set()) == "layer1.0.bn1"  # not an initializer: metadata route
    odd = helper.make_node("Conv", ["x", "onnx::Conv_123"], ["o"], name="/conv1/Conv")
    assert friendly_name(odd, "o", {"onnx::Conv_123"}) == "conv1"


def test_unique_names():
    assert unique_names(["a", "b", "a", "a", "a_2"]) == ["a", "b", "a_2", "a_3", "a_2_2"]


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/abs/path", "a\\..\\b", "<script>x</script>", "..", ".hidden", "con:1?*|", "é/ü", "\x00\n", "x" * 500],
)
def test_slugs_are_safe_and_bounded(name):
    slug = slugify(name)
    assert slug and len(slug) <= 80
    assert "/" not in slug and "\\" not in slug and ".." not in slug and not slug.startswith(".")
    assert all(c.isalnum() and c.isascii() or c in "._-" for c in slug)


def test_long_slugs_keep_distinct_hashes():
    assert slugify("a" * 200 + "1") != slugify("a" * 200 + "2")
