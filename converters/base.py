"""What every converter shares: the result type, errors, and writing layer names into the file.

Layer names go into each Conv node's ``metadata_props`` (``onnxviz.layer``, and
``onnxviz.bn_folded`` where the exporter folded a BatchNorm into the conv), so the engine, which
imports no framework, reads them back from any file a converter wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnxviz.errors import OnnxvizError
from onnxviz.graph.naming import BN_FOLDED_KEY, FRAMEWORK_KEY, LAYER_KEY
from onnxviz.graph.save import save_model_atomic

__all__ = ["Conversion", "ConversionError", "annotate", "save", "CONV_OPS", "TORCH_INSTALL", "KERAS_INSTALL", "FRAMEWORK_INSTALL"]

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
_TWO_GB = 2 * 1024**3 - 64 * 1024**2


# The CPU build of PyTorch from PyTorch's own index: a plain `pip install torch` pulls the multi-GB
# CUDA build on most machines.
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install 'onnxviz[torch]'"
KERAS_INSTALL = "pip install 'onnxviz[keras]'"
FRAMEWORK_INSTALL = {"torch": TORCH_INSTALL, "torchvision": TORCH_INSTALL, "onnxscript": TORCH_INSTALL,
                     "tensorflow": KERAS_INSTALL, "keras": KERAS_INSTALL, "tf2onnx": KERAS_INSTALL, "tf_keras": KERAS_INSTALL}


class ConversionError(OnnxvizError):
    """A framework model could not be turned into ONNX (one line, says what to try)."""


@dataclass
class Conversion:
    """A converted model and how it was made."""

    model: onnx.ModelProto
    exporter: str  # e.g. "torch.onnx (dynamo)", "torch.onnx (torchscript)", "keras export (tf2onnx)"
    framework: str  # "torch" or "keras"
    layers: dict[str, str] = field(default_factory=dict)  # ONNX Conv node name → framework layer name
    bn_folded: dict[str, str] = field(default_factory=dict)  # layer name → folded BatchNorm layer
    unmatched: list[str] = field(default_factory=list)  # Conv nodes with no framework name found
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    def summary(self) -> str:
        n_conv = len(self.layers) + len(self.unmatched)
        text = f"{self.framework} → ONNX with {self.exporter}: {len(self.layers)}/{n_conv} Conv layers named"
        if self.bn_folded:
            text += f", {len(self.bn_folded)} with BatchNorm folded in"
        return text


def _set_meta(props, key: str, value: str) -> None:
    for prop in props:
        if prop.key == key:
            prop.value = value
            return
    entry = props.add()
    entry.key, entry.value = key, value


def annotate(conversion: Conversion) -> onnx.ModelProto:
    """Write the layer names (and folded BatchNorms) into the Conv nodes' metadata."""
    model = conversion.model
    for node in model.graph.node:
        layer = conversion.layers.get(node.name)
        if layer is None:
            continue
        _set_meta(node.metadata_props, LAYER_KEY, layer)
        _set_meta(node.metadata_props, BN_FOLDED_KEY, conversion.bn_folded.get(layer, ""))
    _set_meta(model.metadata_props, FRAMEWORK_KEY, conversion.framework)
    if model.ir_version < 10:
        # Node metadata_props arrived with IR version 10 (onnx 1.16); onnxruntime reads IR 10.
        model.ir_version = 10
    return model


def save(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save atomically: one file, or ``OUT.onnx`` + ``OUT.onnx.data`` above protobuf's 2 GB."""
    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ConversionError(f"output folder does not exist: {parent}")
    save_model_atomic(model, path, external=model.ByteSize() > _TWO_GB)
    return path
