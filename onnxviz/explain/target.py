"""What an explanation looks at: the target layer (a spatial tensor) and the score (a class logit).

The **layer** is a Conv layer's output as ``maps --tap activation`` names it (the end of its
Conv→BatchNorm→activation chain), any framework layer (:mod:`onnxviz.graph.layers`: a Keras layer,
a torch module path such as ``layer4.2.add``), the last layer inside a module path (``layer4.2``:
the block's output, as pytorch-grad-cam's ``model.layer4[-1]``), or any ONNX tensor by name. The **default layer** is the last
Conv-family layer whose output is spatial (H·W > 1 at the input size fed), followed on through
shape-preserving elementwise steps (a residual Add, the ReLU after it, a bias Add, a transpose to
NHWC) up to the tensor that feeds pooling or fans out: for a torchvision-style ResNet that is
``layer4[-1]``'s output, the layer pytorch-grad-cam's examples use.

The **score** differentiated and compared is the model's logit: the first model output, or the
input of the Softmax/LogSoftmax/Sigmoid that produces it (through Identity nodes), because a
saturated softmax or sigmoid flattens gradients and score differences. For an output of rank > 2
the score of class ``c`` is the mean over the remaining axes of the class slice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..errors import LayerSelectionError, OnnxvizError
from ..graph.taps import plan_taps

__all__ = ["TargetLayer", "Score", "resolve_layer", "resolve_score", "concrete_shapes", "layer_choices"]

_UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Tanh",
    "Softplus", "Softsign", "Gelu", "Mish", "Swish", "Identity", "Dropout", "BatchNormalization",
})  # fmt: skip
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"})
_SQUASH = frozenset({"Softmax", "LogSoftmax", "Sigmoid"})
_TO_NHWC, _TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


@dataclass(frozen=True)
class TargetLayer:
    """The tensor a CAM is computed on, its display name and its layout."""

    name: str
    tensor: str
    layout: str = "NCHW"  # or "NHWC": where the channel axis is
    through: tuple[str, ...] = ()  # ops followed after the named layer's own output
    conv: str | None = None  # the Conv node the layer belongs to, if any
    default: bool = False

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "NCHW" else 3

    def to_nchw(self, array: np.ndarray) -> np.ndarray:
        return array if self.layout == "NCHW" else np.ascontiguousarray(np.moveaxis(array, 3, 1))

    def from_nchw(self, array: np.ndarray) -> np.ndarray:
        return array if self.layout == "NCHW" else np.ascontiguousarray(np.moveaxis(array, 1, 3))

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "tensor": self.tensor, "layout": self.layout, "through": list(self.through),
                "node": self.conv, "default": self.default}


@dataclass(frozen=True)
class Score:
    """The tensor whose class entries are scored: the logits before a final softmax/sigmoid."""

    output: str  # the model output it stands for
    tensor: str  # the tensor scored (== output when no squashing op precedes it)
    squash: str | None = None  # "Softmax" / "LogSoftmax" / "Sigmoid" skipped over, if any
    class_axis: int = 1
    rank: int | None = None

    def classes(self, logits: np.ndarray) -> np.ndarray:
        """N×K class scores: the class axis moved to 1, other axes averaged."""
        a = np.asarray(logits, dtype=np.float32)
        if a.ndim == 1:
            a = a[None]
        a = np.moveaxis(a, self.class_axis % a.ndim, 1)
        return a.reshape(a.shape[0], a.shape[1], -1).mean(axis=2)

    def seed(self, shape: Sequence[int], classes: Sequence[int]) -> np.ndarray:
        """d(score of ``classes[i]`` for sample i)/d(logits): the gradient seed, one row per sample."""
        seed = np.zeros(tuple(shape), np.float32)
        moved = np.moveaxis(seed, self.class_axis % seed.ndim, 1)  # a view
        rest = int(np.prod(moved.shape[2:])) if moved.ndim > 2 else 1
        for i, c in enumerate(classes):
            moved[i, int(c)] = 1.0 / rest
        return seed

    def as_dict(self) -> dict[str, object]:
        return {"output": self.output, "tensor": self.tensor, "skipped": self.squash, "class_axis": self.class_axis}


@dataclass
class _Index:
    model: onnx.ModelProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    constants: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        g = self.model.graph
        for node in g.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for name in set(node.input):
                if name:
                    self.consumers[name].append(node)
        self.constants = {i.name for i in g.initializer} | {
            n.output[0] for n in g.node if n.op_type == "Constant" and n.output
        }
        self.outputs = {o.name for o in g.output}


def concrete_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's shape at the sizes actually fed (onnx shape inference, best effort)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for vi in fixed.graph.input:
        if vi.name in feeds and vi.type.HasField("tensor_type"):
            shape = np.shape(feeds[vi.name])
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == len(shape):
                for d, n in zip(dims, shape):
                    d.Clear()
                    d.dim_value = int(n)
    for out in fixed.graph.output:  # declared output shapes must not fight the fed ones
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    try:
        fixed = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:
        pass
    shapes: dict[str, tuple[int | None, ...]] = {}
    for vi in list(fixed.graph.input) + list(fixed.graph.value_info) + list(fixed.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
    for init in fixed.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _perm(node: onnx.NodeProto) -> tuple[int, ...]:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(attr.ints)
    return ()


def _extend(index: _Index, tensor: str, layout: str, shapes: Mapping[str, tuple[int | None, ...]]) -> tuple[str, str, list[str]]:
    """Follow ``tensor`` through single-consumer, shape-preserving elementwise steps."""
    ops: list[str] = []
    while tensor not in index.outputs:
        users = index.consumers.get(tensor, [])
        if len(users) != 1 or len([o for o in users[0].output if o]) != 1:
            break
        node = users[0]
        out = node.output[0]
        here, there = shapes.get(tensor), shapes.get(out)
        same = here is None or there is None or (here == there)
        if node.op_type in _UNARY and node.input[0] == tensor and all(i in index.constants or not i for i in node.input[1:]):
            pass
        elif node.op_type in _BINARY and same:
            pass
        elif node.op_type == "Transpose" and _perm(node) == (_TO_NHWC if layout == "NCHW" else _TO_NCHW):
            layout = "NHWC" if layout == "NCHW" else "NCHW"
        else:
            break
        ops.append(node.op_type)
        tensor = out
    return tensor, layout, ops


def _spatial(shape: tuple[int | None, ...] | None, layout: str) -> bool | None:
    """True/False when known; None when the shape is not known."""
    if shape is None:
        return None
    if len(shape) != 4:
        return False
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if h is None or w is None:
        return None
    return h * w > 1


def layer_choices(model: onnx.ModelProto) -> list[TargetLayer]:
    """Every Conv layer's output, as ``maps --tap activation`` names it, in graph order."""
    try:
        plan = plan_taps(model, "activation")
    except OnnxvizError:
        return []
    return [TargetLayer(name=t.label, tensor=t.tensor, through=(), conv=t.node) for t in plan.taps]


