"""The tap plan: which tensors to expose, and the rewriter that exposes them as graph outputs.

A tap sits on the output of a Conv-family node in the main graph. With ``tap="activation"`` it
follows the Conv through a single-consumer chain of BatchNormalization, elementwise activations,
Identity/Dropout pass-throughs,
per-channel affine ops with constant operands, and gated activations ``x * f(x)`` (SiLU/Swish,
HardSwish, Mish written out), and sits at the end of that chain: the tensor a Keras user calls a
``Conv2D(activation=...)`` layer's output. Tapping the end of the chain also keeps onnxruntime's
Conv+BN+activation fusions, so the model's own outputs stay as they were.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import helper

from ..errors import LayerSelectionError, OnnxvizError
from .naming import display_label, folded_batchnorm, friendly_name, unique_names

__all__ = ["CONV_OPS", "Tap", "Skipped", "TapPlan", "TapMode", "plan_taps", "apply_plan"]

TapMode = Literal["conv", "activation"]

CONV_OPS: frozenset[tuple[str, str]] = frozenset(
    {("", "Conv"), ("", "ConvTranspose"), ("", "QLinearConv"), ("", "ConvInteger"), ("com.microsoft", "FusedConv")}
)
_ACTIVATIONS = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu",
        "Celu", "Tanh", "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Swish", "Erf",
    }
)  # fmt: skip
_AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
# Value-preserving at inference (Paddle puts Identity after every bias Add; Dropout is identity).
_PASS_THROUGH = frozenset({"Identity", "Dropout"})
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})


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

    mode: TapMode
    taps: tuple[Tap, ...]
    skipped: tuple[Skipped, ...]
    model_outputs: tuple[str, ...]
    patterns: tuple[str, ...] = field(default=())

    @property
    def output_names(self) -> list[str]:
        """Output names of the tapped model: the model's own first, then the added taps."""
        return list(self.model_outputs) + [t.tensor for t in self.taps if not t.reused_output]


def _is_conv(node: onnx.NodeProto) -> bool:
    return (node.domain if node.domain != "ai.onnx" else "", node.op_type) in CONV_OPS


