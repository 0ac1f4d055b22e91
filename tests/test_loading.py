"""Model loading and validation (onnxviz/loading.py)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

import models
from onnxviz.errors import ModelLoadError
from onnxviz.graph.loading import load_model


def test_load_from_path_bytes_and_proto(save):
    model = models.conv_bn_relu()
    path = save(model)
    for source in (path, str(path), path.read_bytes(), model):
        loaded = load_model(source)
        assert [n.name for n in loaded.proto.graph.node] == [n.name for n in model.graph.node]
        # shape inference ran: intermediate tensors have types
        assert {vi.name for vi in loaded.proto.graph.value_info} >= {"c1", "b1", "r1", "c2"}


def test_large_weights_stay_out_of_the_protobuf_and_come_back_intact():
    import numpy as np

    from onnxviz.graph.loading import IN_MEMORY

    model = models.conv_bn_relu()
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.arange(4 * 3 * 9 * 9, dtype=np.float32).reshape(4, 3, 9, 9) / 100, "c1.w"))
    model.graph.node[0].attribute[1].ints[:] = [9, 9]
    model.graph.node[0].attribute[0].ints[:] = [4, 4, 4, 4]
    loaded = load_model(model)
    stripped = {i.name for i in loaded.proto.graph.initializer if any(e.value == IN_MEMORY for e in i.external_data)}
    assert stripped == {"c1.w"} and set(loaded.weights) == {"c1.w"}
    assert loaded.proto.ByteSize() < model.ByteSize() - 1000
    np.testing.assert_array_equal(loaded.initializer_array("c1.w"), onnx.numpy_helper.to_array(model.graph.initializer[0]))
    full = loaded.with_weights()
    assert onnx.numpy_helper.to_array(next(i for i in full.graph.initializer if i.name == "c1.w")).tolist() == loaded.weights["c1.w"].tolist()


def test_reserved_location_is_rejected():
    from onnxviz.graph.loading import IN_MEMORY

    model = models.conv_bn_relu()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", IN_MEMORY
    with pytest.raises(ModelLoadError, match="reserved external data location"):
        load_model(model)


def test_callers_proto_is_not_modified():
    model = models.conv_bn_relu()
    before = model.SerializeToString()
    load_model(model)
    assert model.SerializeToString() == before


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_model(tmp_path / "nope.onnx")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a file"):
        load_model(tmp_path)


def test_not_onnx(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage that is not a protobuf \xff\xff\xff")
    with pytest.raises(ModelLoadError, match="not an ONNX"):
        load_model(p)


def test_empty_file(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(p)


def test_truncated(save):
    path = save(models.conv_bn_relu())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(path)


def test_invalid_graph_is_reported():
    model = models.conv_bn_relu()
    model.graph.node[1].input[0] = "does_not_exist"
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_model(model)


def test_opset_newer_than_installed_onnx():
    model = models.conv_bn_relu()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    with pytest.raises(ModelLoadError, match="opset"):
        load_model(model.SerializeToString())


def test_local_functions_are_inlined():
    fn = helper.make_function(
        "custom", "ConvRelu", ["X", "W"], ["Y"],
        [helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["Y"])],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("ConvRelu", ["x", "w"], ["y"], domain="custom", name="block")], "g",
        [models.image_input()], [models.out("y")], [models.init("w", (4, 3, 3, 3))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], functions=[fn])
    loaded = load_model(model)
    assert [n.op_type for n in loaded.proto.graph.node] == ["Conv", "Relu"]


def test_external_data_stays_on_disk(tmp_path):
    model = models.conv_bn_relu()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    loaded = load_model(path)
    assert loaded.has_external_data and loaded.base_dir == tmp_path.resolve()
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in loaded.proto.graph.initializer)


def test_external_data_missing_file(tmp_path):
    model = models.conv_bn_relu()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external data file 'ext.onnx.data'"):
        load_model(path)


def test_external_data_location_cannot_escape(tmp_path):
    model = models.conv_bn_relu()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    proto = onnx.load_model(path, load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save_model(proto, path)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_bytes_with_external_data_need_a_path(tmp_path):
    model = models.conv_bn_relu()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    with pytest.raises(ModelLoadError, match="load it from its file path"):
        load_model(Path(path).read_bytes())


def test_unsupported_source_type():
    with pytest.raises(ModelLoadError, match="cannot load a model from int"):
        load_model(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "where, field",
    [("input", "NodeProto.input"), ("metadata", "StringStringEntryProto.value"), ("doc", "NodeProto.doc_string")],
)
def test_text_that_is_not_utf8_is_reported(where, field):
    """protobuf hands a text field that is not UTF-8 over as bytes: refused at load, named."""
    model = models.conv_bn_relu()
    if where == "input":
        model.graph.node[1].input[0] = "MARK"  # also breaks the graph: the text check comes first
    elif where == "metadata":
        model.metadata_props.add(key="k", value="MARK")
    else:
        model.graph.node[0].doc_string = "MARK"
    data = model.SerializeToString().replace(b"MARK", b"\xe9\xe9RK")
    with pytest.raises(ModelLoadError, match=rf"a text field \({field}\) is not valid UTF-8"):
        load_model(data)
