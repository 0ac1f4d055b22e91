"""Checks of a model's tensors that onnx's checker leaves out, so that every later stage can trust them.

For every tensor (initializers, Constant values, tensors in subgraphs): a known data type, dims
that are not negative, and data whose size matches the dims — inline ``raw_data``, the typed
fields, or external data. External data entries must have a location inside the model's folder
that exists, and an offset and length that are non-negative decimal integers lying within the
data file. Each problem is one :class:`ModelLoadError` line naming the tensor; without these
checks a tensor whose bytes exceed its dims, or a data file shorter than declared, surfaced as an
internal error in one command and as garbage in another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper, helper

from ..errors import ModelLoadError

__all__ = ["check_tensors", "external_entries", "RESERVED"]

RESERVED = "__onnxviz_in_memory__"  # the external-data location onnxviz uses for weights it holds in memory
_DIGITS = re.compile(r"[0-9]{1,20}")
_PACKED_BITS = {TensorProto.UINT4: 4, TensorProto.INT4: 4, TensorProto.FLOAT4E2M1: 4}
for _name, _bits in (("UINT2", 2), ("INT2", 2)):
    if hasattr(TensorProto, _name):
        _PACKED_BITS[getattr(TensorProto, _name)] = _bits
_KNOWN_TYPES = frozenset(v for v in TensorProto.DataType.values() if v != TensorProto.UNDEFINED)
# typed field holding a tensor's values when there is no raw_data, and values per element
_FIELDS = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.DOUBLE: ("double_data", 1), TensorProto.INT64: ("int64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.UINT32: ("uint64_data", 1), TensorProto.INT32: ("int32_data", 1),
    TensorProto.INT16: ("int32_data", 1), TensorProto.UINT16: ("int32_data", 1), TensorProto.INT8: ("int32_data", 1),
    TensorProto.UINT8: ("int32_data", 1), TensorProto.BOOL: ("int32_data", 1), TensorProto.FLOAT16: ("int32_data", 1),
    TensorProto.BFLOAT16: ("int32_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.COMPLEX128: ("double_data", 2), TensorProto.STRING: ("string_data", 1),
}  # fmt: skip


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"


def data_bytes(data_type: int, count: int) -> int | None:
    """Bytes that ``count`` elements of ``data_type`` occupy in raw or external data (None: not fixed)."""
    if data_type in _PACKED_BITS:
        return (count * _PACKED_BITS[data_type] + 7) // 8
    if data_type == TensorProto.STRING:
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if data_type in (getattr(TensorProto, "FLOAT6E2M3", -1), getattr(TensorProto, "FLOAT6E3M2", -1)):
        return None  # layout not settled: leave it to onnxruntime
    return count * itemsize


def external_entries(tensor: TensorProto, what: str) -> dict[str, str]:
    """The external-data key/value pairs of ``tensor``, with offset and length checked to be
    non-negative decimal integers."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    for key in ("offset", "length"):
        if key in entries and not _DIGITS.fullmatch(entries[key]):
            raise ModelLoadError(
                f"{what}: tensor '{tensor.name}' has an invalid external data {key} {entries[key]!r} "
                "(must be a non-negative whole number of bytes)"
            )
    return entries


def _shape_text(tensor: TensorProto) -> str:
    return "×".join(str(d) for d in tensor.dims) or "scalar"


def _check_external(tensor: TensorProto, base_dir: Path | None, what: str, expected: int | None) -> None:
    entries = external_entries(tensor, what)
    location = entries.get("location", "")
    if location == RESERVED:
        raise ModelLoadError(f"{what}: tensor '{tensor.name}' uses the reserved external data location {RESERVED}")
    if not location:
        raise ModelLoadError(f"{what}: tensor '{tensor.name}' is marked external but names no data file")
    if base_dir is None:
        raise ModelLoadError(
            f"{what} keeps tensor '{tensor.name}' in external data '{location}'; "
            "load it from its file path so the data file can be found"
        )
    path = Path(location)
    if path.is_absolute() or ".." in path.parts or "\x00" in location:
        raise ModelLoadError(
            f"{what}: external data location '{location}' of tensor '{tensor.name}' points outside the model's folder"
        )
    file = base_dir / path
    if not file.is_file():
        raise ModelLoadError(f"{what}: external data file '{location}' (tensor '{tensor.name}') is missing from {base_dir}")
    size = file.stat().st_size
    offset = int(entries.get("offset", "0"))
    length = int(entries["length"]) if "length" in entries else None
    if expected is not None and length is not None and length != expected:
        raise ModelLoadError(
            f"{what}: tensor '{tensor.name}' ({_shape_text(tensor)} {_type_name(tensor.data_type)}) needs {expected:,} bytes "
            f"but its external data length says {length:,}"
        )
    need = length if length is not None else (expected or 0)
    if offset + need > size:
        raise ModelLoadError(
            f"{what}: external data file '{location}' is {size:,} bytes, shorter than tensor '{tensor.name}' needs "
            f"({need:,} bytes at offset {offset:,}): the file is truncated or does not belong to this model"
        )


def _check_tensor(tensor: TensorProto, base_dir: Path | None, what: str, raw_length: int | None) -> bool:
    """Check one tensor; returns whether it uses external data."""
    name = tensor.name or "(unnamed)"
    if tensor.data_type not in _KNOWN_TYPES:
        raise ModelLoadError(f"{what}: tensor '{name}' has an invalid data type ({tensor.data_type})")
    if any(d < 0 for d in tensor.dims):
        raise ModelLoadError(f"{what}: tensor '{name}' has a negative dimension ({_shape_text(tensor)})")
    count = math.prod(tensor.dims)
    expected = data_bytes(tensor.data_type, count)
    if tensor.data_location == TensorProto.EXTERNAL or external_data_helper.uses_external_data(tensor):
        _check_external(tensor, base_dir, what, expected)
        return True
    if raw_length is None and tensor.HasField("raw_data"):
        raw_length = len(tensor.raw_data)
    if raw_length is not None:
        if expected is not None and raw_length != expected:
            raise ModelLoadError(
                f"{what}: tensor '{name}' ({_shape_text(tensor)} {_type_name(tensor.data_type)}) needs {expected:,} bytes "
                f"but holds {raw_length:,}"
            )
        return False
    field, per = _FIELDS.get(tensor.data_type, (None, 1))
    if field is not None:
        have = len(getattr(tensor, field))
        if have != count * per and not (have == 0 and count == 0):
            raise ModelLoadError(
                f"{what}: tensor '{name}' ({_shape_text(tensor)} {_type_name(tensor.data_type)}) has {count:,} elements "
                f"but holds {have // per:,} values"
            )
    return False


def check_tensors(model: onnx.ModelProto, base_dir: Path | None, what: str, spans: Sequence[tuple[int, int] | None] | None = None) -> bool:
    """Check every tensor of ``model`` (see module docs); returns whether any uses external data.

    ``spans``: per graph initializer, the (offset, length) of raw data the skeleton reader left in
    the file (those tensors carry no data in ``model`` yet).
    """
    has_external = False
    spans = list(spans or ())
    # The main graph's initializers come first, in order (onnx's own traversal).
    for k, tensor in enumerate(external_data_helper._get_all_tensors(model)):
        span = spans[k] if k < len(spans) else None
        has_external |= _check_tensor(tensor, base_dir, what, span[1] if span is not None else None)
    return has_external
