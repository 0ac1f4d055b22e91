"""Friendly names and file-name slugs (onnxviz/naming.py)."""

from __future__ import annotations

import pytest
from onnx import helper

from onnxviz.naming import friendly_name, slugify, unique_names


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
