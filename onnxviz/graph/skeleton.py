"""Reading an ONNX file's structure without reading its weights.

An ONNX file is one protobuf message, and almost all of its bytes are the ``raw_data`` of the
graph's initializers. :func:`read_skeleton` walks the protobuf wire format over a memory map of
the file: it copies every field except the ``raw_data`` of large initializers, whose place in the
file (offset, length) it records instead. Parsing the resulting skeleton with protobuf then costs
the same for a 100 MB model as for a 100 KB one, and the weights are never read into Python: the
loader turns each recorded span into external data pointing into the same file.

Anything unexpected in the wire format (truncation, group wire types, lengths past the end)
raises :class:`SkeletonError`; the caller then falls back to a full parse, which reports the
problem in its own words.
"""

from __future__ import annotations

import mmap
from pathlib import Path

__all__ = ["SkeletonError", "read_skeleton"]

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data
_LEN = 2  # wire type of length-delimited fields


class SkeletonError(ValueError):
    """The file's wire format is not what a well-formed ONNX model looks like."""


def _varint(buf: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise SkeletonError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: mmap.mmap, start: int, end: int):
    """Yield ``(field_number, wire_type, field_start, value_start, value_end)`` for one message."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise SkeletonError("field number 0")
        if wire == 0:
            _, value_end = _varint(buf, pos, end)
        elif wire == 1:
            value_end = pos + 8
        elif wire == 5:
            value_end = pos + 4
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            value_end = pos + length
        else:
            raise SkeletonError(f"wire type {wire}")
        if value_end > end:
            raise SkeletonError("field runs past the end of its message")
        yield number, wire, field_start, pos, value_end
        pos = value_end


def _length_delimited(number: int, payload: bytes | bytearray) -> bytes:
    return _encode_varint((number << 3) | _LEN) + _encode_varint(len(payload)) + bytes(payload)


def read_skeleton(path: str | Path, min_bytes: int) -> tuple[bytes, list[tuple[int, int] | None]]:
    """The serialised model at ``path`` minus the ``raw_data`` of initializers over ``min_bytes``.

    Returns the skeleton's bytes and, for each ``graph.initializer`` in order, the ``(offset,
    length)`` of the raw data left out, or None where the initializer was copied whole.
    """
    with open(path, "rb") as handle:
        try:
            buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise SkeletonError(str(exc)) from None
    with buf:
        out = bytearray()
        spans: list[tuple[int, int] | None] = []
        for number, wire, field_start, start, end in _fields(buf, 0, len(buf)):
            if number != _MODEL_GRAPH or wire != _LEN:
                out += buf[field_start:end]
                continue
            graph = bytearray()
            for g_number, g_wire, g_field_start, g_start, g_end in _fields(buf, start, end):
                if g_number == _GRAPH_INITIALIZER and g_wire == _LEN:
                    tensor, span = _tensor(buf, g_start, g_end, min_bytes)
                    spans.append(span)
                    graph += _length_delimited(_GRAPH_INITIALIZER, tensor)
                else:
                    graph += buf[g_field_start:g_end]
            out += _length_delimited(_MODEL_GRAPH, graph)
        return bytes(out), spans


def _tensor(buf: mmap.mmap, start: int, end: int, min_bytes: int) -> tuple[bytes, tuple[int, int] | None]:
    if end - start <= min_bytes:
        return buf[start:end], None
    header = bytearray()
    span: tuple[int, int] | None = None
    for number, wire, field_start, value_start, value_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == _LEN and value_end - value_start > min_bytes:
            if span is not None:
                return buf[start:end], None  # repeated raw_data (protobuf keeps the last): copy whole
            span = (value_start, value_end - value_start)
        else:
            header += buf[field_start:value_end]
    return (bytes(header), span) if span is not None else (buf[start:end], None)
