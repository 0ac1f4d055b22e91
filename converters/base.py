"""What every converter shares: the result type, errors, and writing layer names into the file.

Every node's ``metadata_props`` get its framework layer (``onnxviz.layer``) and the layer's kind
(``onnxviz.kind``); Conv nodes also ``onnxviz.bn_folded`` where the exporter folded a BatchNorm
into the conv. The model's ``metadata_props`` get the framework (``onnxviz.framework``), its layer
list with per-layer parameter counts (``onnxviz.layers``, JSON) and its parameter total
(``onnxviz.params``), so the engine, which imports no framework, reads all of it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxviz.errors import OnnxvizError
from onnxviz.graph.layers import CONV_KEY, KIND_KEY, LAYERS_KEY, PARAMS_KEY, group_layers, kind_of_class
from onnxviz.graph.naming import BN_FOLDED_KEY, FRAMEWORK_KEY, LAYER_KEY, unique_names
from onnxviz.graph.save import save_model_atomic

__all__ = ["Conversion", "ConversionError", "annotate", "save", "CONV_OPS", "TORCH_INSTALL", "KERAS_INSTALL", "FRAMEWORK_INSTALL", "kind_of_class"]

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


def annotate(
    conversion: Conversion,
    *,
    names: Mapping[str, str] | None = None,
    rename: Callable[[str], str] | None = None,
    records: Sequence[dict[str, Any]] | None = None,
    total_params: int | None = None,
) -> onnx.ModelProto:
    """Tag every node with its framework layer, and the model with the framework's layer list.

    The nodes are grouped by :func:`onnxviz.graph.layers.group_layers` (``names``: node → layer
    the converter matched itself) before any tag is written; ``rename`` maps a group's name to the
    framework's (a TorchScript ``relu_1`` to the module's second call ``relu:2``). Each node gets
    ``onnxviz.layer`` and ``onnxviz.kind``; each Conv its folded BatchNorm, and its own name
    (``onnxviz.conv``) where one layer holds two convs. ``records``: the framework's layers in its
    order (``name``, ``class``, ``kind``, ``params``, optional ``note``), vanished ones included;
    ``total_params``: the framework's own count.
    """
    model = conversion.model
    graph = group_layers(model, names)
    final = unique_names((rename(layer.name) if rename else layer.name) for layer in graph)
    recorded_kind = {r["name"]: r.get("kind") for r in records or ()}
    nodes = {node.name or (node.output[0] if node.output else ""): node for node in model.graph.node}
    for layer, name in zip(graph, final):
        kind = recorded_kind.get(name) or layer.kind
        members = [nodes[n] for n in layer.nodes if n in nodes]
        convs = [node for node in members if node.op_type in CONV_OPS]
        for node in members:
            _set_meta(node.metadata_props, LAYER_KEY, name)
            _set_meta(node.metadata_props, KIND_KEY, kind)
        for node in convs:
            conv = conversion.layers.get(node.name)
            if conv is not None and len(convs) > 1 and conv != name:
                _set_meta(node.metadata_props, CONV_KEY, conv)
            _set_meta(node.metadata_props, BN_FOLDED_KEY, conversion.bn_folded.get(conv or "", ""))
    _set_meta(model.metadata_props, FRAMEWORK_KEY, conversion.framework)
    if records is not None:
        _set_meta(model.metadata_props, LAYERS_KEY, json.dumps(list(records), separators=(",", ":")))
    if total_params is not None:
        _set_meta(model.metadata_props, PARAMS_KEY, str(int(total_params)))
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
