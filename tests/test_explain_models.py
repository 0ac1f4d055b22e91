"""Explanations on the models users have — a torch-exported ResNet, a Keras-exported CNN and a
PaddleOCR classifier — from the CLI and the API, in a process where importing torch, TensorFlow
or Keras fails: Grad-CAM, Eigen-CAM, Score-CAM, Ablation-CAM and activation maximisation (both
ways) need none of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_third_party import _models_dir

BLOCKED = ("torch", "tensorflow", "keras", "tf2onnx", "jax", "onnx2torch")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_resnet_onnx):
    """model name → (path, extra CLI input options)."""
    folder = tmp_path_factory.mktemp("explain-models")
    from onnxviz.converters import convert

    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling2D()(x)
    convert(keras.Model(inp, layers.Dense(5, activation="softmax", name="pred")(x)), folder / "keras.onnx")
    return {
        "resnet": (tiny_resnet_onnx[1], ["--size", "64x64"]),
        "keras": (folder / "keras.onnx", []),
        "paddle": (_models_dir() / "ch_ppocr_mobile_v2.0_cls_mobile.onnx", ["--size", "48x192"]),
    }


def _run_without_frameworks(script: str) -> subprocess.CompletedProcess:
    guard = textwrap.dedent(f"""
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked in this test: " + name)
        sys.meta_path.insert(0, _Block())
    """)
    tail = f"\nassert not [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
    return subprocess.run([sys.executable, "-c", guard + textwrap.dedent(script) + tail], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["resnet", "keras", "paddle"])
def test_cams_and_dream_from_cli_and_api_without_torch_or_tensorflow(exported, photo, tmp_path, name):
    path, extra = exported[name]
    methods = ["gradcam", "eigencam", "scorecam", "ablationcam"]
    script = f"""
        import numpy as np
        import onnxviz
        from onnxviz.cli.main import main
        for method in {methods!r}:
            out = {str(tmp_path)!r} + "/" + method
            assert main(["cam", {str(path)!r}, {str(photo)!r}, "-o", out, "--method", method, *{extra!r}]) == 0
        size = {extra!r}[1] if {extra!r} else None
        result = onnxviz.cam({str(path)!r}, [{str(photo)!r}], method="scorecam", top_k=8,
                             size=tuple(map(int, size.split("x"))) if size else None)
        fed = result.feeds[result.input_name]
        hw = fed.shape[2:] if result.input_layout == "NCHW" else fed.shape[1:3]
        assert result.maps.min() >= 0 and result.heatmaps.shape == (1, *hw) and result.details["channels_scored"] == [8]
        for k, args in enumerate([["--target", "0,1"], ["--target", "0", "--method", "seed"]]):
            assert main(["dream", {str(path)!r}, "-o", {str(tmp_path)!r} + f"/dream{{k}}", "--steps", "4", *args, *{extra!r}]) == 0
        dream = onnxviz.maximize({str(path)!r}, [0, 1], method="seed", steps=4, size=tuple(map(int, size.split("x"))) if size else None)
        assert dream.images.shape[0] == 2 and np.isfinite(dream.objectives).all() and len(dream.history) == 2
        grad = onnxviz.cam({str(path)!r}, [{str(photo)!r}], method="gradcam", size=tuple(map(int, size.split("x"))) if size else None)
        assert grad.classes == result.classes and grad.maps.shape == result.maps.shape
    """
    proc = _run_without_frameworks(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in methods:
        manifest = json.loads((tmp_path / method / "manifest.json").read_text())
        entry = manifest["images"][0]
        assert manifest["layer"]["default"] and np.load(tmp_path / method / entry["map"]).ndim == 2
        assert (tmp_path / method / entry["overlay"]).is_file()
    for k in range(2):
        manifest = json.loads((tmp_path / f"dream{k}" / "manifest.json").read_text())
        assert (tmp_path / f"dream{k}" / manifest["grid"]).is_file() and manifest["method"] == ("lucid", "seed")[k]


def test_blocking_works():
    proc = _run_without_frameworks("import torch")
    assert proc.returncode != 0 and "blocked in this test: torch" in proc.stderr
