"""Errors onnxviz raises for bad input: one line each, naming the problem."""

from __future__ import annotations

__all__ = [
    "OnnxvizError", "ModelLoadError", "InputError", "LayerSelectionError", "ProviderError", "GradientError",
    "UnsupportedOpError",
]


class OnnxvizError(ValueError):
    """Base class for every error caused by what the user passed in (exit code 2 in the CLI)."""

    def __init__(self, message: str) -> None:
        # Keep messages one line: a newline in a model-supplied string must not break the CLI's
        # one-line error contract.
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(OnnxvizError):
    """The model file or object is missing, corrupt, invalid or unsupported."""


class InputError(OnnxvizError):
    """An image or array cannot be fed to the model."""


class LayerSelectionError(OnnxvizError):
    """A layer pattern matches no tapped layer."""


class ProviderError(OnnxvizError):
    """onnxruntime is missing or the requested execution provider is not active."""


class GradientError(OnnxvizError):
    """A gradient cannot be computed as asked (unknown target, tensor not on a float path…)."""


class UnsupportedOpError(GradientError):
    """An op on the differentiated path has no backward rule; the message names the op and the node."""
