"""Input preparation: images (via Pillow) or arrays → feeds matching the model's declared input.

The declared input shape decides the layout (NCHW or NHWC), the channel count (grayscale, RGB,
RGBA; palette and other modes are converted) and the size (fixed dims resize the image; dynamic
dims use the image's own size unless a size is given).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import onnx
from onnx import helper

from ..common import plural
from ..errors import InputError
from ..rendering.images import ImageSource, image_header, open_image

__all__ = [
    "InputSpec",
    "ImageSource",
    "Scale",
    "input_specs",
    "open_image",
    "images_to_array",
    "plan_images",
    "ImagePlan",
    "resolve_scale",
    "check_array",
    "SCALES",
]

Dim = Union[int, str, None]
Scale = Literal["unit", "raw", "imagenet"]

# mean/std applied after the preset's base range (unit: 0–1, raw: 0–255).
SCALES: dict[str, tuple[float, tuple[float, ...] | None, tuple[float, ...] | None]] = {
    "unit": (1 / 255, None, None),
    "raw": (1.0, None, None),
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class InputSpec:
    """A model input as declared in the graph, with the image layout read from it."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    layout: str | None  # "NCHW", "NHWC", or None when the input is not a 4-D image tensor

    @property
    def channels(self) -> int | None:
        if self.layout is None:
            return None
        c = self.shape[1] if self.layout == "NCHW" else self.shape[3]
        return c if isinstance(c, int) else None

    @property
    def hw(self) -> tuple[int | None, int | None]:
        if self.layout is None:
            return None, None
        h, w = (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])
        return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)

    @property
    def batch(self) -> int | None:
        b = self.shape[0] if self.shape else None
        return b if isinstance(b, int) else None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


def _dims(vi: onnx.ValueInfoProto) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _layout(shape: tuple[Dim, ...]) -> str | None:
    if len(shape) != 4:
        return None
    c_first, c_last = shape[1], shape[3]
    image_channels = (1, 2, 3, 4)
    first_ok = isinstance(c_first, int) and c_first in image_channels
    last_ok = isinstance(c_last, int) and c_last in image_channels
    if last_ok and not first_ok and (not isinstance(c_first, int) or c_first > 4):
        return "NHWC"
    return "NCHW"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs fed at run time, in graph order."""
    from ..graph.loading import real_inputs

    specs = []
    for vi in real_inputs(model.graph):
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(np.float32)
        shape = _dims(vi)
        specs.append(InputSpec(name=vi.name, shape=shape, dtype=dtype, layout=_layout(shape)))
    return specs


def _parse_per_channel(values: Sequence[float] | None, channels: int, what: str, preset: str | None = None) -> np.ndarray | None:
    """Per-channel ``values`` (one value is repeated); ``preset``: the --scale preset they come from."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if not np.isfinite(arr).all():
        raise InputError(f"--{what} must be finite numbers, got {', '.join(map(str, values))}")
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        if preset is not None:
            raise InputError(
                f"--scale {preset} normalises 3 channels (RGB mean and std), but the input has {plural(channels, 'channel')}: "
                f"use --scale unit or raw, with --mean/--std of {plural(channels, 'value')} if the model needs them"
            )
        raise InputError(f"--{what} has {plural(arr.size, 'value')} but the input has {plural(channels, 'channel')}")
    if what == "std" and np.any(arr == 0):
        raise InputError("--std must not contain zeros")
    return arr


@dataclass(frozen=True)
class ImagePlan:
    """What preparing ``images`` for an input will make, known from the files' headers alone."""

    sources: tuple[ImageSource, ...]
    sizes: tuple[tuple[int, int], ...]  # (w, h) of each image as oriented
    modes: tuple[str, ...]
    target: tuple[int, int]  # (h, w) fed
    channels: int

    def shape(self, spec: InputSpec) -> tuple[int, ...]:
        h, w = self.target
        n, c = len(self.sources), self.channels
        return (n, c, h, w) if spec.layout == "NCHW" else (n, h, w, c)

    formats: tuple[str | None, ...] = ()

    def at(self, target: tuple[int, int]) -> "ImagePlan":
        """The same images fed at another (h, w)."""
        return ImagePlan(self.sources, self.sizes, self.modes, target, self.channels, self.formats)

    def decode_bytes(self) -> int:
        """Peak bytes beyond the fed array while one image is decoded, resized and converted to float."""
        from .pixels import DEEP_MODES

        h, w = self.target
        formats = self.formats or (None,) * len(self.sizes)
        peak = 0
        for mode, size, fmt in zip(self.modes, self.sizes, formats):
            decoded = _decoded_bytes(mode, size, fmt, self.target)
            if mode in DEEP_MODES:  # float gray at full size, resized, then repeated to the channels
                work = size[0] * size[1] * 4 + h * w * 4 + h * w * self.channels * 4
            else:  # the resized 8-bit image, then its float copy
                work = (h * w * self.channels if size != (w, h) else 0) + h * w * self.channels * 4
            peak = max(peak, decoded + work)
        return peak


