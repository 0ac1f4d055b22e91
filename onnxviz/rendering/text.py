"""Text on images: untrusted strings (layer names, class labels) made safe to draw or print, and a
title strip above a rendered image.

Model files and label files are untrusted: a name may hold control characters (terminal escape
sequences), line breaks, bidirectional overrides or thousands of characters. :func:`safe_text`
replaces every control, format and separator character with ``?``, collapses whitespace and
truncates, so what is drawn (or printed) is one line of at most ``limit`` characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from .images import RenderedImage, RGBImage
from .palette import LABEL_INDEX, PAD_INDEX, SHADOW_INDEX, text_index_on_pad

__all__ = ["safe_text", "with_title", "with_caption", "draw_texts", "text_width"]

_LINE = 12  # pixels per text line of Pillow's default font at its default size


def safe_text(text: object, limit: int = 80) -> str:
    """One printable line: control/format/separator characters → ``?``, whitespace runs → one
    space, at most ``limit`` characters (an ellipsis marks a cut)."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if ch in " \t\n\r\f\v":
            out.append(" ")
        elif cat[0] == "C" or cat in ("Zl", "Zp"):
            out.append("?")
        else:
            out.append(ch)
    line = " ".join("".join(out).split())
    return line if len(line) <= limit else line[: max(limit - 1, 0)] + "…"


def draw_texts(index: np.ndarray, items: Sequence[tuple[tuple[int, int], str]], colour: int | None = None) -> None:
    """Draw texts into a palette-index image in place: label colour over a 1-px shadow, or plain
    text in palette entry ``colour`` (text on the padding: :func:`text_index_on_pad`).

    Glyphs are drawn into 1-bit masks: antialiased edges would land on arbitrary palette entries.
    """
    from PIL import Image, ImageDraw

    h, w = index.shape
    layers = ((SHADOW_INDEX, 1), (LABEL_INDEX, 0)) if colour is None else ((colour, 0),)
    for entry, dx in layers:  # shadow first, the text over it
        mask = Image.new("1", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        draw.fontmode = "1"  # no antialiasing
        for (x, y), text in items:
            draw.text((x + dx, y + dx), text, fill=1)
        index[np.asarray(mask, dtype=bool)] = entry


def text_width(lines: Sequence[str]) -> int:
    """Pixel width of the widest line in Pillow's default font."""
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("1", (1, 1)))
    return max((int(probe.textlength(line)) + 1 for line in lines), default=0)


def with_title(image: RenderedImage | RGBImage, title: str, *, limit: int = 100) -> RenderedImage | RGBImage:
    """The image with one line of text above it (e.g. the layer name), on the padding colour.

    ``title`` is passed through :func:`safe_text`; the image is widened when the title is wider.
    """
    from PIL import Image, ImageDraw

    text = safe_text(title, limit)
    if not text:
        return image
    strip_h = _LINE + 6
    width = max(image.width, text_width([text]) + 8)
    if isinstance(image, RenderedImage):
        index = np.full((image.height + strip_h, width), PAD_INDEX, np.uint8)
        index[strip_h:, : image.width] = image.index
        draw_texts(index, [((4, 2), text)], text_index_on_pad(image.palette))
        return RenderedImage(index, image.palette, channels=image.channels, grid=image.grid, value_range=image.value_range)
    pad = tuple(int(v) for v in image.rgb[0, 0]) if image.rgb.size else (255, 255, 255)
    ink = (0, 0, 0) if float(np.asarray(pad, np.float64) @ [0.299, 0.587, 0.114]) > 140 else (255, 255, 255)
    canvas = Image.new("RGB", (width, image.height + strip_h), pad)
    canvas.paste(image.to_pil(), (0, strip_h))
    ImageDraw.Draw(canvas).text((4, 2), text, fill=ink)
    return RGBImage(np.asarray(canvas))


def with_caption(image: RenderedImage | RGBImage, lines: Sequence[str]) -> RenderedImage | RGBImage:
    """The image with a strip of text lines below it (statistics, notes), in the padding colour."""
    lines = [safe_text(line, 200) for line in lines if line]
    if not lines:
        return image
    strip_h = 4 + _LINE * len(lines)
    width = max(image.width, 8 + text_width(lines))
    if isinstance(image, RenderedImage):
        index = np.full((image.height + strip_h, width), PAD_INDEX, np.uint8)
        index[: image.height, : image.width] = image.index
        draw_texts(index, [((4, image.height + 2 + 12 * k), line) for k, line in enumerate(lines)], text_index_on_pad(image.palette))
        return RenderedImage(index, image.palette, channels=image.channels, grid=image.grid, value_range=image.value_range)
    from PIL import Image, ImageDraw

    pad = tuple(int(v) for v in image.rgb[0, 0]) if image.rgb.size else (255, 255, 255)
    ink = (0, 0, 0) if float(np.asarray(pad, np.float64) @ [0.299, 0.587, 0.114]) > 140 else (255, 255, 255)
    canvas = Image.new("RGB", (width, image.height + strip_h), pad)
    canvas.paste(image.to_pil(), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, image.height + 2 + 12 * k), line, fill=ink)
    return RGBImage(np.asarray(canvas))
