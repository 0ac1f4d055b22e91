"""The rules that assign every node of an ONNX graph to a framework layer (used by layers.py).

Each node gets a key, in this order of precedence:

1. **Recorded**: ``onnxviz.layer`` in the node's metadata (onnxviz's converters tag every node),
   or a name the caller passes (the Keras converter's scope matches). Never split or renamed.
2. **Exporter scopes**: the torch dynamo exporter's ``pkg.torch.onnx.name_scopes``, TorchScript
   node names (``/layer1/layer1.0/conv1/Conv``), tf2onnx scope names (``model_1/conv2d_1/BiasAdd``,
   or the scope on the node's outputs or weights when the node itself has none). A node inside a
   torch module that has no submodules belongs to that module; a node directly inside a container
   (a residual ``+`` in a block, ``torch.relu`` in ``forward``) is a function call of its own,
   named ``<container>.<op>`` (``layer1.0.add``). A parameter ``X.weight`` / ``X.bias`` read by a
   node names its module ``X`` (this is how a conv that absorbed its BatchNorm keeps its name).
3. **Structure** (files without any of the above): a Conv-family node with its bias Add (a
   per-channel constant), BatchNormalization, affine steps and activation (the chain of
   ``--tap activation``) is one layer; so is a Gemm or MatMul with a constant weight with its
   bias and activation; a gated activation written out (``x * sigmoid(x)``) is one layer; every
   other compute node is a layer of its own (pooling, merges, reshapes, ...).

Then the nodes that serve others join them: shape arithmetic (``Shape``, ``Gather``, ``Concat``
on shapes, constants, ...) joins the layer that consumes it, Identity/Dropout pass-throughs join
the layer that produced their input, a Transpose the exporter added joins its consumer.
A module key that forms several unconnected pieces is a module called several times: the pieces
become ``name``, ``name:2``, ``name:3``...
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from .index import ACTIVATIONS, PASS_THROUGH, SUBGRAPH_OPS, GraphIndex, is_conv, node_key
from .naming import LAYER_KEY, _literal_list, _meta, friendly_name

__all__ = ["Group", "assign_groups", "scheme_of", "is_dense", "SHAPE_SOURCES", "LAYOUT_OPS"]

SHAPE_SOURCES = frozenset({"Shape", "Size"})
# In a graph named by an exporter, an unnamed op of these kinds is plumbing the exporter added
# (tf2onnx's NHWC↔NCHW Transposes): it joins the layer it serves instead of becoming one.
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Flatten"})
# A QDQ model's QuantizeLinear closes the layer before it, its DequantizeLinear opens the one after
# (a tap after the QuantizeLinear keeps onnxruntime's QDQ fusions).
_JOIN_PRODUCER = PASS_THROUGH | {"QuantizeLinear"}
_JOIN_CONSUMER = frozenset({"DequantizeLinear"})
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_TORCH_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\.(weight|bias)$")
_KERAS_SUFFIX = re.compile(r"^(.+)_\d+$")
_CALL_WRAPPERS = ("StatefulPartitionedCall", "PartitionedCall")
# Ops that produce an activation (a nonlinearity or a probability map) on their own.
_ACTIVATION_OPS = ACTIVATIONS | {"Softmax", "LogSoftmax", "Hardmax"}


@dataclass
class Group:
    """The nodes (indices into graph.node, in graph order) of one layer, and how it was found."""

    name: str
    members: list[int]
    source: str  # "converter" | "scopes" | "structure"
    functional: bool = False


def scheme_of(model: onnx.ModelProto) -> str | None:
    """Which exporter's naming the graph carries: ``dynamo``, ``torchscript``, ``tf2onnx`` or None."""
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    if not nodes:
        return None
    if sum(1 for n in nodes if _meta(n, _SCOPES_KEY) is not None) * 2 >= len(nodes):
        return "dynamo"
    if model.producer_name == "pytorch" and sum(1 for n in nodes if n.name.startswith("/")) * 2 >= len(nodes):
        return "torchscript"
    if model.producer_name in ("tf2onnx", "keras2onnx"):
        return "tf2onnx"
    return None


