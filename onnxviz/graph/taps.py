"""The tap plan: which tensors to expose, and the rewriter that exposes them as graph outputs.

Tap kinds (combinable, e.g. ``("conv", "pool")``; see :data:`TAP_KINDS`):

- ``conv`` (default): each Conv-family node's output with its bias, wherever the exporter put it
  (tf2onnx and Paddle leave it as a separate ``Add``): the conv layer's linear output.
- ``activation``: follows each Conv through a single-consumer chain of BatchNormalization,
  elementwise activations, Identity/Dropout pass-throughs, per-channel affine ops with constant
  operands, and gated activations ``x * f(x)`` (SiLU/Swish, HardSwish, Mish written out), and sits
  at the end of that chain: the tensor a Keras user calls a ``Conv2D(activation=...)`` layer's
  output. Tapping the end of the chain also keeps onnxruntime's Conv+BN+activation fusions.
- ``pool``, ``dense``, ``merge``: the output of every layer of that kind (see
  :mod:`onnxviz.graph.layers`); ``layer``: every layer's output (keract / torchlens style).
- ``tensors``: any tensors by name, named after themselves.

conv and activation name their taps after the conv, so they combine with neither each other nor
``layer``. Taps come in graph order; a tensor is tapped once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import onnx
from onnx import helper

from ..errors import LayerSelectionError, OnnxvizError
from .index import CONV_OPS, GraphIndex, is_conv, node_key

_CONV_TYPES = frozenset(op for _, op in CONV_OPS)
from .layers import CONV_KEY, LayerGraph, group_layers
from .naming import display_label, folded_batchnorm, friendly_name, unique_names

__all__ = ["CONV_OPS", "Tap", "Skipped", "TapPlan", "TapMode", "TAP_KINDS", "parse_tap", "plan_taps", "apply_plan"]

TapMode = Literal["conv", "activation"]
TAP_KINDS = ("conv", "activation", "pool", "dense", "merge", "layer")
_KIND_WORDS = {"pool": "pooling", "dense": "dense (Gemm / MatMul with a constant weight)", "merge": "merge (Add, Concat...)"}



@dataclass(frozen=True)
class Tap:
    """One exposed tensor and where it came from."""

    name: str
    tensor: str
    node: str
    op: str
    conv_output: str
    through: tuple[str, ...] = ()
    through_ops: tuple[str, ...] = ()
    shape: tuple[int | str | None, ...] | None = None
    elem_type: int = 0
    reused_output: bool = False
    # (scale, zero_point) tensor names when the tapped tensor is quantized (QLinearConv output,
    # or the QuantizeLinear after a QDQ Conv); zero_point may be "".
    quantization: tuple[str, str] | None = None
    # The BatchNorm the exporter folded into this Conv: its output is the post-BN tensor and its
    # weights are BN-scaled.
    bn_folded: str | None = None
    # The kind of layer tapped (conv, pool, dense, merge, activation, norm, ..., or "tensor" for a
    # tensor asked for by name) and the framework layer the tensor belongs to.
    kind: str = "conv"
    layer: str | None = None

    @property
    def label(self) -> str:
        """The name shown to users: ``layer1.0.conv1 (+bn1)`` when BatchNorm was folded in."""
        return display_label(self.name, self.bn_folded)


@dataclass(frozen=True)
class Skipped:
    """A Conv-family node that cannot be tapped, and why."""

    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class TapPlan:
    """Ordered taps plus the model's own outputs (which stay first, unchanged)."""

    mode: str  # the tap kinds joined by commas ("conv", "conv,pool"), "tensor" for tensors only
    taps: tuple[Tap, ...]
    skipped: tuple[Skipped, ...]
    model_outputs: tuple[str, ...]
    patterns: tuple[str, ...] = field(default=())
    kinds: tuple[str, ...] = field(default=())
    tensors: tuple[str, ...] = field(default=())

    @property
    def output_names(self) -> list[str]:
        """Output names of the tapped model: the model's own first, then the added taps."""
        return list(self.model_outputs) + [t.tensor for t in self.taps if not t.reused_output]


def _subgraph_convs(graph: onnx.GraphProto, where: str) -> list[Skipped]:
    found: list[Skipped] = []
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                place = f"{where}{node.op_type} '{node.name or node.output[0]}' ({attr.name})"
                for inner in sub.node:
                    if is_conv(inner):
                        found.append(
                            Skipped(
                                node=inner.name or inner.output[0],
                                op=inner.op_type,
                                reason=f"inside {place}: subgraph tensors cannot be graph outputs",
                            )
                        )
                found.extend(_subgraph_convs(sub, place + " > "))
    return found


