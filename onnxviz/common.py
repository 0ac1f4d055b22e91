"""Small helpers every stage shares."""

from __future__ import annotations

import math
import re

from .errors import OnnxvizError

__all__ = ["json_number", "plural", "printable", "parse_size"]


def json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: those become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 layer``, ``2 layers``, ``0 layers``; ``many`` for irregular plurals (``plural(n, "image", ...)``)."""
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"


def _escape_char(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character (controls, ESC/OSC sequences' bytes, C1,
    bidirectional overrides such as U+202E, other format characters, line separators, lone
    surrogates, unassigned code points) written as a visible escape: ``\\x1b``, ``\\u202e``.

    Model-supplied strings go through this before reaching a terminal, an SVG or the HTML report.
    ``keep_newlines``: leave ``\\n`` alone (multi-line text that onnxviz itself laid out).
    """
    text = str(text)
    if text.isprintable():
        return text
    keep = "\n" if keep_newlines else ""
    return "".join(c if (c.isprintable() or c in keep) else _escape_char(c) for c in text)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GB"`` or a byte count → bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower().removesuffix("ib") if match else ""
        if not match or unit not in _UNITS:
            raise OnnxvizError(f"memory size must look like 512M, 2G or 1.5GB, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise OnnxvizError(f"memory size must be positive, got {text!r}")
    return value
