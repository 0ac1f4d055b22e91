"""Keras → ONNX, keeping every Conv's layer name.

Keras 3 (TF ≥ 2.16): ``model.export(path, format="onnx")`` (tf2onnx underneath), which handles
Sequential, functional and nested models; a model that was never called is called once on zeros
first. Legacy tf.keras models (where installed) go through ``tf2onnx.convert.from_keras``, a
SavedModel folder through tf2onnx's converter. Sources: a model object or a ``.keras``/``.h5``
file or SavedModel folder.

Names: tf2onnx names each node after its TensorFlow scope (``outer_1/inner_1/c1_1/convolution``,
Keras 3 adding ``_N`` to every scope); each ONNX node is matched to the layer whose path
(``inner/c1``) its scope spells (or its outputs' or weights' scope, for nodes tf2onnx renamed,
``Conv__42``), and the rest joins the layer it serves (graph/layers.py). A SeparableConv2D's two
Convs are the layer ``sep``, and its conv taps ``sep.depthwise`` and ``sep.pointwise``. The
Keras layer list with ``count_params()`` per layer goes into the file (records.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxviz.safefs import temp_scratch

from .base import CONV_OPS, KERAS_INSTALL, Conversion, ConversionError, annotate, save
from .records import keras_records

__all__ = ["from_keras", "load_keras_source", "is_keras_object", "conv_layer_paths"]

_CONV_CLASSES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                 "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
                 "Convolution1D", "Convolution2D", "Convolution3D")  # fmt: skip


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError:
        raise ConversionError(f"Keras is not installed: {KERAS_INSTALL}") from None
    return keras


def is_keras_object(obj: Any) -> bool:
    """True for Keras models (checked without importing keras if it is not loaded)."""
    for name in ("keras", "tf_keras"):
        module = sys.modules.get(name)
        if module is not None and isinstance(obj, module.Model):
            return True
    return False


def load_keras_source(source: Any) -> Any:
    """A Keras model from an object or a ``.keras``/``.h5`` path (SavedModel folders: see from_keras)."""
    if is_keras_object(source):
        return source
    keras = _keras()
    path = Path(str(source))
    if not path.exists():
        raise ConversionError(f"model file not found: {path}")
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConversionError(f"cannot load {path} as a Keras model: {' '.join(str(exc).split())[:300]}") from None


def conv_layer_paths(model: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(path, class name) of every conv layer, nested models included: ``inner/c1``."""
    found: list[tuple[str, str]] = []
    for layer in getattr(model, "layers", []):
        path = f"{prefix}{layer.name}"
        cls = type(layer).__name__
        if cls in _CONV_CLASSES:
            found.append((path, cls))
        elif hasattr(layer, "layers"):
            found.extend(conv_layer_paths(layer, prefix=path + "/"))
    return found


def _scope_pattern(path: str, suffixed: bool) -> re.Pattern[str]:
    # Keras 3 traces every scope once more, so layer ``conv2d`` runs under ``conv2d_1`` and layer
    # ``conv2d_1`` under ``conv2d_1_1``; legacy tf.keras scopes are the bare names.
    suffix = r"_\d+" if suffixed else ""
    parts = "/".join(re.escape(part) + suffix for part in path.split("/"))
    return re.compile(rf"^{parts}/")


def _match(proto: onnx.ModelProto, layers: list[tuple[str, str]], model_name: str) -> tuple[dict[str, str], list[str]]:
    convs = [node for node in proto.graph.node if node.op_type in CONV_OPS]
    firsts = {node.name.split("/", 1)[0] for node in convs if "/" in node.name}
    suffixed = model_name not in firsts and any(re.fullmatch(re.escape(model_name) + r"_\d+", f) for f in firsts)
    patterns = sorted(((path, cls, _scope_pattern(path, suffixed)) for path, cls in layers), key=lambda p: -p[0].count("/"))
    names: dict[str, str] = {}
    unmatched: list[str] = []
    for node in convs:
        scope = node.name.split("/", 1)[1] if "/" in node.name else node.name  # drop the model's own scope
        hit = next(((path, cls) for path, cls, pattern in patterns if pattern.match(scope)), None)
        if hit is None:
            unmatched.append(node.name)
            continue
        path, cls = hit
        name = path
        if cls.startswith("SeparableConv"):
            name = f"{path}.depthwise" if node.name.rstrip("/").endswith("depthwise") else f"{path}.pointwise"
        names[node.name] = name
    return names, unmatched


def _layer_names(proto: onnx.ModelProto, paths: list[str], model_name: str) -> dict[str, str]:
    """Every node tf2onnx scoped under a Keras layer → that layer's path. A node tf2onnx renamed
    (``Conv__42``) is placed by the scope of its outputs or weights; others are left to the engine."""
    firsts = {node.name.split("/", 1)[0] for node in proto.graph.node if "/" in node.name}
    suffixed = model_name not in firsts and any(re.fullmatch(re.escape(model_name) + r"_\d+", f) for f in firsts)
    patterns = sorted(((path, _scope_pattern(path, suffixed)) for path in paths), key=lambda p: -p[0].count("/"))
    inits = {i.name for i in proto.graph.initializer}
    names: dict[str, str] = {}
    for node in proto.graph.node:
        candidates = [node.name, *node.output, *(i for i in node.input if i in inits)]
        for text in candidates:
            parts = [p for p in text.split("/") if p and not p.startswith(("StatefulPartitionedCall", "PartitionedCall"))]
            if len(parts) < 3:
                continue
            scope = "/".join(parts[1:])  # drop the model's own scope
            hit = next((path for path, pattern in patterns if pattern.match(scope)), None)
            if hit is not None:
                names[node.name or node.output[0]] = hit
                break
    return names


