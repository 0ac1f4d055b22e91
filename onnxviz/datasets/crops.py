"""Top-k grids: for each chosen channel, the receptive-field patches of its top-k images around
where the channel peaks, one row per channel, drawn with the shared renderer
(:func:`onnxviz.rendering.render_rgb`) and labelled with the channel and the scores."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..rendering import RGBImage, render_rgb
from ..rendering.palette import DEFAULT_PAD_COLOR

if TYPE_CHECKING:
    from .result import DatasetStats

__all__ = ["FedImages", "topk_grid", "choose_channels"]

_LABEL_W = 58


class FedImages:
    """Images as the model saw them (decoded, converted, resized; before pixel scaling), cached."""

    def __init__(self, size: tuple[int, int], channels: int, capacity: int = 256) -> None:
        self.size = size
        self.gray = channels == 1
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def get(self, path: str) -> np.ndarray | None:
        """H×W×3 uint8, or None when the image can no longer be read."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        from PIL import Image

        from ..rendering import open_image

        try:
            img = open_image(path)
            img = img.convert("L").convert("RGB") if self.gray else img.convert("RGB")
            h, w = self.size
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            array: np.ndarray | None = np.asarray(img)
        except InputError:
            array = None
        self._cache[path] = array
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return array


def _fit(patch: np.ndarray, tile: int) -> np.ndarray:
    """The patch scaled to fit a tile×tile square (nearest when enlarged, so small fields stay crisp), centred."""
    from PIL import Image

    h, w = patch.shape[:2]
    factor = tile / max(h, w)
    new = (max(1, round(w * factor)), max(1, round(h * factor)))
    method = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.BILINEAR
    scaled = np.asarray(Image.fromarray(patch).resize(new, method))
    out = np.empty((tile, tile, 3), np.uint8)
    out[:] = DEFAULT_PAD_COLOR
    y0, x0 = (tile - scaled.shape[0]) // 2, (tile - scaled.shape[1]) // 2
    out[y0 : y0 + scaled.shape[0], x0 : x0 + scaled.shape[1]] = scaled
    return out


def choose_channels(stats: "DatasetStats", layer: str, channels: Sequence[int] | None, max_channels: int | None) -> list[int]:
    """The channels a grid shows: those asked for, else the first ``max_channels`` (all when None)."""
    total = stats[layer].channels
    if channels is not None:
        return [c for c in channels if 0 <= c < total]
    return list(range(total if max_channels is None else min(total, max_channels)))


def topk_grid(
    stats: "DatasetStats", layer: str, channels: Sequence[int], *, tile: int = 64, images: FedImages | None = None
) -> RGBImage:
    """One row per channel: its top-k receptive-field patches, best first, with the channel on the left."""
    from PIL import Image, ImageDraw

    s = stats[layer]
    size = tuple(stats.input.get("size") or (0, 0))
    images = images or FedImages((int(size[0]), int(size[1])), int(stats.input.get("channels") or 3))
    tiles = np.empty((len(channels) * s.k, tile, tile, 3), np.uint8)
    tiles[:] = DEFAULT_PAD_COLOR
    for row, channel in enumerate(channels):
        for slot, entry in enumerate(stats.top(layer, channel)):
            picture = images.get(entry["path"])
            if picture is None or "box" not in entry:
                continue
            top, left, bottom, right = entry["box"]
            tiles[row * s.k + slot] = _fit(picture[top:bottom, left:right], tile)
    grid = render_rgb(tiles, ncols=s.k, padding=2, norm="none", pad_color=DEFAULT_PAD_COLOR)
    canvas = Image.new("RGB", (grid.width + _LABEL_W, grid.height), DEFAULT_PAD_COLOR)
    canvas.paste(grid.to_pil(), (_LABEL_W, 0))
    draw = ImageDraw.Draw(canvas)
    for row, channel in enumerate(channels):
        y = 2 + row * (tile + 2)
        best = s.top_score[channel, 0]
        draw.text((4, y + tile // 2 - 12), f"ch {channel}", fill=(255, 255, 255))
        draw.text((4, y + tile // 2 + 2), f"{best:.3g}" if np.isfinite(best) else "-", fill=(170, 170, 170))
    return RGBImage(np.asarray(canvas))


def caption(stats: "DatasetStats", layer: str, shown: int) -> list[str]:
    rf = stats.receptive_field(layer)
    rule = "receptive field" if rf.exact else "approximate window (geometry not traced)"
    field = "x".join(f"{v:.0f}" for v in rf.size)
    s = stats[layer]
    return [f"{stats.info.get(layer, {}).get('label', layer)}: top {s.k} images of {shown} of {s.channels} channels",
            f"patches: {rule} {field} px around each maximum; left: channel, best score"]


def grid_with_caption(stats: "DatasetStats", layer: str, channels: Sequence[int], **options: Any) -> RGBImage:
    from ..rendering import with_caption

    return with_caption(topk_grid(stats, layer, channels, **options), caption(stats, layer, len(channels)))  # type: ignore[return-value]
