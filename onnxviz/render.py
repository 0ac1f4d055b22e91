"""The shared renderer: any stack of 2-D maps (activations, filters, CAMs) → one image grid.

Rendering is vectorised end to end: per-channel min-max normalisation to 8-bit levels, tiling
by reshaping, and colour through a 256-entry palette built from a matplotlib colormap's lookup
table (no pyplot, no figure per channel). The result is a palette image: 254 colormap levels, one
entry marking NaN/Inf and one for padding, which is also what the PNG stores (1 byte per pixel).
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import OnnxvizError

__all__ = ["RenderedImage", "render", "colormap_palette", "as_map_stack", "LEVELS", "NAN_INDEX", "PAD_INDEX"]

LEVELS = 254  # palette entries 0..253 carry the colormap
NAN_INDEX = 254  # NaN / ±Inf
PAD_INDEX = 255  # padding between tiles
DEFAULT_NAN_COLOR = (255, 0, 255)
DEFAULT_PAD_COLOR = (32, 32, 32)

Color = tuple[int, int, int]
MapsLike = Union[np.ndarray, Any]  # an array, or anything with an ``array`` attribute (LayerCapture)


@lru_cache(maxsize=64)
def _colormap_lut(name: str) -> bytes:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise OnnxvizError(
            f"unknown colormap {name!r}; try viridis, gray, magma, inferno, plasma, jet or any matplotlib name"
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, LEVELS), bytes=True)
    return rgba[:, :3].astype(np.uint8).tobytes()


def colormap_palette(cmap: str, nan_color: Color = DEFAULT_NAN_COLOR, pad_color: Color = DEFAULT_PAD_COLOR) -> np.ndarray:
    """The 256×3 uint8 palette: ``LEVELS`` colormap entries, then the NaN and padding colours."""
    palette = np.empty((256, 3), dtype=np.uint8)
    palette[:LEVELS] = np.frombuffer(_colormap_lut(cmap), dtype=np.uint8).reshape(LEVELS, 3)
    palette[NAN_INDEX] = nan_color
    palette[PAD_INDEX] = pad_color
    return palette


class RenderedImage:
    """A rendered grid: palette indices plus palette. Shows itself in notebooks."""

    def __init__(self, index: np.ndarray, palette: np.ndarray, *, channels: tuple[int, ...], grid: tuple[int, int]):
        self.index = index
        self.palette = palette
        self.channels = channels
        self.grid = grid  # (rows, cols)

    @property
    def height(self) -> int:
        return int(self.index.shape[0])

    @property
    def width(self) -> int:
        return int(self.index.shape[1])

    def to_array(self) -> np.ndarray:
        """H×W×3 uint8 RGB."""
        return self.palette[self.index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.to_array()
        return arr if dtype is None else arr.astype(dtype)

    def to_pil(self) -> "PIL.Image.Image":  # noqa: F821
        """A Pillow palette image (mode ``P``)."""
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(self.index))  # mode "L"
        img.putpalette(self.palette.tobytes())  # "L" + palette → "P", no pixel copy
        return img

    def save(self, path: str | Path, *, compress_level: int = 1) -> Path:
        """Write a PNG (8-bit palette, fast zlib level by default)."""
        path = Path(path)
        self.to_pil().save(path, format="PNG", compress_level=compress_level)
        return path

    def png_bytes(self, *, compress_level: int = 1) -> bytes:
        buf = io.BytesIO()
        self.to_pil().save(buf, format="PNG", compress_level=compress_level)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png_bytes()

    def __repr__(self) -> str:
        rows, cols = self.grid
        return f"RenderedImage({self.width}x{self.height}, {len(self.channels)} maps in {rows}x{cols})"


def as_map_stack(maps: MapsLike, image: int = 0) -> np.ndarray:
    """Bring ``maps`` to a C×H×W stack of 2-D maps.

    Accepts H×W, C×H×W, N×C×H×W (image ``image`` of the batch), a 1-D conv's N×C×L (shown as one
    C×L map), a 3-D conv's N×C×D×H×W (the middle depth slice), or an object with ``.array``.
    """
    arr = np.asarray(getattr(maps, "array", maps))
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if hasattr(maps, "array"):  # a 1-D conv capture: N×C×L
            return arr[image][None]
        return arr
    if arr.ndim == 4:
        return arr[image]
    if arr.ndim == 5:
        return arr[image][:, arr.shape[2] // 2]
    raise OnnxvizError(f"cannot render an array of shape {arr.shape}: expected 2 to 5 dims")


def _normalise(stack: np.ndarray) -> np.ndarray:
    """Per-channel min-max to levels 0..LEVELS-1; constant maps are flat; NaN/Inf marked."""
    x = stack if stack.dtype in (np.float32, np.float64) else stack.astype(np.float32)
    c = x.shape[0]
    flat = x.reshape(c, -1)
    finite = None
    if np.isfinite(flat.sum(axis=1, dtype=np.float64)).all():
        lo = flat.min(axis=1).astype(np.float64)
        hi = flat.max(axis=1).astype(np.float64)
    else:
        finite = np.isfinite(flat)
        lo = np.where(finite, flat, np.inf).min(axis=1).astype(np.float64)
        hi = np.where(finite, flat, -np.inf).max(axis=1).astype(np.float64)
        empty = ~np.isfinite(lo)
        lo[empty] = 0.0
        hi[empty] = 0.0
    span = hi - lo
    with np.errstate(divide="ignore", over="ignore"):
        gain = np.where(span > 0, (LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    gain[~np.isfinite(gain)] = 0.0
    # Spans near float32's limits (denormal or ~1e38) would overflow the gain in float32.
    work = np.float64 if (gain.max(initial=0.0) > 1e30 or span.max(initial=0.0) > 1e30) else x.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        levels = (flat.astype(work, copy=False) - lo[:, None].astype(work)) * gain[:, None].astype(work)
        levels += 0.5
        np.clip(levels, 0, LEVELS - 1, out=levels)
    if finite is not None:
        levels[~finite] = 0
    out = levels.astype(np.uint8)
    if finite is not None:
        out[~finite] = NAN_INDEX
    return out.reshape(x.shape)


def _tile(levels: np.ndarray, ncols: int, padding: int) -> tuple[np.ndarray, tuple[int, int]]:
    c, h, w = levels.shape
    rows = math.ceil(c / ncols)
    p = padding
    blocks = np.full((rows * ncols, h + p, w + p), PAD_INDEX, dtype=np.uint8)
    blocks[:c, p:, p:] = levels
    grid = blocks.reshape(rows, ncols, h + p, w + p).transpose(0, 2, 1, 3).reshape(rows * (h + p), ncols * (w + p))
    if p:
        grid = np.pad(grid, ((0, p), (0, p)), constant_values=PAD_INDEX)
    return grid, (rows, ncols)


def render(
    maps: MapsLike,
    *,
    cmap: str = "viridis",
    ncols: int | None = None,
    padding: int = 1,
    max_channels: int | None = None,
    image: int = 0,
    nan_color: Color = DEFAULT_NAN_COLOR,
    pad_color: Color = DEFAULT_PAD_COLOR,
) -> RenderedImage:
    """Render a stack of 2-D maps as a near-square grid (or ``ncols`` per row).

    ``maps`` is an array (H×W, C×H×W, N×C×H×W → image ``image``) or a captured layer. Each map
    is min-max normalised on its own; constant maps become flat tiles and NaN/Inf pixels take
    ``nan_color``. ``max_channels`` keeps the first N maps.
    """
    stack = as_map_stack(maps, image)
    if stack.size == 0:
        raise OnnxvizError(f"nothing to render: empty array of shape {stack.shape}")
    if max_channels is not None:
        if max_channels < 1:
            raise OnnxvizError("max_channels must be at least 1")
        stack = stack[:max_channels]
    if padding < 0:
        raise OnnxvizError("padding must be >= 0")
    c = stack.shape[0]
    cols = ncols if ncols else math.ceil(math.sqrt(c))
    if cols < 1:
        raise OnnxvizError("ncols must be at least 1")
    cols = min(cols, c)
    levels = _normalise(stack)
    grid, shape = _tile(levels, cols, padding)
    return RenderedImage(grid, colormap_palette(cmap, nan_color, pad_color), channels=tuple(range(c)), grid=shape)
