"""Framework layers, not ONNX ops: the nodes of an ONNX graph grouped into the layers the source
framework names (Keras layer paths, torch module paths), or into layers by structure for files
that carry no names. The rules that assign nodes are in :mod:`onnxviz.graph.grouping`, the kinds
in :mod:`onnxviz.graph.kinds`.

API (stable: the summary table, the graph drawing and the 1-D rendering build on it)::

    from onnxviz.graph.layers import group_layers

    graph = group_layers(model_proto)     # LayerGraph: a sequence of Layer, in graph order
    for layer in graph:                   # vanished layers sit where the framework had them
        layer.name, layer.kind, layer.output, layer.params
    graph["conv2d"]; graph.get("fc"); graph.of_kind("pool", "dense")
    graph.layer_of_node(node_name); graph.layer_of_tensor(tensor_name)
    graph.framework                       # "torch" | "keras" | None (recorded by onnxviz's converters)
    graph.framework_params                # the framework's own total (Keras count_params(),
                                          #   torch sum(p.numel())) when recorded, else None
    graph.onnx_params                     # parameters in the ONNX file (float weights)

``Layer`` (frozen):

- ``name``: the framework's name (Keras layer path ``block/conv``, torch module path
  ``layer1.0.conv1``, a torch function call ``layer1.0.add``); a module called again is
  ``name:2``; without names, the head node's name (``Conv.0``), never empty, unique.
- ``kind``: one of :data:`KINDS` (``conv``, ``dense``, ``pool``, ``merge``, ``activation``,
  ``norm``, ``reshape``, ``padding``, ``dropout``, ``resize``, ``other``): the converter's record
  (from the framework class) where there is one, else from the ops (see :func:`kind_of_ops`).
- ``nodes``/``ops``: the ONNX node names (``node.name`` or its first output) and op types, in
  graph order; empty for a vanished layer.
- ``output``: the layer's output tensor: the output of its last node (an exporter's trailing
  NHWC Transpose excepted, so the tensor stays in the graph's layout); None when vanished.
- ``inputs``: the non-constant tensors it reads from outside itself.
- ``conv_output``: for conv layers, the last Conv's output with its bias Add (wherever the
  exporter put it): what ``--tap conv`` exposes; None for other kinds.
- ``params``: parameters the ONNX file holds for it (float initializers and Constant weights its
  nodes read, each counted once, at its first reader). ``framework_params``: the framework's count
  for the layer when a converter recorded it (BatchNorm parameters the exporter folded into a
  conv and all-zero biases it dropped included); ``shown_params`` is that, else ``params``.
- ``framework_class``: ``"Conv2D"``, ``"torch.nn.modules.conv.Conv2d"``... when recorded.
- ``vanished``: the framework has the layer but the ONNX graph has no node for it (Dropout,
  a ZeroPadding2D folded into the next conv's pads, a BatchNorm folded into the conv before it);
  ``note`` says what became of it.
- ``shape``: the output's shape from shape inference (dims are ints, symbolic names or None).
- ``source``: ``"converter"`` (onnxviz's converters tagged the nodes), ``"scopes"`` (exporter
  names), ``"structure"``, or ``"framework"`` (a vanished layer, known from the converter's list).
- ``functional``: a torch function call (``torch.relu``, a residual ``+``), not a module.

Metadata the converters write (and this module reads; no framework needed):
node ``onnxviz.layer`` (layer name, on every node), ``onnxviz.kind``, ``onnxviz.conv`` (a conv's
own tap name where one layer has two convs: ``sep.depthwise``); model ``onnxviz.framework``,
``onnxviz.layers`` (JSON list in framework order of ``{"name", "class", "kind", "params",
"note"}``, vanished layers included) and ``onnxviz.params`` (the framework's total).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, overload

import onnx

from .grouping import Group, assign_groups
from .index import GraphIndex, is_conv, node_key
from .kinds import KINDS, MERGE_OPS, POOL_OPS, kind_of_class, kind_of_ops
from .naming import CONV_KEY, FRAMEWORK_KEY

__all__ = [
    "Layer", "LayerGraph", "group_layers", "KINDS", "TAP_KINDS", "kind_of_ops", "kind_of_class",
    "KIND_KEY", "CONV_KEY", "LAYERS_KEY", "PARAMS_KEY", "POOL_OPS", "MERGE_OPS",
]  # fmt: skip

TAP_KINDS = ("pool", "dense", "merge")  # the layer kinds --tap can select besides conv/activation/layer
KIND_KEY = "onnxviz.kind"
LAYERS_KEY = "onnxviz.layers"
PARAMS_KEY = "onnxviz.params"

_NOT_PARAMS = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.BOOL, onnx.TensorProto.STRING})


@dataclass(frozen=True)
class Layer:
    """One framework layer: its ONNX nodes, output tensor and parameters (see the module doc)."""

    name: str
    kind: str
    nodes: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    output: str | None = None
    inputs: tuple[str, ...] = ()
    params: int = 0
    framework_params: int | None = None
    framework_class: str | None = None
    vanished: bool = False
    note: str | None = None
    conv_output: str | None = None
    shape: tuple[int | str | None, ...] | None = None
    source: str = "structure"
    functional: bool = False

    @property
    def shown_params(self) -> int:
        """The framework's count where recorded, else what the ONNX file holds."""
        return self.params if self.framework_params is None else self.framework_params


