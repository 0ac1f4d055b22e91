"""Keras → ONNX (converters/from_keras.py): every Conv tap is named like the Keras layer and equals
the Keras layer's output (``keras.Model(inputs, layer.output)``), relative error ≤ 1e-4."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import require_in_ci

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = require_in_ci("keras")

import keras_models  # noqa: E402
import onnxviz  # noqa: E402
from onnxviz.converters import convert  # noqa: E402
from onnxviz.converters.from_keras import conv_layer_paths  # noqa: E402


def _layer(model, path: str):
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def _reference(model, x: np.ndarray, path: str) -> np.ndarray:
    """The Keras layer's output for input x, nested layers included (NHWC)."""
    parts = path.split("/")
    if len(parts) == 1:
        return np.asarray(keras.Model(model.inputs, model.get_layer(path).output)(x))
    container = model.get_layer(parts[0])
    feeding = container._inbound_nodes[0].input_tensors[0]
    inner_input = np.asarray(keras.Model(model.inputs, feeding)(x))
    return _reference(container, inner_input, "/".join(parts[1:]))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


BUILDERS = [keras_models.seed_random_cnn, keras_models.lenet5, keras_models.cats_vs_dogs, keras_models.nested, keras_models.vgg16_style]


def _random_biases(model) -> None:
    """Non-zero biases everywhere, so that a tap missing its bias Add shows (exporters drop zero biases)."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if hasattr(layer, "layers"):
            _random_biases(layer)
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(-0.5, 0.5, tuple(layer.bias.shape)).astype("float32"))


def _leaf_layers(model, prefix: str = ""):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer, prefix + layer.name + "/")
        elif type(layer).__name__ != "InputLayer":
            yield prefix + layer.name, layer


def _check_every_layer(model, path, x, nhwc: bool = True) -> dict[str, float]:
    """--tap layer: every Keras layer's tap equals Model(inputs, layer.output), by the Keras name;
    the layers ONNX has no node for are listed as vanished; parameters total count_params()."""
    every = onnxviz.load(path, tap="layer")
    graph = every.layer_graph
    cap = every.capture(x, verify=True)
    assert cap.verify.ok, str(cap.verify)
    errors = {}
    for name, layer in _leaf_layers(model):
        kind = graph[name].kind
        if graph[name].vanished:
            assert type(layer).__name__ in ("Dropout", "ZeroPadding2D") and graph[name].note, name
            continue
        ours = cap[name].array
        ours = ours.transpose(0, 2, 3, 1) if ours.ndim == 4 and nhwc else ours  # ONNX NCHW → Keras NHWC
        theirs = _reference(model, x, name)
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        errors[name] = _rel(ours, theirs)
        assert errors[name] <= 1e-4, (name, errors[name])
        assert cap[name].kind == kind
    assert graph.framework_params == model.count_params() == sum(layer.shown_params for layer in graph)
    return errors


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_every_conv_tap_equals_the_keras_layer(builder, tmp_path):
    keras.utils.set_random_seed(0)
    model = builder()
    model(np.zeros([1, *model.inputs[0].shape[1:]], np.float32))
    _random_biases(model)
    path = tmp_path / "model.onnx"
    conversion = convert(model, path)
    assert conversion.unmatched == [] and conversion.framework == "keras"
    shape = [2, *model.inputs[0].shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected_names = []
    for layer_path, cls in conv_layer_paths(model):
        expected_names += [f"{layer_path}.depthwise", f"{layer_path}.pointwise"] if cls.startswith("Separable") else [layer_path]
    by_mode = {mode: onnxviz.load(path, tap=mode).capture(x, verify=True) for mode in ("conv", "activation")}
    assert list(by_mode["conv"]) == expected_names  # 100% of Conv layers, named as Keras names them
    for layer_path, cls in conv_layer_paths(model):
        layer = _layer(model, layer_path)
        name = f"{layer_path}.pointwise" if cls.startswith("Separable") else layer_path
        # Conv2D(activation=...) outputs the activation: onnxviz's tap="activation"
        linear = getattr(layer.activation, "__name__", "linear") == "linear"
        tap = by_mode["conv" if linear else "activation"][name]
        ours = tap.array.transpose(0, 2, 3, 1)  # ONNX NCHW → Keras NHWC
        theirs = _reference(model, x, layer_path)
        assert ours.shape == theirs.shape, name
        assert _rel(ours, theirs) <= 1e-4, (name, _rel(ours, theirs))
    for cap in by_mode.values():
        (own,) = cap.outputs.values()
        assert _rel(own, np.asarray(model(x))) <= 1e-4
        assert cap.verify.ok, str(cap.verify)
    _check_every_layer(model, path, x)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_before_a_biased_conv(data_format, tmp_path):
    """tf2onnx folds ZeroPadding2D into the conv's pads; channels_first it leaves the bias as an Add
    after the Conv (the conv tap must include it), channels_last it renames the conv Conv__N."""
    keras.utils.set_random_seed(0)
    model = keras_models.zero_padding(data_format)
    path = tmp_path / "zp.onnx"
    conversion = convert(model, path)
    assert conversion.unmatched == [] and sorted(conversion.layers.values()) == ["conv2d", "conv2d_1"]
    x = np.random.default_rng(1).random([2, *model.inputs[0].shape[1:]], dtype=np.float32)
    loaded = onnxviz.load(path, tap=("conv", "pool", "dense"))
    cap = loaded.capture(x, verify=True)
    assert [(name, layer.kind) for name, layer in cap.items()] == [
        ("conv2d", "conv"), ("max_pooling2d", "pool"), ("conv2d_1", "conv"), ("dense", "dense"), ("dense_1", "dense")]
    nhwc = data_format == "channels_last"
    for name in cap:
        ours = cap[name].array.transpose(0, 2, 3, 1) if nhwc and cap[name].array.ndim == 4 else cap[name].array
        assert _rel(ours, _reference(model, x, name)) <= 1e-4, name  # the conv's bias of 0.5 included
    assert cap.verify.ok
    graph = loaded.layer_graph
    assert graph["zero_padding2d"].vanished and graph["zero_padding2d"].kind == "padding"
    assert [layer.name for layer in graph][:2] == ["zero_padding2d", "conv2d"]
    assert graph["dense"].framework_params == graph["dense"].params + 8  # the all-zero bias tf2onnx dropped
    _check_every_layer(model, path, x, nhwc=nhwc)


def test_keras_file_and_cli(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import time

    from onnxviz import safefs

    model = keras_models.lenet5()
    keras_path = tmp_path / "lenet.keras"
    model.save(keras_path)
    out = tmp_path / "lenet.onnx"
    # The export's scratch folder of an earlier convert killed with SIGKILL (a dead pid, marked).
    temp = tmp_path / "tmp"
    temp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp / f"onnxviz-keras-{dead.pid}-0123456789abcdef"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    (stale / safefs.SCRATCH_MARKER).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "0123456789abcdef"}))
    old = time.time() - safefs.STALE_AFTER - 60
    os.utime(stale, (old, old))
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "convert", str(keras_path), "-o", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "3/3 Conv layers named" in proc.stdout
    assert [t.name for t in onnxviz.load(out).taps] == ["C1", "C3", "C5"]
    assert not [p.name for p in temp.iterdir() if "onnxviz" in p.name]  # its own folder gone, the stale one too


def test_saved_model_folder(tmp_path):
    model = keras_models.lenet5()
    model(np.zeros((1, 28, 28, 1), np.float32))
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    conversion = convert(tmp_path / "sm", tmp_path / "sm.onnx")
    assert sorted(conversion.layers.values()) == ["C1", "C3", "C5"]
    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    cap = onnxviz.load(tmp_path / "sm.onnx", tap="activation").capture(x)
    assert _rel(cap["C3"].array.transpose(0, 2, 3, 1), _reference(model, x, "C3")) <= 1e-4
