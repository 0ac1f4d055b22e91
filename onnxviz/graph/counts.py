"""Layer counts as seed 003's ResNet ``Extractor`` reports them, read from the ONNX graph alone, so
that they are the same whichever exporter (torch dynamo or TorchScript, tf2onnx) wrote the file.

- **conv**: conv layers (Conv, ConvTranspose, QLinearConv, ConvInteger, FusedConv nodes).
- **conv_main**: conv layers not on a residual shortcut (the Extractor's "Total CNN Layers").
- **downsample**: convs on a residual shortcut, whatever their stride (the Extractor's
  ``downsample`` modules; ResNet-50: 4, ``layer1.0.downsample.0`` included).
- **linear**: dense layers: Gemm, or MatMul with a constant weight.
- **pooling**: MaxPool, AveragePool, LpPool and their global forms, and ReduceMean/ReduceMax over
  all spatial axes (global pooling as some exporters write it).
- **blocks**: residual blocks: an Add whose two inputs come from one tensor, one through a main
  branch with at least one conv, the other straight (identity) or through a shortcut with fewer
  convs than the main branch (at most one conv, with its BatchNorm/bias/pooling), no upsampling
  on either (so a feature pyramid's top-down Adds are not blocks).
- **stages**: groups of residual blocks: by name, the distinct parents of the blocks' module paths
  (``layer1.0`` → ``layer1``) when every block has one; otherwise a stage begins at the first
  block and at every block with a conv on its shortcut (ResNet-50: 4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import helper

__all__ = ["ResidualBlock", "residual_blocks", "layer_counts", "CONV_OPS", "POOL_OPS", "is_global_reduce", "is_dense"]

CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
# What a shortcut may pass through besides its one conv: normalisation, bias/scale, pooling (ResNet-D).
_SHORTCUT_OPS = frozenset({"Identity", "BatchNormalization", "Add", "Mul", "Sub", "Div", "AveragePool", "MaxPool",
                           "Transpose", "Cast", "DequantizeLinear", "QuantizeLinear", "Pad"}) | CONV_OPS
_UPSAMPLING = frozenset({"Resize", "Upsample", "ConvTranspose", "DepthToSpace"})
_MAX_STEPS = 400  # nodes walked back from an Add's main branch


@dataclass
class ResidualBlock:
    add: str  # the merging Add node's name (or output tensor)
    block_input: str  # the tensor both branches start from
    shortcut_convs: list[str] = field(default_factory=list)  # node names
    main_convs: int = 0
    path: str | None = None  # the module path of the block, where the file names it


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer = {out: n for n in self.nodes for out in n.output if out}
        consts = {i.name for i in graph.initializer}
        for n in self.nodes:  # constants: initializers, Constant nodes, and what only constants feed
            if n.op_type == "Constant" or (n.input and all((not i) or i in consts for i in n.input) and n.op_type not in CONV_OPS):
                consts.update(o for o in n.output if o)
        self.consts = consts

    def data_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [i for i in node.input if i and i not in self.consts]

    def key(self, node: onnx.NodeProto) -> str:
        return node.name or (node.output[0] if node.output else node.op_type)


def _shortcut_chain(g: _Graph, tensor: str) -> list[tuple[str, list[str], bool]]:
    """Going back from ``tensor`` along a possible shortcut: (tensor, convs passed, upsampled) for
    each tensor reached, stopping after the second conv or at any other op."""
    out: list[tuple[str, list[str], bool]] = []
    convs: list[str] = []
    up = False
    for _ in range(16):
        out.append((tensor, list(convs), up))
        node = g.producer.get(tensor)
        if node is None or node.op_type not in _SHORTCUT_OPS:
            break
        ins = g.data_inputs(node)
        if len(ins) != 1:
            break
        if node.op_type in CONV_OPS:
            if convs:
                break
            convs.append(g.key(node))
        up = up or node.op_type in _UPSAMPLING
        tensor = ins[0]
    return out


def _main_reaches(g: _Graph, start: str, targets: set[str]) -> tuple[str, int, bool] | None:
    """Walk back from ``start`` (breadth first) to the nearest tensor in ``targets``: (tensor,
    convs on the way, upsampling on the way), or None."""
    frontier = [(start, 0, False)]
    seen = {start}
    steps = 0
    while frontier and steps < _MAX_STEPS:
        nxt = []
        for tensor, convs, up in frontier:
            if tensor in targets:
                return tensor, convs, up
            node = g.producer.get(tensor)
            if node is None:
                continue
            steps += 1
            c = convs + (node.op_type in CONV_OPS)
            u = up or node.op_type in _UPSAMPLING
            for i in g.data_inputs(node):
                if i not in seen:
                    seen.add(i)
                    nxt.append((i, c, u))
        frontier = nxt
    return None


def residual_blocks(graph: onnx.GraphProto, path_of: Callable[[onnx.NodeProto], str | None] | None = None) -> list[ResidualBlock]:
    """Every residual block of ``graph`` (module docs), in graph order."""
    g = _Graph(graph)
    blocks = []
    for node in g.nodes:
        if node.op_type not in ("Add", "Sum"):
            continue
        ins = g.data_inputs(node)
        if len(ins) != 2:
            continue
        found = None
        for short, main in ((ins[1], ins[0]), (ins[0], ins[1])):
            chain = _shortcut_chain(g, short)
            targets = {t: (convs, up) for t, convs, up in chain if not up}
            hit = _main_reaches(g, main, set(targets))
            if hit is None:
                continue
            start, main_convs, up = hit
            convs = targets[start][0]
            if not up and main_convs >= 1 and len(convs) < main_convs:
                found = ResidualBlock(g.key(node), start, convs, main_convs, path_of(node) if path_of else None)
                break
        if found is not None:
            blocks.append(found)
    return blocks


def _axes(node: onnx.NodeProto, g: _Graph, inits: dict[str, Any]) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(helper.get_attribute_value(a))
    if len(node.input) < 2 or not node.input[1]:
        return None
    from onnx import numpy_helper

    if node.input[1] in inits:
        return [int(v) for v in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
    producer = g.producer.get(node.input[1]) if g is not None else None
    if producer is not None and producer.op_type == "Constant":
        for a in producer.attribute:
            if a.name == "value":
                return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
            if a.name in ("value_ints", "value_int"):
                value = helper.get_attribute_value(a)
                return [int(v) for v in (value if isinstance(value, list) else [value])]
    return None


def is_global_reduce(node: onnx.NodeProto, rank: int | None, g: Any = None, inits: dict[str, Any] | None = None) -> bool:
    """ReduceMean/ReduceMax over every spatial axis of an N×C×… (or N×…×C) tensor: global pooling."""
    if node.op_type not in ("ReduceMean", "ReduceMax") or not rank or rank < 3:
        return False
    axes = _axes(node, g, inits or {})
    if axes is None:
        return False
    axes = sorted({a % rank for a in axes})
    return axes in (list(range(2, rank)), list(range(1, rank - 1)))


def is_dense(node: onnx.NodeProto, consts: set[str]) -> bool:
    """Gemm, or MatMul with a constant weight."""
    return node.op_type == "Gemm" or (node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul") and any(i in consts for i in node.input))


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    out = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    return out


def layer_counts(graph: onnx.GraphProto, path_of: Callable[[onnx.NodeProto], str | None] | None = None) -> dict[str, int]:
    """The counts of the module docs: conv, conv_main, downsample, linear, pooling, blocks, stages."""
    g = _Graph(graph)
    inits = {i.name: i for i in graph.initializer}
    ranks = _ranks(graph)
    blocks = residual_blocks(graph, path_of)
    shortcut = {c for b in blocks for c in b.shortcut_convs}
    convs = [n for n in g.nodes if n.op_type in CONV_OPS]
    pooling = sum(1 for n in g.nodes if n.op_type in POOL_OPS or is_global_reduce(n, ranks.get(n.input[0]) if n.input else None, g, inits))
    paths = [b.path for b in blocks]
    if blocks and all(p and "." in p for p in paths):
        stages = len({p.rsplit(".", 1)[0] for p in paths})  # type: ignore[union-attr]
    else:
        stages = sum(1 for k, b in enumerate(blocks) if k == 0 or b.shortcut_convs)
    return {
        "conv": len(convs),
        "conv_main": sum(1 for n in convs if g.key(n) not in shortcut),
        "downsample": len(shortcut),
        "linear": sum(1 for n in g.nodes if is_dense(n, g.consts)),
        "pooling": pooling,
        "blocks": len(blocks),
        "stages": stages,
    }
