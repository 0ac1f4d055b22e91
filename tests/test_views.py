"""What is not a 2-D map (bar charts, strips, top-5 with class names), titles, sums of maps,
filter ranges and visible padding (issue 10, presentation)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import models
import onnxviz
from onnxviz.rendering import (
    LEVELS, NAN_INDEX, PAD_INDEX, as_vector, colormap_palette, pad_color_for, render, render_sum, safe_text, top_k, with_title,
)
from onnxviz.rendering.palette import text_index_on_pad
from test_cli import assert_one_line_error, run


class _Layer:  # what render() reads from a captured layer
    def __init__(self, array):
        self.array = np.asarray(array)


def _tiles_of_strip(img, n, cell=8, padding=1, cols=64):
    """The level of every value's cell in a strip (top-left pixel of each cell)."""
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        out.append(img.index[padding + r * (cell + padding), padding + c * (cell + padding)])
    return np.array(out)


@pytest.mark.parametrize("shape", [(), (7,), (1, 5), (2, 100), (1, 10, 1, 1), (1, 3, 1), (1, 2, 1, 1, 1), (1, 2, 3, 4, 5, 6),
                                   (1, 3, 8, 8), (1, 3, 10), (2, 3, 4, 5, 6)])
def test_any_rank_renders(shape):
    a = np.asarray(np.random.default_rng(0).standard_normal(shape), dtype=np.float32)
    img = render(_Layer(a), image=0, top=3)
    assert img.to_array().ndim == 3 and img.width > 0 and img.height > 0
    spatial = len(shape) >= 3 and any(d != 1 for d in shape[2:]) and len(shape) <= 5
    assert (as_vector(_Layer(a)) is None) == spatial


def test_out_of_range_image_is_a_clear_error():
    with pytest.raises(onnxviz.OnnxvizError, match="image 1 out of range"):
        render(_Layer(np.zeros((1, 3, 8, 8), np.float32)), image=1)


