"""Sessions over graphs derived from one loaded model, each built once and reused.

- :meth:`Runner.forward`: the model with chosen tensors exposed as extra outputs (a layer's
  activations, the logits, a residual branch), everything in one pass;
- :meth:`Runner.tail`: only the part of the graph after a layer, cut out with onnx's extractor
  (``onnx.utils.Extractor``), fed with that layer's activations (any batch of them) plus the
  tensors from before the layer that the tail still reads (a residual branch, say), which the
  forward pass exposes once. Ablation-CAM runs its 2048 ablated copies of ResNet-50's last block
  output through the pooling and the classifier only, never through the whole network.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError, ModelLoadError
from ..run.session import create_session, ort_error_message

if TYPE_CHECKING:
    from ..run.model import Model

__all__ = ["Runner", "Tail", "tail_inputs"]


def tail_inputs(model: onnx.ModelProto, start: str, outputs: Sequence[str]) -> list[str]:
    """What the graph between ``start`` and ``outputs`` reads besides ``start``: the tensors it
    consumes that are computed before ``start`` from the model's inputs (constants and weights
    are part of the tail). ``start`` first."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in set(n.input):
            consumers.setdefault(i, []).append(n)
    after = {start}  # tensors computed from start
    stack = [start]
    while stack:
        for n in consumers.get(stack.pop(), []):
            for o in n.output:
                if o and o not in after:
                    after.add(o)
                    stack.append(o)
    fed = {i.name for i in g.input} - {i.name for i in g.initializer}
    varying = set(fed)  # tensors that depend on a model input
    for n in g.node:  # graph order is topological
        if any(i in varying for i in n.input):
            varying.update(o for o in n.output if o)
    side: list[str] = []
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t == start:
            continue
        if t not in after and t in varying:
            side.append(t)
            continue
        node = producer.get(t)
        if node is not None:
            stack.extend(node.input)
    if start not in seen:
        raise InputError(f"none of {', '.join(outputs)} depends on tensor {start!r}")
    return [start] + sorted(side)


@dataclass
class Tail:
    """The graph after a layer, as one session: feed the layer (any batch) and the side tensors."""

    session: Any
    inputs: list[str]
    outputs: list[str]
    one_at_a_time: bool = False  # the tail only runs at batch 1 (a batch size baked into a Reshape, say)

    def run(self, layer: np.ndarray, side: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run on a batch of layer activations; side tensors (batch 1) are repeated to match."""
        n = layer.shape[0]
        feeds = {self.inputs[0]: np.ascontiguousarray(layer)}
        for name in self.inputs[1:]:
            value = np.asarray(side[name])
            if value.ndim and value.shape[0] == 1 and n != 1 and np.issubdtype(value.dtype, np.floating):
                value = np.broadcast_to(value, (n, *value.shape[1:]))
            feeds[name] = np.ascontiguousarray(value)
        names = list(outputs or self.outputs)
        if n == 1 or not self.one_at_a_time:
            try:
                return self.session.run(names, feeds)
            except Exception as exc:
                if n == 1:
                    raise InputError(f"onnxruntime failed to run the graph after the layer: {ort_error_message(exc)}") from None
                self.one_at_a_time = True  # still the tail only, one copy per run
        rows = [self.run(layer[i : i + 1], side, names) for i in range(n)]
        return [np.concatenate(parts, axis=0) for parts in zip(*rows)]


class Runner:
    """Derived graphs of one :class:`onnxviz.Model`, sessions cached by what they expose."""

    def __init__(self, model: "Model") -> None:
        # A weak reference: runners live in a WeakKeyDictionary keyed by their model, and a strong
        # one would keep every model (and its sessions and threads) alive for the whole process.
        self._model = weakref.ref(model)
        self._forward: dict[tuple[str, ...], Any] = {}
        self._tails: dict[tuple[str, tuple[str, ...]], Tail] = {}
        self.provider: str | None = None
        self.memo: dict[Any, Any] = {}  # plans worked out per input shape (layer, score, outputs)

    @property
    def model(self) -> "Model":
        model = self._model()
        assert model is not None, "the model of this runner is gone"
        return model

    def session(self, proto: onnx.ModelProto) -> Any:
        """An onnxruntime session for ``proto`` (a graph derived from the model), with its weights."""
        loaded = self.model.loaded
        loaded.check_unchanged()  # onnxruntime reads the weights from the model's files now
        used = {i.name for i in proto.graph.initializer}
        weights = {k: v for k, v in loaded.weights.items() if k in used}
        try:
            data = proto.SerializeToString()
        except ValueError as exc:
            raise ModelLoadError(f"model too large to serialise in memory ({exc}); save it with external data") from None
        session, provider = create_session(
            data, provider=self.model.requested_provider, external_dir=loaded.external_dir, config=self.model.session_config,
            initializers=weights, optimization=self.model.optimization,
        )
        self.provider = self.provider or provider
        return session

    def forward(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One pass of the model returning ``outputs`` (model outputs or any inner tensors)."""
        key = tuple(dict.fromkeys(outputs))
        session = self._forward.get(key)
        if session is None:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.model.loaded.proto)
            have = {o.name for o in proto.graph.output}
            del proto.graph.output[:]
            known = {vi.name: vi for vi in list(self.model.loaded.proto.graph.output) + list(proto.graph.value_info)}
            for name in key:
                vi = known.get(name)
                out = onnx.ValueInfoProto()
                if vi is not None and vi.type.tensor_type.elem_type:
                    out.CopyFrom(vi)
                    if name not in have:
                        out.type.tensor_type.ClearField("shape")
                else:
                    out = helper.make_empty_tensor_value_info(name)
                proto.graph.output.append(out)
            session = self._forward[key] = self.session(proto)
        return dict(zip(key, self.model._run(session, list(key), dict(feeds))))

    def tail(self, start: str, outputs: Sequence[str], examples: Mapping[str, np.ndarray]) -> Tail:
        """The graph from ``start`` to ``outputs`` as a session with a free batch axis.

        ``examples`` holds one value of each tail input (from a forward pass), used to type the
        inputs when shape inference did not."""
        key = (start, tuple(outputs))
        if key in self._tails:
            return self._tails[key]
        from onnx.utils import Extractor

        source = self.model.loaded.proto
        names = tail_inputs(source, start, outputs)
        missing = [n for n in names if n not in examples]
        if missing:
            raise InputError(f"internal: no example value for tail input(s) {', '.join(missing)}")
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        typed = {vi.name for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)}
        for name in names:
            if name not in typed:
                value = np.asarray(examples[name])
                proto.graph.value_info.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), None))
        extractor = Extractor(proto)
        cut = extractor.extract_model(names, list(outputs))
        cut.graph.ClearField("value_info")  # shapes inferred at batch 1 would fight a batch of copies
        for vi, name in zip(cut.graph.input, names):
            value = np.asarray(examples[name])
            vi.CopyFrom(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                      ["batch", *value.shape[1:]] if value.ndim else []))
        for vi in cut.graph.output:
            if vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
        tail = Tail(self.session(cut), names, list(outputs))
        self._tails[key] = tail
        return tail
