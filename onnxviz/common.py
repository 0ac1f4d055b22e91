"""Small helpers every stage shares."""

from __future__ import annotations

import math

__all__ = ["json_number", "plural", "printable"]


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
