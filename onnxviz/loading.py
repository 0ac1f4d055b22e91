"""Model loading: parse, validate, inline local functions and infer shapes.

Weights stored as external data (``model.onnx.data``) are *not* read into memory here: the graph
structure is all the tap planner needs, and onnxruntime reads the weights from the model's folder
itself. This keeps models near or above protobuf's 2 GB limit workable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import onnx
from onnx import external_data_helper

from .errors import ModelLoadError

__all__ = ["LoadedModel", "ModelSource", "load_model", "real_inputs"]

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]

# Above this size shape inference goes through the path-based API, which does not have to hold
# a serialised copy of the model in memory (and does not hit protobuf's 2 GB limit).
_PATH_INFERENCE_BYTES = 1 << 30


@dataclass(frozen=True)
class LoadedModel:
    """A validated, inlined, shape-inferred model (external weights left on disk)."""

    proto: onnx.ModelProto
    source: str
    base_dir: Path | None
    has_external_data: bool
    path: Path | None = None


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return list(external_data_helper._get_all_tensors(model))


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{what} is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        # An ONNX file starts with field 1 (ir_version, varint): byte 0x08.
        if data[:1] == b"\x08":
            raise ModelLoadError(f"{what} is truncated or corrupt: cannot parse it as ONNX ({exc})") from None
        raise ModelLoadError(f"{what} is not an ONNX file (protobuf parse failed)") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{what} is not an ONNX model (no graph or IR version)")
    return model


def _check_external_data(model: onnx.ModelProto, base_dir: Path | None, what: str) -> bool:
    has_external = False
    for tensor in _all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        has_external = True
        info = external_data_helper.ExternalDataInfo(tensor)
        location = Path(info.location)
        if base_dir is None:
            raise ModelLoadError(
                f"{what} keeps tensor '{tensor.name}' in external data '{info.location}'; "
                "load it from its file path so the data file can be found"
            )
        if location.is_absolute() or ".." in location.parts:
            raise ModelLoadError(
                f"{what}: external data location '{info.location}' of tensor '{tensor.name}' "
                "points outside the model's folder"
            )
        if not (base_dir / location).is_file():
            raise ModelLoadError(
                f"{what}: external data file '{info.location}' (tensor '{tensor.name}') "
                f"is missing from {base_dir}"
            )
    return has_external


def _check_opsets(model: onnx.ModelProto, what: str) -> None:
    supported = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > supported:
            raise ModelLoadError(
                f"{what} uses ONNX opset {opset.version}, newer than the installed onnx "
                f"{onnx.__version__} supports ({supported}); upgrade onnx and onnxruntime"
            )


def _prepare(model: onnx.ModelProto, what: str, path: Path | None) -> onnx.ModelProto:
    try:
        # By path when there is one: external data is then resolved against the model's folder.
        onnx.checker.check_model(str(path) if path is not None else model, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{what} is not a valid ONNX model: {first}") from None
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    try:
        if path is not None and path.stat().st_size > _PATH_INFERENCE_BYTES:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="onnxviz-") as tmp:
                inferred = Path(tmp) / "inferred.onnx"
                onnx.save_model(model, inferred)
                onnx.shape_inference.infer_shapes_path(str(inferred), str(inferred), data_prop=True)
                model = onnx.load_model(inferred, load_external_data=False)
        else:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        # Shape inference is best effort: taps without an inferred type still work, onnxruntime
        # infers them at session creation.
        pass
    return model


def load_model(source: ModelSource) -> LoadedModel:
    """Load an ONNX model from a path, serialised bytes or a ``ModelProto``.

    Raises :class:`ModelLoadError` with a one-line message when the source is missing, not ONNX,
    truncated, invalid, too new for the installed onnx, or references missing external data.
    The caller's ``ModelProto`` is never modified.
    """
    base_dir: Path | None = None
    path: Path | None = None
    if isinstance(source, onnx.ModelProto):
        what = "model"
        model = onnx.ModelProto()
        model.CopyFrom(source)
        if not model.graph.node:
            raise ModelLoadError("model has an empty graph")
    elif isinstance(source, (bytes, bytearray, memoryview)):
        what = "model bytes"
        model = _parse(bytes(source), what)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        what = str(path)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {path}")
        if not path.is_file():
            raise ModelLoadError(f"model path is not a file: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
        model = _parse(data, what)
        base_dir = path.resolve().parent
    else:
        raise ModelLoadError(f"cannot load a model from {type(source).__name__}; pass a path, bytes or onnx.ModelProto")

    _check_opsets(model, what)
    has_external = _check_external_data(model, base_dir, what)
    model = _prepare(model, what, path)
    return LoadedModel(
        proto=model, source=what, base_dir=base_dir, has_external_data=has_external,
        path=path.resolve() if path is not None else None,
    )


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (older IR versions also list initializers)."""
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]