class LayerGraph:
    """The layers of a model in graph order (a read-only sequence of :class:`Layer`)."""

    def __init__(self, layers: tuple[Layer, ...], framework: str | None, framework_params: int | None, onnx_params: int) -> None:
        self.layers = layers
        self.framework = framework
        self.framework_params = framework_params
        self.onnx_params = onnx_params
        self.index: GraphIndex | None = None  # the graph index it was built from (reused by the tap plan)
        self._by_name = {layer.name: layer for layer in layers}
        self._by_node = {n: layer for layer in layers for n in layer.nodes}
        self._by_tensor: dict[str, Layer] = {}

    @property
    def source(self) -> str:
        kinds = {layer.source for layer in self.layers if not layer.vanished}
        return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "structure")

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @overload
    def __getitem__(self, key: int) -> Layer: ...
    @overload
    def __getitem__(self, key: str) -> Layer: ...
    def __getitem__(self, key: int | str) -> Layer:
        return self._by_name[key] if isinstance(key, str) else self.layers[key]

    def get(self, name: str) -> Layer | None:
        return self._by_name.get(name)

    def of_kind(self, *kinds: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind in kinds and not layer.vanished]

    def layer_of_node(self, node: str) -> Layer | None:
        """The layer holding node ``node`` (its name, or its first output when unnamed)."""
        return self._by_node.get(node)

    def layer_of_tensor(self, tensor: str) -> Layer | None:
        """The layer whose output (or conv output) is ``tensor``."""
        if not self._by_tensor:
            for layer in self.layers:
                for t in (layer.conv_output, layer.output):
                    if t:
                        self._by_tensor.setdefault(t, layer)
        return self._by_tensor.get(tensor)

    def __repr__(self) -> str:
        return f"LayerGraph({len(self.layers)} layers, framework={self.framework!r}, source={self.source!r})"


def _meta(props: Any, key: str) -> str | None:
    for prop in props:
        if prop.key == key:
            return prop.value
    return None


def _param_sizes(model: onnx.ModelProto, index: GraphIndex) -> dict[str, int]:
    sizes = {i.name: math.prod(i.dims) for i in model.graph.initializer if i.data_type not in _NOT_PARAMS}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            t = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if t is not None and t.data_type not in _NOT_PARAMS and math.prod(t.dims) > 1:
                sizes[node.output[0]] = math.prod(t.dims)
    return sizes


def _weights_read(node: onnx.NodeProto, index: GraphIndex, sizes: Mapping[str, int], seen: set[str]) -> int:
    """Parameters a node reads, following constant-only helpers (a bias Reshape) back to the weight."""
    total = 0
    stack = [t for t in node.input if t]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in sizes:
            total += sizes[t]
        elif t in index.static:
            src = index.producer.get(t)
            if src is not None and src.op_type != "Constant":
                stack.extend(i for i in src.input if i)
    return total


def _build(
    group: Group, nodes: list[onnx.NodeProto], index: GraphIndex, sizes: Mapping[str, int], seen: set[str],
    tagged: bool, record: Mapping[str, Any] | None,
) -> Layer:
    members = [nodes[i] for i in group.members]
    produced = {o for n in members for o in n.output if o}
    inputs: list[str] = []
    for n in members:
        for t in n.input:
            if t and t not in produced and not index.is_static(t) and t not in inputs:
                inputs.append(t)
    last = members[-1]
    for n in reversed(members):  # an exporter's trailing layout Transpose does not count
        if not (n.op_type == "Transpose" and n is not members[0] and len(members) > 1):
            last = n
            break
    output = next((o for o in last.output if o), None)
    recorded = ({_meta(n.metadata_props, KIND_KEY) for n in members} - {None, ""}) if tagged else set()
    if record is not None and record.get("kind") in KINDS:
        recorded = {record["kind"]}
    kind = recorded.pop() if len(recorded) == 1 else kind_of_ops(members, index)
    conv_output = None
    convs = [n for n in members if is_conv(n)]
    if convs:
        tensor = convs[-1].output[0]
        bias = index.bias_after(tensor)
        if bias is not None and any(bias is m for m in members):
            tensor = bias.output[0]
        conv_output = tensor
    params = sum(_weights_read(n, index, sizes, seen) for n in members)
    shape, _ = index.shape_of(output) if output else (None, 0)
    fw_params = record.get("params") if record is not None else None
    fw_class = record.get("class") if record is not None else None
    return Layer(
        name=group.name, kind=kind, nodes=tuple(node_key(n) for n in members), ops=tuple(n.op_type for n in members),
        output=output, inputs=tuple(inputs), params=params, conv_output=conv_output, shape=shape,
        source=group.source, functional=group.functional,
        framework_params=int(fw_params) if isinstance(fw_params, int) else None, framework_class=str(fw_class) if fw_class else None,
    )


