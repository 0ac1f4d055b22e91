"""Activation maximisation (``onnxviz.maximize`` / ``onnxviz dream``): seed 002's way step for step
against torch autograd, the Lucid-style pipeline's parameter gradient against torch autograd,
objectives that rise, batching, determinism, outputs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_cli import assert_one_line_error, run  # noqa: E402

import onnxviz  # noqa: E402
from onnxviz.errors import OnnxvizError  # noqa: E402
from onnxviz.explain.imaging import LucidImage, Preprocess  # noqa: E402
from onnxviz.explain.maximize import DreamTarget, deprocess, maximize, parse_targets  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_resnet_onnx):
    return tiny_resnet_onnx


def test_parse_targets():
    assert parse_targets("3") == [DreamTarget(3)]
    assert parse_targets("1,4-6") == [DreamTarget(i) for i in (1, 4, 5, 6)]
    assert parse_targets("layer2.0.conv1:0-2") == [DreamTarget(i, "layer2.0.conv1") for i in range(3)]
    assert parse_targets([2, "x:1"]) == [DreamTarget(2), DreamTarget(1, "x")]
    for bad in ("a", "3-1", ":4", "1,,2"):
        with pytest.raises(OnnxvizError):
            parse_targets(bad)


def test_seed_method_equals_torch_step_for_step(tiny):
    """Seed 002: grey noise, x += lr · g / (sqrt(mean(g²)) + 1e-5), on the logit (before the softmax)."""
    net, path = tiny
    steps, classes = 4, [2, 7]
    result = maximize(path, classes, method="seed", steps=steps, size=SIZE, seed=5)
    rng = np.random.default_rng(5)
    x = ((255 - rng.integers(0, 255, (2, 3, *SIZE))) / 255.0).astype(np.float32)  # the seed's start, scale=unit
    net.softmax = False
    try:
        for _ in range(steps):
            xt = torch.from_numpy(x).requires_grad_(True)
            net(xt)[torch.arange(2), torch.tensor(classes)].sum().backward()
            g = xt.grad.numpy().astype(np.float64)
            x = (x + g / (np.sqrt((g**2).mean(axis=(1, 2, 3), keepdims=True)) + 1e-5)).astype(np.float32)
        final = net(torch.from_numpy(x))[torch.arange(2), torch.tensor(classes)].detach().numpy()
    finally:
        net.softmax = True
    np.testing.assert_allclose(result.fed, x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.objectives, final, rtol=1e-4, atol=1e-4)
    assert result.images.dtype == np.uint8 and result.images.shape == (2, *SIZE, 3)
    np.testing.assert_array_equal(result.images[0], deprocess(x[0].transpose(1, 2, 0)))


@pytest.mark.parametrize("param, decorrelated", [("fourier", True), ("pixel", False)])
def test_lucid_parameter_gradient_equals_torch(tiny, param, decorrelated):
    """params → irfft2 → decorrelate → sigmoid → ImageNet scaling → network → logit, through
    onnxviz's adjoints and onnxruntime's input gradient, equals torch autograd of the same pipeline."""
    from onnxviz.explain.cam import grad_program, runner_for
    from onnxviz.explain.imaging import _COLOR

    net, path = tiny
    model = onnxviz.load(path)
    image = LucidImage((2, 3, *SIZE), np.random.default_rng(0), param, decorrelated)
    image.params[...] = np.random.default_rng(1).normal(size=image.params.shape, scale=0.5)
    pre = Preprocess.for_input(3, "NCHW", np.dtype(np.float32), "imagenet")
    program = grad_program(runner_for(model), "x", "linear")
    seed = np.zeros((2, 10), np.float32)
    seed[[0, 1], [3, 8]] = 1
    g = program.run({"x": pre.forward(image.image())}, seed=seed).grads["x"]
    ours = image.backward(pre.backward(g))

    p = torch.from_numpy(image.params.copy()).requires_grad_(True)
    if param == "fourier":
        t = torch.fft.irfft2(torch.complex(p[0], p[1]) * torch.from_numpy(image.fourier.scale), s=SIZE) / 4.0
    else:
        t = p
    if decorrelated:
        t = torch.einsum("ij,njhw->nihw", torch.from_numpy(_COLOR), t)
    img = torch.sigmoid(t)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    net.softmax = False
    try:
        (net((img - mean) / std) * torch.from_numpy(seed)).sum().backward()
    finally:
        net.softmax = True
    np.testing.assert_allclose(ours, p.grad.numpy(), rtol=1e-3, atol=1e-5 * float(np.abs(ours).max()))


def test_objectives_rise_for_classes_and_channels_in_one_gradient_model(tiny):
    _, path = tiny
    model = onnxviz.load(path)
    classes = maximize(model, "0-4", steps=30, size=SIZE, batch_size=2)  # 3 runs per step, the last padded
    assert all(end > start for start, end in zip(classes.start, classes.objectives))
    from onnxviz.explain.cam import runner_for

    programs = [v for k, v in runner_for(model).memo.items() if k[0] == "grad-program"]
    assert len(programs) == 1 and len(programs[0]._compiled) == 1  # one input shape, one backward graph
    channels = maximize(model, "layer2.0.conv1:0-3", method="seed", steps=10, size=SIZE)
    assert channels.layer is not None and channels.layer.name.startswith("layer2.0.conv1")
    live = [k for k, s in enumerate(channels.start) if s > 0]
    assert live and all(channels.objectives[k] > channels.start[k] for k in live)


def test_deterministic_with_a_seed(tiny):
    _, path = tiny
    a = maximize(path, [1, 2], steps=5, size=SIZE, seed=3)
    b = maximize(path, [1, 2], steps=5, size=SIZE, seed=3)
    c = maximize(path, [1, 2], steps=5, size=SIZE, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.objectives == b.objectives and not np.array_equal(a.images, c.images)


def test_cli_writes_grid_images_and_manifest(tiny, tmp_path):
    _, path = tiny
    out = tmp_path / "dream"
    proc = run("dream", path, "-o", out, "--target", "0-2", "--size", "64x64", "--steps", "3", "--tv", "0.1", "--l2", "0.1")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["class"] for t in manifest["targets"]] == [0, 1, 2] and manifest["method"] == "lucid"
    assert manifest["settings"]["tv"] == 0.1 and manifest["objective"].startswith("class logit")
    assert np.load(out / "images.npy").shape == (3, *SIZE, 3) and np.load(out / "inputs.npy").shape == (3, 3, *SIZE)
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["files"] + ["manifest.json", ".onnxviz-output"])
    assert "objective" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "10", "--size", "64x64"], "target class 10 is out of range: there are 10 (0-9)"),
        (["--target", "layer2.0.conv1:99", "--size", "64x64"], "out of range"),
        (["--target", "nope:1", "--size", "64x64"], "unknown layer 'nope'"),
        (["--target", "x-y", "--size", "64x64"], "bad target"),
        (["--target", "1", "--size", "64x64", "--tv", "-1"], "--tv must be >= 0"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tiny, tmp_path, args, message):
    _, path = tiny
    proc = run("dream", path, "-o", tmp_path / "o", "--steps", "1", *args)
    assert_one_line_error(proc, message)
    assert not (tmp_path / "o").exists()


def test_dynamic_size_needs_a_size(tmp_path):
    from onnxviz.demo import demo_model

    proc = run("dream", demo_model(), "-o", tmp_path / "o", "--target", "1")
    assert_one_line_error(proc, "dynamic size")
    assert not (tmp_path / "o").exists()

