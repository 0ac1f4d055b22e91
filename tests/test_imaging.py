"""The numpy pieces activation maximisation puts before the model: each adjoint is exact
(dot-product test, ⟨A x, g⟩ = ⟨x, Aᵀ g⟩) and the regularisers' gradients match finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.explain.imaging import Fourier, Preprocess, Warp, decorrelate, decorrelate_adjoint, l2_loss, tv_loss


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a.astype(np.float64) * b.astype(np.float64)))


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (24, 31)])
def test_fourier_adjoint(hw):
    rng = np.random.default_rng(0)
    f = Fourier((2, 3, *hw), rng, sd=1.0)
    d = rng.normal(size=f.params.shape).astype(np.float32)
    g = rng.normal(size=(2, 3, *hw)).astype(np.float32)
    base = f.image()
    f.params += d
    image_of_d = f.image() - base  # the map is linear
    assert _dot(image_of_d, g) == pytest.approx(_dot(d, f.backward(g)), rel=1e-4)


def test_warp_adjoint_and_identity():
    rng = np.random.default_rng(1)
    warp = Warp(3, (20, 17), rng, jitter=4, scales=(0.9, 1.1), degrees=15)
    x = rng.normal(size=(3, 2, 20, 17)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    linear = warp.forward(x, grey=0.0)
    assert _dot(linear, g) == pytest.approx(_dot(x, warp.backward(g)), rel=1e-5)
    still = Warp(1, (6, 5), rng, jitter=0, scales=(1.0,), degrees=0)
    y = rng.normal(size=(1, 3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(still.forward(y), y, atol=1e-6)


def test_warp_fills_grey_outside_the_frame():
    rng = np.random.default_rng(2)
    warp = Warp(1, (16, 16), rng, jitter=0, scales=(0.5,), degrees=0)  # zoom out: the border comes from outside
    out = warp.forward(np.zeros((1, 1, 16, 16), np.float32), grey=0.5)
    assert out[0, 0, 0, 0] == pytest.approx(0.5) and out[0, 0, 8, 8] == pytest.approx(0.0)


@pytest.mark.parametrize("layout, bgr", [("NCHW", False), ("NHWC", True)])
def test_preprocess_matches_image_loading_and_its_adjoint(layout, bgr, tmp_path):
    from PIL import Image

    from onnxviz.run.inputs import InputSpec, images_to_array

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    shape = ("N", 3, 5, 6) if layout == "NCHW" else ("N", 5, 6, 3)
    spec = InputSpec("x", shape, np.dtype(np.float32), layout)
    fed = images_to_array(spec, [tmp_path / "p.png"], scale="imagenet", mean=None, std=None, bgr=bgr)
    pre = Preprocess.for_input(3, layout, np.dtype(np.float32), "imagenet", bgr=bgr)
    img = pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255
    np.testing.assert_allclose(pre.forward(img), fed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pre.inverse(fed), img, atol=1e-5)
    g = rng.normal(size=fed.shape).astype(np.float32)
    d = rng.normal(size=img.shape).astype(np.float32)
    assert _dot(pre.forward(d) - pre.forward(np.zeros_like(d)), g) == pytest.approx(_dot(d, pre.backward(g)), rel=1e-5)


def test_decorrelation_adjoint():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    g = rng.normal(size=t.shape).astype(np.float32)
    assert _dot(decorrelate(t), g) == pytest.approx(_dot(t, decorrelate_adjoint(g)), rel=1e-5)


@pytest.mark.parametrize("loss", [tv_loss, l2_loss])
def test_regulariser_gradients_match_finite_differences(loss):
    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 6, 7))
    value, grad = loss(x)
    d = rng.normal(size=x.shape)
    eps = 1e-6
    fd = (loss(x + eps * d)[0] - loss(x - eps * d)[0]) / (2 * eps)
    np.testing.assert_allclose(fd, (grad * d).sum(axis=(1, 2, 3)), rtol=1e-5)
