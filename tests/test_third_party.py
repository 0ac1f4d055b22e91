"""Real CNNs exported by someone else: PaddleOCR models (Paddle → ONNX) shipped in rapidocr's wheel.

CI installs the wheel without its dependencies (`pip install --no-deps rapidocr`); the models are
located through the package spec, without importing rapidocr.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from test_cli import run


def _models_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            raise AssertionError("rapidocr (the wheel carrying PaddleOCR's ONNX models) is not installed")
        pytest.skip("rapidocr not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@pytest.mark.parametrize(
    "name, extra, n_layers",
    [
        ("PP-OCRv6_det_small.onnx", ["--size", "320x480", "--scale", "imagenet"], 85),
        ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", [], 53),
        ("PP-OCRv6_rec_small.onnx", [], 57),
    ],
)
@pytest.mark.parametrize("tap", ["conv", "activation"])
def test_maps_on_paddle_exported_models(name, extra, n_layers, tap, photo, tmp_path):
    model = _models_dir() / name
    out = tmp_path / "out"
    proc = run("maps", model, photo, "-o", out, "--tap", tap, "--verify", *extra)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["layers"]) == n_layers
    assert manifest["verify"]["ok"] and manifest["verify"]["max_rel_diff"] <= 1e-5
    assert all((out / layer["png"]).is_file() for layer in manifest["layers"])
    if tap == "activation":
        # Paddle's Conv → Add(bias) → Identity → activation and Conv → BN → activation chains are followed
        assert sum(1 for layer in manifest["layers"] if layer["through"]) > n_layers // 2


def test_wrong_input_size_is_one_line_with_a_hint(photo, tmp_path):
    proc = run("maps", _models_dir() / "PP-OCRv6_det_small.onnx", photo, "-o", tmp_path / "o")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "try --size HxW" in proc.stderr and not (tmp_path / "o").exists()
