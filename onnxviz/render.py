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

import io
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from .errors import OnnxvizError

__all__ = [
    "RenderedImage",
    "RGBImage",
    "render",
    "render_rgb",
    "with_caption",
    "reduce_maps",
    "overlay",
    "select_channels",
    "colormap_palette",
    "default_cmap",
    "as_map_stack",
    "NORMS",
    "LEVELS",
    "LABEL_INDEX",
    "SHADOW_INDEX",
    "NAN_INDEX",
    "PAD_INDEX",
]

LEVELS = 252  # palette entries 0..251 carry the colormap
LABEL_INDEX = 252  # label text
SHADOW_INDEX = 253  # label shadow
NAN_INDEX = 254  # NaN / ±Inf
PAD_INDEX = 255  # padding between tiles
DEFAULT_NAN_COLOR = (255, 0, 255)
DEFAULT_PAD_COLOR = (32, 32, 32)
NORMS = ("channel", "layer", "zscore", "percentile", "signed")
SELECTS = ("first", "mean", "max", "absmean")

Color = tuple[int, int, int]
Norm = Literal["channel", "layer", "zscore", "percentile", "signed"]
MapsLike = Union[np.ndarray, Any]  # an array, or anything with an ``array`` attribute (LayerCapture)


def _lut_cache_file(name: str, n: int) -> Path | None:
    """Where matplotlib's lookup table for ``name`` is cached (importing matplotlib costs ~0.2 s)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", name):
        return None
    try:
        from importlib.metadata import version

        mpl = version("matplotlib")
    except Exception:
        return None
    root = Path(os.environ.get("ONNXVIZ_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxviz")
    return root / "colormaps" / f"{name}-{n}-mpl{mpl}.bin"


@lru_cache(maxsize=64)
def _colormap_lut(name: str, n: int = LEVELS) -> bytes:
    cache = _lut_cache_file(name, n)
    if cache is not None:
        try:
            data = cache.read_bytes()
            if len(data) == 3 * n:
                return data
        except OSError:
            pass
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise OnnxvizError(
            f"unknown colormap {name!r}; try viridis, gray, magma, inferno, plasma, jet, RdBu_r or any matplotlib name"
        ) from None
    data = cmap(np.linspace(0.0, 1.0, n), bytes=True)[:, :3].astype(np.uint8).tobytes()
    if cache is not None:
        try:  # best effort, atomic: a read-only home just means no cache
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, cache)
        except OSError:
            pass
    return data


def default_cmap(norm: str = "channel") -> str:
    """The colormap used when none is given: diverging for signed maps, else viridis."""
    return "RdBu_r" if norm == "signed" else "viridis"


def colormap_palette(cmap: str, nan_color: Color = DEFAULT_NAN_COLOR, pad_color: Color = DEFAULT_PAD_COLOR) -> np.ndarray:
    """The 256×3 uint8 palette: ``LEVELS`` colormap entries, label, shadow, NaN, padding."""
    palette = np.empty((256, 3), dtype=np.uint8)
    palette[:LEVELS] = np.frombuffer(_colormap_lut(cmap), dtype=np.uint8).reshape(LEVELS, 3)
    palette[LABEL_INDEX] = (255, 255, 255)
    palette[SHADOW_INDEX] = (0, 0, 0)
    palette[NAN_INDEX] = nan_color
    palette[PAD_INDEX] = pad_color
    return palette


class _PNGMixin:
    def to_pil(self) -> "PIL.Image.Image":  # noqa: F821
        raise NotImplementedError

    def save(self, path: str | Path, *, compress_level: int = 1) -> Path:
        """Write a PNG (fast zlib level by default)."""
        path = Path(path)
        self.to_pil().save(path, format="PNG", compress_level=compress_level)
        return path

    def png_bytes(self, *, compress_level: int = 1) -> bytes:
        buf = io.BytesIO()
        self.to_pil().save(buf, format="PNG", compress_level=compress_level)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png_bytes()

    def to_figure(self, title: str | None = None, dpi: int = 100) -> "matplotlib.figure.Figure":  # noqa: F821
        """A matplotlib Figure showing the image (built without pyplot), for notebooks and papers."""
        from matplotlib.figure import Figure

        rgb = self.to_array()
        h, w = rgb.shape[:2]
        fig = Figure(figsize=(max(w / dpi, 1.0), max(h / dpi, 1.0) + (0.3 if title else 0)), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, h / (h + (0.3 * dpi if title else 0))))
        ax.imshow(rgb, interpolation="nearest")
        ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=10)
        return fig

    def to_array(self) -> np.ndarray:
        raise NotImplementedError


class RenderedImage(_PNGMixin):
    """A rendered grid: palette indices plus palette. Shows itself in notebooks."""

    def __init__(
        self,
        index: np.ndarray,
        palette: np.ndarray,
        *,
        channels: tuple[int, ...],
        grid: tuple[int, int],
        value_range: tuple[float, float] | None = None,
    ):
        self.index = index
        self.palette = palette
        self.channels = channels  # the source channel of each tile, in order
        self.grid = grid  # (rows, cols)
        self.value_range = value_range  # the shared (lo, hi) when one range covers every tile

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

    def __repr__(self) -> str:
        rows, cols = self.grid
        return f"RenderedImage({self.width}x{self.height}, {len(self.channels)} maps in {rows}x{cols})"


class RGBImage(_PNGMixin):
    """A plain RGB image (overlays), with the same save / array / notebook interface."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def to_array(self) -> np.ndarray:
        return self.rgb

    def to_pil(self) -> "PIL.Image.Image":  # noqa: F821
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.rgb))

    def __repr__(self) -> str:
        return f"RGBImage({self.width}x{self.height})"


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


