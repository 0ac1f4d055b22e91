"""The graph stage: load an ONNX model (without reading its weights), name its layers, plan the
taps and rewrite the graph to expose them, describe it (summary, drawing) and save it.

``onnxviz.graph.to_dot`` / ``to_svg`` (the drawing) are kept here under their documented names.
"""

from __future__ import annotations

from .draw import INSTALL_HINT, dot_available, to_dot, to_svg

__all__ = ["to_dot", "to_svg", "dot_available", "INSTALL_HINT"]
