"""Bilinear resizing of stacks of 2-D maps, as two small matrix products (no framework, no loop).

``align_corners=False`` is the half-pixel convention of OpenCV's ``INTER_LINEAR`` and of torch's
``interpolate(..., align_corners=False)`` (edges clamped), used to bring a CAM to the input size;
``align_corners=True`` is torch's ``UpsamplingBilinear2d``, which Score-CAM's masks use.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["resize_maps", "interpolation_matrix"]


@lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """The n_out × n_in matrix of 1-D linear interpolation weights."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    m.setflags(write=False)
    return m.astype(np.float32)


def resize_maps(maps: np.ndarray, size: tuple[int, int], align_corners: bool = False) -> np.ndarray:
    """Resize the last two axes of ``maps`` (…×h×w) to ``size`` (H, W), bilinearly."""
    a = np.asarray(maps, dtype=np.float32)
    h, w = a.shape[-2:]
    if (h, w) == tuple(size):
        return a.copy()
    ry = interpolation_matrix(h, int(size[0]), align_corners)
    rx = interpolation_matrix(w, int(size[1]), align_corners)
    return np.ascontiguousarray(ry @ a @ rx.T)
