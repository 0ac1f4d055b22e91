"""Framework → ONNX converters (Keras, PyTorch). Imported only when used; see issue 2/4."""

from __future__ import annotations

__all__: list[str] = []