def _float(stack: np.ndarray) -> np.ndarray:
    return stack if stack.dtype in (np.float32, np.float64) else stack.astype(np.float32)


def _finite_minmax(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-row min and max over finite values (0 for rows without any), and the finite mask if needed."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: a NaN sum is all this probe needs
        all_finite = np.isfinite(flat.sum(axis=1, dtype=np.float64)).all()
    if all_finite:
        return flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64), None
    finite = np.isfinite(flat)
    lo = np.where(finite, flat, np.inf).min(axis=1).astype(np.float64)
    hi = np.where(finite, flat, -np.inf).max(axis=1).astype(np.float64)
    empty = ~np.isfinite(lo)
    lo[empty] = 0.0
    hi[empty] = 0.0
    return lo, hi, finite


def _ranges(flat: np.ndarray, norm: str, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-channel (lo, hi) of the chosen normalisation, and the finite mask (None: all finite)."""
    lo, hi, finite = _finite_minmax(flat)
    if norm == "channel":
        return lo, hi, finite
    if norm == "layer":
        return np.full_like(lo, lo.min()), np.full_like(hi, hi.max()), finite
    if norm == "signed":
        m = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0)))
        return np.full_like(lo, -m), np.full_like(hi, m), finite
    values = flat if finite is None else np.where(finite, flat, np.nan)
    with np.errstate(all="ignore"):
        if norm == "zscore":
            mu = np.nanmean(values, axis=1, dtype=np.float64) if finite is not None else values.mean(axis=1, dtype=np.float64)
            sigma = np.nanstd(values, axis=1, dtype=np.float64) if finite is not None else values.std(axis=1, dtype=np.float64)
            mu, sigma = np.nan_to_num(mu), np.nan_to_num(sigma)
            # (x - μ) / σ · 64 + 128, clipped to 0..255: the range μ - 2σ .. μ + 127/64 σ
            return mu - 2.0 * sigma, mu + (127.0 / 64.0) * sigma, finite
        if norm == "percentile":
            p_lo, p_hi = percentiles
            if not 0 <= p_lo < p_hi <= 100:
                raise OnnxvizError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
            q = np.nanpercentile(values, [p_lo, p_hi], axis=1) if finite is not None else np.percentile(values, [p_lo, p_hi], axis=1)
            return np.nan_to_num(q[0]).astype(np.float64), np.nan_to_num(q[1]).astype(np.float64), finite
    raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")


def _to_levels(flat: np.ndarray, lo: np.ndarray, hi: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """Map each row linearly from [lo, hi] to levels 0..LEVELS-1 (clipped); flat rows → 0."""
    span = hi - lo
    with np.errstate(divide="ignore", over="ignore"):
        gain = np.where(span > 0, (LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    gain[~np.isfinite(gain)] = 0.0
    # Spans near float32's limits (denormal or ~1e38) would overflow the gain in float32.
    work = np.float64 if (gain.max(initial=0.0) > 1e30 or np.abs(span).max(initial=0.0) > 1e30) else flat.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        levels = (flat.astype(work, copy=False) - lo[:, None].astype(work)) * gain[:, None].astype(work)
        levels += 0.5
        np.clip(levels, 0, LEVELS - 1, out=levels)
    if finite is not None:
        levels[~finite] = 0
    out = levels.astype(np.uint8)
    if finite is not None:
        out[~finite] = NAN_INDEX
    return out


def select_channels(
    stack: np.ndarray,
    *,
    max_channels: int | None = None,
    select: str = "first",
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Indices of the maps to show: an explicit list, the first N, or the top N by a score.

    ``select``: ``"first"``, or ``"mean"``, ``"max"``, ``"absmean"`` (top ``max_channels`` maps by
    that statistic, highest first; NaN/Inf ignored).
    """
    c = stack.shape[0]
    if max_channels is not None and max_channels < 1:
        raise OnnxvizError("max_channels must be at least 1")
    if channels is not None:
        idx = np.asarray(list(channels), dtype=np.int64)
        if idx.size == 0:
            raise OnnxvizError("channels is empty")
        bad = idx[(idx < 0) | (idx >= c)]
        if bad.size:
            raise OnnxvizError(f"channel {int(bad[0])} out of range: the stack has {c} maps (0..{c - 1})")
        return idx[:max_channels] if max_channels else idx
    if select == "first":
        return np.arange(min(c, max_channels or c))
    if select not in SELECTS:
        raise OnnxvizError(f"unknown channel selection {select!r}: use {', '.join(SELECTS)}")
    flat = _float(stack).reshape(c, -1)
    finite = np.isfinite(flat)
    with np.errstate(all="ignore"):
        if select == "max":
            score = np.where(finite, flat, -np.inf).max(axis=1)
        else:
            values = np.abs(flat) if select == "absmean" else flat
            score = np.where(finite, values, 0).sum(axis=1, dtype=np.float64) / np.maximum(finite.sum(axis=1), 1)
    order = np.argsort(-score, kind="stable")
    return order[: max_channels or c]


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


def _draw_texts(index: np.ndarray, items: Sequence[tuple[tuple[int, int], str]]) -> None:
    """Draw texts into a palette-index image in place (label colour over a 1-px shadow).

    Glyphs are drawn into 1-bit masks: antialiased edges would land on arbitrary palette entries.
    """
    from PIL import Image, ImageDraw

    h, w = index.shape
    masks = {}
    for colour, dx in ((SHADOW_INDEX, 1), (LABEL_INDEX, 0)):
        mask = Image.new("1", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        draw.fontmode = "1"  # no antialiasing
        for (x, y), text in items:
            draw.text((x + dx, y + dx), text, fill=1)
        masks[colour] = np.asarray(mask, dtype=bool)
    index[masks[SHADOW_INDEX]] = SHADOW_INDEX
    index[masks[LABEL_INDEX]] = LABEL_INDEX


def _label_tiles(grid: np.ndarray, channels: Sequence[int], cols: int, tile: tuple[int, int], padding: int) -> None:
    th, tw = tile
    if th < 12 or tw < 14:
        return  # too small to carry a readable label
    items = []
    for k, ch in enumerate(channels):
        r, c = divmod(k, cols)
        items.append(((padding + c * (tw + padding) + 2, padding + r * (th + padding) + 1), str(ch)))
    _draw_texts(grid, items)


def _with_colorbar(grid: np.ndarray, lo: float, hi: float, padding: int) -> np.ndarray:
    """Append a vertical colorbar (top: hi, bottom: lo) with its two values, on the right."""
    h = grid.shape[0]
    bar_w, text_w = 10, 64
    panel = np.full((max(h, 40), bar_w + text_w + 2 * max(padding, 2)), PAD_INDEX, dtype=np.uint8)
    inner = panel.shape[0] - 2 * max(padding, 2)
    ramp = np.linspace(LEVELS - 1, 0, inner).round().astype(np.uint8)
    x0 = max(padding, 2)
    panel[x0 : x0 + inner, x0 : x0 + bar_w] = ramp[:, None]
    _draw_texts(panel, [((x0 + bar_w + 3, x0), f"{hi:.3g}"), ((x0 + bar_w + 3, x0 + inner - 11), f"{lo:.3g}")])
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
    pad_color: Color = DEFAULT_PAD_COLOR,
) -> RenderedImage:
    """Render a stack of 2-D maps as a near-square grid (or ``ncols`` per row).

    ``maps``: an array (H×W, C×H×W, N×C×H×W → image ``image``) or a captured layer.
    ``norm``: ``channel`` | ``layer`` | ``zscore`` | ``percentile`` | ``signed`` (module docs).
    ``max_channels`` / ``select`` / ``channels``: which maps (:func:`select_channels`).
    ``min_tile``: upscale tiny maps (nearest neighbour) so each tile is at least this many pixels
    on its longer side. ``labels``: write each tile's channel index on it. ``colorbar``: add a
    colorbar with the shared range (``layer`` and ``signed`` norms only). Constant maps become flat
    tiles; NaN/Inf pixels take ``nan_color``; ``pad_color`` fills the padding.
    """
    if norm not in NORMS:
        raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")
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
    flat = _float(stack).reshape(c, -1)
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
        grid = _with_colorbar(grid, shared[0], shared[1], padding)
    return RenderedImage(grid, palette, channels=tuple(int(ch) for ch in chosen), grid=shape, value_range=shared)


def render_rgb(
    tiles: np.ndarray,
    *,
    ncols: int | None = None,
    padding: int = 1,
    min_tile: int | None = None,
    pad_color: Color = DEFAULT_PAD_COLOR,
) -> RGBImage:
    """Render N×H×W×3 tiles (e.g. first-layer RGB filters) in a grid, each min-max normalised on its own."""
    x = _float(np.asarray(tiles))
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise OnnxvizError(f"render_rgb needs N×H×W×3 tiles, got shape {x.shape}")
    n, h, w, _ = x.shape
    flat = x.reshape(n, -1)
    lo, hi, finite = _finite_minmax(flat)
    levels = _to_levels(flat, lo, hi, finite).reshape(n, h, w, 3)
    # levels 0..LEVELS-1 → 0..255 per colour plane; NaN → black
    lut = np.zeros(256, np.uint8)
    lut[:LEVELS] = np.round(np.linspace(0, 255, LEVELS)).astype(np.uint8)
    planes = lut[levels]
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


def with_caption(image: RenderedImage | RGBImage, lines: Sequence[str]) -> RenderedImage | RGBImage:
    """The image with a strip of text lines below it (statistics, notes), in the padding colour."""
    lines = [str(line) for line in lines if line]
    if not lines:
        return image
    strip_h = 4 + 12 * len(lines)
    width = max(image.width, 8 + 6 * max(len(line) for line in lines))
    if isinstance(image, RenderedImage):
        index = np.full((image.height + strip_h, width), PAD_INDEX, np.uint8)
        index[: image.height, : image.width] = image.index
        _draw_texts(index, [((4, image.height + 2 + 12 * k), line) for k, line in enumerate(lines)])
        return RenderedImage(index, image.palette, channels=image.channels, grid=image.grid, value_range=image.value_range)
    from PIL import Image, ImageDraw

    pad = tuple(int(v) for v in image.rgb[0, 0]) if image.rgb.size else DEFAULT_PAD_COLOR
    canvas = Image.new("RGB", (width, image.height + strip_h), pad)
    canvas.paste(image.to_pil(), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, image.height + 2 + 12 * k), line, fill=(255, 255, 255))
    return RGBImage(np.asarray(canvas))


