"""Captured activations: :class:`Capture`, an ordered mapping from layer name to
:class:`LayerCapture`, and :class:`VerifyReport`, the tapped model's outputs against the untapped
model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import onnx

from ..common import json_number
from ..graph.naming import display_label
from ..rendering import RenderedImage, render

__all__ = ["Capture", "LayerCapture", "VerifyReport", "compare_outputs"]


def _host(value: Any) -> np.ndarray:
    """A numpy array as is, or an onnxruntime OrtValue copied to the host (no copy for CPU values)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


@dataclass(frozen=True, eq=False)
class LayerCapture:
    """One tapped layer's activations and where they come from.

    ``data`` is a numpy array, or the onnxruntime ``OrtValue`` the run produced: on CUDA it stays in
    GPU memory until :attr:`array` is first read (rendering, saving, statistics), and only then is
    copied to the host, once. On CPU the array shares the OrtValue's memory (no copy either way).
    """

    name: str
    tensor: str
    node: str
    op: str
    through: tuple[str, ...]
    through_ops: tuple[str, ...]
    data: Any
    scale: np.ndarray | None = None  # set when ``array`` is quantized (QLinearConv, QDQ)
    zero_point: np.ndarray | None = None
    bn_folded: str | None = None  # BatchNorm folded into this conv by the exporter
    kind: str = "conv"  # the tapped layer's kind (conv, pool, dense, merge, ...; "tensor" for a named tensor)
    layer: str | None = None  # the framework layer the tensor belongs to

    @cached_property
    def array(self) -> np.ndarray:
        """The activations as a numpy array (copied from the device on first read)."""
        return _host(self.data)

    @property
    def on_host(self) -> bool:
        """Whether the activations are in host memory already (no copy pending)."""
        return isinstance(self.data, np.ndarray) or "array" in self.__dict__ or self.data.device_name() == "cpu"

    @property
    def label(self) -> str:
        """``layer1.0.conv1 (+bn1)`` when BatchNorm was folded in, else the name."""
        return display_label(self.name, self.bn_folded)

    @property
    def shape(self) -> tuple[int, ...]:
        """Without copying from the device."""
        return tuple(self.data.shape) if isinstance(self.data, np.ndarray) else tuple(self.data.shape())

    @property
    def dtype(self) -> np.dtype:
        if isinstance(self.data, np.ndarray):
            return self.data.dtype
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.data.element_type()))

    @property
    def nbytes(self) -> int:
        if isinstance(self.data, np.ndarray):
            return self.data.nbytes
        return math.prod(self.shape) * self.dtype.itemsize

    def values(self) -> np.ndarray:
        """Real values: ``array`` itself, or ``(array - zero_point) * scale`` when it is quantized."""
        if self.scale is None:
            return self.array
        scale = self.scale.astype(np.float32)
        zero = np.zeros((), np.float32) if self.zero_point is None else self.zero_point.astype(np.float32)
        if scale.ndim == 1 and self.array.ndim > 1:  # per-channel along axis 1
            shape = (1, -1) + (1,) * (self.array.ndim - 2)
            scale, zero = scale.reshape(shape), (zero.reshape(shape) if zero.ndim == 1 else zero)
        return (self.array.astype(np.float32) - zero) * scale

    def render(self, image: int = 0, **options: Any) -> RenderedImage:
        """Render image ``image``'s maps of this layer with :func:`onnxviz.render`."""
        return render(self, image=image, **options)

    def _repr_png_(self) -> bytes:
        return self.render().png_bytes()


@dataclass(frozen=True)
class VerifyReport:
    """Largest difference between the tapped and the untapped model's own outputs."""

    max_abs: float
    max_rel: float  # max |tapped - plain| / max |plain|, per output, worst output
    per_output: dict[str, tuple[float, float]]
    tolerance: float = 1e-5

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        """For manifests (JSON: NaN/Inf become null)."""
        return {"max_abs_diff": json_number(self.max_abs), "max_rel_diff": json_number(self.max_rel), "tolerance": self.tolerance, "ok": self.ok}

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"ABOVE tolerance {self.tolerance:g}"
        return f"model outputs tapped vs untapped: max abs diff {self.max_abs:.3g}, max rel diff {self.max_rel:.3g} ({verdict})"


def compare_outputs(names: Sequence[str], tapped: Sequence[np.ndarray], plain: Sequence[np.ndarray], tolerance: float = 1e-5) -> VerifyReport:
    """Largest absolute and relative difference per output. Equal values differ by 0, including equal
    infinities and NaN against NaN; a NaN or infinity against anything else differs by infinity.
    The relative difference is taken against the largest finite magnitude of the plain output."""
    per: dict[str, tuple[float, float]] = {}
    for name, a, b in zip(names, tapped, plain):
        a64 = np.asarray(a, dtype=np.float64)
        b64 = np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            per[name] = (float("inf"), float("inf"))
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
            diff = np.where(same, 0.0, np.abs(a64 - b64))
        diff[np.isnan(diff)] = np.inf  # NaN against a number
        max_abs = float(diff.max(initial=0.0))
        finite_b = np.abs(b64[np.isfinite(b64)])
        ref = float(finite_b.max(initial=0.0))
        rel = 0.0 if max_abs == 0 else (max_abs / ref if ref > 0 else float("inf"))
        per[name] = (max_abs, rel)
    max_abs = max((v[0] for v in per.values()), default=0.0)
    max_rel = max((v[1] for v in per.values()), default=0.0)
    return VerifyReport(max_abs=max_abs, max_rel=max_rel, per_output=per, tolerance=tolerance)


class Capture(Mapping[str, LayerCapture]):
    """Ordered mapping: layer name → :class:`LayerCapture`, plus the model's own outputs."""

    def __init__(
        self,
        layers: dict[str, LayerCapture],
        outputs: dict[str, np.ndarray],
        provider: str,
        feeds: dict[str, np.ndarray],
        verify: VerifyReport | None = None,
        plan: Any = None,
    ) -> None:
        self._layers = layers
        self.outputs = outputs
        self.provider = provider
        self.feeds = feeds
        self.verify = verify
        self.plan = plan  # budget.CapturePlan: one pass, or passes over layer groups streamed to disk
        self.images: list[Any] | None = None  # the image files / PIL images fed, when the capture was made from images

    def __getitem__(self, key: str) -> LayerCapture:
        return self._layers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"Capture({len(self)} layers, provider={self.provider!r})"
