"""What is not a stack of 2-D maps: dense and other 1-D outputs, and a classifier's top-k.

A captured tensor is a vector per image when it has no spatial extent: N×C (Dense, Gemm, MatMul),
N×C×1, N×C×1×1 (global pooling kept as 4-D), N×C×1×1×1, a 0-D scalar or a 1-D tensor, and
anything of rank 6 or more (flattened). :func:`render_vector` draws it through the same palette
and normalisation as the maps:

- at most :data:`BAR_MAX` (64) values: a **bar chart**, one bar per value, coloured by its level,
  heights on a shared axis with a line at zero when the values change sign;
- more: a **strip of cells**, one square cell per value, wrapped into rows (64 per row; smaller
  cells and longer rows beyond 4096 values).

``top=k`` adds the k highest values below the image with their indices, the class names given as
``class_names`` (drawn through :func:`safe_text`: label files are untrusted) and their scores;
:func:`top_k` gives the same as data, with a probability (the scores themselves when they already
sum to 1 and lie in 0..1, else their softmax).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import OnnxvizError
from .images import RenderedImage
from .levels import NORMS, MapsLike, _float, _ranges, _to_levels, select_channels
from .palette import DEFAULT_NAN_COLOR, NAN_INDEX, PAD_INDEX, Color, colormap_palette, default_cmap, text_index_on_pad
from .text import safe_text, with_caption

__all__ = ["BAR_MAX", "as_vector", "render_vector", "top_k", "vector_layout"]

BAR_MAX = 64


def as_vector(maps: MapsLike, image: int = 0) -> np.ndarray | None:
    """The values of ``maps`` as one 1-D vector when they are not a stack of 2-D maps, else None.

    A captured layer (anything with ``.array``) is batch-first: N×C, N×C×1, N×C×1×1, N×C×1×1×1 give
    image ``image``'s C values, rank 6+ its values flattened; 0-D and 1-D tensors are one vector
    for every image. A plain array is a vector only when it is 0-D or 1-D.
    """
    arr = np.asarray(getattr(maps, "array", maps))
    if arr.ndim <= 1:
        return arr.reshape(-1)
    if not hasattr(maps, "array"):
        return None
    k = min(image, arr.shape[0] - 1) if arr.shape[0] else 0
    if arr.ndim == 2 or arr.ndim >= 6:
        return arr[k].reshape(-1) if arr.shape[0] else arr.reshape(-1)
    if all(d == 1 for d in arr.shape[2:]):
        return arr[k].reshape(-1) if arr.shape[0] else arr.reshape(-1)
    return None


def vector_layout(n: int) -> str:
    """``"bars"`` for at most :data:`BAR_MAX` values, else ``"strip"``."""
    return "bars" if n <= BAR_MAX else "strip"


def _probabilities(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if finite.all() and v.size and v.min() >= 0 and v.max() <= 1 and abs(v.sum() - 1) < 1e-3:
        return v
    shifted = np.where(finite, v - (v[finite].max() if finite.any() else 0.0), -np.inf)
    e = np.exp(shifted)
    total = e.sum()
    return e / total if total > 0 else np.zeros_like(v)


def top_k(values: np.ndarray, k: int = 5, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The ``k`` highest values: rank, index, label (from ``class_names``, else None), score, probability.

    NaN never ranks; ties keep the lower index first.
    """
    v = _float(np.asarray(values)).reshape(-1).astype(np.float64)
    order = np.argsort(-np.where(np.isnan(v), -np.inf, v), kind="stable")
    order = [int(i) for i in order if not np.isnan(v[i])][:k]
    prob = _probabilities(v)
    out = []
    for rank, i in enumerate(order, start=1):
        label = class_names[i] if class_names is not None and i < len(class_names) else None
        score = float(v[i])
        out.append({"rank": rank, "index": i, "label": label, "score": score if math.isfinite(score) else None,
                    "probability": float(prob[i])})
    return out


def top_lines(top: list[dict[str, Any]]) -> list[str]:
    """Caption lines for :func:`top_k`'s result (labels made safe to draw)."""
    lines = [f"top-{len(top)}:"]
    for t in top:
        name = safe_text(t["label"], 40) if t["label"] is not None else f"class {t['index']}"
        score = "nan" if t["score"] is None else f"{t['score']:.4g}"
        same = t["score"] is not None and abs(t["probability"] - t["score"]) < 1e-9
        lines.append(f"{t['rank']}. {name} [{t['index']}]  {score}" + ("" if same else f"  p={t['probability']:.3f}"))
    return lines


