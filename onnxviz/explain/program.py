"""Gradients of any ONNX CNN, computed by onnxruntime from a backward graph written in ONNX.

No deep-learning framework and no onnxruntime-training: the backward graph is built from standard
ONNX ops (see :mod:`onnxviz.explain.backward`) and runs in the same session as the forward pass.

One call::

    r = onnxviz.gradients(model, "cat.jpg", wrt="input")             # saliency: d logit / d input
    r.grads["input"]        # (N, C, H, W), same shape as the input
    r.classes, r.scores     # top prediction per sample and its logit
    r = onnxviz.gradients(model, x, wrt="layer4.2.conv3", outputs=["layer4.2.conv3"])   # Grad-CAM's A and dA

Repeated calls (activation maximisation, batches of classes) reuse one compiled program::

    program = onnxviz.GradientProgram(model, wrt="input", target="layer3.1.conv2:17")
    for step in range(200):
        r = program.run(x)                  # numpy array (or {input: array}) in, GradResult out
        x += lr * r.grads["input"]

``gradients(model, images=None, *, wrt="input", target=None, classes=None, seed=None,
outputs=(), tap=None, feeds=None, size=None, scale=None, mean=None, std=None, bgr=False,
provider="auto", class_axis=1) -> GradResult``

- ``model``: an :class:`onnxviz.Model` (``onnxviz.load(...)``), or a path / bytes / ModelProto
  (loaded once and cached per file).
- ``images``: image paths / PIL images prepared as ``Model.capture`` does (``size``, ``scale``,
  ``mean``, ``std``, ``bgr``), or one array in the model's layout; ``feeds`` for several inputs.
- ``wrt``: ``"input"`` (the model's one input), a layer name (the friendly names of onnxviz taps
  in tap mode ``tap``, default the Model's), a tensor or node name, or a sequence of them. The
  gradient at a layer is the total derivative of the target with respect to that tensor.
- ``target``: ``None`` = the logits (the first output, or the input of the Softmax, LogSoftmax or
  Sigmoid that makes it: a saturated Sigmoid would make float32 gradients meaningless); a layer or
  tensor name; or ``"LAYER:CHANNEL"``, the mean of that channel's map.
- ``classes``: ``None`` = the top prediction of each sample (for a feature-map target, the channel
  with the largest mean), chosen inside the graph in the same run; an int; or one int per
  sample. With one input sample and several classes, the sample is repeated, so many classes
  (or channels) run in one session call. Classes lie along ``class_axis`` (default 1: a
  classifier's classes, a feature map's channels; ``-1`` for a sequence model's [N, T, K]
  output); on a target of rank ≥ 3 a class's objective is its mean over the other axes.
- ``seed``: instead of ``classes``, dL/dtarget itself (shape of the target, broadcast).
- ``outputs``: extra forward tensors to return (layer or tensor names), computed in the same run.

``GradResult``: ``grads[name]`` (keyed as requested in ``wrt``), ``outputs[name]``, ``target``
(the target tensor's value), ``target_name``, ``classes`` (per sample, None with a seed),
``scores`` (the objective per sample: the class logit, the channel mean, or Σ seed·target),
``feeds``, ``provider``.

``GradientProgram(model, *, wrt="input", target=None, outputs=(), tap=None, provider=None,
optimization="all", session_config=None, threads=0, class_axis=1, weak_model=False)``
(``threads``: onnxruntime intra-op threads, 0 = its default; ``weak_model``: hold the model
weakly, for caches keyed by the model): ``__call__`` takes what ``gradients`` takes;
``run(x, *, classes=None, seed=None)`` takes an array or feeds and skips image preparation;
``gradient_model(x, seed_mode="feed")`` returns the built ONNX model. The backward graph is
built for one input shape (shapes fixed by a probe run with the real input) and cached per
input shape and seed mode, with its session. Errors are :class:`onnxviz.GradientError`; an op on
the differentiated path without a backward rule is an :class:`onnxviz.UnsupportedOpError` naming
the op and the node.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import GradientError, InputError, ModelLoadError, UnsupportedOpError
from ..run.model import Model
from ..run.session import create_session, ort_error_message
from .backward import Facts, build_gradient_model, inferred_shapes, probe, static_facts
from .backward.assemble import MIN_OPSET, GradientGraph
from .backward.sweep import trace
from .grad_names import Resolver, Target
from .grad_support import (
    GradResult, batch_size, load_for_gradients, make_seed, model_opset, pick_classes, pick_seed, sample_scores,
    stack_results, with_output,
)

__all__ = ["GradResult", "GradientProgram", "gradients"]

_KEEP_COMPILED = 4  # gradient models (and sessions) kept per program, one per input shape and seed mode


@dataclass
class _Compiled:
    graph: GradientGraph
    session: Any
    provider: str
    target_shape: tuple[int, ...]
    target_dtype: np.dtype
    shapes: dict[str, tuple[int, ...]]  # the static shapes the graph was built for
    probed_all: bool
    checked: bool = False


class GradientProgram:
    """A compiled gradient computation for one model, wrt set, target and outputs."""

    @property
    def model(self) -> Model:
        model = self._strong if self._strong is not None else self._model()
        if model is None:
            raise GradientError("the model of this gradient program was released (weak_model=True): keep a reference to it")
        return model

    def __init__(
        self,
        model: Model | str | os.PathLike | bytes | onnx.ModelProto,
        *,
        wrt: str | Sequence[str] = "input",
        target: str | None = None,
        outputs: str | Sequence[str] = (),
        tap: str | None = None,
        provider: str | None = None,
        optimization: str = "all",
        session_config: Mapping[str, str] | None = None,
        threads: int = 0,
        class_axis: int = 1,
        weak_model: bool = False,
    ) -> None:
        self.threads = threads
        self.class_axis = class_axis
        # A program kept in a cache keyed by its model (a WeakKeyDictionary) must hold that model
        # weakly (weak_model=True), or the cache would keep every model, its sessions and threads
        # alive for good. Otherwise the program holds its model like any object it needs.
        loaded = model if isinstance(model, Model) else load_for_gradients(model, provider or "auto")
        self._strong: Model | None = None if (weak_model and isinstance(model, Model)) else loaded
        self._model = weakref.ref(loaded)
        self.provider = provider or self.model.requested_provider
        self.optimization = optimization
        self.session_config = dict(self.model.session_config if session_config is None else session_config)
        resolver = Resolver(self.model.proto, tap or self.model.plan.mode)
        self.wrt: list[tuple[str, str]] = resolver.wrt(wrt)
        self.target: Target = resolver.target(target)
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        self.outputs: list[tuple[str, str]] = [(n, resolver.tensor(n, "output")) for n in names]
        self._static: Facts | None = None
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self._forward_proto: onnx.ModelProto | None = None
        self.upgraded_from: int | None = None  # the opset of a model converted to MIN_OPSET+ for gradients

    # -- building ------------------------------------------------------------------------------
    def _session(self, proto: onnx.ModelProto, optimization: str) -> tuple[Any, str]:
        loaded = self.model.loaded
        loaded.check_unchanged()  # onnxruntime reads the weights from the model's files now
        present = {init.name for init in proto.graph.initializer}
        weights = {k: v for k, v in loaded.weights.items() if k in present}
        return create_session(
            proto.SerializeToString(), provider=self.provider, external_dir=loaded.external_dir,
            config=self.session_config, initializers=weights, optimization=optimization, threads=self.threads,  # type: ignore[arg-type]
        )  # fmt: skip

    def _probe_run(self, proto: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray]) -> list[Any]:
        session, _ = self._session(proto, "basic")
        try:
            return [np.array(a) for a in session.run(names, dict(feeds))]
        except Exception as exc:
            raise InputError(f"onnxruntime failed to run the model: {ort_error_message(exc)}") from None

    def _compile(self, feeds: Mapping[str, np.ndarray], seed_mode: str, probe_all: bool = False) -> _Compiled:
        key = (tuple((k, v.shape, v.dtype.str) for k, v in sorted(feeds.items())), seed_mode)
        found = self._compiled.get(key)
        if found is not None and not probe_all:
            self._compiled[key] = self._compiled.pop(key)  # most recently used last
            return found
        proto = self._forward()
        if self._static is None:
            self._static = static_facts(proto, self.model.loaded.initializer_array)
        static = self._static
        facts = Facts(dict(static.shapes), dict(static.types), dict(static.values))
        wrt = [t for _, t in self.wrt]
        target = self.target.tensor
        path = trace(proto.graph, wrt, target, facts.types)
        if not probe_all:  # what shape inference can tell needs no probe run
            facts.shapes.update({k: v for k, v in inferred_shapes(proto, feeds).items() if k not in facts.shapes})
        wanted = path.shape_tensors() + [target] + wrt + [t for _, t in self.outputs]
        facts = probe(proto, feeds, wanted, path.value_tensors(), facts, self._probe_run)
        for name in wrt:
            if facts.types.get(name) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                raise GradientError(f"cannot differentiate with respect to '{name}': it is not a float tensor")
        try:
            graph = build_gradient_model(proto, facts, wrt, target, [t for _, t in self.outputs], seed_mode, self.class_axis)
            session, provider = self._session(graph.model, self.optimization)
        except (GradientError, ModelLoadError) as exc:
            if probe_all or isinstance(exc, UnsupportedOpError):
                raise
            return self._compile(feeds, seed_mode, probe_all=True)  # an inferred shape was wrong
        elem = onnx.helper.tensor_dtype_to_np_dtype(facts.types.get(target, onnx.TensorProto.FLOAT))
        expected = {name: tuple(facts.shapes[name]) for name in [target] + wrt + [t for _, t in self.outputs]}
        compiled = _Compiled(graph, session, provider, expected[target], np.dtype(elem), expected, probe_all)
        self._compiled.pop(key, None)
        self._compiled[key] = compiled
        while len(self._compiled) > _KEEP_COMPILED:  # many input sizes: keep the latest few sessions
            self._compiled.pop(next(iter(self._compiled)))
        return compiled

    def _forward(self) -> onnx.ModelProto:
        """The forward model the backward graph is built on: the model itself, or for opsets
        below 11 its conversion by onnx's version converter (checked on the first run)."""
        if self._forward_proto is None:
            proto = self.model.proto
            opset = model_opset(proto)
            if opset < MIN_OPSET:
                from onnx import version_converter

                try:
                    proto = version_converter.convert_version(proto, 13)
                except Exception as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise GradientError(f"model uses ONNX opset {opset}; gradients need opset {MIN_OPSET}+ and onnx could not convert it: {first}") from None
                self.upgraded_from = opset
            self._forward_proto = proto
        return self._forward_proto

    def _check_upgrade(self, feeds: Mapping[str, np.ndarray], target: np.ndarray) -> None:
        """An opset conversion must not change the model: compare the target with the original's."""
        original = onnx.ModelProto()
        original.CopyFrom(self.model.proto)
        (expected,) = self._probe_run(with_output(original, self.target.tensor), [self.target.tensor], feeds)
        diff = float(np.abs(target - expected).max() / max(float(np.abs(expected).max()), 1e-12))
        if not diff <= 1e-4:
            raise GradientError(
                f"converting the model from opset {self.upgraded_from} to 13 for gradients changed its output "
                f"'{self.target.tensor}' by {diff:.1e} (relative); gradients refused"
            )

    def gradient_model(self, x: np.ndarray | Mapping[str, np.ndarray], seed_mode: str = "feed") -> onnx.ModelProto:
        """The ONNX model computing target, outputs and gradients for inputs shaped like ``x``."""
        return self._compile(self._feeds(x), seed_mode).graph.model

    # -- running -------------------------------------------------------------------------------
    def _feeds(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            return self.model.prepare(feeds=x)
        return self.model.prepare(np.asarray(x))

    def __call__(
        self,
        images: Any = None,
        *,
        feeds: Mapping[str, np.ndarray] | None = None,
        classes: int | Sequence[int] | np.ndarray | None = None,
        seed: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
        scale: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bgr: bool = False,
    ) -> GradResult:
        """Prepare images (or an array, or feeds) as ``Model.capture`` does, then :meth:`run`."""
        prepared = self.model.prepare(images, feeds=feeds, size=size, scale=scale, mean=mean, std=std, bgr=bgr)
        return self.run(prepared, classes=classes, seed=seed)

    def run(
        self,
        x: np.ndarray | Mapping[str, np.ndarray],
        *,
        classes: int | Sequence[int] | np.ndarray | None = None,
        seed: np.ndarray | None = None,
    ) -> GradResult:
        """Target, outputs and gradients for an input array (or feeds), in one session run."""
        feeds = self._feeds(x)
        if classes is not None and seed is not None:
            raise GradientError("pass classes or seed, not both")
        if self.target.channel is not None:
            if classes is not None or seed is not None:
                raise GradientError(f"target {self.target.described!r} already names a channel: pass no classes or seed")
            classes = self.target.channel
        n = batch_size(feeds)
        if classes is not None and not np.isscalar(classes):
            classes = np.asarray(classes, dtype=np.int64).ravel()
            if n == 1 and classes.size > 1:  # one sample, many classes: repeat the sample
                feeds = {k: np.repeat(v, classes.size, axis=0) if v.ndim else v for k, v in feeds.items()}
                n = classes.size
        specs = {s.name: s for s in self.model.inputs}
        fixed_one = any(specs[k].batch == 1 and v.ndim and v.shape[0] > 1 for k, v in feeds.items() if k in specs)
        if fixed_one:  # the model's batch is fixed at 1: one run per sample
            parts = [
                self._run_once({k: v[i : i + 1] for k, v in feeds.items()}, pick_classes(classes, i), None if seed is None else pick_seed(seed, i))
                for i in range(n)
            ]
            return stack_results(parts, feeds)
        return self._run_once(feeds, classes, seed)

    def _run_once(self, feeds: dict[str, np.ndarray], classes: Any, seed: np.ndarray | None) -> GradResult:
        seed_mode = "top" if classes is None and seed is None else "feed"
        compiled = self._compile(feeds, seed_mode)
        graph = compiled.graph
        n = compiled.target_shape[0] if compiled.target_shape else 1
        run_feeds = dict(feeds)
        chosen = None
        if seed_mode == "feed":
            assert graph.seed_input is not None
            seed_array, chosen = make_seed(compiled.target_shape, compiled.target_dtype, classes, seed, n, graph.target, self.class_axis)
            run_feeds[graph.seed_input] = seed_array
        names = [graph.target] + ([graph.classes_output] if graph.classes_output else [])
        names += [t for _, t in self.outputs if t != graph.target] + list(graph.grads.values())
        try:
            values = dict(zip(names, compiled.session.run(names, run_feeds)))
        except Exception as exc:
            if not compiled.probed_all:  # a shape inference got wrong: build from a probe run
                self._compile(feeds, seed_mode, probe_all=True)
                return self._run_once(feeds, classes, seed)
            raise InputError(f"onnxruntime failed to run the gradient model: {ort_error_message(exc)}") from None
        if not compiled.checked:
            ran = {graph.target: values[graph.target].shape}
            ran.update({t: values[graph.grads[t]].shape for _, t in self.wrt})
            ran.update({t: values[t].shape for _, t in self.outputs})
            if any(tuple(shape) != compiled.shapes[name] for name, shape in ran.items()):
                if compiled.probed_all:
                    raise GradientError("internal: the gradient model's output shapes differ from the probed shapes")
                self._compile(feeds, seed_mode, probe_all=True)
                return self._run_once(feeds, classes, seed)
            if self.upgraded_from is not None:
                self._check_upgrade(feeds, values[graph.target])
            compiled.checked = True
        target = values[graph.target]
        if graph.classes_output:
            chosen = values[graph.classes_output].astype(np.int64)
        scores = sample_scores(target, chosen, run_feeds.get(graph.seed_input or ""), n, self.class_axis)
        return GradResult(
            grads={req: values[graph.grads[t]] for req, t in self.wrt},
            outputs={req: values[t] for req, t in self.outputs},
            target=target, target_name=graph.target, classes=chosen, scores=scores, feeds=feeds, provider=compiled.provider,
        )  # fmt: skip

    def __repr__(self) -> str:
        wrt = ", ".join(r for r, _ in self.wrt)
        return f"GradientProgram(wrt=[{wrt}], target={self.target.described or self.target.tensor!r})"


# -- the one-call API, with caches -------------------------------------------------------------
_PROGRAMS: weakref.WeakKeyDictionary[Model, dict[tuple[Any, ...], GradientProgram]] = weakref.WeakKeyDictionary()


def gradients(
    model: Model | str | os.PathLike | bytes | onnx.ModelProto,
    images: Any = None,
    *,
    wrt: str | Sequence[str] = "input",
    target: str | None = None,
    classes: int | Sequence[int] | np.ndarray | None = None,
    seed: np.ndarray | None = None,
    outputs: str | Sequence[str] = (),
    tap: str | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    size: tuple[int, int] | None = None,
    scale: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    provider: str = "auto",
    class_axis: int = 1,
) -> GradResult:
    """Gradients of ``target`` with respect to ``wrt`` for these images (see the module doc)."""
    m = model if isinstance(model, Model) else load_for_gradients(model, provider)
    key = (tuple([wrt] if isinstance(wrt, str) else wrt), target, tuple([outputs] if isinstance(outputs, str) else outputs), tap, class_axis)
    programs = _PROGRAMS.setdefault(m, {})
    if key not in programs:
        programs[key] = GradientProgram(m, wrt=wrt, target=target, outputs=outputs, tap=tap, class_axis=class_axis, weak_model=True)
    return programs[key](images, feeds=feeds, classes=classes, seed=seed, size=size, scale=scale, mean=mean, std=std, bgr=bgr)
