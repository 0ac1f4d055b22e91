"""Memory cap (onnxviz/budget.py): tap sizes, grouping, passes streamed to .npy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import models
import onnxviz
from onnxviz.run.budget import group_taps, parse_size, tap_bytes
from test_cli import assert_one_line_error, run


@pytest.mark.parametrize("text, expected", [("512M", 512 << 20), ("2G", 2 << 30), ("1.5GB", int(1.5 * (1 << 30))), ("100", 100), ("64KiB", 64 << 10), (4096, 4096)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1G", "0", "5Q"])
def test_parse_size_errors(bad):
    with pytest.raises(onnxviz.OnnxvizError, match="memory size"):
        parse_size(bad)


def test_tap_sizes_follow_the_input_shape():
    model = onnxviz.load(models.conv_bn_relu())
    x = np.zeros((2, 3, 10, 12), np.float32)
    sizes = tap_bytes(model.proto, model.taps, {"x": x})
    assert sizes == {"c1": 2 * 4 * 10 * 12 * 4, "c2": 2 * 6 * 4 * 5 * 4}


def test_grouping_respects_the_budget():
    model = onnxviz.load(models.conv_kinds())
    sizes = {t.tensor: s for t, s in zip(model.taps, (100, 100, 300, None))}
    groups = group_taps(model.taps, sizes, budget=250)
    assert [[t.tensor for t in g] for g in groups] == [["c1", "c2"], ["c3"], ["c4"]]


@pytest.mark.parametrize("builder", [models.conv_bn_relu, models.conv_kinds, models.silu_chain])
def test_capped_capture_equals_the_single_pass(builder, tmp_path):
    model = onnxviz.load(builder(), tap="activation")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    full = model.capture(x)
    capped = model.capture(x, max_memory=2000, spill_dir=tmp_path / "spill", verify=True)
    assert capped.plan.passes > 1 and capped.plan.spill_dir == str(tmp_path / "spill")
    assert "passes over layer groups" in capped.plan.describe()
    assert list(capped) == list(full)
    for name in full:
        assert isinstance(capped[name].array, np.memmap)
        np.testing.assert_allclose(capped[name].array, full[name].array, rtol=1e-5, atol=1e-6)
    for name in full.outputs:
        np.testing.assert_allclose(capped.outputs[name], full.outputs[name], rtol=1e-5, atol=1e-6)
        # a copy: an array onnxruntime hands over keeps that pass's memory arena alive
        assert capped.outputs[name].flags.owndata
    assert capped.verify.ok
    assert len(list((tmp_path / "spill").glob("*.npy"))) == len(full)
    assert full.plan.passes == 1 and full.plan.spill_dir is None


def test_under_the_cap_is_one_pass():
    model = onnxviz.load(models.conv_bn_relu())
    cap = model.capture(np.zeros((1, 3, 8, 8), np.float32), max_memory="1G")
    assert cap.plan.passes == 1 and cap.plan.spill_dir is None


def test_temporary_spill_folder_is_removed_with_the_capture():
    import gc
    from pathlib import Path

    model = onnxviz.load(models.conv_bn_relu())
    cap = model.capture(np.zeros((1, 3, 16, 16), np.float32), max_memory=100)
    folder = Path(cap.plan.spill_dir)
    assert folder.is_dir()
    del cap
    gc.collect()
    assert not folder.exists()


def test_cli_max_memory(save, rgb_image, tmp_path):
    out = tmp_path / "o"
    proc = run("maps", save(models.conv_bn_relu()), rgb_image, "-o", out, "--max-memory", "10K")
    assert proc.returncode == 0, proc.stderr
    assert "passes over layer groups" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["capture"]["passes"] == 2 and manifest["capture"]["streamed_to_disk"]
    assert len(manifest["layers"]) == 2
    assert_one_line_error(run("maps", save(models.conv_bn_relu()), rgb_image, "-o", tmp_path / "p", "--max-memory", "lots"), "memory size")
