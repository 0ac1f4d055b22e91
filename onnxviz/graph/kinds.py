"""Layer kinds: from a layer's ONNX ops (files without records) or from a framework class name
(what the converters record). Used by :mod:`onnxviz.graph.layers`."""

from __future__ import annotations

import numpy as np
import onnx

from .grouping import is_dense
from .index import PASS_THROUGH, GraphIndex, attr, is_conv

__all__ = ["KINDS", "POOL_OPS", "MERGE_OPS", "kind_of_ops", "kind_of_class"]

KINDS = ("conv", "dense", "pool", "merge", "activation", "norm", "reshape", "padding", "dropout", "resize", "other")

POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "MaxRoiPool", "QLinearAveragePool", "QLinearGlobalAveragePool"})
MERGE_OPS = frozenset({"Add", "Sum", "Concat", "Mul", "Sub", "Max", "Min", "Mean", "QLinearAdd", "QLinearMul", "QLinearConcat"})
_NORM_OPS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "LRN", "MeanVarianceNormalization", "LpNormalization"})
_RESHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth", "Tile", "Expand", "Slice", "Split", "Gather"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
_ACT_OPS = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Tanh", "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Swish", "Erf", "Softmax", "LogSoftmax", "Hardmax"})

def _global_reduce(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """ReduceMean/ReduceMax over every spatial axis of a ≥3-D activation (global pooling)."""
    if node.op_type not in ("ReduceMean", "ReduceMax") or not node.input:
        return False
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.value(node.input[1])
        axes = None if value is None else [int(a) for a in np.ravel(value)]
    if not axes:
        return False
    rank = index.rank(node.input[0]) or 4
    if rank < 3:
        return False
    got = sorted(a % rank for a in axes)
    return got in (list(range(2, rank)), list(range(1, rank - 1)))


def kind_of_ops(nodes: list[onnx.NodeProto], index: GraphIndex) -> str:
    """A layer's kind from its ops: conv (any Conv-family op) > dense (Gemm, MatMul with a constant
    weight) > pool (pooling ops, ReduceMean/ReduceMax over all spatial axes) > merge (its first
    compute op joins two or more tensors from outside: Add, Concat, Mul...) > norm > padding (Pad)
    > dropout > resize > activation > reshape (shape plumbing only) > other. A QDQ model's
    QuantizeLinear/DequantizeLinear around the ops do not count."""
    nodes = [n for n in nodes if n.op_type not in _QDQ] or nodes
    ops = {n.op_type for n in nodes}
    if any(is_conv(n) for n in nodes):
        return "conv"
    if any(is_dense(n, index) for n in nodes):
        return "dense"
    if ops & POOL_OPS or any(_global_reduce(n, index) for n in nodes):
        return "pool"
    produced = {o for n in nodes for o in n.output}
    compute = [n for n in nodes if not all(index.is_static(t) for t in n.input if t)]
    if compute and compute[0].op_type in MERGE_OPS:
        outside = {t for t in compute[0].input if t and not index.is_static(t) and t not in produced}
        if len(outside) >= 2:
            return "merge"
    for kind, group in (("norm", _NORM_OPS), ("padding", {"Pad"}), ("dropout", {"Dropout"}), ("resize", {"Resize", "Upsample"})):
        if ops & group:
            return kind
    if ops & _ACT_OPS:
        return "activation"
    if compute and all(n.op_type in _RESHAPE_OPS or n.op_type in PASS_THROUGH or n.op_type in ("Shape", "Cast", "Concat", "Constant") for n in nodes):
        return "reshape"
    return "other"


_CLASS_KINDS = (
    ("padding", ("zeropadding", "pad", "cropping")),
    ("conv", ("conv",)),
    ("pool", ("pool",)),
    ("dense", ("dense", "linear", "einsumdense")),
    ("norm", ("batchnorm", "layernorm", "groupnorm", "instancenorm", "localresponsenorm", "unitnormalization", "batchnormalization", "layernormalization", "groupnormalization")),
    ("dropout", ("dropout", "gaussiannoise", "activityregularization")),
    ("merge", ("add", "concatenate", "multiply", "subtract", "average", "maximum", "minimum", "dot")),
    ("reshape", ("flatten", "reshape", "permute", "repeatvector", "unflatten")),
    ("resize", ("upsampl", "resiz")),
    ("activation", ("relu", "activation", "softmax", "sigmoid", "tanh", "elu", "gelu", "silu", "swish", "mish", "hardswish", "hardsigmoid", "hardtanh", "softplus", "softsign", "threshold", "glu", "logsigmoid")),
)  # fmt: skip


def kind_of_class(class_name: str) -> str:
    """A layer kind from a framework class name (``Conv2D``, ``torch.nn.modules.pooling.MaxPool2d``)."""
    short = class_name.rsplit(".", 1)[-1].lower()
    if short in ("identity", "inputlayer"):
        return "other"
    for kind, words in _CLASS_KINDS:
        if kind == "merge":
            if short in words:
                return kind
        elif any(w in short for w in words):
            return kind
    return "other"
