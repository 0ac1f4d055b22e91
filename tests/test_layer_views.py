"""The framework's layers in the summary and the graph drawing (like model.summary() and
plot_model(show_shapes=True)), on graphs written the way exporters write them (no framework)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

import layer_models
import onnxviz
from onnxviz.graph.draw import to_dot
from onnxviz.graph.layers import KIND_KEY, LAYERS_KEY, PARAMS_KEY, group_layers
from onnxviz.graph.naming import FRAMEWORK_KEY, LAYER_KEY
from onnxviz.graph.summary import format_summary, model_summary
from test_cli import run


def _recorded(name: str = "relu") -> "onnx.ModelProto":  # noqa: F821
    """torchscript_net with converter records: a folded BatchNorm and a Dropout vanished in ONNX."""
    model = layer_models.torchscript_net()
    graph = group_layers(model)
    for node in model.graph.node:
        layer = graph.layer_of_node(node.name)
        for key, value in ((LAYER_KEY, layer.name.replace("relu", name, 1) if layer.name == "relu" else layer.name), (KIND_KEY, layer.kind)):
            prop = node.metadata_props.add()
            prop.key, prop.value = key, value
    records = [{"name": "conv1", "class": "torch.nn.modules.conv.Conv2d", "kind": "conv", "params": 112},
               {"name": "bn1", "class": "torch.nn.modules.batchnorm.BatchNorm2d", "kind": "norm", "params": 8, "note": "folded into conv1"},
               {"name": name, "class": "torch.nn.modules.activation.ReLU", "kind": "activation", "params": 0},
               {"name": "drop", "class": "torch.nn.modules.dropout.Dropout", "kind": "dropout", "params": 0}]  # fmt: skip
    for key, value in ((LAYERS_KEY, json.dumps(records)), (PARAMS_KEY, "1234"), (FRAMEWORK_KEY, "torch")):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model


def test_summary_rows_are_framework_layers_with_recorded_params():
    model = onnxviz.load(_recorded(), tap="pool")
    summary = model_summary(model)
    rows = {row["name"]: row for row in summary["table"]}
    assert list(rows)[:4] == ["conv1", "bn1", "relu", "drop"] and summary["table_level"] == "layers"
    assert rows["conv1"]["class"] == "Conv2d" and rows["conv1"]["params"] == 112 and rows["conv1"]["op"] == "Conv"
    assert rows["bn1"]["vanished"] and rows["bn1"]["params"] == 8 and rows["bn1"]["note"] == "folded into conv1"
    assert rows["drop"]["vanished"] and rows["drop"]["kind"] == "dropout"
    assert rows["pool"]["tapped"] and not rows["conv1"]["tapped"] and rows["flatten"]["op"] == "Flatten"
    assert summary["params"] == 1234 and summary["params_source"] == "framework" and summary["params_note"] is None
    assert [v["name"] for v in summary["vanished"]] == ["bn1", "drop"] and summary["counts"]["vanished"] == 2
    text = format_summary(summary)
    assert "Total params: 1,234 (torch's sum(p.numel()), recorded by onnxviz's converter; the ONNX file holds" in text
    assert re.search(r"bn1\s+BatchNorm2d\s+vanished in ONNX\s+8", text) and "bn1: folded into conv1" in text
    ops = model_summary(model, ops=True)
    assert ops["table_level"] == "ops" and "/layer1/layer1.0/Add" in {row["name"] for row in ops["table"]}


def test_other_files_say_why_the_onnx_total_may_differ(save):
    path = save(layer_models.paddle_net())
    proc = run("summary", path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    total = next(k for k, line in enumerate(lines) if line.startswith("Total params:"))
    assert "folded BatchNorm" in lines[total + 1] and "Conv.0" in proc.stdout
    data = json.loads(run("summary", path, "--json").stdout)
    assert data["params"] == data["onnx_params"] and data["params_source"] == "onnx" and data["framework_params"] is None
    assert {"table", "params", "counts"} <= set(data) and data["counts"]["conv"] == 2


def test_graph_boxes_are_layers_with_shapes_and_vanished_layers_dashed():
    model = onnxviz.load(_recorded(), tap="pool")
    dot = to_dot(model)
    boxes = re.findall(r"^  (l\d+) \[label=\"([^\"]*(?:\\\"[^\"]*)*)\"(.*)\];$", dot, re.M)
    labels = {label.split("\\n")[0]: (lid, label, style) for lid, label, style in boxes}
    assert list(labels)[:4] == ["conv1", "bn1", "relu", "drop"] and len(boxes) == len(model.layer_graph)
    lid, label, style = labels["pool"]
    assert label == "pool\\npool (MaxPool)\\ninput: N×4×8×8\\noutput: N×4×4×4"  # plot_model's name, type, shapes
    assert "#c0392b" in style  # tapped
    assert "dashed" in labels["bn1"][2] and "vanished in ONNX: folded into conv1" in labels["bn1"][1]
    conv1, relu, bn1 = labels["conv1"][0], labels["relu"][0], labels["bn1"][0]
    assert f"{conv1} -> {bn1} [style=dashed]" in dot and f"{bn1} -> {relu} [style=dashed]" in dot  # where Torch had it
    assert f"{conv1} -> {relu};" not in dot
    assert "Shape" not in dot and dot.count("->") < 2 * len(boxes)  # no op-level plumbing
    ops = to_dot(model, ops=True)
    assert len(re.findall(r"^  n\d+ \[label=", ops, re.M)) == len(model.proto.graph.node) and "/layer1/layer1.0/Add" in ops


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_graph_png_and_svg_from_the_cli_with_hostile_names(save, tmp_path):
    path = save(_recorded(name='re"lu<&>\\n</svg><script>x</script>'))
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert run("graph", path, "-o", svg, "--tap", "layer").returncode == 0
    root = ET.parse(svg).getroot()  # well-formed XML
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any("re\"lu<&>" in t for t in texts) and not list(root.iter("{http://www.w3.org/2000/svg}script"))
    assert any(t.startswith("output: ") for t in texts) and any(t == "Conv2d" for t in texts)
    proc = run("graph", path, "-o", png, "--ops")
    assert proc.returncode == 0 and png.read_bytes().startswith(b"\x89PNG")


def test_maps_manifest_lists_the_layers_that_vanished_in_onnx(save, rgb_image, tmp_path):
    out = tmp_path / "m"
    proc = run("maps", save(_recorded()), rgb_image, "-o", out, "--tap", "layer", "--size", "8x8")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(v["name"], v["class"], v["kind"]) for v in manifest["vanished"]] == [
        ("bn1", "BatchNorm2d", "norm"), ("drop", "Dropout", "dropout")]
    assert manifest["vanished"][0]["note"] == "folded into conv1"
    views = {layer["name"]: layer["view"] for layer in manifest["layers"]}
    assert views["pool"] == "maps" and views["fc"] == "bars" and views["flatten"] == "bars"  # N×5 and N×64: bar charts (≤ 64 values)