def _framework_layer(model: onnx.ModelProto, name: str) -> tuple[str, str] | None:
    """(layer name, output tensor) of the framework layer ``name`` (``layer4.2.add``, a Keras
    layer), or of the last layer inside the module path ``name`` (``layer4.2``: the block's output,
    pytorch-grad-cam's ``model.layer4[-1]``)."""
    from ..graph.layers import group_layers

    try:
        layers = [layer for layer in group_layers(model) if layer.output and not layer.vanished]
    except Exception:  # grouping is best effort here: the other ways of naming still work
        return None
    for layer in layers:
        if layer.name == name:
            return layer.name, layer.output  # type: ignore[return-value]
    inside = [layer for layer in layers if layer.name.startswith(name + ".")]
    return (inside[-1].name, inside[-1].output) if inside else None  # type: ignore[return-value]


def _layout_of(index: _Index, tensor: str) -> str:
    node = index.producer.get(tensor)
    if node is not None and node.op_type == "Transpose" and _perm(node) == _TO_NHWC:
        return "NHWC"
    return "NCHW"


def resolve_layer(
    model: onnx.ModelProto, name: str | None, shapes: Mapping[str, tuple[int | None, ...]], score: Score | None = None
) -> TargetLayer:
    """The layer called ``name`` (a Conv layer name or a tensor name), or the default layer."""
    index = _Index(model)
    choices = layer_choices(model)
    if name is not None:
        found = [c for c in choices if name in (c.name, c.name.split(" (+")[0], c.tensor, c.conv)]
        framework = None if found else _framework_layer(model, name)
        if found:
            layer = found[0]
        elif framework is not None:
            layer = TargetLayer(name=framework[0], tensor=framework[1], layout=_layout_of(index, framework[1]))
        elif name in index.producer or name in {i.name for i in model.graph.input}:
            layer = TargetLayer(name=name, tensor=name, layout=_layout_of(index, name))
        else:
            listing = ", ".join(c.name for c in choices[-8:]) or "(the model has no Conv layer)"
            raise LayerSelectionError(f"unknown layer {name!r}: give a layer name, a module path or a tensor name; "
                                      f"last Conv layers: {listing}")
        shape = shapes.get(layer.tensor)
        if _spatial(shape, layer.layout) is False:
            got = "x".join("?" if d is None else str(d) for d in shape) if shape else "unknown"
            raise LayerSelectionError(f"layer {name!r} has no spatial output (shape {got}): a CAM needs an N×C×H×W layer with H·W > 1")
        return layer
    for choice in reversed(choices):
        if score is not None and choice.tensor == score.tensor:
            continue
        if _spatial(shapes.get(choice.tensor), "NCHW") is False:
            continue
        tensor, layout, ops = _extend(index, choice.tensor, "NCHW", shapes)
        if score is not None and tensor in (score.tensor, score.output):
            tensor, layout, ops = choice.tensor, "NCHW", []
        if _spatial(shapes.get(tensor), layout) is False:
            tensor, layout, ops = choice.tensor, "NCHW", []
        return TargetLayer(name=choice.name, tensor=tensor, layout=layout, through=tuple(ops), conv=choice.conv, default=True)
    raise LayerSelectionError("the model has no Conv layer with a spatial output at this input size: pass --layer NAME")


def resolve_score(model: onnx.ModelProto, output: str | None = None) -> Score:
    """The logits behind model output ``output`` (default: the first)."""
    index = _Index(model)
    names = [o.name for o in model.graph.output]
    if not names:
        raise OnnxvizError("the model declares no outputs: there is no score to explain")
    if output is None:
        output = names[0]
    elif output not in names:
        raise OnnxvizError(f"unknown model output {output!r}; outputs: {', '.join(names)}")
    tensor = output
    node = index.producer.get(tensor)
    while node is not None and node.op_type == "Identity":
        tensor = node.input[0]
        node = index.producer.get(tensor)
    squash = None
    axis = 1
    rank = _rank(model, output)
    if node is not None and node.op_type in _SQUASH and node.domain in ("", "ai.onnx"):
        squash = node.op_type
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        default = -1 if opset >= 13 else 1
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), default)
        if squash == "Sigmoid":
            axis = 1
        tensor = node.input[0]
    else:
        tensor = output
    if rank is not None and rank >= 1:
        axis = axis % rank if rank > 1 else 0
    return Score(output=output, tensor=tensor, squash=squash, class_axis=int(axis) if rank != 1 else 0, rank=rank)


def _rank(model: onnx.ModelProto, name: str) -> int | None:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None
