"""The rule table: one backward rule per ONNX op.

A rule is ``rule(b, node, dys, need) -> dxs``: ``b`` is the :class:`~.builder.Builder`, ``node``
the forward node, ``dys`` the gradient tensor name of each output (``None`` where no gradient
flows), ``need`` whether each input needs a gradient; it returns one gradient name (or ``None``)
per input. ``values`` lists the inputs whose *values* the rule reads (shapes, axes, pads…): they
are fixed by the probe run when they are not constants, and refused when they depend on the
input's values rather than its shape. ``prepare(b, node)``, if given, runs on each forward node on
the path before the backward sweep: MaxPool adds its Indices output there, LayerNormalization its
Mean and InvStdDev.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from .builder import Builder

__all__ = ["Rule", "RULES", "rule"]

RuleFn = Callable[[Builder, onnx.NodeProto, list["str | None"], list[bool]], list["str | None"]]
PrepareFn = Callable[[Builder, onnx.NodeProto], None]


@dataclass(frozen=True)
class Rule:
    fn: RuleFn
    values: tuple[int, ...] = ()  # inputs whose values the rule needs
    prepare: PrepareFn | None = None  # adjusts the forward node (extra outputs the rule reads)


RULES: dict[str, Rule] = {}


def rule(*ops: str, values: Sequence[int] = (), prepare: PrepareFn | None = None) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the backward rule of ``ops`` (default ONNX domain)."""

    def register(fn: RuleFn) -> RuleFn:
        for op in ops:
            if op in RULES:
                raise RuntimeError(f"two backward rules for {op}")
            RULES[op] = Rule(fn, tuple(values), prepare)
        return fn

    return register