def _bars(levels: np.ndarray, values: np.ndarray, palette: np.ndarray, padding: int, height: int) -> np.ndarray:
    n = levels.size
    bw = int(np.clip(512 // max(n, 1), 3, 24))
    p = max(padding, 1)
    out = np.full((height + 2 * p, n * (bw + p) + p), PAD_INDEX, np.uint8)
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    top = max(float(v[finite].max()) if finite.any() else 0.0, 0.0)
    bottom = min(float(v[finite].min()) if finite.any() else 0.0, 0.0)
    span = top - bottom
    zero = p + (int(round(height * top / span)) if span > 0 else height)
    for i in range(n):
        x0 = p + i * (bw + p)
        if not finite[i]:
            out[p : p + height, x0 : x0 + bw] = NAN_INDEX
            continue
        y = p + (int(round(height * (top - v[i]) / span)) if span > 0 else height)
        lo, hi = (y, zero) if y <= zero else (zero, y)
        out[lo : max(hi, lo + 1), x0 : x0 + bw] = levels[i]  # at least one row: a zero still shows
    if bottom < 0 < top:
        out[zero, p : out.shape[1] - p] = text_index_on_pad(palette)
    return out


def _strip(levels: np.ndarray, ncols: int | None, padding: int) -> tuple[np.ndarray, tuple[int, int]]:
    n = levels.size
    cell = 8 if n <= 4096 else (4 if n <= 16384 else 2)
    cols = min(ncols or (64 if n <= 4096 else (128 if n <= 16384 else 256)), n)
    rows = math.ceil(n / cols)
    p = padding
    padded = np.full(rows * cols, PAD_INDEX, np.uint8)
    padded[:n] = levels
    block = np.full((rows, cell + p, cols, cell + p), PAD_INDEX, np.uint8)
    block[:, :cell, :, :cell] = padded.reshape(rows, 1, cols, 1)  # broadcast: each value fills its cell
    grid = np.pad(block.reshape(rows * (cell + p), cols * (cell + p)), ((p, 0), (p, 0)), constant_values=PAD_INDEX)
    return grid, (rows, cols)


def render_vector(
    values: np.ndarray,
    *,
    cmap: str | None = None,
    norm: str = "channel",
    percentiles: tuple[float, float] = (1.0, 99.0),
    ncols: int | None = None,
    padding: int = 1,
    max_channels: int | None = None,
    select: str = "first",
    channels: Sequence[int] | None = None,
    bar_height: int = 96,
    top: int = 0,
    class_names: Sequence[str] | None = None,
    nan_color: Color = DEFAULT_NAN_COLOR,
    pad_color: Color | None = None,
    **_ignored: Any,
) -> RenderedImage:
    """A bar chart (at most 64 values) or a strip of cells (module docs) of a 1-D vector.

    One range covers the whole vector (``channel`` and ``layer`` are the same here; ``signed``
    centres 0, ``zscore`` and ``percentile`` as for maps). ``max_channels``/``select``/``channels``
    choose the values shown; ``top`` adds the top-k below (:func:`top_k`), on all values.
    """
    if norm not in NORMS:
        raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")
    palette = colormap_palette(cmap or default_cmap(norm), nan_color, pad_color)
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        raise OnnxvizError("nothing to render: empty array")
    if padding < 0:
        raise OnnxvizError("padding must be >= 0")
    chosen = select_channels(v.reshape(-1, 1), max_channels=max_channels, select=select, channels=channels)
    shown = _float(v[chosen])
    lo, hi, finite = _ranges(shown.reshape(1, -1), "channel" if norm == "layer" else norm, percentiles)
    levels = _to_levels(shown.reshape(1, -1), lo, hi, finite).reshape(-1)
    if vector_layout(shown.size) == "bars":
        grid, shape = _bars(levels, shown, palette, padding, bar_height), (1, shown.size)
    else:
        grid, shape = _strip(levels, ncols, padding)
    shared = (float(lo[0]), float(hi[0])) if norm in ("channel", "layer", "signed") else None
    image = RenderedImage(grid, palette, channels=tuple(int(c) for c in chosen), grid=shape, value_range=shared)
    if top > 0:
        image = with_caption(image, top_lines(top_k(v, top, class_names)))
    return image
