"""onnxviz: see what a CNN sees.

Every Conv feature map of any ONNX CNN, captured in one onnxruntime pass and rendered as image
grids. The engine imports no deep-learning framework. The subpackages follow the pipeline:
``graph`` (load, understand and rewrite the ONNX graph) → ``run`` (inputs, sessions, capture) →
``rendering`` (the shared renderer) → ``report`` (files, manifests, HTML) → ``cli``; and
``converters`` (Keras / PyTorch → ONNX, the only code that imports a framework, lazily).

>>> import onnxviz
>>> model = onnxviz.load("model.onnx", tap="activation")      # doctest: +SKIP
>>> capture = model.capture(["cat.png"])                       # doctest: +SKIP
>>> onnxviz.render(capture["layer1.0.conv1"]).save("l1.png")   # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .errors import (
    GradientError, InputError, LayerSelectionError, ModelLoadError, OnnxvizError, ProviderError, UnsupportedOpError,
)

# Everything else is imported on first use (PEP 562): ``import onnxviz`` stays cheap, and the CLI
# installs its signal handlers before numpy, onnx and onnxruntime load (tests/test_signals.py).
_LAZY = {
    "Tap": ".graph.taps", "TapPlan": ".graph.taps", "plan_taps": ".graph.taps",
    "Layer": ".graph.layers", "LayerGraph": ".graph.layers", "group_layers": ".graph.layers",
    "RenderedImage": ".rendering", "overlay": ".rendering", "reduce_maps": ".rendering", "render": ".rendering",
    "filter_banks": ".rendering.filters", "render_filters": ".rendering.filters",
    "Capture": ".run.capture", "LayerCapture": ".run.capture", "VerifyReport": ".run.capture",
    "Model": ".run.model", "load": ".run.model",
    "cam": ".explain.cam", "CamResult": ".explain.cam", "maximize": ".explain.maximize", "DreamResult": ".explain.maximize",
    "write_cam": ".report.cams", "write_dream": ".report.dream", "dataset": ".datasets", "DatasetStats": ".datasets",
    "gradients": ".explain.program", "GradientProgram": ".explain.program", "GradResult": ".explain.program",
}  # fmt: skip

if TYPE_CHECKING:
    from .datasets import DatasetStats, dataset
    from .explain.cam import CamResult, cam
    from .explain.maximize import DreamResult, maximize
    from .explain.program import GradientProgram, GradResult, gradients
    from .graph.layers import Layer, LayerGraph, group_layers
    from .graph.taps import Tap, TapPlan, plan_taps
    from .rendering import RenderedImage, overlay, reduce_maps, render
    from .rendering.filters import filter_banks, render_filters
    from .report.cams import write_cam
    from .report.dream import write_dream
    from .run.capture import Capture, LayerCapture, VerifyReport
    from .run.model import Model, load


def __getattr__(name: str) -> Any:
    """The public API, imported on first use; subpackages and modules (``onnxviz.graph``) too."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'onnxviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "load",
    "cam",
    "CamResult",
    "write_cam",
    "maximize",
    "DreamResult",
    "write_dream",
    "dataset",
    "DatasetStats",
    "render",
    "overlay",
    "reduce_maps",
    "filter_banks",
    "render_filters",
    "Model",
    "Capture",
    "LayerCapture",
    "VerifyReport",
    "RenderedImage",
    "Tap",
    "TapPlan",
    "plan_taps",
    "Layer",
    "LayerGraph",
    "group_layers",
    "OnnxvizError",
    "ModelLoadError",
    "InputError",
    "LayerSelectionError",
    "ProviderError",
    "GradientError",
    "UnsupportedOpError",
    "gradients",
    "GradientProgram",
    "GradResult",
]
