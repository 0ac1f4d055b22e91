"""Colour: matplotlib colormaps as 256-entry palettes (lookup tables cached on disk), and the
palette layout every rendered image shares: ``LEVELS`` colormap entries, then label text, its
shadow, NaN/Inf and padding."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import OnnxvizError

__all__ = [
    "LEVELS", "LABEL_INDEX", "SHADOW_INDEX", "NAN_INDEX", "PAD_INDEX", "DEFAULT_NAN_COLOR", "DEFAULT_PAD_COLOR",
    "Color", "colormap_palette", "default_cmap",
]

LEVELS = 252  # palette entries 0..251 carry the colormap
LABEL_INDEX = 252  # label text
SHADOW_INDEX = 253  # label shadow
NAN_INDEX = 254  # NaN / ±Inf
PAD_INDEX = 255  # padding between tiles
DEFAULT_NAN_COLOR = (255, 0, 255)
DEFAULT_PAD_COLOR = (32, 32, 32)

Color = tuple[int, int, int]


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
