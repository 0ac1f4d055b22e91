"""PyTorch → ONNX (converters/from_torch.py): every Conv tap is named like the torch module and
equals the torch tensor (forward hooks; the BatchNorm's output where the exporter folded it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require_in_ci

torch = require_in_ci("torch")

import onnxviz  # noqa: E402
import torch_models  # noqa: E402
from onnxviz.converters import ConversionError, convert  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(torch_models.MODELS))
def test_every_conv_tap_equals_the_torch_tensor(name, exporter, tmp_path):
    net = torch_models.build(name)
    shape = torch_models.MODELS[name][1]
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
    conversion = convert(net, tmp_path / "m.onnx", example_inputs=x[:1], exporter=exporter)
    assert conversion.exporter == f"torch.onnx ({exporter})" and conversion.unmatched == []
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    model = onnxviz.load(tmp_path / "m.onnx")
    assert sorted(t.name for t in model.taps) == sorted(convs)  # 100% of conv layers, torch's names
    assert model.inputs[0].shape[0] not in (1, 2)  # the batch dimension stays dynamic
    outs, y = torch_models.hooked_outputs(net, x)
    cap = model.capture(x.numpy(), verify=True)
    for tap in model.taps:
        expected = outs[tap.bn_folded or tap.name]
        assert _rel(cap[tap.name].array, expected) <= 1e-4, tap.name
        if tap.bn_folded:
            assert tap.label.endswith(")") and "(+" in tap.label
    assert {t.name: t.bn_folded for t in model.taps if t.bn_folded} == conversion.bn_folded
    (own,) = cap.outputs.values()
    assert _rel(own, y) <= 1e-4
    assert cap.verify.ok, str(cap.verify)
    # Every layer (--tap layer): each module call's tap equals its hooked output, under the module's name
    calls = torch_models.hooked_calls(net, x)
    every = onnxviz.load(tmp_path / "m.onnx", tap="layer")
    graph = every.layer_graph
    layer_cap = every.capture(x.numpy(), verify=True)
    compared = set()
    for tap in every.taps:
        if tap.name in calls:
            assert _rel(layer_cap[tap.name].array, calls[tap.bn_folded or tap.name]) <= 1e-4, tap.name
            compared.add(tap.name)
    modules = dict(net.named_modules())
    for call in calls:
        module = modules[call.split(":")[0]]
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            assert call in compared, call  # every conv, dense and pooling layer, by the framework's name
            assert graph[call].kind == {torch.nn.Conv2d: "conv", torch.nn.Linear: "dense"}.get(type(module), "pool")
        elif isinstance(module, (torch.nn.Dropout, torch.nn.BatchNorm2d)) and call not in compared:
            assert graph[call].vanished and graph[call].note  # listed, and said what became of it
    assert layer_cap.verify.ok, str(layer_cap.verify)
    assert graph.framework_params == sum(p.numel() for p in net.parameters()) == sum(layer.shown_params for layer in graph)


def test_bn_folding_is_flagged_for_resnet():
    conversion = convert(torch_models.build("resnet_style"), example_inputs=torch.randn(1, 3, 32, 32))
    assert conversion.bn_folded["layer1.1.downsample.0"] == "layer1.1.downsample.1"
    model = onnxviz.load(conversion.model)
    labels = {t.name: t.label for t in model.taps}
    assert labels["layer1.0.conv1"] == "layer1.0.conv1 (+bn1)"
    assert labels["layer1.1.downsample.0"] == "layer1.1.downsample.0 (+downsample.1)"
    assert labels["dw"] == "dw"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=TESTS)


def test_cli_convert_from_pt2_torchscript_and_factory(tmp_path):
    net = torch_models.build("lenet5")
    x = torch.randn(1, 1, 28, 28)
    pt2 = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(net, (x,)), pt2)
    scripted = tmp_path / "lenet.pt"
    torch.jit.trace(net, x).save(str(scripted))
    for source, extra in ((pt2, ["--input-shape", "1,1,28,28"]), (scripted, ["--input-shape", "1,1,28,28"]), ("torch_models:lenet5", ["--input-shape", "1,1,28,28"])):
        out = tmp_path / "out.onnx"
        proc = _cli("convert", source, "-o", out, *extra)
        assert proc.returncode == 0, (source, proc.stderr)
        assert "3/3 Conv layers named" in proc.stdout, proc.stdout
        assert [t.name for t in onnxviz.load(out).taps] == ["c1", "c3", "c5"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.pt2", "--input-shape", "1,3,8,8"], "model file not found"),
        (["torch_models:missing", "--input-shape", "1,3,8,8"], "cannot import torch_models:missing"),
        (["torch_models:lenet5"], "need example inputs or an input shape"),
        (["torch_models:lenet5", "--input-shape", "1,3,28,28"], "the model failed on the example input"),
        (["junk.pt", "--input-shape", "1,3,8,8"], "is not a TorchScript or .pt2 file"),
        (["model.xyz"], "cannot tell the framework"),
    ],
)
def test_cli_convert_errors(args, message, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "model.xyz").write_bytes(b"?")
    args = [str(tmp_path / a) if a in ("junk.pt", "model.xyz") else a for a in args]
    proc = _cli("convert", *args, "-o", tmp_path / "out.onnx")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxviz: error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_conversion_error_is_an_onnxviz_error():
    assert issubclass(ConversionError, onnxviz.OnnxvizError)


class _Branchy(torch.nn.Module):
    """Data-dependent Python control flow: torch.export cannot capture it, the TorchScript tracer can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3)
        self.b = torch.nn.Conv2d(4, 2, 3)

    def forward(self, x):
        y = self.a(x)
        if float(y.mean()) > -100:
            y = torch.relu(y)
        return self.b(y)


def test_falls_back_to_torchscript_and_says_so(tmp_path, capfd):
    conversion = convert(_Branchy().eval(), tmp_path / "b.onnx", example_inputs=torch.randn(1, 3, 8, 8))
    assert conversion.exporter == "torch.onnx (torchscript)"
    assert conversion.notes and conversion.notes[0].startswith("dynamo exporter failed") and "\x1b" not in conversion.notes[0]
    assert [t.name for t in onnxviz.load(tmp_path / "b.onnx").taps] == ["a", "b"]
    out, err = capfd.readouterr()
    assert "def forward" not in out + err  # torch's graph dump is kept out of the user's terminal
    with pytest.raises(ConversionError, match="dynamo export failed"):
        convert(_Branchy().eval(), example_inputs=torch.randn(1, 3, 8, 8), exporter="dynamo")
