"""Input preparation: images (via Pillow) or arrays → feeds matching the model's declared input.

The declared input shape decides the layout (NCHW or NHWC), the channel count (grayscale, RGB,
RGBA; palette and other modes are converted) and the size (fixed dims resize the image; dynamic
dims use the image's own size unless a size is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError
from ..rendering.images import ImageSource, open_image

__all__ = [
    "InputSpec",
    "ImageSource",
    "Scale",
    "input_specs",
    "open_image",
    "images_to_array",
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
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


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


def _convert(img: "PIL.Image.Image", channels: int) -> "PIL.Image.Image":  # noqa: F821
    mode = _MODES.get(channels)
    if mode is None:
        raise InputError(
            f"model input expects {channels} channels; images convert only to 1 (L), 3 (RGB) or 4 (RGBA): pass an array"
        )
    if img.mode == mode:
        return img
    if img.mode in ("P", "PA", "LA", "RGBA", "La") and mode in ("RGB", "L"):
        # Composite transparency onto white rather than letting transparent pixels turn black.
        from PIL import Image

        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def _parse_per_channel(values: Sequence[float] | None, channels: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise InputError(f"{what} has {arr.size} values but the input has {channels} channels")
    if what == "std" and np.any(arr == 0):
        raise InputError("std must not contain zeros")
    return arr


def images_to_array(
    spec: InputSpec,
    images: Sequence[ImageSource],
    *,
    size: tuple[int, int] | None = None,
    scale: str = "unit",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
) -> np.ndarray:
    """Decode, convert, resize, scale and stack images into one batch for ``spec``."""
    if spec.layout is None:
        raise InputError(
            f"input {spec.describe()} is not a 4-D image tensor; pass an array instead of images"
        )
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}: use {', '.join(SCALES)}")
    if not images:
        raise InputError("no images given")
    channels = spec.channels or 3
    fixed_h, fixed_w = spec.hw
    if size is not None:
        h, w = size
        if h <= 0 or w <= 0:
            raise InputError(f"size must be positive, got {h}x{w}")
        if (fixed_h and fixed_h != h) or (fixed_w and fixed_w != w):
            raise InputError(f"input {spec.describe()} has a fixed size; size {h}x{w} conflicts with it")
    from PIL import Image

    decoded = [_convert(open_image(src), channels) for src in images]
    if size is not None:
        target = size
    else:
        first_w, first_h = decoded[0].size
        target = (fixed_h or first_h, fixed_w or first_w)
    factor, base_mean, base_std = SCALES[scale]
    m = _parse_per_channel(mean if mean is not None else base_mean, channels, "mean")
    s = _parse_per_channel(std if std is not None else base_std, channels, "std")
    integer_input = np.issubdtype(spec.dtype, np.integer)
    batch = np.empty((len(decoded), target[0], target[1], channels), dtype=np.float32)
    for i, img in enumerate(decoded):
        if img.size != (target[1], target[0]):
            img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32)
        batch[i] = pixels.reshape(target[0], target[1], channels)
    if bgr and channels >= 3:
        batch[..., :3] = batch[..., 2::-1].copy()
    if not integer_input:
        if factor != 1.0:
            batch *= factor
        if m is not None:
            batch -= m
        if s is not None:
            batch /= s
    if spec.layout == "NCHW":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
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
