"""Explanations: why a CNN decided what it did (CAMs, saliency) and what a channel or class
responds to (activation maximisation), on any ONNX model, with no deep-learning framework.

- :mod:`.program`: gradients — ``gradients(model, images, wrt=..., target=..., classes=...)`` and
  the reusable :class:`GradientProgram` (API documented there).
- :mod:`.backward`: the backward graph written in standard ONNX ops (one rule per op), run by
  onnxruntime together with the forward pass; :mod:`.grad_names`: what gradient names mean.
- :mod:`.cam`, :mod:`.cams`: class activation maps, one module per method.
"""

_GRADIENTS = {"gradients", "GradientProgram", "GradResult"}


def __getattr__(name: str):
    """Gradient names load on first use (the backward machinery is not needed to import onnxviz)."""
    if name in _GRADIENTS:
        from . import program

        return getattr(program, name)
    if name == "supported_ops":
        from .backward import supported_ops

        return supported_ops
    raise AttributeError(f"module 'onnxviz.explain' has no attribute {name!r}")
