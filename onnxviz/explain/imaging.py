"""The differentiable pieces activation maximisation puts in front of the model, in numpy, each
with its exact adjoint (the vector-Jacobian product), so the gradient onnxruntime computes at
the model's input flows back to the parameters:

- :class:`Fourier`: the image as a 1/f-scaled spectrum (Olah et al., "Feature Visualization",
  Distill 2017 / Lucid's ``fft_image``), ``x = irfft2(scale · S) / 4``;
- :func:`decorrelate`: Lucid's colour decorrelation (the square root of ImageNet's colour
  covariance), then a sigmoid to [0, 1];
- :class:`Warp`: a random jitter + scale + rotation per image, bilinear, out-of-frame pixels grey;
- :class:`Preprocess`: the model's own input scaling (``--scale``, ``--mean``/``--std``, BGR,
  NCHW/NHWC), an affine map from an image in [0, 1];
- total variation and L2 regularisers with their gradients.

Every adjoint is checked against finite differences / the dot-product test in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Fourier", "LucidImage", "Warp", "Preprocess", "decorrelate", "decorrelate_adjoint", "tv_loss", "l2_loss", "COLOR_SQRT"]

COLOR_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR = COLOR_SQRT / np.max(np.linalg.norm(COLOR_SQRT, axis=0))
_MAGIC = 4.0


class Fourier:
    """An N×C×H×W image parameterised by its real FFT with a 1/f amplitude prior."""

    def __init__(self, shape: tuple[int, int, int, int], rng: np.random.Generator, sd: float = 0.01, decay: float = 1.0) -> None:
        n, c, h, w = shape
        self.hw = (h, w)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        freqs = np.sqrt(fx * fx + fy * fy)
        self.scale = (1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay * np.sqrt(h * w)).astype(np.float32)
        wts = np.full(w // 2 + 1, 2.0)
        wts[0] = 1.0
        if w % 2 == 0:
            wts[-1] = 1.0
        self._adjoint = (wts[None, :] / (h * w)).astype(np.float32)
        self.params = rng.normal(size=(2, n, c, h, w // 2 + 1), scale=sd).astype(np.float32)

    def image(self) -> np.ndarray:
        spectrum = (self.params[0] + 1j * self.params[1]) * self.scale
        return (np.fft.irfft2(spectrum, s=self.hw) / _MAGIC).astype(np.float32)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """d/d(params) given d/d(image)."""
        a = np.fft.rfft2(grad.astype(np.float64) / _MAGIC) * self._adjoint * self.scale
        return np.stack([a.real, a.imag]).astype(np.float32)


def _mix(matrix: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``out[:, i] = Σ_j matrix[i, j] · t[:, j]`` for N×C×H×W ``t`` (a batched matrix product)."""
    n, c = t.shape[:2]
    return (matrix.astype(t.dtype) @ t.reshape(n, c, -1)).reshape(t.shape)


def decorrelate(t: np.ndarray) -> np.ndarray:
    """N×3×H×W decorrelated colour → correlated RGB (before the sigmoid)."""
    return _mix(_COLOR, t)


def decorrelate_adjoint(g: np.ndarray) -> np.ndarray:
    return _mix(_COLOR.T, g)


def sigmoid(t: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(t, -60, 60)))).astype(np.float32)


class LucidImage:
    """The image being optimised: parameters → (Fourier spectrum) → (decorrelated colour) → sigmoid."""

    def __init__(self, shape: tuple[int, int, int, int], rng: np.random.Generator, param: str = "fourier", decorrelated: bool = True) -> None:
        self.fourier = Fourier(shape, rng) if param == "fourier" else None
        self.pixels = None if self.fourier is not None else rng.normal(size=shape, scale=0.01).astype(np.float32)
        self.decorrelated = decorrelated and shape[1] == 3
        self._img: np.ndarray | None = None

    @property
    def params(self) -> np.ndarray:
        return self.fourier.params if self.fourier is not None else self.pixels  # type: ignore[return-value]

    def image(self) -> np.ndarray:
        """N×C×H×W in (0, 1)."""
        t = self.fourier.image() if self.fourier is not None else self.pixels
        assert t is not None
        self._img = sigmoid(decorrelate(t) if self.decorrelated else t)
        return self._img

    def backward(self, d_img: np.ndarray) -> np.ndarray:
        """d/d(params) given d/d(image) at the last :meth:`image`."""
        assert self._img is not None, "call image() first"
        d = d_img * self._img * (1 - self._img)
        if self.decorrelated:
            d = decorrelate_adjoint(d)
        return self.fourier.backward(d) if self.fourier is not None else d.astype(np.float32)


