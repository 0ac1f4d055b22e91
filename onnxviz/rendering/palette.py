"""Colour: matplotlib colormaps as 256-entry palettes (lookup tables cached on disk), and the
palette layout every rendered image shares: ``LEVELS`` colormap entries, then label text, its
shadow, NaN/Inf and padding.

Padding is chosen per colormap so that it stays visible (:func:`pad_color_for`): white where
white is clearly apart from every colour of the map (viridis, magma, inferno, plasma, jet,
turbo, coolwarm…), else the candidate farthest from every colour of the map among those far from
its darkest quarter (an orange for ``gray`` and ``bone``, a green for ``hot``). Text drawn on the padding
(captions, titles, colorbar values) is black or white, whichever contrasts with it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import OnnxvizError

__all__ = [
    "LEVELS", "LABEL_INDEX", "SHADOW_INDEX", "NAN_INDEX", "PAD_INDEX", "DEFAULT_NAN_COLOR", "DEFAULT_PAD_COLOR",
    "Color", "colormap_palette", "default_cmap", "pad_color_for", "text_index_on_pad", "contrasting_pad",
]

LEVELS = 252  # palette entries 0..251 carry the colormap
LABEL_INDEX = 252  # label text
SHADOW_INDEX = 253  # label shadow
NAN_INDEX = 254  # NaN / ±Inf
PAD_INDEX = 255  # padding between tiles
DEFAULT_NAN_COLOR = (255, 0, 255)
DEFAULT_PAD_COLOR = (32, 32, 32)  # the padding of earlier versions; padding is now chosen per colormap

Color = tuple[int, int, int]

# Padding candidates, in order of preference: white, then Okabe-Ito's colour-blind-safe orange, sky
# blue and bluish green, light gray, black, dark gray (none near the magenta that marks NaN/Inf).
_PAD_CANDIDATES: tuple[Color, ...] = ((255, 255, 255), (230, 159, 0), (86, 180, 233), (0, 158, 115), (200, 200, 200), (0, 0, 0), (32, 32, 32))
_FAR = 60.0  # RGB distance from every colour of the map that still reads as an edge
_FAR_FROM_DARK = 120.0
_LUMA = np.array([0.299, 0.587, 0.114])


def contrasting_pad(colors: np.ndarray) -> Color:
    """A padding colour that stands out against ``colors`` (K×3 uint8, e.g. a colormap's entries or
    an image's pixels): white when every colour is far from white, else the candidate farthest
    from all of them among those far from their darkest quarter."""
    c = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if c.shape[0] > 4096:  # an image's pixels: a deterministic sample is plenty
        c = c[np.linspace(0, c.shape[0] - 1, 4096).astype(np.int64)]
    luma = c @ _LUMA
    dark = c[luma <= np.quantile(luma, 0.25)] if c.size else c
    best, best_all = _PAD_CANDIDATES[0], -1.0
    for k, cand in enumerate(_PAD_CANDIDATES):
        v = np.asarray(cand, np.float64)
        d_all = float(np.sqrt(((c - v) ** 2).sum(axis=1)).min()) if c.size else 255.0
        d_dark = float(np.sqrt(((dark - v) ** 2).sum(axis=1)).min()) if dark.size else 255.0
        if k == 0 and d_all >= _FAR:
            return cand
        if d_dark >= _FAR_FROM_DARK and d_all > best_all:
            best, best_all = cand, d_all
    return best


def pad_color_for(cmap: str) -> Color:
    """The padding colour for ``cmap`` (see the module docs)."""
    return _pad_color_cached(cmap)


@lru_cache(maxsize=64)
def _pad_color_cached(cmap: str) -> Color:
    return contrasting_pad(np.frombuffer(_colormap_lut(cmap), dtype=np.uint8).reshape(LEVELS, 3))


def text_index_on_pad(palette: np.ndarray) -> int:
    """The palette entry (label white or shadow black) that reads best on the padding colour."""
    return SHADOW_INDEX if float(palette[PAD_INDEX].astype(np.float64) @ _LUMA) > 140 else LABEL_INDEX


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


def colormap_palette(cmap: str, nan_color: Color = DEFAULT_NAN_COLOR, pad_color: Color | None = None) -> np.ndarray:
    """The 256×3 uint8 palette: ``LEVELS`` colormap entries, label, shadow, NaN, padding
    (``pad_color``, or by default one that contrasts with the colormap: :func:`pad_color_for`)."""
    palette = np.empty((256, 3), dtype=np.uint8)
    palette[:LEVELS] = np.frombuffer(_colormap_lut(cmap), dtype=np.uint8).reshape(LEVELS, 3)
    palette[LABEL_INDEX] = (255, 255, 255)
    palette[SHADOW_INDEX] = (0, 0, 0)
    palette[NAN_INDEX] = nan_color
    palette[PAD_INDEX] = pad_color if pad_color is not None else pad_color_for(cmap)
    return palette
