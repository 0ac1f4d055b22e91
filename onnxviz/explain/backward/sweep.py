"""Reverse-mode differentiation of an ONNX graph, written as ONNX nodes.

:func:`trace` finds the part of the graph to differentiate: the nodes that lie between the
tensors differentiated with respect to (``wrt``: the input, or a tapped tensor) and the target.
Everything else stays forward-only. :func:`sweep` then walks those nodes in reverse, applies each
op's rule from the table (:mod:`.rules_conv`, :mod:`.rules_math`, :mod:`.rules_norm`,
:mod:`.rules_tensor`), and sums
the gradients of tensors used more than once. An op on the path without a rule is refused before
anything is built, with the op and the node named: never a wrong gradient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx

from ...errors import UnsupportedOpError
from . import rules_conv, rules_math, rules_norm, rules_tensor  # noqa: F401  (fill the rule table)
from .builder import FLOAT_TYPES, Builder, node_label
from .registry import RULES

__all__ = ["Path", "trace", "check_supported", "sweep", "supported_ops", "prepare", "data_dependent", "check_static_values"]

_QUANTIZED_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                            "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat"})  # fmt: skip


def supported_ops() -> list[str]:
    """The ONNX ops (default domain) with a backward rule."""
    return sorted(RULES)


@dataclass(frozen=True)
class Path:
    nodes: tuple[onnx.NodeProto, ...]  # forward nodes to differentiate, in graph order
    active: frozenset[str]  # tensors that depend on a wrt tensor
    reach: frozenset[str]  # active tensors the target depends on: these get gradients

    def shape_tensors(self) -> list[str]:
        """Every tensor a rule may ask the shape of."""
        return list(dict.fromkeys(n for node in self.nodes for n in list(node.input) + list(node.output) if n))

    def value_tensors(self) -> list[str]:
        """Parameter tensors whose values the rules read (shapes, axes, pads, scales…)."""
        out = []
        for node in self.nodes:
            rule = RULES.get(node.op_type)
            if rule is not None:
                out.extend(node.input[i] for i in rule.values if i < len(node.input) and node.input[i])
        return list(dict.fromkeys(out))


def _differentiable(name: str, types: dict[str, int]) -> bool:
    elem = types.get(name)
    return elem is None or elem in FLOAT_TYPES


def _subgraph_refs(node: onnx.NodeProto) -> set[str]:
    refs: set[str] = set()
    for attr in node.attribute:
        for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            for inner in sub.node:
                refs.update(inner.input)
                refs |= _subgraph_refs(inner)
    return refs


def trace(graph: onnx.GraphProto, wrt: Sequence[str], target: str, types: dict[str, int]) -> Path:
    """The nodes between ``wrt`` and ``target`` (types unknown count as differentiable)."""
    active = set(wrt)
    for node in graph.node:
        if not any(i in active for i in list(node.input) + sorted(_subgraph_refs(node))):
            continue
        # Integer outputs of QuantizeLinear (and of quantized operators, which are then refused by
        # name) carry the real value they encode: they stay on the path.
        encodes = node.op_type == "QuantizeLinear" or node.op_type in _QUANTIZED_OPS
        for out in node.output:
            if out and (_differentiable(out, types) or encodes):
                active.add(out)
    reach = {target} if target in active else set()
    nodes = []
    for node in reversed(graph.node):
        inputs = list(node.input) + sorted(_subgraph_refs(node))
        if any(out in reach for out in node.output) and any(i in active for i in inputs):
            nodes.append(node)
            reach.update(i for i in inputs if i in active)
    nodes.reverse()
    return Path(tuple(nodes), frozenset(active), frozenset(reach))


def data_dependent(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from the values of the graph inputs (not only from their shapes)."""
    found = {vi.name for vi in graph.input} - {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Shape", "Size"):
            continue
        if any(i in found for i in list(node.input) + sorted(_subgraph_refs(node))):
            found.update(o for o in node.output if o)
    return found


def check_supported(path: Path, wrt: Sequence[str], target: str) -> None:
    """Refuse, in one line naming op and node, any node on the path without a backward rule."""
    for node in path.nodes:
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if domain == "" and node.op_type in RULES and not _subgraph_refs(node):
            continue
        op = f"{domain}::{node.op_type}" if domain else node.op_type
        hint = ""
        if node.op_type in _QUANTIZED_OPS:
            hint = "; quantized operators have no float path: differentiate the float model or its QDQ-format quantization"
        elif node.op_type in ("If", "Loop", "Scan"):
            hint = "; control flow is not differentiated"
        raise UnsupportedOpError(
            f"no backward rule for op {op} (node '{node_label(node)}') on the path from "
            f"{', '.join(repr(w) for w in wrt)} to '{target}'{hint}"
        )


def check_static_values(graph: onnx.GraphProto, path: Path) -> None:
    """Refuse a rule parameter (a Slice's starts, a Gather's indices…) computed from the input's
    values: the backward graph fixes it per input shape, so it would be wrong for other inputs."""
    dependent = data_dependent(graph)
    for node in path.nodes:
        rule = RULES.get(node.op_type)
        for i in rule.values if rule is not None else ():
            if i < len(node.input) and node.input[i] in dependent:
                raise UnsupportedOpError(
                    f"{node.op_type} node '{node_label(node)}': its input '{node.input[i]}' is computed from the input's "
                    "values, not only its shape; the backward rule needs it fixed"
                )


def prepare(b: Builder, path: Path) -> None:
    """Let rules adjust their forward nodes (extra outputs such as MaxPool's Indices)."""
    for node in path.nodes:
        rule = RULES.get(node.op_type)
        if rule is not None and rule.prepare is not None:
            b.node = node
            rule.prepare(b, node)
            b.node = None


def sweep(b: Builder, path: Path, seeds: dict[str, str], wrt: Iterable[str]) -> dict[str, str | None]:
    """Emit the backward nodes into ``b``; return each wrt tensor's gradient (None: zero)."""
    contributions: dict[str, list[str]] = defaultdict(list)
    for name, seed in seeds.items():
        contributions[name].append(seed)
    summed: dict[str, str | None] = {}

    def grad(name: str) -> str | None:
        if name in summed:
            return summed[name]
        parts = contributions.get(name, [])
        total = None if not parts else parts[0] if len(parts) == 1 else b.op("Sum", parts, hint="grad_sum")
        if total is not None:
            b.shapes[total] = b.shape(name)
            if b.dtype(name) in FLOAT_TYPES:  # an integer (quantized) tensor's gradient stays float
                b.types[total] = b.dtype(name)
        summed[name] = total
        return total

    for node in reversed(path.nodes):
        dys = [grad(out) if out in path.reach else None for out in node.output]
        if all(dy is None for dy in dys):
            continue
        need = [bool(i) and i in path.reach for i in node.input]
        if not any(need):
            continue
        b.node = node
        dxs = RULES[node.op_type].fn(b, node, dys, need)
        for name, dx, wanted in zip(node.input, dxs, need):
            if wanted and dx is not None:
                if name in summed:
                    raise b.fail(f"internal: gradient of '{name}' used before it was complete")
                contributions[name].append(dx)
        b.node = None
    return {name: grad(name) for name in wrt}
