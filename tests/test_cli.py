"""The CLI through a subprocess (onnxviz/cli.py): outputs, manifest, exit codes, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import models


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("ONNXVIZ_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("onnxviz: error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def expected_grid_size(shape, padding=1, min_tile=32):
    c, h, w = shape[1], shape[2], shape[3]
    if max(h, w) < min_tile:  # the CLI upscales small maps (--min-tile, default 32)
        factor = math.ceil(min_tile / max(h, w))
        h, w = h * factor, w * factor
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    return cols * (w + padding) + padding, rows * (h + padding) + padding


def test_summary_text_and_json(save):
    path = save(models.conv_bn_relu())
    text = run("summary", path, "--tap", "activation")
    assert text.returncode == 0, text.stderr
    assert "layer1.0.conv1" in text.stdout and "BatchNormalization→Relu" in text.stdout
    js = run("summary", path, "--json")
    data = json.loads(js.stdout)
    assert [layer["name"] for layer in data["layers"]] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert data["layers"][0]["op"] == "Conv" and data["layers"][0]["shape"][:2] == ["N", 4]
    assert data["counts"]["taps"] == 2 and data["inputs"][0]["layout"] == "NCHW"


def test_maps_writes_pngs_and_manifest(save, photo, tmp_path):
    path = save(models.conv_bn_relu())
    out = tmp_path / "maps"
    proc = run("maps", path, photo, "-o", out, "--tap", "activation", "--size", "48x64", "--verify", "--cmap", "magma")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == str(path) and manifest["provider"] == "cpu"
    assert manifest["optimization"] == "extended"  # the CLI's one-run default
    assert manifest["inputs"][0]["image"] == str(photo) and manifest["inputs"][0]["fed_shape"] == [1, 3, 48, 64]
    assert manifest["verify"]["ok"] and manifest["verify"]["max_rel_diff"] <= 1e-5
    names = [layer["name"] for layer in manifest["layers"]]
    assert names == ["layer1.0.conv1", "layer1.0.conv2"]
    for layer in manifest["layers"]:
        assert set(layer) >= {"name", "tensor", "node", "op", "shape", "png", "min", "max", "mean"}
        assert layer["min"] <= layer["mean"] <= layer["max"]
        with Image.open(out / layer["png"]) as img:
            assert img.size == expected_grid_size(layer["shape"])
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["files"] + ["manifest.json", ".onnxviz-output"])
    assert "tapped vs untapped" in proc.stdout


def test_maps_several_images_layers_and_max_channels(save, photo, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    out = tmp_path / "o"
    proc = run("maps", path, photo, rgb_image, "-o", out, "--layers", "*conv2", "--max-channels", "2", "--ncols", "1",
               "--optimization", "all")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimization"] == "all"
    (layer,) = manifest["layers"]
    assert layer["name"] == "layer1.0.conv2" and len(layer["pngs"]) == 2 and layer["png"] == layer["pngs"][0]
    h, w = layer["shape"][2:]
    with Image.open(out / layer["pngs"][1]) as img:
        assert img.size == (w + 2, 2 * (h + 1) + 1)


def test_maps_replaces_its_own_earlier_output_but_never_user_files(save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    out = tmp_path / "o"
    assert run("maps", path, rgb_image, "-o", out).returncode == 0
    assert run("maps", path, rgb_image, "-o", out, "--layers", "*conv1").returncode == 0
    assert len(json.loads((out / "manifest.json").read_text())["layers"]) == 1
    assert len(list(out.glob("*.png"))) == 1
    (out / "notes.txt").write_text("mine")
    proc = run("maps", path, rgb_image, "-o", out)
    assert_one_line_error(proc, "not empty and was not written by onnxviz")
    assert (out / "notes.txt").read_text() == "mine"


def test_expose_and_verify(save, tmp_path, rgb_image):
    path = save(models.conv_bn_relu())
    before = path.read_bytes()
    out = tmp_path / "tapped.onnx"
    proc = run("expose", path, "-o", out, "--tap", "activation", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "max rel diff" in proc.stdout
    tapped = onnx.load(out)
    assert [o.name for o in tapped.graph.output] == ["y", "r1", "r2"]
    assert path.read_bytes() == before
    proc = run("expose", path, "-o", tmp_path / "t2.onnx", "--verify", "--verify-image", rgb_image)
    assert proc.returncode == 0, proc.stderr


def test_demo(tmp_path):
    proc = run("demo", "-o", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv1", "conv2", "conv3"]
    assert manifest["verify"]["ok"]
    assert "demo done" in proc.stdout


def test_hostile_names_stay_inside_the_output_dir(save, rgb_image, tmp_path):
    path = save(models.hostile_names())
    (tmp_path / "deep").mkdir()
    out = tmp_path / "deep" / "o"
    proc = run("maps", path, rgb_image, "-o", out)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out.iterdir() if p.name != ".onnxviz-output")  # the ownership marker
    assert len(files) == 3 and all("/" not in f and ".." not in f and not f.startswith(".") for f in files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        ["model.onnx", "img.png", "deep/o/.onnxviz-output"] + [f"deep/o/{f}" for f in files]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layers"][1]["node"] == "<script>alert(1)</script>/..\\..\\evil"


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_model", "model file not found"),
        ("corrupt_model", "not an ONNX file"),
        ("truncated_model", "truncated or corrupt"),
        ("name_not_utf8", "a text field (NodeProto.name) is not valid UTF-8"),
        ("not_an_image", "not an image"),
        ("missing_image", "image file not found"),
        ("unknown_layer", "matches no tapped layer"),
        ("output_is_a_file", "exists and is not a directory"),
        ("output_under_a_file", "cannot be created"),
        ("two_inputs", "model has 2 inputs"),
        ("bad_size", "size must be HxW"),
        ("bad_cmap", "unknown colormap"),
        ("no_conv", "no Conv-family node"),
        ("cuda_missing", "cuda"),
        ("bad_flag", "unrecognized arguments"),
        ("bad_optimization", "invalid choice: 'fast'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, pattern, save, rgb_image, tmp_path):
    model = save(models.conv_bn_relu())
    image = rgb_image
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "missing_model":
        model = tmp_path / "nope.onnx"
    elif case == "corrupt_model":
        model.write_bytes(b"hello, I am not a model")
    elif case == "truncated_model":
        model.write_bytes(model.read_bytes()[:200])
    elif case == "name_not_utf8":  # protobuf hands such a field over as bytes
        proto = models.conv_bn_relu()
        proto.graph.node[0].name = "QQQQnode"
        model.write_bytes(proto.SerializeToString().replace(b"QQQQnode", b"\xe9\xe9QQnode"))
    elif case == "not_an_image":
        image = tmp_path / "fake.png"
        image.write_text("not a png")
    elif case == "missing_image":
        image = tmp_path / "nope.png"
    elif case == "unknown_layer":
        extra = ["--layers", "does.not.exist"]
    elif case == "output_is_a_file":
        out = tmp_path / "file"
        out.write_text("x")
    elif case == "output_under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub"
    elif case == "two_inputs":
        model = save(models.two_inputs(), "two.onnx")
    elif case == "bad_size":
        extra = ["--size", "big"]
    elif case == "bad_cmap":
        extra = ["--cmap", "nope"]
    elif case == "no_conv":
        model = save(models.no_conv(), "noconv.onnx")
    elif case == "cuda_missing":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("CUDA present")
        extra = ["--provider", "cuda"]
    elif case == "bad_flag":
        extra = ["--frobnicate"]
    elif case == "bad_optimization":
        extra = ["--optimization", "fast"]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run("maps", model, image, "-o", out, *extra)
    assert_one_line_error(proc, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing left over


def test_nan_weights_render_and_report_nonfinite(save, rgb_image, tmp_path):
    model = models.conv_bn_relu()
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "c1.w"))
    path = save(model)
    out = tmp_path / "o"
    proc = run("maps", path, rgb_image, "-o", out)
    assert proc.returncode == 0, proc.stderr
    layer = json.loads((out / "manifest.json").read_text())["layers"][0]
    assert layer["nonfinite"] > 0 and layer["min"] is not None


def test_missing_onnxruntime_says_how_to_install(save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # import onnxruntime → ImportError
        "from onnxviz.cli import main\n"
        f"sys.exit(main(['maps', {str(path)!r}, {str(rgb_image)!r}, '-o', {str(tmp_path / 'o')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "onnxruntime is not installed: pip install 'onnxviz[cpu]'")
    assert not (tmp_path / "o").exists()


def test_summary_of_skipped_subgraph_convs(save):
    proc = run("summary", save(models.conv_in_if()))
    assert proc.returncode == 0
    assert "skipped: branch_conv (Conv): inside If 'gate'" in proc.stdout


def test_maps_render_options(save, rgb_image, tmp_path):
    out = tmp_path / "o"
    proc = run("maps", save(models.conv_bn_relu()), rgb_image, "-o", out, "--layers", "*conv1", "--norm", "signed", "--colorbar",
               "--select", "absmean", "--max-channels", "2", "--labels", "--min-tile", "64", "--padding", "2")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["norm"] == "signed" and manifest["cmap"] == "RdBu_r"
    (layer,) = manifest["layers"]
    with Image.open(out / layer["png"]) as img:
        # 2 maps of 30×40 upscaled ×2 to 60×80, side by side, 2 px padding, plus a colorbar panel
        assert img.size[1] == 60 + 4 and img.size[0] > 2 * (80 + 2) + 2
    assert_one_line_error(run("maps", save(models.conv_bn_relu()), rgb_image, "-o", tmp_path / "p", "--colorbar"), "colorbar needs one shared range")
    assert_one_line_error(run("maps", save(models.conv_bn_relu()), rgb_image, "-o", tmp_path / "q", "--channels", "9"), "channel 9 out of range")
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
