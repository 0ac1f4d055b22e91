"""The shared renderer: any stack of 2-D maps (activations, filters, CAMs) → one image grid.

Rendering is vectorised end to end: normalisation to 8-bit levels, tiling by reshaping, nearest
upscaling by repetition, and colour through a 256-entry palette built from a matplotlib colormap's
lookup table (no pyplot, no figure per channel). The result is a palette image — 252 colormap
levels, two entries for label text and its shadow, one marking NaN/Inf, one for padding — which
is also what the PNG stores (1 byte per pixel).

Normalisation modes (``norm=``):

- ``"channel"``: each map's own min-max (the default);
- ``"layer"``: one range for the whole stack, so brightness compares across channels;
- ``"zscore"``: ``(x - μ) / σ · 64 + 128`` clipped to 0–255 per map, as in the Keras literature;
- ``"percentile"``: each map clipped to its ``percentiles`` (default 1–99) first;
- ``"signed"``: one range symmetric around 0 for the stack, 0 at the colormap's centre (use a
  diverging colormap such as ``RdBu_r``, the default for this mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import OnnxvizError
from .images import RenderedImage, RGBImage
from .text import draw_texts as _draw_texts, with_caption
from .vectors import as_vector, render_vector
from .levels import NORMS, MapsLike, Norm, _finite_minmax, _float, _ranges, _to_levels, as_map_stack, select_channels
from .palette import (
    DEFAULT_NAN_COLOR, LEVELS, NAN_INDEX, PAD_INDEX, Color, colormap_palette, contrasting_pad, default_cmap,
    text_index_on_pad,
)

__all__ = ["render", "render_rgb", "with_caption"]


def _upscale_factor(h: int, w: int, min_tile: int | None) -> int:
    """Nearest-neighbour factor that makes an H×W tile's longer side reach ``min_tile``."""
    if not min_tile or max(h, w) >= min_tile:
        return 1
    return math.ceil(min_tile / max(h, w))