def _subgraph_convs(graph: onnx.GraphProto, where: str) -> list[Skipped]:
    found: list[Skipped] = []
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                place = f"{where}{node.op_type} '{node.name or node.output[0]}' ({attr.name})"
                for inner in sub.node:
                    if _is_conv(inner):
                        found.append(
                            Skipped(
                                node=inner.name or inner.output[0],
                                op=inner.op_type,
                                reason=f"inside {place}: subgraph tensors cannot be graph outputs",
                            )
                        )
                found.extend(_subgraph_convs(sub, place + " > "))
    return found


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names used inside subgraphs (possibly outer-scope references into this graph)."""
    refs: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                for inner in sub.node:
                    refs.update(inner.input)
                refs |= _outer_refs(sub)
    return refs


class _Graph:
    """Index of the main graph: producers, consumers, constants, types."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.graph = g
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.node:
            for name in set(node.input):
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in g.output}
        self.outer = _outer_refs(g)
        self.constants = {i.name for i in g.initializer} | {
            out for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx") for out in n.output
        }
        self.constant_size: dict[str, int] = {i.name: int(np.prod(i.dims)) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for attr in n.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self.constant_size[n.output[0]] = int(np.prod(attr.t.dims))
                    elif attr.name in ("value_float", "value_int"):
                        self.constant_size[n.output[0]] = 1
        self.types: dict[str, onnx.ValueInfoProto] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.types[vi.name] = vi

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        if tensor in self.outputs or tensor in self.outer:
            return None
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def step_kind(self, node: onnx.NodeProto, tensor: str) -> str | None:
        """How ``node`` maps ``tensor`` elementwise to its single output, or None if it does not.

        ``"pass"`` (Identity, Dropout), ``"linear"`` (BatchNormalization, per-channel affine op with
        a constant), ``"scale"`` (Mul/Div by a scalar constant), ``"act"`` (an activation).
        """
        if node.domain not in ("", "ai.onnx") or len([o for o in node.output if o]) != 1:
            return None
        op = node.op_type
        rest_constant = bool(node.input) and node.input[0] == tensor and all(i in self.constants or not i for i in node.input[1:])
        if op in _PASS_THROUGH:
            return "pass" if rest_constant else None
        if op in _ACTIVATIONS:
            return "act" if rest_constant else None
        if op == "BatchNormalization":
            return "linear" if rest_constant else None
        if op in _AFFINE and len(node.input) == 2:
            a, b = node.input
            other = b if a == tensor and b in self.constants else (a if b == tensor and a in self.constants and op in ("Add", "Mul") else None)
            if other is None:
                return None
            return "scale" if op in ("Mul", "Div") and self.constant_size.get(other) == 1 else "linear"
        return None

    def is_unary_step(self, node: onnx.NodeProto, tensor: str) -> bool:
        return self.step_kind(node, tensor) is not None

    def follow(self, tensor: str) -> tuple[str, list[onnx.NodeProto]]:
        """Walk the activation chain from a Conv output; return the last tensor and the path.

        BatchNorm and per-channel affine steps are taken before the nonlinearity only; after it
        just pass-throughs and scalar rescales (HardSwish's ``/6``, GELU's ``*0.5``), so a
        BatchNorm placed after the activation (Keras's Conv→ReLU→BN) belongs to the next layer.
        """
        path: list[onnx.NodeProto] = []
        activated = False
        while True:
            nxt = self.sole_consumer(tensor)
            kind = self.step_kind(nxt, tensor) if nxt is not None else None
            if kind == "act" and activated:
                kind = None
            if kind == "linear" and activated:
                kind = None
            if kind is not None and nxt is not None:
                activated = activated or kind == "act"
                path.append(nxt)
                tensor = nxt.output[0]
                continue
            gated = None if activated else self._gate(tensor)
            if gated is None:
                return tensor, path
            activated = True
            path.extend(gated)
            tensor = gated[-1].output[0]

    def _gate(self, tensor: str) -> list[onnx.NodeProto] | None:
        """``y = x * f(x)`` with ``f`` a unary chain (SiLU, HardSwish, Mish written out)."""
        if tensor in self.outputs or tensor in self.outer:
            return None
        users = self.consumers.get(tensor, [])
        if len(users) != 2:
            return None
        for start in users:
            mul = next(u for u in users if u is not start)
            if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or tensor not in mul.input:
                continue
            if not self.is_unary_step(start, tensor):
                continue
            chain = [start]
            out = start.output[0]
            while True:
                if out in self.outputs or out in self.outer:
                    break
                out_users = self.consumers.get(out, [])
                if len(out_users) == 1 and out_users[0] is mul:
                    if sorted(mul.input) == sorted([tensor, out]):
                        return chain + [mul]
                    break
                nxt = self.sole_consumer(out)
                if nxt is None or not self.is_unary_step(nxt, out):
                    break
                chain.append(nxt)
                out = nxt.output[0]
        return None

    def quantize_after(self, tensor: str) -> onnx.NodeProto | None:
        """The QuantizeLinear closing a QDQ node unit (DequantizeLinear → Conv → QuantizeLinear).

        onnxruntime fuses such a unit into an integer kernel whose output is the QuantizeLinear's;
        tapping the float tensor in between would stop that fusion and change the model's outputs.
        """
        nxt = self.sole_consumer(tensor)
        if nxt is not None and nxt.op_type == "QuantizeLinear" and nxt.input and nxt.input[0] == tensor:
            return nxt
        return None

    def shape_of(self, tensor: str) -> tuple[tuple[int | str | None, ...] | None, int]:
        vi = self.types.get(tensor)
        if vi is None or not vi.type.HasField("tensor_type"):
            return None, 0
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None, tt.elem_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(d.dim_value)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return tuple(dims), tt.elem_type


def _matches(pattern: str, tap: Tap) -> bool:
    keys = (tap.name, tap.node, tap.tensor)
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise LayerSelectionError(f"bad layer regex {pattern[3:]!r}: {exc}") from None
        return any(rx.search(k) for k in keys)
    return any(fnmatch.fnmatchcase(k, pattern) for k in keys)


def _select(taps: list[Tap], patterns: Sequence[str]) -> list[Tap]:
    if not patterns:
        return taps
    chosen: set[int] = set()
    for pattern in patterns:
        hits = {i for i, tap in enumerate(taps) if _matches(pattern, tap)}
        if not hits:
            names = [t.name for t in taps]
            listing = ", ".join(names[:8]) + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")
            raise LayerSelectionError(f"layer pattern {pattern!r} matches no tapped layer; layers are: {listing}")
        chosen |= hits
    return [tap for i, tap in enumerate(taps) if i in chosen]


def plan_taps(
    model: onnx.ModelProto, tap: TapMode = "conv", layers: str | Sequence[str] | None = None
) -> TapPlan:
    """Plan the taps of ``model``'s Conv-family layers.

    ``layers`` selects layers by glob (``layer1.*``) or, prefixed with ``re:``, by regular
    expression, matched against the friendly name, the node name and the tensor name.
    """
    if tap not in ("conv", "activation"):
        raise OnnxvizError(f"unknown tap mode {tap!r}: use 'conv' or 'activation'")
    patterns = (layers,) if isinstance(layers, str) else tuple(layers or ())
    index = _Graph(model)
    skipped = _subgraph_convs(model.graph, "")
    raw: list[tuple[onnx.NodeProto, str, list[onnx.NodeProto], tuple[str, str] | None]] = []
    for node in model.graph.node:
        if not _is_conv(node) or not node.output or not node.output[0]:
            continue
        conv_out = node.output[0]
        tensor, path = index.follow(conv_out) if tap == "activation" else (conv_out, [])
        quant: tuple[str, str] | None = None
        if node.op_type == "QLinearConv" and not path:
            quant = (node.input[6], node.input[7] if len(node.input) > 7 else "")
        q = index.quantize_after(tensor)
        if q is not None:
            path = [*path, q]
            tensor = q.output[0]
            quant = (q.input[1], q.input[2] if len(q.input) > 2 else "")
        raw.append((node, tensor, path, quant))
    if not raw:
        where = f"; {len(skipped)} found only inside If/Loop/Scan subgraphs" if skipped else ""
        raise OnnxvizError(
            "model has no Conv-family node (Conv, ConvTranspose, QLinearConv, ConvInteger) "
            f"in its main graph{where}"
        )
    inits = {i.name for i in model.graph.initializer}
    scoped = model.producer_name in ("tf2onnx", "keras2onnx")
    names = unique_names(friendly_name(node, node.output[0], inits, scoped=scoped) for node, *_ in raw)
    taps: list[Tap] = []
    seen: set[str] = set()
    for (node, tensor, path, quant), name in zip(raw, names):
        if tensor in seen:
            continue
        seen.add(tensor)
        shape, elem = index.shape_of(tensor)
        taps.append(
            Tap(
                name=name,
                tensor=tensor,
                node=node.name or node.output[0],
                op=node.op_type,
                conv_output=node.output[0],
                through=tuple(n.name or n.output[0] for n in path),
                through_ops=tuple(n.op_type for n in path),
                shape=shape,
                elem_type=elem,
                reused_output=tensor in index.outputs,
                quantization=quant,
                bn_folded=folded_batchnorm(node, inits),
            )
        )
    taps = _select(taps, patterns)
    return TapPlan(
        mode=tap,
        taps=tuple(taps),
        skipped=tuple(skipped),
        model_outputs=tuple(o.name for o in model.graph.output),
        patterns=patterns,
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