def _matches(pattern: str, tap: Tap) -> bool:
    keys = (tap.name, tap.node, tap.tensor) + ((tap.layer,) if tap.layer and tap.layer != tap.name else ())
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise LayerSelectionError(f"bad layer regex {pattern[3:]!r}: {exc}") from None
        return any(rx.search(k) for k in keys)
    return any(fnmatch.fnmatchcase(k, pattern) for k in keys)


def _hint(pattern: str, graph: LayerGraph | None) -> str:
    """What a pattern that matches no tap names instead: `` (it names pool layers: use --tap pool)``."""
    kinds: list[str] = []
    gone: list[str] = []
    for layer in graph or ():
        if _matches(pattern, Tap(name=layer.name, tensor=layer.output or "", node="", op="", conv_output="")):
            (gone if layer.vanished else kinds).append(layer.name if layer.vanished else layer.kind)
    kinds = list(dict.fromkeys(kinds))
    if kinds:
        tapable = [k for k in kinds if k in ("pool", "dense", "merge", "conv")]
        return f" (it names {' and '.join(kinds)} layers: use --tap {','.join(tapable) if tapable else 'layer'})"
    return f" (it names layers that vanished in ONNX: {', '.join(gone[:4])})" if gone else ""


def _select(taps: list[Tap], patterns: Sequence[str], graph: LayerGraph | None = None) -> list[Tap]:
    if not patterns:
        return taps
    chosen: set[int] = set()
    for pattern in patterns:
        hits = {i for i, tap in enumerate(taps) if _matches(pattern, tap)}
        if not hits:
            names = [t.name for t in taps]
            listing = ", ".join(names[:8]) + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")
            raise LayerSelectionError(f"layer pattern {pattern!r} matches no tapped layer{_hint(pattern, graph)}; layers are: {listing}")
        chosen |= hits
    return [tap for i, tap in enumerate(taps) if i in chosen]


