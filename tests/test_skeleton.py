"""Reading a model's structure without its weights (onnxviz/skeleton.py) and the loader's use of it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import models
from onnxviz.errors import ModelLoadError
from onnxviz.graph import loading
from onnxviz.graph.loading import load_model
from onnxviz.graph.skeleton import SkeletonError, read_skeleton


def _big_model() -> onnx.ModelProto:
    """conv_bn_relu with a 4×3×9×9 first kernel (1.3 KB, over the inline limit) and a second
    large initializer holding the very same bytes."""
    model = models.conv_bn_relu()
    weight = np.arange(4 * 3 * 9 * 9, dtype=np.float32).reshape(4, 3, 9, 9) / 100
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "c1.w"))
    model.graph.node[0].attribute[1].ints[:] = [9, 9]
    model.graph.node[0].attribute[0].ints[:] = [4, 4, 4, 4]
    model.graph.initializer.append(numpy_helper.from_array(weight.copy(), "unused_twin"))
    return model


def test_skeleton_leaves_out_large_raw_data_and_records_where_it_lies(tmp_path):
    model = _big_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = path.read_bytes()
    skeleton, spans = read_skeleton(path, 1024)
    assert len(skeleton) < len(data) - 2 * 1296
    parsed = onnx.load_model_from_string(skeleton)
    assert [i.name for i in parsed.graph.initializer] == [i.name for i in model.graph.initializer]
    assert len(spans) == len(model.graph.initializer)
    for init, original, span in zip(parsed.graph.initializer, model.graph.initializer, spans):
        if init.name in ("c1.w", "unused_twin"):
            offset, length = span
            assert not init.HasField("raw_data") and list(init.dims) == [4, 3, 9, 9]
            assert data[offset:offset + length] == original.raw_data
        else:
            assert span is None and init == original
    assert spans[0] != spans[-1]  # identical bytes, each tensor its own place
    # everything but the weights is unchanged
    for init in model.graph.initializer:
        if init.name in ("c1.w", "unused_twin"):
            init.ClearField("raw_data")
    assert parsed == model


def test_loader_points_weights_into_the_file_and_matches_a_full_parse(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(_big_model(), path)
    fast = load_model(path)
    monkeypatch.setattr(loading, "_parse_skeleton", lambda p, w: (None, None))
    full = load_model(path)
    assert fast.weights_in_source and not fast.weights
    assert fast.proto == full.proto
    np.testing.assert_array_equal(fast.initializer_array("c1.w"), numpy_helper.to_array(_big_model().graph.initializer[0]))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 700],  # cut inside the weights
        lambda data: data[:1],  # cut inside the first field
        lambda data: data + b"\x0b",  # a group wire type at the end
        lambda data: data + b"\x00",  # field number 0
        lambda data: data + b"\x3a\xff\xff\xff\xff\x0f",  # a graph whose length runs past the end
    ],
)
def test_damaged_files_are_refused(tmp_path, damage):
    path = tmp_path / "m.onnx"
    onnx.save(_big_model(), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SkeletonError):
        read_skeleton(path, 1024)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(SkeletonError):
        read_skeleton(path, 1024)


def test_truncated_weights_fall_back_to_the_full_parse_and_its_message(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_big_model(), path)
    path.write_bytes(path.read_bytes()[:-700])
    with pytest.raises(loading.ModelLoadError, match="truncated or corrupt"):
        load_model(path)


def test_raw_data_that_does_not_fit_its_dims_is_refused(tmp_path):
    model = _big_model()
    model.graph.initializer[0].dims[:] = [4, 3, 9, 8]  # 1296 values stored, 864 declared
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    declared = 4 * 3 * 9 * 8 * 4
    held = len(model.graph.initializer[0].raw_data)
    with pytest.raises(ModelLoadError, match=f"needs {declared:,} bytes but holds {held:,}"):
        load_model(path)