def reduce_maps(maps: MapsLike, how: str = "sum", image: int = 0) -> np.ndarray:
    """One H×W map from a layer: the sum (or mean) of all its maps, NaN/Inf ignored."""
    if how not in ("sum", "mean"):
        raise OnnxvizError(f"unknown reduction {how!r}: use sum or mean")
    stack = _float(as_map_stack(maps, image))
    finite = np.isfinite(stack)
    total = np.where(finite, stack, 0).sum(axis=0, dtype=np.float64)
    if how == "mean":
        total = total / np.maximum(finite.sum(axis=0), 1)
    return total.astype(np.float32)


def overlay(
    heatmap: np.ndarray,
    image: Any,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> RGBImage:
    """A 2-D map as a heat map over ``image`` (path, PIL image or H×W×3 uint8), at the image's size.

    The map is min-max normalised (NaN/Inf ignored), resized bilinearly to the image, coloured
    through ``cmap`` and alpha-blended: ``(1 - alpha) · image + alpha · heat``.
    """
    from PIL import Image

    from .inputs import open_image

    if not 0.0 <= alpha <= 1.0:
        raise OnnxvizError(f"alpha must be within 0..1, got {alpha}")
    hm = _float(np.asarray(heatmap))
    if hm.ndim != 2 or hm.size == 0:
        raise OnnxvizError(f"overlay needs one 2-D map, got shape {hm.shape}")
    base = image if isinstance(image, np.ndarray) else np.asarray(open_image(image).convert("RGB"))
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    base = base[..., :3].astype(np.uint8, copy=False)
    lo, hi, finite = _finite_minmax(hm.reshape(1, -1))
    unit = _to_levels(hm.reshape(1, -1), lo, hi, finite).reshape(hm.shape)
    valid = unit != NAN_INDEX
    unit_f = np.where(valid, unit, 0).astype(np.float32) / (LEVELS - 1)
    resized = np.asarray(Image.fromarray(unit_f).resize((base.shape[1], base.shape[0]), Image.Resampling.BILINEAR))
    lut = np.frombuffer(_colormap_lut(cmap, 256), dtype=np.uint8).reshape(256, 3)
    heat = lut[np.clip(resized * 255 + 0.5, 0, 255).astype(np.uint8)]
    blended = (1.0 - alpha) * base.astype(np.float32) + alpha * heat.astype(np.float32)
    return RGBImage(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
