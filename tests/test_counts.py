"""Seed 003's Extractor counts (conv 49 + 4 downsample, 4 stages, 16 blocks, 1 linear) on a
torchvision-layout ResNet-50, the same whichever torch exporter wrote the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import onnxviz
from onnxviz.graph.counts import layer_counts, residual_blocks

ROOT = Path(__file__).resolve().parent.parent


def extractor_counts(model) -> dict[str, int]:
    """Seed 003's Extractor, as written in the post (torchvision's Bottleneck/BasicBlock stand in)."""
    from torch import nn

    from benchmarks.models import Bottleneck

    counts = {"cnn": 0, "sequential": 0, "downsample": 0, "linear": 0, "blocks": 0}

    def walk(layers):
        for layer in layers:
            if type(layer) is nn.Sequential:
                walk(layer)
                counts["sequential"] += 1
            if type(layer) is nn.Conv2d:
                counts["cnn"] += 1
            if type(layer) is nn.Linear:
                counts["linear"] += 1
            if "downsample" in layer._modules:
                counts["downsample"] += layer._modules["downsample"] is not None
            if isinstance(layer, Bottleneck):
                counts["blocks"] += 1
                counts["cnn"] += sum(type(child) is nn.Conv2d for child in layer.children())

    walk(list(model.children()))
    return counts


@pytest.fixture(scope="session")
def narrow_resnet50(tmp_path_factory):
    """torchvision's ResNet-50 topology at width 4 (53 convs, ~97k parameters), written by both exporters."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT))
    from benchmarks.models import resnet50
    from onnxviz.converters import convert

    net = resnet50(width=4, num_classes=10)
    folder = tmp_path_factory.mktemp("resnet50")
    paths = {}
    for exporter in ("dynamo", "torchscript"):
        paths[exporter] = folder / f"resnet50_{exporter}.onnx"
        conversion = convert(net, paths[exporter], example_inputs=torch.randn(1, 3, 64, 64), exporter=exporter)
        assert exporter in conversion.exporter
    return net, paths


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_resnet50_counts_equal_the_extractor(narrow_resnet50, exporter):
    net, paths = narrow_resnet50
    ref = extractor_counts(net)
    assert ref == {"cnn": 49, "sequential": 4, "downsample": 4, "linear": 1, "blocks": 16}  # the post's info()
    model = onnxviz.load(paths[exporter])
    c = model.summary()["counts"]
    assert (c["conv_main"], c["downsample"], c["stages"], c["blocks"], c["linear"]) == (
        ref["cnn"], ref["downsample"], ref["sequential"], ref["blocks"], ref["linear"])
    assert c["conv"] == 53 and c["pooling"] == 2  # maxpool, and avgpool whether GlobalAveragePool or ReduceMean
    blocks = residual_blocks(model.proto.graph)
    downsample = [b for b in blocks if b.shortcut_convs]
    assert len(downsample) == 4 and blocks.index(downsample[0]) == 0  # layer1.0's stride-1 downsample counts
    assert layer_counts(model.proto.graph)["stages"] == 4  # without names: by structure


def test_identity_residuals_and_feature_pyramids(save):
    """MobileNetV2-style identity shortcuts are blocks; Adds of two conv branches are not."""
    from onnx import helper

    import models

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["r"], name="residual"),  # identity shortcut
        helper.make_node("Conv", ["r", "w2"], ["p"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r", "w2"], ["q"], name="c4", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p", "q"], ["y"], name="merge"),  # two one-conv branches: not a block
    ]
    inits = [models.init("w1", (4, 3, 3, 3)), models.init("w2", (4, 4, 3, 3))]
    proto = models.make(nodes, [models.image_input()], [models.out("y")], inits)
    c = layer_counts(onnxviz.load(proto).proto.graph)
    assert (c["blocks"], c["downsample"], c["stages"], c["conv_main"]) == (1, 0, 1, 4)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_resnet50_total_is_torchs_parameter_count(narrow_resnet50, exporter):
    """BatchNorm folded into the convs by the exporter: the total is still sum(p.numel())."""
    net, paths = narrow_resnet50
    summary = onnxviz.load(paths[exporter]).summary()
    assert summary["params"] == sum(p.numel() for p in net.parameters()) and summary["framework"] == "torch"
    assert summary["onnx_params"] != summary["params"]  # the BN's scale and shift live in the convs' weights
    rows = {row["name"]: row for row in summary["table"]}
    assert rows["layer1.0.bn1"]["vanished"] and rows["layer1.0.bn1"]["params"] == 2 * 4
    assert rows["fc"]["class"] == "Linear" and rows["layer1.0.downsample.0"]["class"] == "Conv2d"


def test_seed003_commands(narrow_resnet50, photo, tmp_path):
    """The README's seed-003 lines: info() counts, conv1's filter[0] as 8×8 gray tiles, 64 maps per conv."""
    from test_cli import run

    _, paths = narrow_resnet50
    text = run("summary", paths["torchscript"]).stdout
    assert "Conv layers: 53 (49 + 4 downsample)   Linear layers: 1   Pooling layers: 2   Residual blocks: 16   Stages: 4" in text
    out = tmp_path / "filters"
    assert run("filters", paths["torchscript"], "-o", out, "--layers", "conv1", "--input-channels", "0").returncode == 0
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv1"] and manifest["layers"][0]["shape"] == [4, 3, 7, 7]
    out = tmp_path / "maps"
    proc = run("maps", paths["dynamo"], photo, "-o", out, "--mean", "0.5", "--std", "0.5", "--max-channels", "64", "--cmap", "gray")
    assert proc.returncode == 0, proc.stderr
    names = [layer["name"] for layer in json.loads((out / "manifest.json").read_text())["layers"]]
    assert len(names) == 53 and names[0] == "conv1" and "layer1.0.downsample.0" in names and "layer4.2.conv3" in names