def is_dense(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Gemm, or MatMul / MatMulInteger / QLinearMatMul with a constant weight operand."""
    if node.domain == "com.microsoft" and node.op_type in ("QGemm", "FusedGemm", "FusedMatMul"):
        return True
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Gemm":
        return True
    if node.op_type in ("MatMul", "MatMulInteger"):
        return len(node.input) >= 2 and (index.is_static(node.input[1]) or index.is_static(node.input[0]))
    if node.op_type == "QLinearMatMul":
        return len(node.input) > 3 and index.is_static(node.input[3])
    return False


def _torch_param_module(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    for name in node.input[1:]:
        if name in index.initializers:
            match = _TORCH_PARAM.match(name)
            if match:
                return match.group(1)
    return None


# -- keys from exporter scopes --------------------------------------------------------------------
def _dynamo_chain(node: onnx.NodeProto) -> tuple[list[str], str] | None:
    """The dynamo exporter's ``name_scopes`` → (module paths, op instance)."""
    scopes = _literal_list(_meta(node, _SCOPES_KEY))
    if not scopes:
        return None
    return [s for s in scopes[:-1] if s], scopes[-1]


def _scope_keys(
    nodes: Sequence[onnx.NodeProto], chains: Sequence[tuple[list[str], str] | None], index: GraphIndex, instance_key
) -> list[tuple[str, str, bool] | None]:
    """One key per node from its module chain: the innermost module when it contains no other
    module, else a functional call inside a container, keyed by ``instance_key(node, inner, instance)``;
    a torch parameter name on the node wins over both."""
    containers = {m for c in chains if c for m in c[0][:-1]}
    keys: list[tuple[str, str, bool] | None] = []
    for node, chain in zip(nodes, chains):
        param = _torch_param_module(node, index)
        if param is not None:
            keys.append((param, "", False))
        elif chain is None:
            keys.append(None)
        else:
            modules, instance = chain
            inner = modules[-1] if modules else ""
            if inner and inner not in containers:
                keys.append((inner, "", False))
            else:
                keys.append((inner, instance_key(node, inner, instance), True))
    return keys


def _dynamo_keys(nodes: Sequence[onnx.NodeProto], index: GraphIndex) -> list[tuple[str, str, bool] | None]:
    chains = [_dynamo_chain(n) for n in nodes]
    return _scope_keys(nodes, chains, index, lambda node, inner, instance: f"{inner}/{instance}")


def _torchscript_chain(name: str) -> tuple[list[str], str] | None:
    """``/layer1/layer1.1/downsample/downsample.0/Conv`` → (full module paths, op instance)."""
    if not name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p]
    if not parts:
        return None
    chain: list[str] = []
    local = ""
    for part in parts[:-1]:
        if chain and local and part.startswith(local + "."):
            full = chain[-1][: len(chain[-1]) - len(local)] + part  # Sequential child: layer1 / layer1.0
        else:
            full = f"{chain[-1]}.{part}" if chain else part
        chain.append(full)
        local = part
    return chain, parts[-1]


def _torchscript_keys(nodes: Sequence[onnx.NodeProto], index: GraphIndex) -> list[tuple[str, str, bool] | None]:
    chains = [_torchscript_chain(n.name) for n in nodes]
    return _scope_keys(nodes, chains, index, lambda node, inner, instance: node.name)


