"""Model loading: parse, validate, inline local functions and infer shapes.

Weights never travel through protobuf again after the first parse. Initializers over 1 KiB are
taken out of the parsed model, which leaves a model of a few hundred KiB for the checker, the
inliner, shape inference and onnxruntime:

- loaded from a file, the weights are not even read: :mod:`onnxviz.skeleton` walks the file's
  wire format and parses everything but the large ``raw_data`` fields, and each weight becomes
  external data pointing into that same file (its raw bytes' offset and length), so onnxruntime
  reads the weights from disk exactly as plain inference does, and Python keeps no copy (files
  whose wire format looks unusual get the full parse and its error messages);
- loaded from bytes or a ``ModelProto``, the weights are kept as numpy arrays
  (``LoadedModel.weights``, external location ``IN_MEMORY``) and handed to onnxruntime as
  OrtValues (``add_external_initializers``), without a copy.

Weights stored as real external data (``model.onnx.data``) are not read at all. This keeps models
near or above protobuf's 2 GB limit workable.

Since weights are read from the files later (by onnxruntime, the filter viewer, ``expose``), the
identity of the model file and of each external data file (device, inode, size, mtime) is
recorded at load and checked before each of those reads (:meth:`LoadedModel.check_unchanged`): a
file replaced or rewritten since is a one-line :class:`ModelLoadError` ("changed on disk since it
was loaded; load it again"), never weights read from the wrong bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from ..errors import ModelLoadError
from .fileid import check_files, external_files, identity
from .skeleton import SkeletonError, read_skeleton
from .validate import RESERVED, check_tensors

__all__ = ["LoadedModel", "ModelSource", "load_model", "real_inputs", "IN_MEMORY"]

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]

IN_MEMORY = RESERVED  # external-data location of weights held in LoadedModel.weights
_INLINE_BYTES = 1024  # initializers up to this size stay in the protobuf (shape constants, scales)
_STRIPPABLE = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
    onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL,
}  # fmt: skip


@dataclass(frozen=True)
class LoadedModel:
    """A validated, inlined, shape-inferred model whose large weights are held outside the protobuf."""

    proto: onnx.ModelProto
    source: str
    base_dir: Path | None
    has_external_data: bool  # the model itself keeps weights in external data files
    path: Path | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # initializers marked IN_MEMORY
    weights_in_source: bool = False  # large weights point into the model file itself (offset/length)
    files: tuple[tuple[Path, tuple[int, int, int, int]], ...] = ()  # model + external data files, as loaded

    def source_files(self) -> list[Path]:
        """The files this model reads: the model file and its external data files (resolved)."""
        return [name for name, _ in self.files]

    def check_unchanged(self) -> None:
        """Raise :class:`ModelLoadError` if a file the weights are read from changed since load."""
        check_files(self.files, self.path, self.source)

    @property
    def external_dir(self) -> Path | None:
        """The folder onnxruntime must resolve external data against, if any."""
        return self.base_dir if (self.has_external_data or self.weights_in_source) else None

    def initializer_array(self, name: str) -> np.ndarray | None:
        """The value of initializer ``name`` wherever it lives (in memory, inline, or external file)."""
        if name in self.weights:
            return self.weights[name]
        self.check_unchanged()
        init = self._initializers.get(name)
        return None if init is None else numpy_helper.to_array(init, str(self.base_dir) if self.base_dir else "")

    @cached_property
    def _initializers(self) -> dict[str, onnx.TensorProto]:
        return {init.name: init for init in self.proto.graph.initializer}

    def with_weights(self) -> onnx.ModelProto:
        """A copy of the model with the weights onnxviz moved out put back inline (for saving).

        Weights the model itself keeps in external data files stay external.
        """
        self.check_unchanged()
        full = onnx.ModelProto()
        full.CopyFrom(self.proto)
        source_name = self.path.name if self.path is not None else None
        for init in full.graph.initializer:
            location = _location(init)
            if location == IN_MEMORY and init.name in self.weights:
                value = np.ascontiguousarray(self.weights[init.name])
            elif self.weights_in_source and location is not None and location == source_name:
                value = numpy_helper.to_array(init, str(self.base_dir))
            else:
                continue
            init.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
            del init.external_data[:]
            init.data_location = onnx.TensorProto.DEFAULT
        return full


def _location(tensor: onnx.TensorProto) -> str | None:
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return None


def _mark_external(init: onnx.TensorProto, location: str, offset: int | None = None, length: int | None = None) -> None:
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    del init.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = init.external_data.add()
            entry.key, entry.value = key, str(value)


def _find(haystack: bytes, needle: bytes, start: int) -> int:
    """``haystack.find(needle, start)``, fast for long needles: find a short prefix, then compare."""
    probe = needle[:64]
    at = haystack.find(probe, start)
    while at >= 0:
        if haystack.startswith(needle, at):  # one memcmp
            return at
        at = haystack.find(probe, at + 1)
    return -1


def _strip_weights(model: onnx.ModelProto, file_bytes: bytes | None, file_name: str | None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Take large inline initializers out of ``model``; return the small model and in-memory weights.

    With ``file_bytes`` (the model file's content), each weight points into that file instead.
    The returned model is a fresh message: protobuf's arena keeps the memory of cleared fields.
    """
    weights: dict[str, np.ndarray] = {}
    pos = 0
    stripped = False
    for init in model.graph.initializer:
        if init.data_type not in _STRIPPABLE or not init.HasField("raw_data") or len(init.raw_data) <= _INLINE_BYTES:
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).newbyteorder("<")
        raw = init.raw_data
        if len(raw) != dtype.itemsize * int(np.prod(init.dims)):
            continue  # malformed: let the checker report it
        if file_bytes is not None and file_name is not None:
            # The raw bytes lie verbatim in the file; any place holding the same bytes will do.
            offset = _find(file_bytes, raw, pos)
            if offset < 0:
                offset = _find(file_bytes, raw, 0)
            if offset >= 0:
                pos = offset + len(raw)
                _mark_external(init, file_name, offset, len(raw))
                stripped = True
                continue
        weights[init.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(init.dims))
        _mark_external(init, IN_MEMORY)
        stripped = True
    if not stripped:
        return model, weights
    small = onnx.ModelProto()
    small.CopyFrom(model)
    return small, weights