def tv_loss(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean squared total variation and its gradient."""
    dy = img[:, :, 1:, :] - img[:, :, :-1, :]
    dx = img[:, :, :, 1:] - img[:, :, :, :-1]
    size = img[0].size
    loss = ((dy * dy).sum(axis=(1, 2, 3)) + (dx * dx).sum(axis=(1, 2, 3))) / size
    g = np.zeros_like(img)
    g[:, :, 1:, :] += 2 * dy
    g[:, :, :-1, :] -= 2 * dy
    g[:, :, :, 1:] += 2 * dx
    g[:, :, :, :-1] -= 2 * dx
    return loss, g / size


def l2_loss(img: np.ndarray, centre: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean squared distance from grey, and its gradient."""
    d = img - centre
    size = img[0].size
    return (d * d).sum(axis=(1, 2, 3)) / size, 2 * d / size


class Warp:
    """A random affine resampling per image (jitter, scale, rotation) with its adjoint."""

    def __init__(self, n: int, hw: tuple[int, int], rng: np.random.Generator, jitter: float, scales: Sequence[float], degrees: float) -> None:
        h, w = hw
        self.hw = hw
        vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        cy, cx = (h - 1) / 2, (w - 1) / 2
        idx = np.empty((n, 4, h * w), np.int64)
        wts = np.empty((n, 4, h * w), np.float32)
        fill = np.empty((n, h * w), np.float32)
        for i in range(n):
            s = float(rng.choice(np.asarray(scales, dtype=np.float64))) if len(scales) else 1.0
            a = np.deg2rad(rng.uniform(-degrees, degrees)) if degrees else 0.0
            ty, tx = (rng.uniform(-jitter, jitter, size=2) if jitter else (0.0, 0.0))
            cos, sin = np.cos(a) / s, np.sin(a) / s
            y = cy + cos * (vv - cy) - sin * (uu - cx) - ty
            x = cx + sin * (vv - cy) + cos * (uu - cx) - tx
            y0, x0 = np.floor(y), np.floor(x)
            fy, fx = y - y0, x - x0
            k = 0
            missing = np.zeros(h * w)
            for oy, wy in ((0, 1 - fy), (1, fy)):
                for ox, wx in ((0, 1 - fx), (1, fx)):
                    yy, xx = (y0 + oy).ravel(), (x0 + ox).ravel()
                    wk = (wy * wx).ravel()
                    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                    idx[i, k] = np.where(inside, yy * w + xx, 0).astype(np.int64)
                    wts[i, k] = np.where(inside, wk, 0)
                    missing += np.where(inside, 0, wk)
                    k += 1
            fill[i] = missing
        self.idx, self.wts, self.fill = idx, wts, fill

    def forward(self, img: np.ndarray, grey: np.ndarray | float = 0.5) -> np.ndarray:
        n, c, h, w = img.shape
        flat = img.reshape(n, c, h * w)
        out = np.zeros_like(flat)
        for k in range(4):
            out += np.take_along_axis(flat, np.broadcast_to(self.idx[:, k][:, None], (n, c, h * w)), axis=2) * self.wts[:, k][:, None]
        out += self.fill[:, None] * np.asarray(grey, np.float32).reshape(1, -1, 1)
        return out.reshape(n, c, h, w)

    def backward(self, g: np.ndarray) -> np.ndarray:
        n, c, h, w = g.shape
        hw = h * w
        base = (np.arange(n * c, dtype=np.int64) * hw).reshape(n, c, 1)
        gflat = g.reshape(n, c, hw)
        out = np.zeros(n * c * hw, np.float64)
        for k in range(4):
            index = base + self.idx[:, k][:, None]
            out += np.bincount(index.ravel(), weights=(gflat * self.wts[:, k][:, None]).ravel(), minlength=n * c * hw)
        return out.reshape(n, c, h, w).astype(np.float32)


@dataclass(frozen=True)
class Preprocess:
    """The model input from an N×C×H×W image in [0, 1]: ``fed = img[order] · gain + offset``, in the input's layout."""

    gain: np.ndarray  # per fed channel
    offset: np.ndarray
    order: np.ndarray  # fed channel c takes image channel order[c] (BGR flips the first three)
    layout: str
    dtype: np.dtype

    @classmethod
    def for_input(cls, channels: int, layout: str, dtype: np.dtype, scale: str | None = "unit", mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, bgr: bool = False) -> "Preprocess":
        from ..run.inputs import SCALES, _parse_per_channel

        if scale is None:  # as the other commands: unit, raw for integer inputs
            scale = "raw" if np.issubdtype(np.dtype(dtype), np.integer) else "unit"
        factor, base_mean, base_std = SCALES[scale]
        m = _parse_per_channel(mean if mean is not None else base_mean, channels, "mean", None if mean is not None else scale)
        s = _parse_per_channel(std if std is not None else base_std, channels, "std", None if std is not None else scale)
        m = np.zeros(channels, np.float32) if m is None else m
        s = np.ones(channels, np.float32) if s is None else s
        order = np.arange(channels)
        if bgr and channels >= 3:
            order[:3] = [2, 1, 0]
        return cls((255.0 * factor / s).astype(np.float32), (-m / s).astype(np.float32), order, layout, np.dtype(dtype))

    def forward(self, img: np.ndarray) -> np.ndarray:
        fed = img[:, self.order] * self.gain[None, :, None, None] + self.offset[None, :, None, None]
        if self.layout == "NHWC":
            fed = fed.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(fed).astype(self.dtype, copy=False)

    def backward(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, np.float32)
        if self.layout == "NHWC":
            g = g.transpose(0, 3, 1, 2)
        g = g * self.gain[None, :, None, None]
        out = np.empty_like(g)
        out[:, self.order] = g
        return out

    def inverse(self, fed: np.ndarray) -> np.ndarray:
        """The image in [0, 1] units (not clipped) that ``forward`` maps to ``fed``."""
        x = np.asarray(fed, np.float32)
        if self.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        x = (x - self.offset[None, :, None, None]) / self.gain[None, :, None, None]
        out = np.empty_like(x)
        out[:, self.order] = x
        return out
