"""Naming what to differentiate: inputs, layers, tensors, the default target (the logits) and
channel objectives ``LAYER:CHANNEL``.

Layer names are the friendly names onnxviz gives taps (``layer4.2.conv3``, ``block1_conv1``) in
the tap mode asked for (``conv``: the Conv output; ``activation``: the end of its
BatchNorm/activation chain); raw tensor names and node names work too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..errors import GradientError
from ..graph.loading import real_inputs
from ..graph.taps import plan_taps

__all__ = ["Resolver", "Target"]

_LOGIT_HEADS = ("Softmax", "LogSoftmax", "Sigmoid")
_CHANNEL = re.compile(r"^(?P<name>.+):(?P<channel>\d+)$")


@dataclass(frozen=True)
class Target:
    """The tensor whose gradient is taken, and a fixed channel (``LAYER:CHANNEL``) if any."""

    tensor: str
    channel: int | None = None
    described: str = ""


class Resolver:
    """Turns user-facing names into tensor names of one model."""

    def __init__(self, model: onnx.ModelProto, tap: str = "conv") -> None:
        self.model = model
        self.tap = tap
        g = model.graph
        self.producer = {out: node for node in g.node for out in node.output if out}
        self.inputs = [vi.name for vi in real_inputs(g)]
        self.tensors = set(self.producer) | set(self.inputs) | {i.name for i in g.initializer}
        self._layers: dict[str, str] | None = None

    @property
    def layers(self) -> dict[str, str]:
        """Friendly layer name (and node name) → tensor, in this resolver's tap mode."""
        if self._layers is None:
            found: dict[str, str] = {}
            try:
                plan = plan_taps(self.model, self.tap)  # type: ignore[arg-type]
            except Exception as exc:  # a model without Conv has no layer names
                if "no Conv" not in str(exc):
                    raise
                plan = None
            for t in plan.taps if plan is not None else ():
                tensor = t.tensor
                if t.through_ops and t.through_ops[-1] == "QuantizeLinear":
                    # QDQ models: the tap sits after QuantizeLinear; gradients want the float tensor.
                    tensor = self.producer[t.tensor].input[0]
                for key in (t.name, t.label, t.node):
                    found.setdefault(key, tensor)
            self._layers = found
        return self._layers

    def tensor(self, name: str, role: str) -> str:
        """The tensor ``name`` designates (layer name first, then tensor name)."""
        if not isinstance(name, str) or not name:
            raise GradientError(f"{role} must be a layer or tensor name, got {name!r}")
        if name == "input" and name not in self.tensors:
            return self.input(role)
        if name in self.layers:
            return self.layers[name]
        if name in self.tensors:
            return name
        listing = list(self.layers)[:8]
        more = f", … ({len(self.layers) - 8} more)" if len(self.layers) > 8 else ""
        raise GradientError(
            f"{role} {name!r} is neither a layer nor a tensor of the model; layers ({self.tap} taps) are: "
            f"{', '.join(listing) or 'none'}{more}"
        )

    def input(self, role: str = "wrt") -> str:
        if len(self.inputs) != 1:
            raise GradientError(f"{role}='input' is ambiguous: the model has inputs {', '.join(self.inputs)}; name one")
        return self.inputs[0]

    def wrt(self, wrt: str | Sequence[str]) -> list[tuple[str, str]]:
        """(requested name, tensor) for each ``wrt`` entry."""
        names = [wrt] if isinstance(wrt, str) else list(wrt)
        if not names:
            raise GradientError("wrt is empty: name the input, a layer or a tensor")
        return [(n, self.tensor(n, "wrt")) for n in names]

    def target(self, target: str | None) -> Target:
        """``None`` → the logits; a layer/tensor name; or ``LAYER:CHANNEL``."""
        if target is None:
            return self.logits()
        if not isinstance(target, str):
            raise GradientError(f"target must be a layer or tensor name, got {target!r}")
        try:
            return Target(self.tensor(target, "target"), None, target)
        except GradientError:
            match = _CHANNEL.match(target)
            if match is None:
                raise
            return Target(self.tensor(match["name"], "target"), int(match["channel"]), target)

    def logits(self) -> Target:
        """The first model output, or the input of the Softmax/LogSoftmax/Sigmoid that makes it."""
        name = self.model.graph.output[0].name
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = self.producer.get(name)
        if node is not None and node.op_type in _LOGIT_HEADS and node.domain in ("", "ai.onnx"):
            return Target(node.input[0], None, f"logits (input of the final {node.op_type})")
        return Target(name, None, f"output '{name}'")
