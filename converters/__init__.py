"""Framework → ONNX converters that keep the framework's layer names.

``convert(source, out)`` picks the converter from what it is given: a torch module, exported
program or TorchScript module (or a ``.pt2``/``.pt`` file, or a ``package.module:factory`` spec),
or a Keras model (or a ``.keras``/``.h5`` file or SavedModel folder). torch and tensorflow are
imported only when needed; the onnxviz engine never imports them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Conversion, ConversionError

__all__ = ["convert", "Conversion", "ConversionError", "framework_of"]

_TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".torchscript", ".jit")
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def framework_of(source: Any) -> str:
    """``"torch"``, ``"keras"`` or ``"factory"`` (a ``package.module:factory`` spec) for ``source``."""
    from .from_keras import is_keras_object
    from .from_torch import is_torch_object

    if is_torch_object(source):
        return "torch"
    if is_keras_object(source):
        return "keras"
    text = str(source)
    path = Path(text)
    if path.suffix.lower() in _TORCH_SUFFIXES:
        return "torch"
    if path.suffix.lower() in _KERAS_SUFFIXES or (path.is_dir() and (path / "saved_model.pb").is_file()):
        return "keras"
    if not path.exists() and ":" in text:
        return "factory"  # convert() imports it and looks at what the factory returns
    if not path.exists():
        raise ConversionError(f"model file not found: {path}")
    raise ConversionError(
        f"cannot tell the framework of {path}: use a .pt2/.pt (torch), .keras/.h5 (Keras) file, "
        "a SavedModel folder, or package.module:factory"
    )


def _is_model(obj: Any) -> bool:
    from .from_keras import is_keras_object
    from .from_torch import is_torch_object

    return is_torch_object(obj) or is_keras_object(obj)


def convert(
    source: Any,
    out: str | os.PathLike | None = None,
    *,
    example_inputs: Any = None,
    input_shape: Sequence[int] | None = None,
    framework: str | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    dynamic_size: bool = False,
) -> Conversion:
    """Convert a Keras or PyTorch model (object, file or factory spec) to ONNX with layer names."""
    kind = framework or framework_of(source)
    if kind == "factory":
        from .from_torch import _factory

        obj = _factory(str(source))
        if isinstance(obj, tuple) and obj:
            obj, example_inputs = obj[0], (obj[1] if example_inputs is None and len(obj) > 1 else example_inputs)
        if framework is None and not _is_model(obj):
            shown = repr(obj)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            raise ConversionError(
                f"the factory {source} returned {type(obj).__name__} {shown}, not a model: it must return a torch.nn.Module, "
                "a torch.export program or a keras.Model (or a (model, example_inputs) tuple)"
            )
        source, kind = obj, framework or framework_of(obj)
    if kind == "torch":
        from .from_torch import from_torch

        return from_torch(source, example_inputs, out, input_shape=input_shape, exporter=exporter, opset=opset, dynamic_size=dynamic_size)
    if kind == "keras":
        from .from_keras import from_keras

        return from_keras(source, out, input_shape=input_shape)
    raise ConversionError(f"unknown framework {kind!r}: use torch or keras")
