"""The rule table: one backward rule per ONNX op.

A rule is ``rule(b, node, dys, need) -> dxs``: ``b`` is the :class:`~.builder.Builder`, ``node``
the forward node, ``dys`` the gradient tensor name of each output (``None`` where no gradient
flows), ``need`` whether each input needs a gradient; it returns one gradient name (or ``None``)
per input. ``values`` lists the inputs whose *values* the rule reads (shapes, axes, pads…): they
are fixed by the probe run when they are not constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from .builder import Builder

__all__ = ["Rule", "RULES", "rule"]

RuleFn = Callable[[Builder, onnx.NodeProto, list["str | None"], list[bool]], list["str | None"]]


@dataclass(frozen=True)
class Rule:
    fn: RuleFn
    values: tuple[int, ...] = ()  # inputs whose values the rule needs
    indices: bool = False  # the rule needs MaxPool's Indices output


RULES: dict[str, Rule] = {}


def rule(*ops: str, values: Sequence[int] = (), indices: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the backward rule of ``ops`` (default ONNX domain)."""

    def register(fn: RuleFn) -> RuleFn:
        for op in ops:
            if op in RULES:
                raise RuntimeError(f"two backward rules for {op}")
            RULES[op] = Rule(fn, tuple(values), indices)
        return fn

    return register

