"""Pixels of any picture Pillow reads, as the model's channels, without clipping or wrapping.

Every image becomes an H×W×C float32 array in **8-bit units** (0–255), whatever its bit depth, so
``--scale unit|raw|imagenet`` mean the same for all of them:

- 8-bit modes (L, P, RGB, RGBA, CMYK, YCbCr, LA, PA…) and 1-bit images (0 → 0, 1 → 255): through
  Pillow's conversions, transparency composited onto white;
- 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): value × 255 / 65535, so a 16-bit
  PNG keeps its 65,536 levels as fractions instead of being clipped at 255 (Pillow's own
  conversion to 8 bits clips: 99 % of a full-range image became 255). 16-bit RGB files are read
  by Pillow as 8-bit RGB (the high byte of each sample);
- 32-bit integer grayscale (``I``): read as 16-bit when its values lie within 0–65535 (how 16-bit
  files often arrive), refused otherwise;
- 32-bit float grayscale (``F``, float TIFF): the values have no fixed range, so they are taken as
  they are, only with ``--scale raw`` (then ``--mean``/``--std`` apply); other scales, NaN and
  ±Inf are refused.

Resizing happens on these values (bilinear, per channel in float for deep images), so nothing is
rounded to 8 bits on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["Decoded", "decode_pixels", "DEEP_MODES", "pixel_bytes"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N", "I;16BS", "I;16LS", "I;16S")
DEEP_MODES = (*SIXTEEN, "I", "F")


@dataclass(frozen=True)
class Decoded:
    """An image's pixels in 8-bit units (H×W×C float32), and what they were read from."""

    pixels: np.ndarray
    depth: str  # "8-bit", "1-bit", "16-bit", "32-bit integer", "float"


def pixel_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes Pillow holds for a decoded image of ``mode`` and ``size`` (w, h)."""
    w, h = size
    if mode in DEEP_MODES:
        return w * h * (2 if mode in SIXTEEN else 4)
    bands = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2}.get(mode, 4)
    return w * h * bands


def _channels_of_gray(gray: np.ndarray, channels: int) -> np.ndarray:
    """An H×W gray array as ``channels`` channels (RGBA: opaque)."""
    if channels == 1:
        return gray[..., None]
    out = np.repeat(gray[..., None], channels, axis=2)
    if channels == 4:
        out[..., 3] = 255.0
    return out


def _convert_8bit(img, channels: int):
    from PIL import Image

    mode = _MODES[channels]
    if img.mode == mode:
        return img
    try:
        if img.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") and mode in ("RGB", "L"):
            # Composite transparency onto white rather than letting transparent pixels turn black.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert(mode)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot convert a {img.mode} image to {mode}: {exc}") from None


def _resize(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an H×W×C float32 array, channel by channel in float (no 8-bit rounding)."""
    from PIL import Image

    h, w = hw
    if pixels.shape[:2] == (h, w):
        return pixels
    out = np.empty((h, w, pixels.shape[2]), np.float32)
    for c in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
        out[..., c] = np.asarray(plane.resize((w, h), Image.Resampling.BILINEAR))
    return out


def decode_pixels(img, channels: int, hw: tuple[int, int], *, scale: str, name: str) -> Decoded:
    """``img`` (a loaded Pillow image) as H×W×``channels`` float32 in 8-bit units, resized to ``hw``.

    ``scale`` is the pixel scaling asked for (float images only take ``raw``); ``name`` names the
    image in error messages.
    """
    from PIL import Image

    if channels not in _MODES:
        raise InputError(
            f"model input expects {channels} channels; images convert only to 1 (L), 3 (RGB) or 4 (RGBA): pass an array"
        )
    h, w = hw
    mode = img.mode
    if mode in DEEP_MODES:
        gray = np.asarray(img)
        if mode == "F":
            gray = gray.astype(np.float32, copy=False)
            if not np.isfinite(gray).all():
                raise InputError(f"float image {name} contains NaN or Inf values")
            if scale != "raw":
                lo, hi = (float(gray.min()), float(gray.max())) if gray.size else (0.0, 0.0)
                raise InputError(
                    f"float image {name} (values {lo:.4g}..{hi:.4g}) has no fixed range to scale from: "
                    "use --scale raw to feed its values as they are (with --mean/--std if the model needs them)"
                )
            depth = "float"
        elif mode == "I":
            lo, hi = (int(gray.min()), int(gray.max())) if gray.size else (0, 0)
            if lo < 0 or hi > 65535:
                raise InputError(
                    f"32-bit integer image {name} has values {lo}..{hi}, outside 0..65535: onnxviz reads such "
                    "images as 16-bit; convert it, or pass an array"
                )
            gray = gray.astype(np.float32) * np.float32(255.0 / 65535.0)
            depth = "32-bit integer"
        else:
            gray = gray.astype(np.float32) * np.float32(255.0 / 65535.0)
            depth = "16-bit"
        return Decoded(_channels_of_gray(_resize(gray[..., None], hw)[..., 0], channels), depth)
    depth = "1-bit" if mode == "1" else "8-bit"
    img = _convert_8bit(img, channels)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.float32).reshape(h, w, channels)
    return Decoded(pixels, depth)


def picture(img, hw: tuple[int, int]) -> np.ndarray:
    """``img`` (a loaded Pillow image) as an H×W×3 uint8 picture at ``hw``, read as the model is fed:
    16-bit and 32-bit images at full depth (not clipped), float images min-max scaled."""
    decoded = decode_pixels(img, 3, hw, scale="raw", name="image")
    pixels = decoded.pixels
    if decoded.depth == "float":
        lo, hi = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        pixels = (pixels - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