def _unique(groups: list[Group]) -> None:
    """Unique names: a module called again becomes ``name:2``, ``name:3``...; a function call whose
    name is taken (by a module, or an earlier call) ``name_2``, ``name_3``..."""
    count: dict[str, int] = {}
    taken = {g.name for g in groups if not g.functional}
    used: set[str] = set()
    for g in groups:
        if g.functional:
            candidate, j = g.name, 1
            while candidate in taken or candidate in used:
                j += 1
                candidate = f"{g.name}_{j}"
        else:
            k = count.get(g.name, 0) + 1
            count[g.name] = k
            candidate, j = g.name if k == 1 else f"{g.name}:{k}", k
            while candidate in used:
                j += 1
                candidate = f"{g.name}:{j}"
        used.add(candidate)
        taken.add(candidate)
        g.name = candidate


def _framework_records(model: onnx.ModelProto) -> list[dict[str, Any]]:
    text = _meta(model.metadata_props, LAYERS_KEY)
    if not text:
        return []
    try:
        records = json.loads(text)
    except (ValueError, RecursionError):
        return []
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("name"), str)] if isinstance(records, list) else []


_VANISHED_NOTES = {
    "dropout": "identity at inference: not in the ONNX graph",
    "padding": "folded into the next layer's pads",
    "norm": "folded into the layer before it",
    "reshape": "no-op here: not in the ONNX graph",
}


def _insert_vanished(layers: list[Layer], records: list[dict[str, Any]]) -> list[Layer]:
    """Insert the recorded layers that have no ONNX node, after the layer the framework had before them."""
    if not records:
        return layers
    by_name = {layer.name: i for i, layer in enumerate(layers)}
    out = layers
    result: list[Layer] = []
    pending: list[Layer] = []
    placed = {r["name"] for r in records if r["name"] in by_name}
    after: dict[str, list[Layer]] = {}
    previous = None
    for r in records:
        if r["name"] in by_name:
            previous = r["name"]
            continue
        kind = r.get("kind") if r.get("kind") in KINDS else kind_of_class(str(r.get("class", "")))
        params = r.get("params")
        ghost = Layer(
            name=r["name"], kind=kind, params=0, framework_params=int(params) if isinstance(params, int) else None,
            framework_class=str(r["class"]) if r.get("class") else None, vanished=True,
            note=str(r["note"]) if r.get("note") else _VANISHED_NOTES.get(kind, "not in the ONNX graph"), source="framework",
        )
        (after.setdefault(previous, []) if previous else pending).append(ghost)
    result.extend(pending)
    for layer in out:
        result.append(layer)
        if layer.name in placed:
            result.extend(after.get(layer.name, []))
    return result


def group_layers(model: onnx.ModelProto, names: Mapping[str, str] | None = None) -> LayerGraph:
    """The layers of ``model``'s main graph, in graph order (see the module doc for the rules).

    ``names``: node name → layer name assignments that take precedence over everything else (the
    converters use it to pass on what they know about the framework model).
    """
    index = GraphIndex(model)
    nodes = list(model.graph.node)
    groups = assign_groups(model, index, names)
    _unique(groups)
    sizes = _param_sizes(model, index)
    seen: set[str] = set()
    records = _framework_records(model)
    by_record = {r["name"]: r for r in records}
    tagged = any(g.source == "converter" for g in groups)
    layers = [_build(g, nodes, index, sizes, seen, tagged, by_record.get(g.name)) for g in groups]
    layers = _insert_vanished(layers, records)
    recorded = _meta(model.metadata_props, PARAMS_KEY)
    framework = _meta(model.metadata_props, FRAMEWORK_KEY)
    graph = LayerGraph(
        tuple(layers), framework or None, int(recorded) if recorded and recorded.isdigit() else None, sum(sizes.values())
    )
    graph.index = index
    return graph
