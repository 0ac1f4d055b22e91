"""One map from a layer (the sum or mean of its maps), drawn on its own at the input's size
(seed 000's "sum of all maps") or as a heat map over an image."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OnnxvizError
from .images import RenderedImage, RGBImage, open_image
from .levels import MapsLike, _finite_minmax, _float, _to_levels, as_map_stack
from .palette import LEVELS, NAN_INDEX, _colormap_lut, colormap_palette, default_cmap

__all__ = ["reduce_maps", "overlay", "render_sum"]


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


def render_sum(maps: MapsLike, *, size: tuple[int, int] | None = None, cmap: str | None = None, how: str = "sum",
               image: int = 0) -> RenderedImage:
    """The sum (or mean) of a layer's maps as one image, resized bilinearly to ``size`` (H, W) —
    the input's size — and coloured through ``cmap`` with its own min-max range."""
    from PIL import Image

    total = reduce_maps(maps, how, image)
    if size is not None and tuple(total.shape) != tuple(size):
        h, w = int(size[0]), int(size[1])
        if h < 1 or w < 1:
            raise OnnxvizError(f"size must be positive, got {size}")
        total = np.asarray(Image.fromarray(total, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    flat = total.reshape(1, -1)
    lo, hi, finite = _finite_minmax(flat)
    levels = _to_levels(flat, lo, hi, finite).reshape(total.shape)
    palette = colormap_palette(cmap or default_cmap())
    return RenderedImage(levels, palette, channels=(0,), grid=(1, 1), value_range=(float(lo[0]), float(hi[0])))
