"""Class names for a classifier's output: a text file with one name per line (``--labels-file``).

The file is untrusted text: it is read as UTF-8 (a file that is not is refused with the line
named), a byte-order mark and line endings are dropped, and nothing else is interpreted. Names are
kept as written; whoever draws or prints them makes them safe (``rendering.text.safe_text``,
HTML escaping in the report).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

__all__ = ["read_labels", "MAX_LABELS"]

MAX_LABELS = 1_000_000
_MAX_BYTES = 64 * 1024 * 1024


def read_labels(path: str | os.PathLike) -> list[str]:
    """The class names in ``path``, one per line (trailing empty lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file not found: {p}")
    if p.stat().st_size > _MAX_BYTES:
        raise InputError(f"labels file too large: {p} ({p.stat().st_size} bytes; one class name per line expected)")
    data = p.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"labels file is not UTF-8 text: {p} (line {line})") from None
    names = text.split("\n")
    names = [n[:-1] if n.endswith("\r") else n for n in names]
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise InputError(f"labels file is empty: {p}")
    if len(names) > MAX_LABELS:
        raise InputError(f"labels file has {len(names)} lines, more than {MAX_LABELS}: {p}")
    return names
