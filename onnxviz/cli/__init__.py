"""The ``onnxviz`` command line (``onnxviz.cli:main``)."""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["main", "build_parser"]
