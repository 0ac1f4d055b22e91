"""Models exported by torch.onnx (both exporters): every tap equals the torch tensor (forward hooks)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import require_in_ci

torch = require_in_ci("torch")
nn = torch.nn

import onnxviz  # noqa: E402


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class TinyResNet(nn.Module):
    """ResNet-style: stem, basic blocks with a downsample branch, and a MobileNet-style dw/pw pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Block(8, 8), Block(8, 16, 2))
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x = self.pw(torch.relu(self.dw(x)))
        return self.fc(x.mean((2, 3)))


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
    torch.manual_seed(0)
    net = TinyResNet()
    with torch.no_grad():  # non-trivial BN statistics, so folding matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _hooked(net: nn.Module, x):
    outs: dict[str, np.ndarray] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, o, name=name: outs.__setitem__(name, o.detach().numpy().copy()))
        for name, module in net.named_modules()
        if name
    ]
    with torch.no_grad():
        y = net(x).numpy()
    for h in handles:
        h.remove()
    return outs, y


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
    outs, y = _hooked(net, x)
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
    outs, _ = _hooked(net, x)
    cap = onnxviz.load(path, tap="activation").capture(x.numpy())
    # conv1 → (bn1 folded) → relu: the activation tap is relu(bn1(conv1(x)))
    stem = cap["conv1"]
    assert stem.through_ops == ("Relu",)
    np.testing.assert_allclose(stem.array, np.maximum(outs["bn1"], 0), rtol=1e-4, atol=1e-5)
    # layer1.1.conv2 → bn2 folded → Add(residual): the chain stops before the residual Add
    assert cap["layer1.1.conv2"].through_ops == ()
    np.testing.assert_allclose(cap["dw"].array, np.maximum(outs["dw"], 0), rtol=1e-4, atol=1e-5)
