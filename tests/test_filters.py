"""The filter viewer (onnxviz/filters.py): weights from initializers, through what exporters put in front."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import models
import onnxviz
from onnxviz.rendering.filters import filter_banks, render_filters, weight_stats
from onnxviz.rendering import RenderedImage, RGBImage
from test_cli import assert_one_line_error, run


def _weights(model, name):
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def test_weights_equal_the_initializers_and_layouts():
    model = models.conv_kinds()
    banks = {b.name: b for b in filter_banks(onnxviz.load(model))}
    np.testing.assert_array_equal(banks["stem"].weights, _weights(model, "w1"))
    assert banks["grouped"].group == 2 and banks["depthwise"].group == 8
    stem = render_filters(banks["stem"], min_tile=None, padding=1)
    assert isinstance(stem, RGBImage)  # 3 input channels: one RGB tile per filter
    assert (stem.height, stem.width) == (3 * 4 + 1, 3 * 4 + 1)  # 8 filters in a 3×3 grid of 3×3 kernels
    dw = render_filters(banks["depthwise"], min_tile=None, padding=0)
    assert isinstance(dw, RenderedImage) and dw.grid == (3, 3) and len(dw.channels) == 8
    grouped_all = render_filters(banks["grouped"], mode="all", min_tile=None, padding=0)
    assert grouped_all.grid == (8, 4)  # a row of in/group kernels per output filter
    grouped_mean = render_filters(banks["grouped"], mode="mean", min_tile=None, padding=0)
    assert len(grouped_mean.channels) == 8
    # ConvTranspose (in=8, out/group=2, 2, 2): shown per output channel, 8 input kernels each
    up = render_filters(banks["up"], mode="all", min_tile=None, padding=0)
    assert up.grid == (2, 8)


def test_rgb_filter_tiles_are_each_min_max_normalised():
    model = models.conv_kinds()
    bank = filter_banks(onnxviz.load(model))[0]
    rgb = render_filters(bank, min_tile=None, padding=0, ncols=8).to_array()
    w = _weights(model, "w1")  # (8, 3, 3, 3)
    for k in range(8):
        tile = rgb[:, 3 * k : 3 * k + 3]
        f = np.moveaxis(w[k], 0, -1)
        expected = (f - f.min()) / (f.max() - f.min()) * 255
        assert np.abs(tile.astype(float) - expected).max() <= 1.5


def test_1d_and_3d_kernels():
    b1 = filter_banks(onnxviz.load(models.conv1d()))[0]
    img = render_filters(b1, min_tile=None, padding=0)
    assert img.grid == (2, 3) and (img.height, img.width) == (2 * 2, 3 * 3)  # 5 filters of (2 in × 3 taps) rows
    b3 = filter_banks(onnxviz.load(models.conv3d()))[0]
    assert render_filters(b3, min_tile=None, padding=0).grid == (3, 2)  # 3 filters × 2 input kernels (middle depth slice)


def _conv_model(weight_nodes, weight_name, inits, extra_inputs=()):
    nodes = [*weight_nodes, helper.make_node("Conv", ["x", weight_name], ["y"], name="conv", pads=[1, 1, 1, 1])]
    return models.make(nodes, [models.image_input(), *extra_inputs], [models.out("y")], inits)


def test_weights_through_exporter_plumbing():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    # Transpose of an HWIO kernel (tf2onnx style) behind an Identity
    hwio = numpy_helper.from_array(np.transpose(w, (2, 3, 1, 0)).copy(), "hwio")
    model = _conv_model(
        [helper.make_node("Identity", ["hwio"], ["i"]), helper.make_node("Transpose", ["i"], ["w"], perm=[3, 2, 0, 1])], "w", [hwio]
    )
    np.testing.assert_allclose(filter_banks(onnxviz.load(model))[0].weights, w)
    # float16 weights cast to float32
    half = numpy_helper.from_array(w.astype(np.float16), "half")
    model = _conv_model([helper.make_node("Cast", ["half"], ["w"], to=TensorProto.FLOAT)], "w", [half])
    np.testing.assert_allclose(filter_banks(onnxviz.load(model))[0].weights, w.astype(np.float16).astype(np.float32))
    # QDQ: int8 weights, per-channel scale, DequantizeLinear
    scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    model = _conv_model(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=0)], "w",
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(4, np.int8), "z")],
    )
    np.testing.assert_allclose(filter_banks(onnxviz.load(model))[0].weights, q * scale[:, None, None, None])


def test_runtime_weights_are_not_viewable():
    w_in = helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 3, 3, 3])
    model = _conv_model([helper.make_node("Relu", ["w_in"], ["w"], name="make_w")], "w", [], extra_inputs=[w_in])
    (bank,) = filter_banks(onnxviz.load(model))
    assert not bank.viewable and "computed at run time by Relu 'make_w'" in bank.reason
    with pytest.raises(onnxviz.OnnxvizError, match="not viewable"):
        render_filters(bank)


def test_stats():
    s = weight_stats(np.array([0.0, 1e-5, -1.0, 1.0], np.float32))
    assert s["min"] == -1.0 and s["max"] == 1.0 and s["near_zero"] == 0.5 and s["count"] == 4


def test_quantized_filters_are_dequantized(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    from test_quantized import _Calibration
    from onnxruntime import quantization
    from onnxviz.demo import demo_model

    float_w = filter_banks(onnxviz.load(demo_model()))[1].weights
    for fmt in ("QOperator", "QDQ"):
        path = tmp_path / f"{fmt}.onnx"
        quantization.quantize_static(str(demo_model()), str(path), _Calibration(), quant_format=getattr(quantization.QuantFormat, fmt))
        w = filter_banks(onnxviz.load(path))[1].weights
        assert w.shape == float_w.shape and np.abs(w - float_w).max() <= 0.02 * np.abs(float_w).max()


def test_cli_filters(tmp_path):
    from onnxviz.demo import demo_model

    out = tmp_path / "f"
    proc = run("filters", demo_model(), "-o", out)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv1", "conv2", "conv3"]
    for layer in manifest["layers"]:
        assert layer["bn_folded"] and layer["note"] == "weights include folded BatchNorm scale"
        assert Image.open(out / layer["png"]).size[0] > 0 and 0 <= layer["near_zero"] <= 1
    assert_one_line_error(run("filters", tmp_path / "nope.onnx", "-o", tmp_path / "g"), "model file not found")
    assert not (tmp_path / "g").exists()


def test_filter_images_carry_their_statistics(tmp_path):
    from onnxviz.demo import demo_model
    from onnxviz.rendering.filters import filter_caption
    from onnxviz.rendering import LABEL_INDEX, with_caption

    bank = filter_banks(onnxviz.load(demo_model()))[1]
    lines = filter_caption(bank)
    assert lines[0].startswith("conv2 (+bn2)") and "near-zero" in lines[1] and lines[2] == "weights include folded BatchNorm scale"
    plain = render_filters(bank)
    captioned = with_caption(plain, lines)
    from onnxviz.rendering.palette import text_index_on_pad

    ink = text_index_on_pad(captioned.palette)  # black or white, whichever reads on the padding colour
    assert captioned.height == plain.height + 4 + 12 * 3 and (captioned.index[plain.height :] == ink).any()
    from onnxviz.rendering import PAD_INDEX, SHADOW_INDEX

    # crisp text: no antialiased edges landing on colormap or NaN palette entries
    assert set(np.unique(captioned.index[plain.height :]).tolist()) <= {LABEL_INDEX, SHADOW_INDEX, PAD_INDEX}
    rgb = filter_banks(onnxviz.load(models.conv_kinds()))[0]
    plain_rgb = render_filters(rgb)
    captioned_rgb = with_caption(plain_rgb, filter_caption(rgb))
    strip = captioned_rgb.to_array()[plain_rgb.height :]
    luma = strip.astype(float) @ [0.299, 0.587, 0.114]
    assert isinstance(captioned_rgb, RGBImage) and luma.max() - luma.min() > 120  # text that reads on the padding