def _saved_model_names(proto: onnx.ModelProto) -> dict[str, str]:
    """Layer paths from a SavedModel's scopes: ``StatefulPartitionedCall/lenet5_1/C1_1/convolution``
    → ``C1`` (drop the call wrapper and the model's scope; Keras 3 suffixes every scope ``_N``)."""
    from onnxviz.graph.naming import node_path_name

    paths: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        parts = [p for p in node.name.split("/") if p and not p.startswith(("StatefulPartitionedCall", "PartitionedCall"))]
        path = node_path_name("/".join(parts), node.op_type, scoped=True) or node.name
        paths[node.name] = path.split(".")
    suffixed = all(re.search(r"_\d+$", part) for parts in paths.values() for part in parts)
    if suffixed:
        return {name: "/".join(re.sub(r"_\d+$", "", part) for part in parts) for name, parts in paths.items()}
    return {name: "/".join(parts) for name, parts in paths.items()}


def _ensure_called(model: Any, input_shape: Sequence[int] | None) -> None:
    """Keras's ONNX export needs a model that has been called once: call it on zeros."""
    import numpy as np

    if input_shape is not None:
        shapes = [list(input_shape)]
    else:
        try:
            shapes = [[1 if d is None else d for d in inp.shape] for inp in model.inputs]
        except Exception:
            raise ConversionError("the Keras model has no known input shape: pass --input-shape 1,H,W,C") from None
    zeros = [np.zeros(shape, dtype="float32") for shape in shapes]
    model(zeros[0] if len(zeros) == 1 else zeros)


def _export_keras3(model: Any, tmp: Path) -> onnx.ModelProto:
    out = tmp / "model.onnx"
    model.export(str(out), format="onnx", verbose=False)
    return onnx.load_model(out)


def _export_tf2onnx(model: Any, input_shape: Sequence[int] | None) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    specs = []
    for i, inp in enumerate(model.inputs):
        shape = [None, *list(inp.shape)[1:]] if input_shape is None else [None, *list(input_shape)[1:]]
        specs.append(tf.TensorSpec(shape, inp.dtype, name=f"input_{i}"))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=tuple(specs), opset=17)
    return proto


def _export_saved_model(path: Path, tmp: Path) -> onnx.ModelProto:
    out = tmp / "model.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(path), "--output", str(out), "--opset", "17"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip().splitlines() or ["tf2onnx failed"])[-1]
        raise ConversionError(f"tf2onnx could not convert the SavedModel {path}: {last}")
    return onnx.load_model(out)


def from_keras(
    source: Any,
    out: str | os.PathLike | None = None,
    *,
    input_shape: Sequence[int] | None = None,
) -> Conversion:
    """Export a Keras model to ONNX with every Conv named after its layer (path for nested models)."""
    path = None if is_keras_object(source) else Path(str(source))
    notes: list[str] = []
    with temp_scratch("keras") as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            records: list[dict[str, Any]] | None = None
            total: int | None = None
            if path is not None and path.is_dir():
                proto = _export_saved_model(path, tmp)
                layers: list[tuple[str, str]] = []
                model_name = ""
                used = "tf2onnx (SavedModel)"
            else:
                keras = _keras()
                model = load_keras_source(source)
                _ensure_called(model, input_shape)
                layers = conv_layer_paths(model)
                records = keras_records(model)
                total = int(model.count_params())
                model_name = model.name
                if hasattr(model, "export") and getattr(keras, "__version__", "2").split(".")[0] >= "3":
                    proto = _export_keras3(model, tmp)
                    used = "keras export (tf2onnx)"
                else:
                    proto = _export_tf2onnx(model, input_shape)
                    used = "tf2onnx.from_keras"
        except ConversionError:
            raise
        except MemoryError:
            raise ConversionError(
                "ran out of memory converting the Keras model: tf2onnx needs several GB for large models "
                "(~7 GB for ResNet-50); try a smaller input shape or convert a SavedModel with tf2onnx's CLI"
            ) from None
        except Exception as exc:
            raise ConversionError(f"Keras export failed: {' '.join(str(exc).split())[:300]}") from None
    if layers:
        names, unmatched = _match(proto, layers, model_name)
    else:
        names = _saved_model_names(proto)
        unmatched = []
        notes.append("SavedModel: layer names recovered from TensorFlow scopes")
    by_node = _layer_names(proto, [r["name"] for r in records], model_name) if records else None
    for node in list(unmatched):  # tf2onnx renamed it (Conv__42): its outputs' or weights' scope still tells
        if by_node and node in by_node:
            names[node] = by_node[node]
            unmatched.remove(node)
    conversion = Conversion(model=proto, exporter=used, framework="keras", layers=names, unmatched=unmatched, notes=notes)
    annotate(conversion, names=by_node, records=records, total_params=total)
    for node in conversion.model.graph.node:  # a conv placed by the layer it feeds (graph/grouping.py)
        if node.name in conversion.unmatched and records:
            layer = next((p.value for p in node.metadata_props if p.key == "onnxviz.layer"), None)
            if layer in {r["name"] for r in records}:
                conversion.layers[node.name] = layer
                conversion.unmatched.remove(node.name)
    if out is not None:
        conversion.path = save(conversion.model, out)
    return conversion
