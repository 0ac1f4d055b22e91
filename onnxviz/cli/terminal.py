"""What the command line prints is safe to show on a terminal, and is onnxviz's own.

Model files are untrusted: a node name can carry ESC/OSC sequences (an OSC 52 clipboard write, a
window-title change, cursor moves), C1 controls, or bidirectional overrides (U+202E) that make a
line read differently from what it says. :func:`escape_terminal` writes every character that is
not printable (control, format, bidi, line/paragraph separators, unassigned, lone surrogates from
undecodable file names) as a visible backslash escape (``\\x1b``, ``\\u202e``).

:func:`guarded_output` is how ``onnxviz.cli.main`` runs a command: ``sys.stdout`` and
``sys.stderr`` escape whatever passes through them (every print, error and note of every command,
present or future), and warnings and stray log records of the libraries onnxviz uses (numpy,
Pillow, onnx) are kept off stderr, so stderr carries onnxviz's own lines only
(``ONNXVIZ_DEBUG=1`` lets warnings through, for debugging).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from ..common import printable

__all__ = ["escape_terminal", "escape_json", "SafeStream", "guarded_output"]


def escape_terminal(text: Any, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character written as a backslash escape (see
    :func:`onnxviz.common.printable`). ``keep_newlines``: leave ``\\n`` alone."""
    return printable(text, keep_newlines=keep_newlines)


def escape_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=True)``) with DEL escaped as well (JSON leaves it raw)."""
    return text.replace("\x7f", "\\u007f")


class SafeStream:
    """A text stream that escapes what is written through it (newlines kept; a leading carriage
    return kept for progress bars) and never fails on characters its encoding lacks."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    @property
    def raw(self) -> TextIO:
        return self._raw

    def write(self, text: str) -> int:
        lead = ""
        body = text
        if body.startswith("\r"):
            lead, body = "\r", body[1:]
        safe = lead + escape_terminal(body, keep_newlines=True)
        encoding = getattr(self._raw, "encoding", None) or "utf-8"
        try:
            safe.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            safe = safe.encode(encoding if encoding else "ascii", "backslashreplace").decode(encoding, "replace")
        self._raw.write(safe)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@contextlib.contextmanager
def guarded_output() -> Iterator[None]:
    """Run a command with escaped stdout/stderr and library warnings and log records kept off stderr."""
    debug = bool(os.environ.get("ONNXVIZ_DEBUG"))
    out, err = sys.stdout, sys.stderr
    root = logging.getLogger()
    quiet = logging.NullHandler()
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err)  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
                root.addHandler(quiet)  # no handler left for logging's last resort to print on stderr
            yield
    finally:
        root.removeHandler(quiet)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            sys.stdout, sys.stderr = out, err