def _tile(levels: np.ndarray, ncols: int, padding: int, factor: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """Lay C×H×W maps out as a grid with ``padding`` pixels around each, every map upscaled
    ``factor`` times (nearest neighbour), writing each output pixel once."""
    c, h, w = levels.shape
    rows = math.ceil(c / ncols)
    p = padding
    th, tw = h * factor, w * factor
    grid = np.full((rows * (th + p) + p, ncols * (tw + p) + p), PAD_INDEX, dtype=np.uint8)
    if factor > 1:
        levels = np.repeat(levels, factor, axis=2)  # widen the small array; rows repeat by broadcasting below
    # rows × h × factor × ncols × tw view of the tiles' pixels inside the grid (all within bounds)
    row_stride = grid.strides[0]
    cells = np.lib.stride_tricks.as_strided(
        grid[p:, p:],
        shape=(rows, h, factor, ncols, tw),
        strides=((th + p) * row_stride, factor * row_stride, row_stride, tw + p, 1),
    )
    full, rest = divmod(c, ncols)
    cells[:full] = levels[: full * ncols].reshape(full, ncols, h, tw).transpose(0, 2, 1, 3)[:, :, None]
    if rest:
        cells[full, :, :, :rest] = levels[full * ncols :].transpose(1, 0, 2)[:, None]
    return grid, (rows, ncols)


def _label_tiles(grid: np.ndarray, channels: Sequence[int], cols: int, tile: tuple[int, int], padding: int) -> None:
    th, tw = tile
    if th < 12 or tw < 14:
        return  # too small to carry a readable label
    items = []
    for k, ch in enumerate(channels):
        r, c = divmod(k, cols)
        items.append(((padding + c * (tw + padding) + 2, padding + r * (th + padding) + 1), str(ch)))
    _draw_texts(grid, items)


def _with_colorbar(grid: np.ndarray, lo: float, hi: float, padding: int, text: int | None = None) -> np.ndarray:
    """Append a vertical colorbar (top: hi, bottom: lo) with its two values, on the right."""
    h = grid.shape[0]
    bar_w, text_w = 10, 64
    panel = np.full((max(h, 40), bar_w + text_w + 2 * max(padding, 2)), PAD_INDEX, dtype=np.uint8)
    inner = panel.shape[0] - 2 * max(padding, 2)
    ramp = np.linspace(LEVELS - 1, 0, inner).round().astype(np.uint8)
    x0 = max(padding, 2)
    panel[x0 : x0 + inner, x0 : x0 + bar_w] = ramp[:, None]
    _draw_texts(panel, [((x0 + bar_w + 3, x0), f"{hi:.3g}"), ((x0 + bar_w + 3, x0 + inner - 11), f"{lo:.3g}")], text)
    if panel.shape[0] > h:
        grid = np.pad(grid, ((0, panel.shape[0] - h), (0, 0)), constant_values=PAD_INDEX)
    return np.concatenate([grid, panel], axis=1)


def render(
    maps: MapsLike,
    *,
    cmap: str | None = None,
    norm: Norm = "channel",
    percentiles: tuple[float, float] = (1.0, 99.0),
    ncols: int | None = None,
    padding: int = 1,
    max_channels: int | None = None,
    select: str = "first",
    channels: Sequence[int] | None = None,
    min_tile: int | None = None,
    labels: bool = False,
    colorbar: bool = False,
    image: int = 0,
    nan_color: Color = DEFAULT_NAN_COLOR,
    pad_color: Color | None = None,
    top: int = 0,
    class_names: Sequence[str] | None = None,
) -> RenderedImage:
    """Render a stack of 2-D maps as a near-square grid (or ``ncols`` per row).

    What has no 2-D maps — a dense layer's N×C, global pooling's N×C×1×1, a scalar — is drawn by
    :func:`onnxviz.rendering.vectors.render_vector` (a bar chart or a strip of cells); ``top`` and
    ``class_names`` add its top-k (ignored for maps).

    ``maps``: an array (H×W, C×H×W, N×C×H×W → image ``image``) or a captured layer.
    ``norm``: ``channel`` | ``layer`` | ``zscore`` | ``percentile`` | ``signed`` (module docs).
    ``max_channels`` / ``select`` / ``channels``: which maps (:func:`select_channels`).
    ``min_tile``: upscale tiny maps (nearest neighbour) so each tile is at least this many pixels
    on its longer side. ``labels``: write each tile's channel index on it. ``colorbar``: add a
    colorbar with the shared range (``layer`` and ``signed`` norms only). Constant maps become flat
    tiles; NaN/Inf pixels take ``nan_color``; ``pad_color`` fills the padding (default: a colour
    that contrasts with the colormap, :func:`onnxviz.rendering.palette.pad_color_for`).
    """
    if norm not in NORMS:
        raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")
    vector = as_vector(maps, image)
    if vector is not None:
        return render_vector(vector, cmap=cmap, norm=norm, percentiles=percentiles, ncols=ncols, padding=padding,
                             max_channels=max_channels, select=select, channels=channels, top=top,
                             class_names=class_names, nan_color=nan_color, pad_color=pad_color)
    cmap = cmap or default_cmap(norm)
    palette = colormap_palette(cmap, nan_color, pad_color)  # unknown colormap: fail before any work
    stack = as_map_stack(maps, image)
    if stack.size == 0:
        raise OnnxvizError(f"nothing to render: empty array of shape {stack.shape}")
    if padding < 0:
        raise OnnxvizError("padding must be >= 0")
    chosen = select_channels(stack, max_channels=max_channels, select=select, channels=channels)
    if len(chosen) != stack.shape[0] or not np.array_equal(chosen, np.arange(stack.shape[0])):
        stack = stack[chosen]
    c, h, w = stack.shape
    cols = ncols if ncols else math.ceil(math.sqrt(c))
    if cols < 1:
        raise OnnxvizError("ncols must be at least 1")
    cols = min(cols, c)
    flat = stack.reshape(c, -1)  # any dtype: normalised block by block, no full-size float copy
    lo, hi, finite = _ranges(flat, norm, percentiles)
    levels = _to_levels(flat, lo, hi, finite).reshape(c, h, w)
    factor = _upscale_factor(h, w, min_tile)
    grid, shape = _tile(levels, cols, padding, factor)
    tile = (h * factor, w * factor)
    if labels:
        _label_tiles(grid, [int(ch) for ch in chosen], cols, tile, padding)
    shared = (float(lo[0]), float(hi[0])) if norm in ("layer", "signed") else None
    if colorbar:
        if shared is None:
            raise OnnxvizError("a colorbar needs one shared range: use norm='layer' or norm='signed'")
        grid = _with_colorbar(grid, shared[0], shared[1], padding, text_index_on_pad(palette))
    return RenderedImage(grid, palette, channels=tuple(int(ch) for ch in chosen), grid=shape, value_range=shared)


def _rgb_levels(tiles: np.ndarray, norm: str, nan_color: Color) -> np.ndarray:
    """N×H×W×3 values → uint8 planes, min-max normalised per tile or over all tiles."""
    x = _float(tiles)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise OnnxvizError(f"render_rgb needs N×H×W×3 tiles, got shape {x.shape}")
    n, h, w, _ = x.shape
    flat = x.reshape(n, -1)
    lo, hi, finite = _finite_minmax(flat)
    if norm == "layer":
        lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
    elif norm != "tile":
        raise OnnxvizError(f"unknown RGB tile normalisation {norm!r}: use tile, layer or none")
    levels = _to_levels(flat, lo, hi, finite).reshape(n, h, w, 3)
    # levels 0..LEVELS-1 → 0..255 per colour plane; NaN/Inf → nan_color
    lut = np.zeros(256, np.uint8)
    lut[:LEVELS] = np.round(np.linspace(0, 255, LEVELS)).astype(np.uint8)
    planes = lut[levels]
    if finite is not None:
        planes[(levels == NAN_INDEX).any(axis=-1)] = nan_color
    return planes


def render_rgb(
    tiles: np.ndarray,
    *,
    ncols: int | None = None,
    padding: int = 1,
    min_tile: int | None = None,
    pad_color: Color | None = None,
    norm: str = "tile",
    nan_color: Color = DEFAULT_NAN_COLOR,
) -> RGBImage:
    """Render N×H×W×3 tiles (e.g. first-layer RGB filters) in a grid, each min-max normalised on its
    own (``norm="tile"``) or all with one range (``norm="layer"``), over the finite values; a pixel
    with a NaN/Inf in any channel takes ``nan_color``; ``norm="none"`` shows uint8 tiles as they are
    (photo crops). The padding (default) contrasts with the tiles' own colours."""
    if norm == "none":
        planes = np.asarray(tiles)
        if planes.ndim != 4 or planes.shape[-1] != 3 or planes.shape[0] == 0 or planes.dtype != np.uint8:
            raise OnnxvizError(f"render_rgb(norm='none') needs N×H×W×3 uint8 tiles, got {planes.dtype} {planes.shape}")
    else:
        planes = _rgb_levels(np.asarray(tiles), norm, nan_color)
    n, h, w, _ = planes.shape
    if pad_color is None:
        pad_color = contrasting_pad(planes.reshape(-1, 3))
    factor = _upscale_factor(h, w, min_tile)
    cols = min(ncols or math.ceil(math.sqrt(n)), n)
    # Padding is located by tiling a zero stack (tile pixels may hold any value 0..255 here).
    mask, _ = _tile(np.zeros(planes.shape[:3], np.uint8), cols, padding, factor)
    pad = mask == PAD_INDEX
    out = np.empty((*mask.shape, 3), np.uint8)
    for ch in range(3):
        values, _ = _tile(np.ascontiguousarray(planes[..., ch]), cols, padding, factor)
        out[..., ch] = np.where(pad, pad_color[ch], values)
    return RGBImage(out)
