"""How each captured layer is shown, shared by the writers and the report: maps, bar chart or strip
of cells (any rank from 0-D to 5-D and beyond), a title, the sum of the maps at the input's size,
and a classifier's top-k with class names.

- A layer is **per image** when it has 2 dims or more and its first is the batch (the number of
  images fed); a tensor without one (a scalar, a shape, a weight-like tensor tapped with ``--tensor``) is drawn
  once, as a plain array: 0-D/1-D as a vector, 2-D as one map, 3-D as C maps, 4-D+ its first item.
- Non-numeric (string) and empty tensors are listed with a note instead of an image.
- **Top-k**: a vector layer that is one of the model's own outputs, or whose length equals the
  number of class names given, shows its top ``k`` (default 5) under the image; the manifest's
  ``predictions`` lists the top-k of every model output that is a vector per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..rendering import as_vector, render, render_sum, top_k, with_title
from ..rendering.vectors import vector_layout

if TYPE_CHECKING:
    from ..rendering.images import RenderedImage
    from ..run.capture import Capture, LayerCapture

__all__ = ["n_images_of", "LayerView", "layer_view", "predictions", "check_labels", "vanished_layers", "TOP_K"]

TOP_K = 5


def n_images_of(capture: "Capture") -> int:
    """How many images were fed (the batch of the first input that has one)."""
    for arr in capture.feeds.values():
        if getattr(arr, "ndim", 0) >= 1:
            return int(arr.shape[0])
    return 1


class LayerView:
    """How one captured layer is drawn: ``view`` is maps, bars, strip, or None (with ``note``)."""

    def __init__(self, layer: "LayerCapture", n_images: int, *, is_output: bool, class_names: Sequence[str] | None) -> None:
        self.layer = layer
        shape = tuple(layer.shape)
        self.per_image = len(shape) >= 2 and shape[0] == n_images
        self.images = n_images if self.per_image else 1
        self.note: str | None = None
        self.view: str | None = None
        dtype = layer.dtype
        if dtype.kind not in "biuf":
            self.note = f"not drawn: {dtype} values are not numeric"
        elif int(np.prod(shape)) == 0:
            self.note = f"not drawn: empty tensor of shape {list(shape)}"
        else:
            vec = as_vector(self._source(), 0)
            self.view = "maps" if vec is None else vector_layout(vec.size)
        n_values = None if self.view in (None, "maps") else as_vector(self._source(), 0).size
        names_fit = class_names is not None and n_values == len(class_names)
        self.top = TOP_K if self.view in ("bars", "strip") and n_values and n_values >= 2 and (is_output or names_fit) else 0
        self.class_names = class_names if names_fit else None

    def _source(self) -> Any:
        return self.layer if self.per_image else self.layer.values()

    def values(self, image: int) -> np.ndarray | None:
        """Image ``image``'s vector (vector views only)."""
        if self.view not in ("bars", "strip"):
            return None
        real = self.layer.values()  # dequantized where the layer is quantized
        return as_vector(_Values(real), image) if self.per_image else as_vector(real, 0)

    def render(self, image: int, options: dict[str, Any], *, title: bool = False) -> "RenderedImage":
        img = render(self._source(), image=image if self.per_image else 0, top=self.top, class_names=self.class_names, **options)
        return with_title(img, self.title()) if title else img

    def title(self) -> str:
        return f"{self.layer.label}  ({'x'.join(str(d) for d in self.layer.shape)})"

    def sum_image(self, image: int, size: tuple[int, int] | None, cmap: str | None, *, title: bool = False) -> "RenderedImage | None":
        """The sum of the maps at ``size`` (maps views of 4-D layers only; None otherwise)."""
        if self.view != "maps" or len(self.layer.shape) != 4:
            return None
        img = render_sum(self.layer if self.per_image else self.layer.values()[None], size=size, cmap=cmap, image=image if self.per_image else 0)
        return with_title(img, f"sum of the maps of {self.layer.label}") if title else img

    def tops(self) -> list[list[dict[str, Any]]]:
        """Top-k per image (empty when this layer shows none)."""
        if not self.top:
            return []
        return [top_k(self.values(k), self.top, self.class_names) for k in range(self.images)]

    def manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"view": self.view, "per_image": self.per_image}
        if self.note:
            entry["note"] = self.note
        tops = self.tops()
        if tops:
            entry["top"], entry["tops"] = tops[0], tops
        return entry


class _Values:
    """Quantized per-image captures: real values with the capture's batch-first reading."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def layer_view(layer: "LayerCapture", capture: "Capture", class_names: Sequence[str] | None = None) -> LayerView:
    return LayerView(layer, n_images_of(capture), is_output=layer.tensor in capture.outputs, class_names=class_names)


def _vector_outputs(capture: "Capture") -> dict[str, int]:
    """Model outputs that hold one vector (of at least 2 values) per image: name → length."""
    n = n_images_of(capture)
    found = {}
    for name, arr in capture.outputs.items():
        a = np.asarray(arr)
        if a.ndim >= 2 and a.shape[0] == n and a.dtype.kind in "biuf" and a.size:
            vec = as_vector(_Values(a), 0)
            if vec is not None and vec.size >= 2:
                found[name] = int(vec.size)
    return found


def check_labels(capture: "Capture", class_names: Sequence[str] | None) -> None:
    """Refuse class names that fit no model output (one line naming the sizes)."""
    if class_names is None:
        return
    sizes = _vector_outputs(capture)
    if len(class_names) not in sizes.values():
        shapes = ", ".join(f"{name} {list(np.asarray(capture.outputs[name]).shape)}" for name in capture.outputs) or "none"
        raise InputError(f"the labels file has {len(class_names)} class names, but no model output has {len(class_names)} "
                         f"values per image (outputs: {shapes})")


def predictions(capture: "Capture", class_names: Sequence[str] | None = None, k: int = TOP_K) -> list[dict[str, Any]]:
    """The top-``k`` of every model output that is a vector per image, per image."""
    out = []
    for name, size in _vector_outputs(capture).items():
        arr = _Values(np.asarray(capture.outputs[name]))
        names = class_names if class_names is not None and len(class_names) == size else None
        for image in range(n_images_of(capture)):
            out.append({"output": name, "image": image, "top": top_k(as_vector(arr, image), k, names)})
    return out


def vanished_layers(model: Any) -> list[dict[str, Any]]:
    """The framework's layers that have no node in the ONNX graph (a Dropout, a padding folded
    into the next conv's pads, a BatchNorm folded into the conv before it), with what became of them."""
    return [{"name": layer.name, "class": layer.framework_class.rsplit(".", 1)[-1] if layer.framework_class else None,
             "kind": layer.kind, "note": layer.note} for layer in model.layer_graph if layer.vanished]
