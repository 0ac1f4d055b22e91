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

from .errors import (
    GradientError, InputError, LayerSelectionError, ModelLoadError, OnnxvizError, ProviderError, UnsupportedOpError,
)
from .graph.layers import Layer, LayerGraph, group_layers
from .graph.taps import Tap, TapPlan, plan_taps
from .rendering import RenderedImage, overlay, reduce_maps, render
from .rendering.filters import filter_banks, render_filters
from .run.capture import Capture, LayerCapture, VerifyReport
from .run.model import Model, load

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

_EXPLAIN = {"gradients", "GradientProgram", "GradResult"}
_LAZY = {"cam": "explain.cam", "CamResult": "explain.cam", "maximize": "explain.maximize", "DreamResult": "explain.maximize",
         "write_cam": "report.cams", "write_dream": "report.dream", "dataset": "datasets", "DatasetStats": "datasets"}


def __getattr__(name: str):
    """The explain stage loads on first use (keeps ``import onnxviz`` and the CLI's start fast)."""
    if name in _EXPLAIN:
        from .explain import program as module

        return getattr(module, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'onnxviz' has no attribute {name!r}")