_VALUE_FIELD = {
    onnx.TensorProto.FLOAT: "float_data", onnx.TensorProto.DOUBLE: "double_data", onnx.TensorProto.INT64: "int64_data",
    onnx.TensorProto.UINT64: "uint64_data", onnx.TensorProto.UINT32: "uint64_data",
}  # fmt: skip


def _parse_skeleton(path: Path, what: str) -> tuple[onnx.ModelProto | None, list[tuple[int, int] | None] | None]:
    """The model at ``path`` parsed without its large weights (see :mod:`onnxviz.skeleton`), or
    ``(None, None)`` when the file needs the full parse."""
    try:
        skeleton, spans = read_skeleton(path, _INLINE_BYTES)
        model = _parse(skeleton, what)
    except (SkeletonError, ModelLoadError, OSError):
        return None, None
    if len(model.graph.initializer) != len(spans):
        return None, None
    return model, spans


def _point_into_file(model: onnx.ModelProto, spans: list[tuple[int, int] | None], path: Path, file_name: str) -> None:
    """Make each initializer whose raw data the skeleton left out external data pointing at that
    data's place in the model file. A tensor whose type or size does not fit its data gets its
    bytes back inline, for the checker to report."""
    for init, span in zip(model.graph.initializer, spans):
        if span is None:
            continue
        offset, length = span
        fits = False
        if init.data_type in _STRIPPABLE and not init.external_data:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
            fits = length == itemsize * int(np.prod(init.dims))
        if fits:
            _mark_external(init, file_name, offset, length)
            continue
        with open(path, "rb") as handle:
            handle.seek(offset)
            init.raw_data = handle.read(length)


def _structure_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for the checker: external tensors become 1-element placeholders (their data and
    files are checked separately), so the structural check needs neither weights nor files."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            del init.external_data[:]
            init.data_location = onnx.TensorProto.DEFAULT
            del init.dims[:]
            init.dims.append(1)
            getattr(init, _VALUE_FIELD.get(init.data_type, "int32_data")).append(0)
    return copy


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


def _not_utf8(message: Any) -> str | None:
    """The first text field (``Type.field``) of ``message`` or its sub-messages that is not valid
    UTF-8 (protobuf hands those over as bytes), or None."""
    for field, value in message.ListFields():
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf < 5
            repeated = field.label == field.LABEL_REPEATED
        values = value if repeated else (value,)
        if field.type == field.TYPE_STRING:
            if any(isinstance(v, bytes) for v in values):
                return f"{message.DESCRIPTOR.name}.{field.name}"
        elif field.type == field.TYPE_MESSAGE:
            for sub in values:
                found = _not_utf8(sub)
                if found:
                    return found
    return None


def _check_text(model: onnx.ModelProto, what: str) -> None:
    found = _not_utf8(model)
    if found:
        raise ModelLoadError(f"{what} is not a valid ONNX model: a text field ({found}) is not valid UTF-8")


def _check_opsets(model: onnx.ModelProto, what: str) -> None:
    supported = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > supported:
            raise ModelLoadError(
                f"{what} uses ONNX opset {opset.version}, newer than the installed onnx "
                f"{onnx.__version__} supports ({supported}); upgrade onnx and onnxruntime"
            )


def _prepare(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(_structure_only(model), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{what} is not a valid ONNX model: {first}") from None
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    try:
        # On the weightless model: a few hundred KiB whatever the model's size, so no need for
        # the path-based variant that large inline models would otherwise require.
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
    data = b""
    spans: list[tuple[int, int] | None] | None = None
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
        before = identity(path)
        model, spans = _parse_skeleton(path, what)
        if model is None:  # unusual wire format: parse it all, and report any problem
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
            model = _parse(data, what)
        base_dir = path.resolve().parent
    else:
        raise ModelLoadError(f"cannot load a model from {type(source).__name__}; pass a path, bytes or onnx.ModelProto")

    _check_text(model, what)
    _check_opsets(model, what)
    has_external = check_tensors(model, base_dir, what, spans)
    file_name = path.resolve().name if path is not None else None
    if spans is not None and path is not None and file_name is not None:
        _point_into_file(model, spans, path, file_name)
        weights: dict[str, np.ndarray] = {}
    else:
        model, weights = _strip_weights(model, data if path is not None else None, file_name)
    in_source = file_name is not None and any(_location(i) == file_name for i in model.graph.initializer)
    data = b""  # the file's bytes are no longer needed
    files: list[tuple[Path, tuple[int, int, int, int]]] = []
    if path is not None and base_dir is not None:
        if identity(path) != before or before is None:
            raise ModelLoadError(f"model file {path} changed on disk while it was being loaded; try again")
        for name in [path.resolve(), *(external_files(model, base_dir, IN_MEMORY) if has_external else [])]:
            ident = identity(name)
            if ident is not None:
                files.append((name, ident))
    model = _prepare(model, what)
    return LoadedModel(
        proto=model, source=what, base_dir=base_dir, has_external_data=has_external,
        path=path.resolve() if path is not None else None, weights=weights, weights_in_source=in_source,
        files=tuple(files),
    )


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (older IR versions also list initializers)."""
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]
