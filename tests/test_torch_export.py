"""Models exported by torch.onnx (both exporters): every tap equals the torch tensor (forward hooks)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import require_in_ci

torch = require_in_ci("torch")
nn = torch.nn

import onnxviz  # noqa: E402
import torch_models  # noqa: E402


# Where the exporter folds BN into the conv, the tap equals the BN module's output.
FOLDED = {
    "conv1": "bn1",
    "layer1.0.conv1": "layer1.0.bn1",
    "layer1.0.conv2": "layer1.0.bn2",
    "layer1.1.conv1": "layer1.1.bn1",
    "layer1.1.conv2": "layer1.1.bn2",
    "layer1.1.downsample.0": "layer1.1.downsample.1",
}
CONVS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.downsample.0", "layer1.1.conv1", "layer1.1.conv2", "dw", "pw"]


def _net() -> nn.Module:
    return torch_models.build("resnet_style")


def _export(net, x, path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            torch.onnx.export(net, (x,), path, external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        else:
            torch.onnx.export(net, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_every_tap_equals_the_torch_tensor(tmp_path, dynamo):
    net = _net()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "net.onnx"
    _export(net, x, path, dynamo)
    outs, y = torch_models.hooked_outputs(net, x)
    model = onnxviz.load(path, provider="cpu")
    assert [t.name for t in model.taps] == CONVS  # the framework's names, 100% of Conv layers
    if dynamo:  # the dynamo exporter's metadata tells which BatchNorm it folded into which conv
        assert {t.name: t.bn_folded for t in model.taps if t.bn_folded} == FOLDED
        assert model.taps[1].label == "layer1.0.conv1 (+bn1)"
    cap = model.capture(x.numpy(), verify=True)
    for name, layer in cap.items():
        expected = outs[FOLDED.get(name, name)]
        rel = np.abs(layer.array - expected).max() / np.abs(expected).max()
        assert rel <= 1e-4, (name, rel)
    (out_name,) = cap.outputs
    np.testing.assert_allclose(cap.outputs[out_name], y, rtol=1e-4, atol=1e-5)
    assert cap.verify.ok, str(cap.verify)


def test_activation_taps_equal_relu_outputs(tmp_path):
    net = _net()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "net.onnx"
    _export(net, x, path, dynamo=False)
    outs, _ = torch_models.hooked_outputs(net, x)
    cap = onnxviz.load(path, tap="activation").capture(x.numpy())
    # conv1 → (bn1 folded) → relu: the activation tap is relu(bn1(conv1(x)))
    stem = cap["conv1"]
    assert stem.through_ops == ("Relu",)
    np.testing.assert_allclose(stem.array, np.maximum(outs["bn1"], 0), rtol=1e-4, atol=1e-5)
    # layer1.1.conv2 → bn2 folded → Add(residual): the chain stops before the residual Add
    assert cap["layer1.1.conv2"].through_ops == ()
    np.testing.assert_allclose(cap["dw"].array, np.maximum(outs["dw"], 0), rtol=1e-4, atol=1e-5)