def _decoded_bytes(mode: str, size: tuple[int, int], fmt: str | None, target: tuple[int, int]) -> int:
    """What Pillow holds for one decoded image: a JPEG larger than the target decodes at 1/2, 1/4 or 1/8 scale."""
    from .pixels import pixel_bytes

    from ..rendering.images import DRAFT_ABOVE

    w, h = size
    if fmt == "JPEG" and pixel_bytes(mode, size) > DRAFT_ABOVE:
        for k in (8, 4, 2):
            if w // k >= target[1] and h // k >= target[0]:
                w, h = -(-w // k), -(-h // k)
                break
    return pixel_bytes(mode, (w, h))


def plan_images(spec: InputSpec, images: Sequence[ImageSource], *, size: tuple[int, int] | None = None) -> ImagePlan:
    """Check ``images`` against ``spec`` and work out the fed shape, without decoding them."""
    if spec.layout is None:
        raise InputError(
            f"input {spec.describe()} is not a 4-D image tensor; pass an array instead of images"
        )
    if not images:
        raise InputError("no images given")
    if spec.dtype == np.bool_:
        raise InputError(f"input {spec.describe()} is boolean: pass an array")
    channels = spec.channels or 3
    if channels not in (1, 3, 4):
        raise InputError(
            f"model input expects {channels} channels; images convert only to 1 (L), 3 (RGB) or 4 (RGBA): pass an array"
        )
    fixed_h, fixed_w = spec.hw
    if size is not None:
        h, w = size
        if h <= 0 or w <= 0:
            raise InputError(f"size must be positive, got {h}x{w}")
        if (fixed_h and fixed_h != h) or (fixed_w and fixed_w != w):
            raise InputError(f"input {spec.describe()} has a fixed size; size {h}x{w} conflicts with it")
    headers = [image_header(src) for src in images]
    if size is not None:
        target = size
    else:
        first_w, first_h = headers[0][0]
        target = (fixed_h or first_h, fixed_w or first_w)
    return ImagePlan(tuple(images), tuple(h[0] for h in headers), tuple(h[1] for h in headers), target, channels,
                     tuple(h[2] for h in headers))


def _open_for(source: ImageSource, target: tuple[int, int], channels: int) -> "PIL.Image.Image":  # noqa: F821
    """Decode ``source``; a JPEG larger than ``target`` is decoded at a reduced scale (Pillow's draft)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    return open_image(source, draft=(target[1], target[0]))


def resolve_scale(scale: str | None, spec: InputSpec) -> str:
    """The scale preset in force: the one asked for, else ``raw`` for integer inputs and ``unit`` otherwise."""
    if scale is None:
        return "raw" if np.issubdtype(spec.dtype, np.integer) else "unit"
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}: use {', '.join(SCALES)}")
    return scale


def _integer_range(spec: InputSpec, scale: str, factor: float, m: np.ndarray | None, s: np.ndarray | None) -> None:
    """Refuse an integer input whose dtype cannot hold the scaled pixel range (one line, what to pass)."""
    info = np.iinfo(spec.dtype)
    if scale != "raw":
        raise InputError(
            f"input {spec.describe()} takes integers: --scale {scale} would feed pixels of 0..{255 * factor:g} rounded to "
            "whole numbers; use --scale raw (0..255, the default for integer inputs)"
            + (" with --mean 128 to shift them into -128..127" if info.min < 0 and info.max < 255 else "")
        )
    lo = np.zeros(1) if m is None else -np.asarray(m, np.float64)
    hi = np.full(1, 255.0) if m is None else 255.0 - np.asarray(m, np.float64)
    if s is not None:
        lo, hi = lo / s, hi / s
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    lo_v, hi_v = float(np.round(lo.min())), float(np.round(hi.max()))
    if lo_v < info.min or hi_v > info.max:
        shift = " --mean 128 shifts 0..255 into -128..127;" if info.min < 0 and info.max < 255 and m is None else ""
        raise InputError(
            f"input {spec.describe()} holds {info.min}..{info.max}, but the scaled pixels span {lo_v:g}..{hi_v:g}:{shift} "
            "choose --mean/--std that fit, or pass an array"
        )


def images_to_array(
    spec: InputSpec,
    images: Sequence[ImageSource] | ImagePlan,
    *,
    size: tuple[int, int] | None = None,
    scale: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
) -> np.ndarray:
    """Decode, convert, resize, scale and stack images into one batch for ``spec``.

    Images of any bit depth are read in 8-bit units (:mod:`.pixels`). ``scale`` defaults to
    ``unit`` for float inputs and ``raw`` for integer inputs; integer inputs get the scaled pixels
    rounded to the nearest integer, and are refused when their dtype cannot hold them (an int8
    input needs ``mean=128`` to take 0..255 as -128..127). One image is decoded at a time, straight
    into the batch.
    """
    from .pixels import decode_pixels

    plan = images if isinstance(images, ImagePlan) else plan_images(spec, images, size=size)
    scale = resolve_scale(scale, spec)
    channels = plan.channels
    factor, base_mean, base_std = SCALES[scale]
    m = _parse_per_channel(mean if mean is not None else base_mean, channels, "mean", None if mean is not None else scale)
    s = _parse_per_channel(std if std is not None else base_std, channels, "std", None if std is not None else scale)
    integer_input = np.issubdtype(spec.dtype, np.integer)
    if integer_input:
        _integer_range(spec, scale, factor, m, s)
    nchw = spec.layout == "NCHW"
    batch = np.empty(plan.shape(spec), dtype=np.float32)
    for i, source in enumerate(plan.sources):
        img = _open_for(source, plan.target, channels)
        name = str(source) if isinstance(source, (str, os.PathLike)) else "(image object)"
        pixels = decode_pixels(img, channels, plan.target, scale=scale, name=name).pixels
        del img
        if bgr and channels >= 3:
            pixels[..., :3] = pixels[..., 2::-1].copy()
        batch[i] = pixels.transpose(2, 0, 1) if nchw else pixels
        del pixels
    axis = (1, -1, 1, 1) if nchw else (1, 1, 1, -1)
    if factor != 1.0:
        batch *= np.float32(factor)
    if m is not None:
        batch -= m.reshape(axis)
    if s is not None:
        batch /= s.reshape(axis)
    if integer_input:
        info = np.iinfo(spec.dtype)
        np.rint(batch, out=batch)
        if batch.size and (batch.min() < info.min or batch.max() > info.max):  # float images: values as they are
            raise InputError(f"input {spec.describe()} holds {info.min}..{info.max}, but the scaled pixels span "
                             f"{batch.min():g}..{batch.max():g}: choose --mean/--std that fit, or pass an array")
    return batch.astype(spec.dtype, copy=False)


def check_array(spec: InputSpec, array: np.ndarray) -> np.ndarray:
    """Validate a user array against ``spec`` (adding a batch axis if it is missing)."""
    arr = np.asarray(array)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"input '{spec.name}' got a non-numeric array ({arr.dtype})")
    if spec.shape and arr.ndim == len(spec.shape) - 1:
        arr = arr[None]
    if spec.shape and arr.ndim != len(spec.shape):
        raise InputError(f"input {spec.describe()} expects {len(spec.shape)} dims, got shape {tuple(array.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
        if axis == 0 and want == 1:
            continue  # a batch fixed at 1 is run one sample at a time
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input {spec.describe()} expects size {want} on axis {axis}, got shape {tuple(arr.shape)}"
            )
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"input '{spec.name}' contains NaN or Inf values")
    return arr.astype(spec.dtype, copy=False)
