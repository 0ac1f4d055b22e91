"""Gradient CAMs and saliency on an ONNX export equal references written against torch autograd
on the same torch model (pytorch-grad-cam's formulas, written again here in torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_cam import SIZE, corr  # noqa: E402
from test_cli import assert_one_line_error, run  # noqa: E402

import onnxviz  # noqa: E402
from onnxviz.converters import convert  # noqa: E402
from onnxviz.explain.cam import cam  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_resnet_onnx):
    net, path = tiny_resnet_onnx
    x = np.random.default_rng(7).random((2, 3, *SIZE), dtype=np.float32)
    return net, path, x


def torch_cams(net, x: np.ndarray, classes=None) -> dict[str, np.ndarray]:
    """Grad-CAM, Grad-CAM++, XGrad-CAM and Layer-CAM at layer2[-1] with torch autograd, and saliency."""
    store = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = net.layer2[-1].register_forward_hook(hook)
    net.softmax = False
    try:
        xt = torch.from_numpy(x).requires_grad_(True)
        logits = net(xt)
        c = logits.argmax(1) if classes is None else torch.as_tensor(classes)
        logits[torch.arange(len(c)), c].sum().backward()
    finally:
        net.softmax = True
        handle.remove()
    a, g = store["a"].detach(), store["a"].grad
    relu = torch.relu
    out = {"gradcam": relu((g.mean((2, 3), keepdim=True) * a).sum(1))}
    g2, g3 = g**2, g**3
    s = a.sum((2, 3), keepdim=True)
    alpha = torch.where(g != 0, g2 / (2 * g2 + s * g3 + 1e-6), torch.zeros_like(g))
    out["gradcam++"] = relu(((relu(g) * alpha).sum((2, 3), keepdim=True) * a).sum(1))
    out["xgradcam"] = relu(((g * a / (s + 1e-7)).sum((2, 3), keepdim=True) * a).sum(1))
    out["layercam"] = relu((relu(g) * a).sum(1))
    out["saliency"] = xt.grad.abs().amax(1)
    return {k: v.numpy() for k, v in out.items()} | {"classes": c.numpy()}


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "saliency"])
def test_gradient_methods_equal_torch_autograd(tiny, method):
    net, path, x = tiny
    ref = torch_cams(net, x)
    result = cam(path, x, method=method)
    assert result.classes == ref["classes"].tolist()
    for k in range(len(x)):
        assert corr(result.maps[k], ref[method][k]) >= 0.99
        scale = float(np.abs(ref[method][k]).max())
        np.testing.assert_allclose(result.maps[k], ref[method][k], rtol=1e-3, atol=1e-4 * scale)


def test_gradcam_for_a_chosen_class(tiny):
    net, path, x = tiny
    top = torch_cams(net, x)["classes"]
    # per image, a class other than the top one whose Grad-CAM is not all zero
    chosen = [next(c for c in range(10) if c != top[k] and torch_cams(net, x[k : k + 1], [c])["gradcam"].max() > 0) for k in range(2)]
    ref = torch_cams(net, x, classes=chosen)
    result = cam(path, x, method="gradcam", target=chosen)
    assert result.classes == chosen
    for k in range(2):
        assert corr(result.maps[k], ref["gradcam"][k]) >= 0.99


def test_smoothgrad_equals_averaged_torch_gradients(tiny):
    net, path, x = tiny
    samples, noise, seed = 6, 0.2, 3
    result = cam(path, x[:1], method="smoothgrad", samples=samples, noise=noise, seed=seed, batch_size=4)
    rng = np.random.default_rng(seed)
    sigma = noise * float(x[0].max() - x[0].min())
    noisy = np.concatenate([x[:1] + rng.normal(0.0, sigma, size=(4, *x.shape[1:])) for _ in range(2)])[:samples].astype(np.float32)
    xt = torch.from_numpy(noisy).requires_grad_(True)
    net.softmax = False
    try:
        net(xt)[:, result.classes[0]].sum().backward()
    finally:
        net.softmax = True
    ref = xt.grad.mean(0).abs().amax(0).numpy()
    assert corr(result.maps[0], ref) >= 0.99
    np.testing.assert_allclose(result.maps[0], ref, rtol=1e-3, atol=1e-4 * float(ref.max()))
    assert result.details["samples"] == samples


def test_gradcam_cli_defaults_and_errors(tiny, photo, tmp_path):
    _, path, _ = tiny
    out = tmp_path / "gc"
    proc = run("cam", path, photo, "-o", out, "--size", "64x64")
    assert proc.returncode == 0, proc.stderr
    assert "gradcam of class" in proc.stdout and (out / "000_gradcam.png").is_file()
    assert_one_line_error(run("cam", path, photo, "-o", tmp_path / "x", "--size", "64x64", "--target", "99"), "out of range")
    assert not (tmp_path / "x").exists()


def test_gradcam_reuses_one_gradient_model(tiny):
    _, path, x = tiny
    model = onnxviz.load(path)
    first = cam(model, x, method="gradcam")
    second = cam(model, x, method="gradcam")
    np.testing.assert_array_equal(first.maps, second.maps)
    from onnxviz.explain.cam import runner_for

    programs = [v for k, v in runner_for(model).memo.items() if k[0] == "grad-program"]
    assert len(programs) == 1 and len(programs[0]._compiled) == 1


class _Recogniser(torch.nn.Module):
    """A CRNN-shaped miniature: convs, height pooled away, a per-column classifier, softmax over the
    last axis — N×T×K like PaddleOCR's recogniser."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(12, 7)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return torch.softmax(self.fc(x.mean(2).permute(0, 2, 1)), -1)


def test_gradcam_on_classes_along_the_last_axis(tmp_path):
    torch.manual_seed(0)
    net = _Recogniser().eval()
    path = tmp_path / "rec.onnx"
    convert(net, path, example_inputs=torch.randn(1, 3, 16, 32))
    x = np.random.default_rng(0).random((2, 3, 16, 32), dtype=np.float32)
    result = cam(path, x, method="gradcam")
    assert result.score.class_axis == 2 and result.score.squash == "Softmax"
    xt = torch.from_numpy(x)
    a = torch.relu(net.conv2(torch.relu(net.conv1(xt))))
    a.retain_grad()
    logits = net.fc(a.mean(2).permute(0, 2, 1)).mean(1)  # each class's logit averaged over the sequence
    c = logits.argmax(1)
    logits[torch.arange(2), c].sum().backward()
    ref = torch.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1)).detach().numpy()
    assert result.classes == c.tolist()
    np.testing.assert_allclose(result.class_scores, logits[torch.arange(2), c].detach().numpy(), rtol=1e-4, atol=1e-5)
    for k in range(2):
        assert corr(result.maps[k], ref[k]) >= 0.99
        np.testing.assert_allclose(result.maps[k], ref[k], rtol=1e-3, atol=1e-4 * float(np.abs(ref[k]).max()))