def parse_tap(tap: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"conv"``, ``"conv,pool"``, ``("conv", "pool")`` or None → validated kinds, in order, once each."""
    items = [tap] if isinstance(tap, str) else list(tap or ())
    kinds: list[str] = []
    for item in items:
        for word in str(item).split(","):
            word = word.strip().lower()
            if not word:
                continue
            if word not in TAP_KINDS:
                raise OnnxvizError(f"unknown tap mode {word!r}: use {', '.join(TAP_KINDS)} (combinable: conv,pool)")
            if word not in kinds:
                kinds.append(word)
    named_after_conv = [k for k in ("conv", "activation") if k in kinds]
    if len(named_after_conv) == 2 or (named_after_conv and "layer" in kinds):
        clash = "conv and activation" if len(named_after_conv) == 2 else f"{named_after_conv[0]} and layer"
        raise OnnxvizError(
            f"--tap {clash} cannot be combined: both name their taps after the conv layer "
            "(--tap layer alone taps every layer's output; --tensor NAME adds any tensor)"
        )
    return tuple(kinds)


def _conv_taps(model: onnx.ModelProto, index: GraphIndex, graph: LayerGraph, mode: str) -> list[tuple[int, Tap]]:
    raw: list[tuple[onnx.NodeProto, str, list[onnx.NodeProto], tuple[str, str] | None]] = []
    for node in model.graph.node:
        if not is_conv(node) or not node.output or not node.output[0]:
            continue
        conv_out = node.output[0]
        if mode == "activation":
            tensor, path = index.follow(conv_out)
        else:  # the conv layer's output: its bias Add included where the exporter left it separate
            tensor, path = conv_out, []
            bias = index.bias_after(conv_out)
            if bias is not None and graph.layer_of_node(node_key(bias)) is graph.layer_of_node(node_key(node)):
                tensor, path = bias.output[0], [bias]
        quant: tuple[str, str] | None = None
        if node.op_type == "QLinearConv" and not path:
            quant = (node.input[6], node.input[7] if len(node.input) > 7 else "")
        q = index.quantize_after(tensor)
        if q is not None:
            path = [*path, q]
            tensor = q.output[0]
            quant = (q.input[1], q.input[2] if len(q.input) > 2 else "")
        raw.append((node, tensor, path, quant))
    inits = set(index.initializers)
    scoped = model.producer_name in ("tf2onnx", "keras2onnx")

    def name_of(node: onnx.NodeProto) -> str:
        own = next((p.value for p in node.metadata_props if p.key == CONV_KEY and p.value), None)
        layer = graph.layer_of_node(node_key(node))
        if own is None and layer is not None and layer.source != "structure" and sum(op in _CONV_TYPES for op in layer.ops) == 1:
            own = layer.name  # the framework's layer name, also where the exporter renamed the node
        return own or friendly_name(node, node.output[0], inits, scoped=scoped)

    names = unique_names(name_of(node) for node, *_ in raw)
    out: list[tuple[int, Tap]] = []
    for (node, tensor, path, quant), name in zip(raw, names):
        shape, elem = index.shape_of(tensor)
        layer = graph.layer_of_node(node_key(node))
        tap = Tap(
            name=name, tensor=tensor, node=node_key(node), op=node.op_type, conv_output=node.output[0],
            through=tuple(node_key(n) for n in path), through_ops=tuple(n.op_type for n in path), shape=shape,
            elem_type=elem, reused_output=tensor in index.outputs, quantization=quant,
            bn_folded=folded_batchnorm(node, inits), kind="conv", layer=layer.name if layer else None,
        )
        out.append((index.position[node_key(node)], tap))
    return out


def _nodes(index: GraphIndex, keys: Sequence[str]) -> list[onnx.NodeProto]:
    return [index.graph.node[index.position[k]] for k in keys if k in index.position]


def _layer_taps(model: onnx.ModelProto, index: GraphIndex, graph: LayerGraph, kinds: Sequence[str]) -> list[tuple[int, Tap]]:
    inits = set(index.initializers)
    out: list[tuple[int, Tap]] = []
    for layer in graph:
        if layer.vanished or not layer.output or index.is_static(layer.output):
            continue
        if "layer" not in kinds and layer.kind not in kinds:
            continue
        members = _nodes(index, layer.nodes)
        compute = [n for n in members if not all(index.is_static(t) for t in n.input if t)] or members
        head = compute[0]
        producer = index.producer.get(layer.output, head)
        upto = next((k for k, n in enumerate(compute) if n is producer), len(compute) - 1)
        chain = compute[1 : upto + 1]
        quant = _quantization(layer.output, index)
        shape, elem = index.shape_of(layer.output)
        tap = Tap(
            name=layer.name, tensor=layer.output, node=node_key(head), op=head.op_type,
            conv_output=layer.conv_output or layer.output, through=tuple(node_key(n) for n in chain),
            through_ops=tuple(n.op_type for n in chain), shape=shape, elem_type=elem,
            reused_output=layer.output in index.outputs, quantization=quant,
            bn_folded=folded_batchnorm(head, inits) if is_conv(head) else None, kind=layer.kind, layer=layer.name,
        )
        out.append((index.position[node_key(head)], tap))
    return out


# Where a quantized op keeps its output's (scale, zero point): input positions.
_QUANT_OUT = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7), "QLinearMul": (6, 7),
              "QGemm": (7, 8), "QLinearGlobalAveragePool": (3, 4), "QLinearAveragePool": (3, 4), "QLinearSigmoid": (3, 4),
              "QLinearLeakyRelu": (3, 4), "QLinearConcat": (0, 1)}
# Ops that move quantized values without changing their scale.
_QUANT_KEEP = frozenset({"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Relu"})


def _quantization(tensor: str, index: GraphIndex) -> tuple[str, str] | None:
    """(scale, zero point) tensor names when ``tensor`` holds quantized values, else None."""
    for _ in range(16):
        node = index.producer.get(tensor)
        if node is None:
            return None
        where = _QUANT_OUT.get(node.op_type)
        if where is not None:
            scale, zero = where
            if len(node.input) <= scale:
                return None
            return node.input[scale], node.input[zero] if len(node.input) > zero else ""
        if node.op_type not in _QUANT_KEEP or not node.input:
            return None
        _, elem = index.shape_of(tensor)
        if elem not in (0, onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
            return None
        tensor = node.input[0]
    return None


def _tensor_taps(index: GraphIndex, graph: LayerGraph, tensors: Sequence[str]) -> list[tuple[int, Tap]]:
    out: list[tuple[int, Tap]] = []
    for tensor in tensors:
        producer = index.producer.get(tensor)
        if producer is None:
            where = "an input of the model, not a computed tensor" if tensor in index.graph_inputs else "not an output of any node of the main graph"
            raise LayerSelectionError(f"tensor {tensor!r} is {where}")
        shape, elem = index.shape_of(tensor)
        layer = graph.layer_of_node(node_key(producer))
        quant = _quantization(tensor, index)
        tap = Tap(
            name=tensor, tensor=tensor, node=node_key(producer), op=producer.op_type, conv_output=tensor, shape=shape,
            elem_type=elem, reused_output=tensor in index.outputs, quantization=quant, kind="tensor",
            layer=layer.name if layer else None,
        )
        out.append((index.position[node_key(producer)], tap))
    return out


def plan_taps(
    model: onnx.ModelProto,
    tap: str | Sequence[str] | None = "conv",
    layers: str | Sequence[str] | None = None,
    tensors: str | Sequence[str] | None = None,
    *,
    layer_graph: LayerGraph | None = None,
) -> TapPlan:
    """Plan the taps of ``model``: the layers of the kinds in ``tap`` plus the ``tensors`` named.

    ``tap``: one kind or several (``"conv,pool"``, ``("conv", "pool")``; see :data:`TAP_KINDS`),
    or None with ``tensors`` only. ``layers`` selects layers by glob (``layer1.*``) or, prefixed
    with ``re:``, by regular expression, matched against the tap's name, its framework layer, the
    node name and the tensor name; tensors named in ``tensors`` are always tapped.
    ``layer_graph``: the model's :func:`~onnxviz.graph.layers.group_layers` result, if at hand.
    """
    kinds = parse_tap(tap)
    wanted = (tensors,) if isinstance(tensors, str) else tuple(dict.fromkeys(tensors or ()))
    if not kinds and not wanted:
        raise OnnxvizError("nothing to tap: give a tap kind (conv, activation, pool, dense, merge, layer) or tensor names")
    patterns = (layers,) if isinstance(layers, str) else tuple(layers or ())
    graph = layer_graph if layer_graph is not None else group_layers(model)
    index = graph.index if graph.index is not None else GraphIndex(model)
    conv_mode = next((k for k in kinds if k in ("conv", "activation")), None)
    skipped = _subgraph_convs(model.graph, "") if conv_mode else []
    found: list[tuple[int, Tap]] = []
    if conv_mode:
        found += _conv_taps(model, index, graph, conv_mode)
    layer_kinds = [k for k in kinds if k not in ("conv", "activation")]
    if layer_kinds:
        found += _layer_taps(model, index, graph, layer_kinds)
    if not found and not wanted:
        if not layer_kinds:
            where = f"; {len(skipped)} found only inside If/Loop/Scan subgraphs" if skipped else ""
            raise OnnxvizError(
                "model has no Conv-family node (Conv, ConvTranspose, QLinearConv, ConvInteger) "
                f"in its main graph{where}"
            )
        what = " or ".join(_KIND_WORDS.get(k, k) for k in layer_kinds)
        raise OnnxvizError(f"model has no {what} layer to tap (onnxviz summary lists its layers and their kinds)")
    selected = _select([t for _, t in found], patterns, graph)
    keep = {id(t) for t in selected}
    found = [(pos, t) for pos, t in found if id(t) in keep] + _tensor_taps(index, graph, wanted)
    found.sort(key=lambda item: item[0])  # graph order (stable: a conv before a layer it heads)
    taps: list[Tap] = []
    seen: set[str] = set()
    for _, t in found:
        if t.tensor not in seen:
            seen.add(t.tensor)
            taps.append(t)
    names = unique_names(t.name for t in taps)
    taps = [t if t.name == n else replace(t, name=n) for t, n in zip(taps, names)]
    mode = ",".join(kinds + (("tensor",) if wanted and not kinds else ()))
    return TapPlan(
        mode=mode, taps=tuple(taps), skipped=tuple(skipped), model_outputs=tuple(o.name for o in model.graph.output),
        patterns=patterns, kinds=kinds, tensors=wanted,
    )

def apply_plan(model: onnx.ModelProto, plan: TapPlan) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are its own outputs followed by the planned taps."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    known = {vi.name: vi for vi in list(tapped.graph.value_info) + list(tapped.graph.input)}
    for tap in plan.taps:
        if tap.reused_output:
            continue
        vi = known.get(tap.tensor)
        if vi is not None and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out = onnx.ValueInfoProto()
            out.CopyFrom(vi)
        else:
            out = helper.make_empty_tensor_value_info(tap.tensor)
        tapped.graph.output.append(out)
    return tapped
