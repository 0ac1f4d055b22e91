"""The seed posts' Keras models through the README's commands: every picture a post shows, from the
CLI, with the framework's layer names; summary totals equal to Keras's count_params()."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_models  # noqa: E402
from onnxviz.converters import convert  # noqa: E402
from test_cli import run  # noqa: E402

SEEDS = {
    "seed000": lambda: keras_models.seed_random_cnn((240, 320, 3)),  # seed 000's random Conv/ReLU/MaxPool ×4
    "seed001": lambda: keras_models.zero_padding("channels_first"),  # seed 001: ZeroPadding2D, Conv2D, LeakyReLU, MaxPool… Dropout
    "lenet5": keras_models.lenet5,  # seed 002
    "cats_vs_dogs": keras_models.cats_vs_dogs,  # seed 004
    "nested": keras_models.nested,  # BatchNormalization after an activation: not folded by the exporter
}


def _leaves(model, prefix=""):
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += _leaves(layer, prefix + layer.name + "/")
        elif type(layer).__name__ != "InputLayer":
            out.append(prefix + layer.name)
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Each model built in a fresh Keras session (so names start at conv2d, as for a reader),
    saved as .keras and converted to ONNX."""
    folder = tmp_path_factory.mktemp("seeds")
    info = {}
    for name, build in SEEDS.items():
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = build()
        model.save(folder / f"{name}.keras")
        convert(model, folder / f"{name}.onnx")
        info[name] = {"params": model.count_params(), "layers": _leaves(model)}
    return folder, info


@pytest.mark.parametrize("name", list(SEEDS))
def test_summary_is_keras_model_summary(seeds, name):
    folder, info = seeds
    data = json.loads(run("summary", folder / f"{name}.onnx", "--json").stdout)
    assert data["params"] == info[name]["params"] and data["params_source"] == "framework" and data["framework"] == "keras"
    assert [row["name"] for row in data["table"]] == info[name]["layers"]  # every Keras layer, in order, vanished ones too
    assert sum(row["params"] for row in data["table"]) == info[name]["params"]
    if name == "seed000":
        assert (data["params"], data["onnx_params"]) == (5490, 5454)  # the exporter dropped four all-zero biases
    text = run("summary", folder / f"{name}.onnx").stdout
    assert f"Total params: {info[name]['params']:,} (Keras's count_params()" in text


def test_seed000_maps_and_their_sums(seeds, photo):
    folder, _ = seeds
    out = folder / "seed000_maps"
    proc = run("maps", folder / "seed000.onnx", photo, "-o", out, "--sum", "--title")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"]
    assert all(layer["sum_png"] and layer["shape"][1] == 9 for layer in manifest["layers"])
    from PIL import Image

    with Image.open(out / manifest["layers"][0]["sum_png"]) as img:
        assert img.size[1] == 240 + 18  # the input's height plus the title


def test_seed001_every_layer_zscore_rows_of_16_with_titles(seeds, photo):
    folder, _ = seeds
    out = folder / "seed001_maps"
    proc = run("maps", folder / "seed001.onnx", photo, "-o", out, "--tap", "layer", "--norm", "zscore", "--ncols", "16", "--title")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    names = [layer["name"] for layer in manifest["layers"]]
    assert names[:3] == ["conv2d", "leaky_re_lu", "max_pooling2d"] and "dense_1" in names and "activation" in names
    assert {v["name"] for v in manifest["vanished"]} == {"zero_padding2d", "dropout"}
    views = {layer["name"]: layer["view"] for layer in manifest["layers"]}
    assert views["max_pooling2d"] == "maps" and views["dense"] == "bars" and views["activation"] == "bars"
    top = next(layer for layer in manifest["layers"] if layer["name"] == "activation")["top"]  # the softmax output
    assert len(top) == 3 and abs(sum(t["score"] for t in top) - 1) < 1e-4


def test_seed002_graph_pooling_maps_and_class_images(seeds, photo):
    folder, _ = seeds
    png = folder / "lenet5.png"
    assert run("graph", folder / "lenet5.onnx", "-o", png).returncode == 0 and png.read_bytes().startswith(b"\x89PNG")
    dot = folder / "lenet5.dot"
    assert run("graph", folder / "lenet5.onnx", "-o", dot).returncode == 0
    text = dot.read_text()
    for line in ("C1\\nConv2D", "S2\\nAveragePooling2D", "F6\\nDense", "output: ?×10"):
        assert line in text.replace("unk__", "?"), line
    out = folder / "lenet5_pools"
    proc = run("maps", folder / "lenet5.onnx", photo, "-o", out, "--tap", "pool")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(layer["name"], layer["shape"][1:]) for layer in manifest["layers"]] == [("S2", [6, 14, 14]), ("S4", [16, 5, 5])]
    dream = folder / "lenet5_dream"
    proc = run("dream", folder / "lenet5.onnx", "-o", dream, "--target", "0-9", "--method", "seed", "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((dream / "manifest.json").read_text())["targets"]) == 10


def test_seed004_filters_one_range_per_layer_and_conv_pool_rows(seeds, photo):
    folder, _ = seeds
    out = folder / "cnn_filters"
    proc = run("filters", folder / "cats_vs_dogs.onnx", "-o", out, "--mode", "all", "--norm", "layer", "--cmap", "viridis", "--title")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv2d", "conv2d_1", "conv2d_2"] and manifest["norm"] == "layer"
    out = folder / "cnn_maps"
    proc = run("maps", folder / "cats_vs_dogs.onnx", photo, "-o", out, "--tap", "conv,pool", "--norm", "zscore", "--ncols", "64", "--title")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == [
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2"]
    assert [v["name"] for v in manifest["vanished"]] == ["dropout", "dropout_1"]
    from PIL import Image

    with Image.open(out / manifest["layers"][1]["png"]) as img:  # 16 maps of 75×75 in one row
        assert img.size[1] < 2 * 75 + 40 and img.size[0] > 16 * 75
    assert np.isfinite([layer["mean"] for layer in manifest["layers"]]).all()
