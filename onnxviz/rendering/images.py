"""Image objects every renderer returns (a palette grid, or plain RGB), with PNG, array, Figure
and notebook output; and decoding of picture files with Pillow."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InputError

__all__ = ["RenderedImage", "RGBImage", "open_image", "image_header", "ImageSource"]

ImageSource = Union[str, os.PathLike, "PIL.Image.Image"]  # noqa: F821


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


DRAFT_ABOVE = 16 << 20  # decoded bytes past which a JPEG is decoded at a reduced scale when it can
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@contextmanager
def _opened(source: str | os.PathLike) -> Iterator["PIL.Image.Image"]:  # noqa: F821
    """Open a picture file lazily (header only), every Pillow failure a one-line InputError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(source)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow's decompression-bomb warning: onnxviz's memory estimate decides what fits.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as img:
            yield img
    except UnidentifiedImageError:
        raise InputError(f"not an image Pillow can read: {path}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image too large: {path} ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot decode image {path}: {exc}") from None


def _rotated(img: "PIL.Image.Image") -> bool:  # noqa: F821
    """Whether the EXIF orientation swaps width and height (a broken EXIF block: no)."""
    try:
        return img.getexif().get(0x0112) in _ROTATED
    except Exception:
        return False


def image_header(source: ImageSource) -> tuple[tuple[int, int], str, str | None]:
    """(w, h) as displayed (EXIF orientation applied), the mode and the format, reading only the header."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.size, source.mode, None
    with _opened(source) as img:
        w, h = img.size
        return ((h, w) if _rotated(img) else (w, h)), img.mode, img.format


def open_image(source: ImageSource, *, draft: tuple[int, int] | None = None) -> "PIL.Image.Image":  # noqa: F821
    """Open and decode an image file (EXIF orientation applied), or pass a PIL image through.

    ``draft`` (w, h as displayed): a JPEG whose full decode would take over 16 MiB and that is at
    least twice that size is decoded at 1/2, 1/4 or 1/8 scale, still at least that size (Pillow's
    draft), so a huge photo bound for a smaller input never takes its full size in memory.
    """
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        return source
    with _opened(source) as img:
        if draft is not None and img.format == "JPEG" and img.size[0] * img.size[1] * len(img.getbands()) > DRAFT_ABOVE:
            w, h = draft
            img.draft(None, (h, w) if _rotated(img) else (w, h))
        img.load()
        return ImageOps.exif_transpose(img)
