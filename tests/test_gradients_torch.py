"""Gradients against torch autograd on the same networks, exported by both torch exporters:
input gradients (saliency) and gradients at tapped layers (what Grad-CAM reads), ≤ 1e-4 relative.

A tapped Conv whose BatchNorm the exporter folded in is compared with the BatchNorm module's
output, which is the tensor that Conv produces in the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require_in_ci

torch = require_in_ci("torch")

import onnxviz  # noqa: E402
import torch_models  # noqa: E402
from onnxviz.converters import convert  # noqa: E402

TOL = 1e-4
_EXPORTS: dict[tuple[str, str], Path] = {}


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grad_exports")

    def get(name: str, exporter: str) -> Path:
        key = (name, exporter)
        if key not in _EXPORTS:
            shape = torch_models.MODELS[name][1]
            path = folder / f"{name}_{exporter}.onnx"
            convert(torch_models.build(name), path, example_inputs=torch.randn(*shape), exporter=exporter)
            _EXPORTS[key] = path
        return _EXPORTS[key]

    return get


def _torch_grads(net, x, layers, pick):
    """Input gradient and gradients at the outputs of ``layers`` (module names) of ``pick(out)``."""
    modules = dict(net.named_modules())
    kept = {}

    def hook(name):
        def fn(_module, _inputs, output):
            output.retain_grad()
            kept[name] = output

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    xr = torch.tensor(x, requires_grad=True)
    out = net(xr)
    pick(out).backward()
    for h in handles:
        h.remove()
    return xr.grad.numpy(), {k: v.grad.numpy() for k, v in kept.items()}, out.detach().numpy()


# model → taps to differentiate at (conv-mode tap names)
LAYERS = {
    "resnet_style": ["layer1.1.conv1", "layer1.1.downsample.0", "dw"],
    "mobilenet_style": ["blocks.0.depthwise.0", "blocks.1.project.0"],
    "vgg16_style": ["features.2", "features.28"],
    "lenet5": ["c3", "c5"],
}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_input_and_layer_gradients_equal_torch_autograd(name, exporter, exported):
    net = torch_models.build(name)
    shape = torch_models.MODELS[name][1]
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(3)).numpy()
    model = onnxviz.load(exported(name, exporter))
    taps = {t.name: t for t in model.taps}
    layers = LAYERS[name]
    torch_layers = [taps[n].bn_folded or n for n in layers]
    with torch.no_grad():
        classes = net(torch.tensor(x)).argmax(1)
    g_in, g_layers, logits = _torch_grads(net, x, torch_layers, lambda out: out.gather(1, classes[:, None]).sum())

    r = onnxviz.gradients(model, x, wrt=["input", *layers], outputs=layers)
    assert r.classes.tolist() == classes.tolist()
    assert _rel(r.target, logits) <= TOL  # default target: the logits
    np.testing.assert_allclose(r.scores, logits[np.arange(2), classes.numpy()], rtol=1e-4, atol=1e-5)
    assert _rel(r.grads["input"], g_in) <= TOL
    for layer, module in zip(layers, torch_layers):
        assert _rel(r.grads[layer], g_layers[module]) <= TOL, layer


def test_many_classes_and_channel_objectives_in_one_call(exported):
    """One sample, several classes: one session call; and a LAYER:CHANNEL target."""
    net = torch_models.build("resnet_style")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)).numpy()
    model = onnxviz.load(exported("resnet_style", "dynamo"))
    program = onnxviz.GradientProgram(model, wrt="input")
    r = program.run(x, classes=[0, 3, 4])
    assert r.grads["input"].shape == (3, 3, 32, 32) and r.classes.tolist() == [0, 3, 4]
    for k, c in enumerate([0, 3, 4]):
        g, _, _ = _torch_grads(net, x, [], lambda out, c=c: out[0, c])
        assert _rel(r.grads["input"][k : k + 1], g) <= TOL
    # mean of channel 5 of layer1.1.conv2 (BatchNorm folded: torch's layer1.1.bn2 output)
    channel = onnxviz.gradients(model, x, wrt="input", target="layer1.1.conv2:5")
    kept = {}
    handle = dict(net.named_modules())["layer1.1.bn2"].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    xr = torch.tensor(x, requires_grad=True)
    net(xr)
    handle.remove()
    kept["a"][:, 5].mean().backward()
    assert channel.classes.tolist() == [5]
    np.testing.assert_allclose(channel.scores, kept["a"][:, 5].mean().item(), rtol=1e-4)
    assert _rel(channel.grads["input"], xr.grad.numpy()) <= TOL


def test_old_opset_model_is_converted_and_checked(tmp_path):
    """An opset-9 export (as in older model zoos) is converted to opset 13 by onnx's version
    converter, the conversion checked against the original's output, and differentiated."""
    import warnings

    net = torch_models.build("resnet_style")
    path = tmp_path / "op9.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), opset_version=9, dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8)).numpy()
    program = onnxviz.GradientProgram(path, wrt="input")
    r = program.run(x, classes=[1, 2])
    assert program.upgraded_from == 9
    g, _, _ = _torch_grads(net, x, [], lambda out: out[0, 1] + out[1, 2])
    assert _rel(r.grads["input"], g) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_resnet50_against_float64_autograd(exporter, tmp_path):
    """ResNet-50 (torchvision's layout, random weights): the input gradient against torch's autograd
    in float64 — closer than torch's own float32 autograd gets (measured 3.8e-7 against 4.2e-5)."""
    import copy
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_models", Path(__file__).resolve().parents[1] / "benchmarks" / "models.py")
    bench_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_models)
    torch.manual_seed(0)
    net = bench_models.MODELS["resnet50"][0]().eval()
    path = tmp_path / "r50.onnx"
    convert(net, path, example_inputs=torch.randn(1, 3, 224, 224), exporter=exporter)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    net64 = copy.deepcopy(net).double()
    kept = {}

    def hook(_m, _i, out):
        out.retain_grad()
        kept["a"] = out

    net64.layer4.register_forward_hook(hook)
    x64 = x.double().requires_grad_(True)
    out = net64(x64)
    classes = out.argmax(1)
    out.gather(1, classes[:, None]).sum().backward()
    model = onnxviz.load(path)
    block = next(n.input[0] for n in reversed(model.proto.graph.node) if n.op_type in ("GlobalAveragePool", "ReduceMean"))
    r = onnxviz.gradients(model, x.numpy(), wrt=["input", block])
    assert r.classes.tolist() == classes.tolist()
    assert _rel(r.grads["input"], x64.grad.numpy()) <= 1e-5
    assert _rel(r.grads[block], kept["a"].grad.numpy()) <= 1e-5
