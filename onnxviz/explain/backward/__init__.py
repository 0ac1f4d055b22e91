"""The backward graph in ONNX: reverse-mode differentiation as standard ONNX ops.

``probe`` fixes shapes and parameter values for one input shape, ``sweep`` traces the path from
the differentiated tensors to the target and applies one rule per op (``rules_conv``,
``rules_math``, ``rules_tensor``; the table is ``registry.RULES``), ``assemble`` writes the one
model that computes forward outputs and gradients together. The public API is
:mod:`onnxviz.explain.program`.
"""

from .assemble import GradientGraph, build_gradient_model
from .probe import Facts, inferred_shapes, probe, static_facts
from .sweep import supported_ops

__all__ = ["GradientGraph", "build_gradient_model", "Facts", "inferred_shapes", "probe", "static_facts", "supported_ops"]