def test_bar_chart_heights_colours_and_zero_line():
    values = np.array([1.0, -2.0, 3.0, np.nan, 0.0], np.float32)
    img = render(_Layer(values[None]), padding=1)  # N×C: one bar per value
    assert img.grid == (1, 5) and len(img.channels) == 5
    bw = 512 // 5 if 512 // 5 <= 24 else 24
    cols = [1 + i * (bw + 1) + bw // 2 for i in range(5)]
    column = img.index[:, cols]
    # bar 2 (value 3, the largest) is the tallest and has the top level; bar 1 (-2) goes down and has level 0
    heights = [(column[:, i] < LEVELS).sum() for i in range(5)]
    assert heights[2] > heights[0] > 0 and heights[1] > 0 and (column[:, 3] == NAN_INDEX).sum() >= 95  # full height but the zero line
    assert column[:, 2][column[:, 2] < LEVELS].max() == LEVELS - 1 and column[:, 1][column[:, 1] < LEVELS].min() == 0
    pos_rows = np.nonzero(column[:, 2] < LEVELS)[0]
    neg_rows = np.nonzero(column[:, 1] < LEVELS)[0]
    assert pos_rows.max() < neg_rows.min()  # positive above the axis, negative below
    zero_row = pos_rows.max() + 1
    assert (img.index[zero_row, 1:-1][img.index[zero_row, 1:-1] >= LEVELS] == text_index_on_pad(img.palette)).any()


def test_strip_of_cells_for_long_vectors_equals_the_values():
    v = np.linspace(-1, 1, 1000).astype(np.float32)
    img = render(_Layer(v[None].reshape(1, 1000, 1, 1)), padding=1)  # global pooling kept as N×C×1×1
    assert img.grid == (16, 64)
    levels = _tiles_of_strip(img, 1000)
    expected = np.floor((v - v.min()) / (v.max() - v.min()) * (LEVELS - 1) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(levels, expected)
    assert img.index[1 + 15 * 9, 1 + 63 * 9] == PAD_INDEX  # cells past the last value are padding


def test_top_k_with_labels_probabilities_and_nan():
    logits = np.array([0.5, 3.0, np.nan, 2.0, -1.0, 3.0], np.float32)
    top = top_k(logits, 3, ["a", "b", "c", "d", "e", "f"])
    assert [t["index"] for t in top] == [1, 5, 3]  # NaN never ranks; ties keep the lower index first
    assert [t["label"] for t in top] == ["b", "f", "d"] and top[0]["score"] == 3.0
    finite = logits[np.isfinite(logits)]
    assert top[0]["probability"] == pytest.approx(np.exp(3.0) / np.exp(finite).sum(), rel=1e-6)
    probs = top_k(np.array([0.1, 0.7, 0.2]), 2)
    assert [t["probability"] for t in probs] == pytest.approx([0.7, 0.2]) and probs[0]["label"] is None


def test_untrusted_text_is_made_safe_to_draw():
    assert safe_text("cat\x1b[31m\nred\u202e\x00") == "cat?[31m red??"
    assert len(safe_text("x" * 500, 40)) == 40
    img = render(_Layer(np.arange(10, dtype=np.float32)[None]), top=5, class_names=["\x1b[2J<b>" + "猫" * 300] * 10)
    assert img.height > 100 and img.width < 600  # one truncated line per class, nothing spills


def test_title_and_caption_text_reads_on_the_padding():
    maps = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    for cmap in ("viridis", "gray", "magma", "hot"):
        plain = render(maps, cmap=cmap)
        titled = with_title(plain, "block1_conv1\x1b[0m")
        assert titled.width == max(plain.width, titled.width) and titled.height == plain.height + 18
        strip = titled.index[:18]
        ink = text_index_on_pad(titled.palette)
        assert (strip == ink).any() and set(np.unique(strip).tolist()) <= {ink, PAD_INDEX}
        pad, text = titled.palette[PAD_INDEX].astype(float), titled.palette[ink].astype(float)
        assert np.abs(pad - text).sum() > 200


@pytest.mark.parametrize("cmap", ["viridis", "gray", "magma", "inferno", "jet", "RdBu_r", "hot", "bone", "Greys"])
def test_padding_contrasts_with_the_colormaps_darkest_entries(cmap):
    palette = colormap_palette(cmap)
    lut = palette[:LEVELS].astype(float)
    luma = lut @ [0.299, 0.587, 0.114]
    darkest = lut[luma <= np.quantile(luma, 0.25)]
    pad = np.asarray(pad_color_for(cmap), float)
    assert np.sqrt(((darkest - pad) ** 2).sum(axis=1)).min() >= 120
    assert np.sqrt(((lut - pad) ** 2).sum(axis=1)).min() >= 60  # and apart from every colour of the map
    assert tuple(palette[PAD_INDEX]) == tuple(pad_color_for(cmap))


def test_rgb_filter_padding_contrasts_with_the_tiles():
    from onnxviz.rendering import render_rgb

    rng = np.random.default_rng(0)
    for tiles in (rng.random((4, 3, 3, 3), np.float32) ** 4, rng.random((4, 3, 3, 3), np.float32) ** 0.25):  # dark, light
        plain = render_rgb(tiles, padding=0).to_array().reshape(-1, 3).astype(float)
        pad = render_rgb(tiles, padding=1).to_array()[0, 0].astype(float)
        assert np.sqrt(((plain - pad) ** 2).sum(axis=1)).min() >= 60


def test_sum_of_maps_at_the_input_size():
    maps = np.random.default_rng(1).random((1, 9, 6, 8), dtype=np.float32)
    img = render_sum(_Layer(maps), size=(24, 32))
    assert (img.height, img.width) == (24, 32)
    small = render_sum(_Layer(maps))
    total = maps[0].sum(axis=0)
    expected = np.floor((total - total.min()) / (total.max() - total.min()) * (LEVELS - 1) + 0.5)
    np.testing.assert_array_equal(small.index, expected.astype(np.uint8))


def test_filters_norm_filter_and_layer():
    from onnxviz.rendering.filters import FilterBank, render_filters

    w = np.zeros((2, 2, 3, 3), np.float32)
    w[0] = np.linspace(0, 1, 18).reshape(2, 3, 3)  # filter 0: 0..1
    w[1] = np.linspace(0, 10, 18).reshape(2, 3, 3)  # filter 1: 0..10
    bank = FilterBank(name="c", node="c", op="Conv", weights=w)
    per_filter = render_filters(bank, mode="all", min_tile=None, padding=0, cmap="gray")
    per_layer = render_filters(bank, mode="all", min_tile=None, padding=0, cmap="gray", norm="layer")
    # filter: both filters span the full range; their kernels share it (input 1 brighter than input 0)
    f0 = per_filter.index[:3]
    assert f0.min() == 0 and f0.max() == LEVELS - 1 and f0[:, :3].max() < f0[:, 3:].min()
    assert per_filter.index[3:].max() == LEVELS - 1
    # layer: filter 0 (max 1 of 10) stays dark
    assert per_layer.index[:3].max() <= (LEVELS - 1) // 10 + 1 and per_layer.index[3:].max() == LEVELS - 1
    with pytest.raises(onnxviz.OnnxvizError, match="unknown filter normalisation"):
        render_filters(bank, norm="tile")


def _dense_model() -> onnx.ModelProto:
    """x → Conv → Relu → GlobalAveragePool → Flatten → Gemm → Softmax (10 classes), plus a
    Shape tensor (1-D int64) and a scalar exposed as outputs of their own."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((10, 6)).astype(np.float32), "fc.w"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc.b")]
    return models.make(nodes, [models.image_input(shape=(1, 3, 16, 16))],
                       [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])], inits)


def test_maps_cli_vectors_top5_labels_sum_and_title(save, rgb_image, tmp_path):
    path = save(_dense_model())
    labels = tmp_path / "labels.txt"
    names = [f"class<{k}>" for k in range(9)] + ["\x1b[31mred"]
    labels.write_text("\n".join(names) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    proc = run("maps", path, rgb_image, "-o", out, "--tap", "activation", "--sum", "--title", "--labels-file", labels)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "top-5 of probs" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    pred = manifest["predictions"][0]
    assert pred["output"] == "probs" and len(pred["top"]) == 5 and pred["top"][0]["label"] in names
    assert pred["top"][0]["probability"] == pytest.approx(pred["top"][0]["score"])  # softmax output: scores are probabilities
    layer = manifest["layers"][0]
    assert layer["view"] == "maps" and layer["sum_png"] == "000_conv.sum.png"
    with Image.open(out / layer["sum_png"]) as img:
        assert img.size[1] == 16 + 18 and img.size[0] >= 16  # the input's size, plus the title strip (widened to fit it)
    with Image.open(out / layer["png"]) as titled:
        assert titled.size[1] > 18
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["files"] + ["manifest.json", ".onnxviz-output"])


def test_labels_file_that_fits_no_output_is_refused(save, rgb_image, tmp_path):
    path = save(_dense_model())
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "o"
    assert_one_line_error(run("maps", path, rgb_image, "-o", out, "--labels-file", labels), "labels file has 3 class names")
    assert not out.exists()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    assert_one_line_error(run("maps", path, rgb_image, "-o", out, "--labels-file", bad), "not UTF-8 text")
    assert_one_line_error(run("maps", path, rgb_image, "-o", out, "--labels-file", tmp_path / "none.txt"), "labels file not found")


def test_every_rank_of_tapped_tensor_through_maps_and_report(tmp_path, rgb_image):
    """Tensors of rank 0 to 6 (and int64, bool, empty) as taps: no crash, a drawing or a note each."""
    from onnxviz.report.html import write_report
    from onnxviz.report.writers import write_maps
    from onnxviz.run.capture import Capture, LayerCapture

    rng = np.random.default_rng(0)
    arrays = {
        "scalar": np.float32(2.5), "shape": np.array([1, 3, 16, 16], np.int64), "dense": rng.random((1, 10), np.float32),
        "gap": rng.random((1, 8, 1, 1), np.float32), "seq": rng.random((1, 4, 12), np.float32),
        "maps": rng.random((1, 3, 5, 5), np.float32), "vol": rng.random((1, 2, 3, 4, 5), np.float32),
        "six": rng.random((1, 2, 2, 2, 2, 2), np.float32), "mask": np.ones((1, 4), bool), "empty": np.zeros((1, 0), np.float32),
    }
    layers = {name: LayerCapture(name=name, tensor=name, node=name, op="Op", through=(), through_ops=(), data=np.asarray(a))
              for name, a in arrays.items()}
    feeds = {"x": rng.random((1, 3, 16, 16), np.float32)}
    from onnxviz.run.budget import CapturePlan

    capture = Capture(layers, {"y": arrays["dense"]}, "cpu", feeds, plan=CapturePlan(passes=1, total_bytes=None, max_memory=None))
    manifest = write_maps(capture, tmp_path / "m", model_name="m.onnx", inputs=[], sums=True, sum_size=(16, 16), title=True)
    views = {layer["name"]: layer["view"] for layer in manifest["layers"]}
    assert views == {"scalar": "bars", "shape": "bars", "dense": "bars", "gap": "bars", "seq": "maps", "maps": "maps",
                     "vol": "maps", "six": "bars", "mask": "bars", "empty": None}  # six: 32 values flattened
    assert next(layer for layer in manifest["layers"] if layer["name"] == "empty")["note"].startswith("not drawn: empty")
    assert [layer["name"] for layer in manifest["layers"] if layer["sum_png"]] == ["maps"]
    for name in manifest["files"]:
        with Image.open(tmp_path / "m" / name) as img:
            img.verify()
    model = onnxviz.load(models.conv_bn_relu())
    html = write_report(model, capture, tmp_path / "r", model_name="m.onnx", images=[rgb_image], graph=False)
    assert len(html["layers"]) == len(arrays)


def test_filters_of_one_input_channel_like_seed_003(save, tmp_path):
    """seed 003 shows filter[0, :, :] of each first-layer filter: one gray tile per filter."""
    from onnxviz.rendering.filters import filter_banks, render_filters

    model = onnxviz.load(models.conv_kinds())
    bank = filter_banks(model)[0]  # 8 filters of 3×3×3
    img = render_filters(bank, inputs=[0], min_tile=None, padding=0, cmap="gray")
    assert len(img.channels) == 8 and img.grid == (3, 3)
    w0 = bank.weights[:, 0]
    tile = img.index[:3, :3]
    expected = np.floor((w0[0] - w0[0].min()) / (w0[0].max() - w0[0].min()) * (LEVELS - 1) + 0.5)
    np.testing.assert_array_equal(tile, expected.astype(np.uint8))
    out = tmp_path / "f"
    proc = run("filters", save(models.conv_kinds()), "-o", out, "--layers", "stem", "--input-channels", "0", "--title", "--norm", "layer")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["norm"] == "layer" and len(manifest["files"]) == 1
    assert_one_line_error(run("filters", save(models.conv_kinds()), "-o", tmp_path / "g", "--layers", "stem", "--input-channels", "5"),
                          "input channels [5] out of range")


def test_channels_shown_counts_what_was_drawn(save, rgb_image, tmp_path):
    out = tmp_path / "o"
    proc = run("maps", save(_dense_model()), rgb_image, "-o", out, "--tap", "conv,dense", "--channels", "2,4")
    assert proc.returncode == 0, proc.stderr
    shown = {layer["name"]: layer["channels_shown"] for layer in json.loads((out / "manifest.json").read_text())["layers"]}
    assert shown == {"conv": 2, "fc": 2}  # the two chosen maps; the two chosen values of the dense layer


def test_report_shows_predictions_with_escaped_labels(save, rgb_image, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["<script>alert(1)</script>"] + [f"c{k} & co" for k in range(1, 10)]) + "\n", encoding="utf-8")
    out = tmp_path / "r"
    proc = run("report", save(_dense_model()), rgb_image, "-o", out, "--tap", "conv,dense", "--labels-file", labels, "--no-graph",
               "--cam", "none")
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="predictions"' in page and "<script>" not in page and "&lt;script&gt;" in page and "&amp; co" in page
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["predictions"][0]["output"] == "probs" and len(manifest["predictions"][0]["top"]) == 5
