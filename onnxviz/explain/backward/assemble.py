"""One ONNX model computing the forward taps and the requested gradients in one session run.

:func:`build_gradient_model` takes the forward model, the facts of one input shape
(:mod:`.probe`), the tensors to differentiate with respect to, the target and the seed mode, and
returns the model plus the names of its seed input and outputs:

- seed mode ``"feed"``: the model takes the seed dL/dtarget as an extra input;
- seed mode ``"top"``: the seed is made inside the graph from the top prediction of each sample
  (ArgMax → OneHot along the class axis; on a target of rank ≥ 3 a class's score is its mean over
  the other axes, e.g. a channel's mean), so "explain the predicted class" needs no second run.

Only the nodes the outputs need are kept: the model's own head after the target (a final
Softmax, say) is dropped unless asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ...errors import GradientError
from .builder import Builder
from .probe import Facts
from .sweep import check_static_values, check_supported, prepare, sweep, trace

__all__ = ["GradientGraph", "build_gradient_model", "MIN_OPSET"]

MIN_OPSET = 11


@dataclass(frozen=True)
class GradientGraph:
    model: onnx.ModelProto
    seed_input: str | None  # the seed feed (seed mode "feed")
    target: str  # output holding the target tensor (its own name)
    classes_output: str | None  # seed mode "top": the class/channel chosen per sample
    grads: dict[str, str]  # wrt tensor → output name
    zero: tuple[str, ...]  # wrt tensors the target does not depend on (their gradient is 0)
    n_backward_nodes: int
    n_differentiated: int  # forward nodes on the differentiated path


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _top_seed(b: Builder, target: str, class_axis: int = 1) -> tuple[str, str | None]:
    """The seed of each sample's top class along ``class_axis`` (scores: the mean over the other
    non-batch axes), made in the graph: ArgMax → OneHot, spread over the averaged axes."""
    shape = list(b.shape(target))
    if len(shape) <= 1:
        return b.expand(b.scalar(1.0, target), shape), None
    axis = class_axis % len(shape)
    others = [i for i in range(1, len(shape)) if i != axis]
    scores = b.reduce_mean(target, others, keepdims=False) if others else target
    classes = b.op("ArgMax", [scores], axis=1, keepdims=0, hint="classes")
    onehot = b.op("OneHot", [classes, b.ints([shape[axis]]), b.const(np.array([0.0, 1.0]), like=target)], axis=-1)
    if not others:
        return onehot, classes
    per_position = b.op("Mul", [onehot, b.scalar(1.0 / int(np.prod([shape[i] for i in others])), target)])
    spread = b.reshape(per_position, [shape[0]] + [shape[i] if i == axis else 1 for i in range(1, len(shape))])
    return b.expand(spread, shape), classes


def _prune(graph: onnx.GraphProto, keep_outputs: Sequence[str]) -> None:
    """Drop nodes no output needs, and initializers no remaining node reads."""
    needed = set(keep_outputs)
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # outer-scope references of subgraphs
                for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    needed.update(i for inner in sub.node for i in inner.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    names = {i.name for i in inits}
    inputs = [vi for vi in graph.input if vi.name not in names or vi.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)


def build_gradient_model(
    model: onnx.ModelProto,
    facts: Facts,
    wrt: Sequence[str],
    target: str,
    outputs: Sequence[str] = (),
    seed_mode: str = "feed",
    class_axis: int = 1,
) -> GradientGraph:
    """The forward model plus the backward graph of ``target`` with respect to ``wrt``."""
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise GradientError(
            f"model uses ONNX opset {opset}; gradients need opset {MIN_OPSET} or newer "
            "(convert it with onnx.version_converter.convert_version(model, 13))"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    path = trace(graph, wrt, target, facts.types)
    check_supported(path, wrt, target)
    check_static_values(graph, path)
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)}
    taken |= {vi.name for vi in list(graph.input) + list(graph.output)} | {i.name for i in graph.initializer}
    b = Builder(opset, dict(facts.shapes), dict(facts.types), facts.values, taken, ir_version=out.ir_version)
    prepare(b, path)

    seed_input = classes = None
    if seed_mode == "feed":
        seed = seed_input = b.fresh("seed")
        elem = b.dtype(target)
        graph.input.append(helper.make_tensor_value_info(seed, elem, list(b.shape(target))))
    elif seed_mode == "top":
        seed, classes = _top_seed(b, target, class_axis)
    else:
        raise ValueError(f"unknown seed mode {seed_mode!r}")
    b.shapes[seed] = b.shape(target)
    b.types[seed] = b.dtype(target)

    grads = sweep(b, path, {target: seed} if target in path.reach else {}, wrt)
    zero = tuple(w for w, g in grads.items() if g is None)
    names: dict[str, str] = {}
    for w in wrt:
        g = grads[w] if grads[w] is not None else b.zeros(b.shape(w), w)
        names[w] = b.op("Identity", [g], hint="grad")
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)

    wanted = [target] + ([classes] if classes else []) + [o for o in outputs if o != target] + list(names.values())
    del graph.output[:]
    for name in dict.fromkeys(wanted):
        graph.output.append(helper.make_empty_tensor_value_info(name))
    del graph.value_info[:]  # onnxruntime infers them; stale symbolic shapes would only conflict
    _prune(graph, list(dict.fromkeys(wanted)))
    n_backward = sum(1 for node in graph.node if any(o.startswith("onnxviz_grad/") for o in node.output))
    return GradientGraph(out, seed_input, target, classes, names, zero, n_backward, len(path.nodes))