def _tf_scope(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """The TensorFlow scope a tf2onnx node came from: its name, else its outputs', else its weights'."""
    for text in [node.name, *node.output, *(i for i in node.input[1:] if i in index.initializers)]:
        if "/" in text:
            return text
    return None


def _tf2onnx_keys(nodes: Sequence[onnx.NodeProto], index: GraphIndex) -> list[tuple[str, str, bool] | None]:
    scopes = [_tf_scope(n, index) for n in nodes]
    split = [[p for p in s.split("/") if p and not p.startswith(_CALL_WRAPPERS)] if s else [] for s in scopes]
    firsts = [parts[0] for parts in split if len(parts) > 2]
    suffixed = bool(firsts) and all(_KERAS_SUFFIX.match(f) for f in firsts)  # Keras 3 suffixes every scope
    keys: list[tuple[str, str, bool] | None] = []
    for parts in split:
        if len(parts) < 3:
            keys.append(None)
            continue
        path: list[str] = []
        for part in parts[1:-1] if suffixed else parts[1:2]:
            match = _KERAS_SUFFIX.match(part.split(":")[0])
            if suffixed and not match:
                break
            path.append(match.group(1) if suffixed and match else part)
        keys.append(("/".join(path), "", False) if path else None)
    return keys


# -- structure ------------------------------------------------------------------------------------
def _structural_members(i: int, nodes: Sequence[onnx.NodeProto], index: GraphIndex, free: set[int]) -> list[int]:
    """The nodes a structural layer headed by node ``i`` takes (conv/dense chains, gates)."""
    node = nodes[i]
    pos = index.position
    members = [i]
    if is_conv(node) or is_dense(node, index):
        tensor = node.output[0]
        bias = index.bias_after(tensor, _out_channels(node, index))
        if bias is not None and pos[node_key(bias)] in free:
            members.append(pos[node_key(bias)])
            tensor = bias.output[0]
        _, path = index.follow(tensor)
        for step in path:
            k = pos[node_key(step)]
            if k not in free:
                break
            members.append(k)
        return members
    if node.op_type in ACTIVATIONS and node.input:
        gate = [pos[node_key(g)] for g in index._gate(node.input[0]) or []]
        if i in gate and all(g in free for g in gate):
            return gate
    return members


def _out_channels(node: onnx.NodeProto, index: GraphIndex) -> int | None:
    if len(node.input) < 2:
        return None
    weight = node.input[3] if node.op_type == "QLinearConv" and len(node.input) > 3 else node.input[1]
    init = index.initializers.get(weight)
    if init is None or not init.dims:
        return None
    if node.op_type == "ConvTranspose":
        group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
        return int(init.dims[1]) * int(group) if len(init.dims) > 1 else None
    if node.op_type in ("Gemm",):
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(init.dims[0] if trans_b else init.dims[-1])
    if node.op_type in ("MatMul", "MatMulInteger"):
        return int(init.dims[-1])
    return int(init.dims[0])


def _aux_nodes(nodes: Sequence[onnx.NodeProto], index: GraphIndex) -> set[int]:
    """Nodes that compute shapes or constants rather than activations."""
    shapeish: set[str] = set()
    aux: set[int] = set()
    for i, node in enumerate(nodes):
        ins = [t for t in node.input if t]
        if node.op_type in SUBGRAPH_OPS:
            continue
        if node.op_type in SHAPE_SOURCES or all(t in index.static or t in shapeish for t in ins):
            aux.add(i)
            shapeish.update(o for o in node.output if o)
    return aux


def _connected_pieces(members: list[int], nodes: Sequence[onnx.NodeProto], index: GraphIndex) -> list[list[int]]:
    """Split a module's nodes into pieces joined by data edges (or a shared activation input)."""
    parent = {m: m for m in members}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_tensor: dict[str, int] = {}
    member_set = set(members)
    for m in members:
        for t in nodes[m].input:
            if not t:
                continue
            src = index.producer.get(t)
            if src is not None and index.position[node_key(src)] in member_set:  # constants too
                parent[find(m)] = find(index.position[node_key(src)])
            if index.is_static(t):
                continue
            if t in by_tensor:
                parent[find(m)] = find(by_tensor[t])
            else:
                by_tensor[t] = m
    pieces: dict[int, list[int]] = defaultdict(list)
    for m in members:
        pieces[find(m)].append(m)
    return sorted(pieces.values(), key=lambda p: p[0])


def assign_groups(model: onnx.ModelProto, index: GraphIndex, names: Mapping[str, str] | None = None) -> list[Group]:
    """Every node of the main graph in exactly one group; groups ordered by their first node."""
    nodes = list(model.graph.node)
    n = len(nodes)
    keys: list[tuple[str, str, bool] | None] = [None] * n
    source = [""] * n
    names = dict(names or {})
    for i, node in enumerate(nodes):
        recorded = names.get(node_key(node)) or _meta(node, LAYER_KEY)
        if recorded:
            keys[i], source[i] = (recorded, "", False), "converter"
    recorded_all = all(keys)
    scheme = None if recorded_all else scheme_of(model)
    aux = _aux_nodes(nodes, index)
    if scheme is not None:
        found = {"dynamo": _dynamo_keys, "torchscript": _torchscript_keys, "tf2onnx": _tf2onnx_keys}[scheme](nodes, index)
        # A function call is named after its container and the ONNX op it became (the same name
        # whichever torch exporter wrote the file): layer1.0 + Add → layer1.0.add
        first_op: dict[str, str] = {}
        for i, key in enumerate(found):
            if key is not None and key[2] and i not in aux:
                first_op.setdefault(key[1], nodes[i].op_type)
        for i, key in enumerate(found):
            # Shape arithmetic and constants follow their consumer unless a module owns them.
            if keys[i] is None and key is not None and not (i in aux and key[2]):
                if key[2]:
                    word = first_op.get(key[1], nodes[i].op_type).lower()
                    key = ((key[0] + "." if key[0] else "") + word, key[1], True)
                keys[i], source[i] = key, "scopes"
    if scheme is not None:
        # A conv the exporter renamed, weights and all (Conv__42 reading const_fold_opt__7), belongs
        # to the layer of the bias or activation it feeds.
        for i, node in enumerate(nodes):
            if keys[i] is None and is_conv(node) and node.output:
                user = index.sole_consumer(node.output[0])
                if user is not None and index.step_kind(user, node.output[0]) is not None:
                    k = index.position[node_key(user)]
                    if keys[k] is not None:
                        keys[i], source[i] = keys[k], source[k]
    # Structure, for what no name covers.
    free = {i for i in range(n) if keys[i] is None}
    inits = set(index.initializers)
    scoped = model.producer_name in ("tf2onnx", "keras2onnx")
    for i, node in enumerate(nodes):
        if i not in free or i in aux or node.op_type in _JOIN_PRODUCER or node.op_type in _JOIN_CONSUMER:
            continue
        if scheme and node.op_type in LAYOUT_OPS:
            continue
        members = _structural_members(i, nodes, index, free)
        name = friendly_name(node, node.output[0] if node.output else node.op_type, inits, scoped=scoped)
        for m in members:
            keys[m], source[m] = (name, f"#{i}", False), "structure"
            free.discard(m)
    _attach(nodes, index, keys, source, aux)
    for i in range(n):  # anything still alone (a graph that is all constants) is a layer of its own
        if keys[i] is None:
            keys[i], source[i] = (node_key(nodes[i]), f"#{i}", False), "structure"
    groups: dict[tuple[str, str, bool], list[int]] = {}
    for i, key in enumerate(keys):
        assert key is not None
        groups.setdefault(key, []).append(i)
    result: list[Group] = []
    for key, members in groups.items():
        src = source[members[0]]
        if src == "scopes" and not key[2]:
            for piece in _connected_pieces(members, nodes, index):
                result.append(Group(key[0], piece, src))
        else:
            result.append(Group(key[0], members, src, functional=key[2]))
    # In graph order of each layer's first real op (weights stored as Constant nodes come first).
    result.sort(key=lambda g: next((m for m in g.members if m not in aux), g.members[0]))
    return result


def _attach(
    nodes: Sequence[onnx.NodeProto], index: GraphIndex, keys: list, source: list[str], aux: set[int]
) -> None:
    """Pass-throughs join their producer; shape arithmetic and exporter Transposes their consumer."""
    pos = index.position

    def producer_key(i: int):
        for t in nodes[i].input:
            src = index.producer.get(t) if t and not index.is_static(t) else None
            if src is not None and keys[pos[node_key(src)]] is not None:
                return pos[node_key(src)]
        return None

    def consumer_key(i: int):
        users = sorted({pos[node_key(u)] for o in nodes[i].output if o for u in index.consumers.get(o, [])})
        for u in users:
            if keys[u] is not None:
                return u
        return None

    for i, node in enumerate(nodes):  # forward: Identity/Dropout chains, QuantizeLinear join their producer
        if keys[i] is None and node.op_type in _JOIN_PRODUCER and i not in aux:
            k = producer_key(i)
            if k is not None:
                keys[i], source[i] = keys[k], source[k]
    for i in reversed(range(len(nodes))):  # backward: helpers join the layer they serve
        if keys[i] is None:
            k = consumer_key(i)
            if k is not None:
                keys[i], source[i] = keys[k], source[k]
    for i in range(len(nodes)):  # what serves nobody (a final Transpose) joins its producer
        if keys[i] is None:
            k = producer_key(i)
            if k is not None:
                keys[i], source[i] = keys[k], source[k]
