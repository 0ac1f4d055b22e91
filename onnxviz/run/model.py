"""Capture: one onnxruntime session over the tapped model, every tap in one pass.

``load()`` plans the taps and returns a :class:`Model`; ``Model.capture()`` prepares the input,
runs the session once (once per sample when the model's batch is fixed at 1) and returns a
:class:`Capture`, an ordered mapping from layer name to :class:`LayerCapture`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import InputError, ModelLoadError, OnnxvizError
from ..graph.loading import LoadedModel, ModelSource, load_model
from ..graph.layers import LayerGraph, group_layers
from ..graph.taps import Tap, TapPlan, apply_plan, plan_taps
from .capture import Capture, LayerCapture, VerifyReport, _host, compare_outputs
from .inputs import ImageSource, InputSpec, check_array, images_to_array, input_specs, plan_images
from .session import OPTIMIZATIONS, Optimization, create_session, ort_error_message

__all__ = ["Model", "load"]


class Model:
    """A loaded model with a tap plan and (once used) one cached onnxruntime session."""

    def __init__(
        self,
        loaded: LoadedModel,
        plan: TapPlan,
        provider: str = "auto",
        session_config: dict[str, str] | None = None,
        optimization: Optimization = "all",
        layer_graph: LayerGraph | None = None,
        threads: int = 0,
    ) -> None:
        self.loaded = loaded
        self.plan = plan
        self._layer_graph = layer_graph
        self.requested_provider = provider
        self.session_config = dict(session_config or {})
        self.optimization: Optimization = optimization
        self.threads = threads
        self.inputs: list[InputSpec] = input_specs(loaded.proto)
        self._tapped: onnx.ModelProto | None = None
        self._session: Any = None
        self._plain_session: Any = None
        self._provider: str | None = None
        self._quant = self._quantization_params()

    def _quantization_params(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Scale and zero point of each quantized tap, read from the initializers."""
        params: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for tap in self.plan.taps:
            if tap.quantization is None:
                continue
            scale_name, zero_name = tap.quantization
            scale = self.loaded.initializer_array(scale_name)
            if scale is None:
                continue  # computed at run time: the capture stays in quantized units
            zero = self.loaded.initializer_array(zero_name) if zero_name else None
            params[tap.tensor] = (scale, zero)
        return params

    # -- introspection -------------------------------------------------------------------
    @property
    def taps(self) -> tuple[Tap, ...]:
        return self.plan.taps

    @property
    def layer_graph(self) -> LayerGraph:
        """The model's framework layers (:func:`onnxviz.graph.layers.group_layers`)."""
        if self._layer_graph is None:
            self._layer_graph = group_layers(self.loaded.proto)
        return self._layer_graph

    @property
    def proto(self) -> onnx.ModelProto:
        return self.loaded.proto

    @property
    def tapped_proto(self) -> onnx.ModelProto:
        """The rewritten model: own outputs first, then every tap."""
        if self._tapped is None:
            self._tapped = apply_plan(self.loaded.proto, self.plan)
        return self._tapped

    @property
    def provider(self) -> str:
        """The execution provider really in use (creates the session)."""
        self._ensure_session()
        assert self._provider is not None
        return self._provider

    def _make_session(self, proto: onnx.ModelProto) -> tuple[Any, str]:
        self.loaded.check_unchanged()  # onnxruntime reads the weights from the files now
        try:
            data = proto.SerializeToString()
        except ValueError as exc:  # > 2 GB with embedded weights
            raise ModelLoadError(f"model too large to serialise in memory ({exc}); save it with external data") from None
        external = self.loaded.external_dir
        return create_session(
            data, provider=self.requested_provider, external_dir=external, config=self.session_config,
            initializers=self.loaded.weights, optimization=self.optimization, threads=self.threads,
        )

    def _ensure_session(self) -> Any:
        if self._session is None:
            self._session, self._provider = self._make_session(self.tapped_proto)
        return self._session

    # -- inputs --------------------------------------------------------------------------
    def prepare(
        self,
        images: Sequence[ImageSource] | ImageSource | np.ndarray | None = None,
        *,
        feeds: Mapping[str, np.ndarray] | None = None,
        size: tuple[int, int] | None = None,
        scale: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bgr: bool = False,
        max_memory: int | str | None = None,
    ) -> dict[str, np.ndarray]:
        """Build the feed dict from images, one array, or explicit ``feeds``; the run's memory is
        checked (:mod:`onnxviz.run.memory`) before any image is decoded."""
        from .memory import check_run

        specs = {s.name: s for s in self.inputs}
        if feeds is not None:
            if images is not None:
                raise InputError("pass either images/array or feeds, not both")
            unknown = sorted(set(feeds) - set(specs))
            missing = sorted(set(specs) - set(feeds))
            if unknown:
                raise InputError(f"unknown input(s) {', '.join(unknown)}; model inputs: {', '.join(specs)}")
            if missing:
                raise InputError(f"missing input(s) {', '.join(missing)}; model inputs: {', '.join(specs)}")
            arrays = {name: check_array(specs[name], np.asarray(value)) for name, value in feeds.items()}
            check_run(self, {n: a.shape for n, a in arrays.items()}, max_memory=max_memory)
            return arrays
        if images is None:
            raise InputError("nothing to feed: pass images, an array or feeds")
        if len(self.inputs) != 1:
            described = "; ".join(s.describe() for s in self.inputs)
            raise InputError(f"model has {len(self.inputs)} inputs ({described}): pass feeds={{name: array}}")
        spec = self.inputs[0]
        if isinstance(images, np.ndarray):
            array = check_array(spec, images)
            check_run(self, {spec.name: array.shape}, max_memory=max_memory)
            return {spec.name: array}
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]  # one path or one PIL image
        plan = plan_images(spec, list(images), size=size)
        resizable = spec.name if size is None and None in spec.hw else None
        check_run(self, {spec.name: plan.shape(spec)}, max_memory=max_memory, prepare=plan.decode_bytes(), resizable=resizable,
                  prepare_at=lambda hw: plan.at(hw).decode_bytes())
        return {spec.name: images_to_array(spec, plan, scale=scale, mean=mean, std=std, bgr=bgr)}

    # -- running -------------------------------------------------------------------------
    def _run(self, session: Any, names: list[str], feeds: dict[str, np.ndarray], *, on_device: bool = False) -> list[Any]:
        """Run once; numpy arrays, or with ``on_device`` the OrtValues where the provider made them."""
        specs = {s.name: s for s in self.inputs}
        sizes = {name: arr.shape[0] for name, arr in feeds.items() if arr.ndim}
        fixed_one = [n for n in feeds if specs[n].batch == 1]
        n = max(sizes.values(), default=1)
        try:
            if fixed_one and n > 1:
                # The model's batch is fixed at 1: run each sample and stack.
                parts = [session.run(names, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
                # Outputs with one row per sample are stacked; one computed from constants (first
                # dimension not 1) is the same in every run: kept once.
                return [np.concatenate(group, axis=0) if np.shape(group[0])[:1] == (1,) else group[0] for group in zip(*parts)]
            if on_device:
                # A fresh binding per run: its outputs are new buffers, never an earlier capture's.
                binding = session.io_binding()
                for name, value in feeds.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
                device = "cuda" if self._provider == "cuda" else "cpu"
                for name in names:
                    binding.bind_output(name, device)
                session.run_with_iobinding(binding)
                return list(binding.get_outputs())
            return session.run(names, feeds)
        except Exception as exc:
            hint = ""
            if any(s.layout and None in s.hw for s in self.inputs):
                shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
                hint = f" (fed {shapes}; the model may need another input size: try --size HxW / size=(h, w))"
            raise InputError(f"onnxruntime failed to run the model: {ort_error_message(exc)}{hint}") from None

    def capture(
        self,
        images: Sequence[ImageSource] | ImageSource | np.ndarray | None = None,
        *,
        feeds: Mapping[str, np.ndarray] | None = None,
        size: tuple[int, int] | None = None,
        scale: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bgr: bool = False,
        verify: bool = False,
        tolerance: float = 1e-5,
        max_memory: int | str | None = None,
        spill_dir: str | os.PathLike | None = None,
    ) -> Capture:
        """Run the model once and capture every tap.

        ``images`` are file paths or PIL images (decoded, converted, resized and scaled to match
        the model input), or one numpy array. Models with several inputs take ``feeds``.
        ``verify=True`` also runs the untapped model on the same feeds and stores the largest
        difference of the model's own outputs in ``Capture.verify``.
        ``max_memory`` (bytes or ``"512M"``): when the taps for this input need more, capture in
        several passes over layer groups, streaming each tap to ``spill_dir`` (default: a temporary
        folder kept as long as the Capture) as ``.npy`` and returning memory-mapped arrays.
        ``Capture.plan`` says which it did.
        """
        prepared = self.prepare(images, feeds=feeds, size=size, scale=scale, mean=mean, std=std, bgr=bgr, max_memory=max_memory)
        if max_memory is not None:
            from .budget import parse_size, tap_bytes

            budget = parse_size(max_memory)
            sizes = tap_bytes(self.loaded.proto, self.plan.taps, prepared)
            known = [v for v in sizes.values() if v is not None]
            total = sum(known) if len(known) == len(sizes) else None
            if total is None or total > budget:
                return _with_images(self._capture_in_groups(prepared, sizes, budget, total, spill_dir, verify, tolerance), images)
        session = self._ensure_session()
        names = self.plan.output_names
        # On CUDA the taps stay in GPU memory until read. On CPU, session.run's arrays already share
        # onnxruntime's memory, and binding every output costs more Python than it saves.
        results = self._run(session, names, prepared, on_device=self._provider == "cuda")
        by_name = dict(zip(names, results))
        own = {name: _host(by_name[name]) for name in self.plan.model_outputs}
        layers = {tap.name: self._layer(tap, by_name[tap.tensor]) for tap in self.plan.taps}
        report = self.verify(prepared, tapped_outputs=[own[n] for n in self.plan.model_outputs], tolerance=tolerance) if verify else None
        assert self._provider is not None
        from .budget import CapturePlan

        total = sum(layer.nbytes for layer in layers.values())
        return _with_images(Capture(layers, own, self._provider, prepared, report, CapturePlan(1, total, None)), images)

    def _layer(self, tap: Tap, data: Any) -> LayerCapture:
        scale, zero = self._quant.get(tap.tensor, (None, None))
        return LayerCapture(
            name=tap.name, tensor=tap.tensor, node=tap.node, op=tap.op, through=tap.through, through_ops=tap.through_ops,
            data=data, scale=scale, zero_point=zero, bn_folded=tap.bn_folded, kind=tap.kind, layer=tap.layer,
        )

    def _capture_in_groups(
        self,
        feeds: dict[str, np.ndarray],
        sizes: Mapping[str, int | None],
        budget: int,
        total: int | None,
        spill_dir: str | os.PathLike | None,
        verify: bool,
        tolerance: float,
    ) -> Capture:
        """Several passes, one short-lived session per layer group; taps streamed to .npy files."""
        from .budget import CapturePlan, Spill, group_taps
        from ..graph.naming import slugify
        from ..interrupts import hold

        groups = group_taps(self.plan.taps, sizes, budget)
        arrays: dict[str, np.ndarray] = {}
        own: dict[str, np.ndarray] = {}
        provider = None
        spill = Spill(spill_dir)
        with spill as folder:  # removed on any failure or signal
            for k, group in enumerate(groups):
                plan = TapPlan(mode=self.plan.mode, taps=tuple(group), skipped=(), model_outputs=self.plan.model_outputs if k == 0 else (), kinds=self.plan.kinds)
                proto = apply_plan(self.loaded.proto, plan)
                if k > 0:
                    del proto.graph.output[: len(self.plan.model_outputs)]  # only this group's taps
                    for tap in group:
                        if tap.reused_output:  # a model output tapped in a later group: expose it again
                            proto.graph.output.append(next(o for o in self.loaded.proto.graph.output if o.name == tap.tensor))
                session, provider = self._make_session(proto)
                names = [o.name for o in proto.graph.output]
                results = dict(zip(names, self._run(session, names, feeds)))
                del session
                if k == 0:
                    # Copies: an array onnxruntime hands over can keep the session's whole memory arena alive.
                    own = {n: np.array(results[n]) for n in self.plan.model_outputs}
                for tap in group:
                    index = self.plan.taps.index(tap)
                    path = folder / f"{index:03d}_{slugify(tap.name)}.npy"
                    np.save(path, results[tap.tensor])
                    arrays[tap.tensor] = np.load(path, mmap_mode="r")
                del results
                hold("spill")
            self._provider = self._provider or provider
            report = self.verify(feeds, tolerance=tolerance) if verify else None
        layers = {tap.name: self._layer(tap, arrays[tap.tensor]) for tap in self.plan.taps}
        oversized = tuple(t.name for t in self.plan.taps if (sizes.get(t.tensor) or 0) > budget)
        plan_info = CapturePlan(len(groups), total, budget, str(folder), oversized)
        capture = Capture(layers, own, self._provider or "cpu", feeds, report, plan_info)
        spill.tie(capture)  # the spill folder lives as long as the Capture
        return capture

    def verify(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        tapped_outputs: Sequence[np.ndarray] | None = None,
        tolerance: float = 1e-5,
    ) -> VerifyReport:
        """Run the tapped and the untapped model on ``feeds``; report the largest output difference."""
        names = list(self.plan.model_outputs)
        if tapped_outputs is None:
            tapped_outputs = self._run(self._ensure_session(), names, dict(feeds))
        if self._plain_session is None:
            self._plain_session, _ = self._make_session(self.loaded.proto)
        plain = self._run(self._plain_session, names, dict(feeds))
        return compare_outputs(names, tapped_outputs, plain, tolerance)

    def random_feeds(self, size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Deterministic random feeds matching the declared inputs (dynamic dims: ``size`` or 224)."""
        from .memory import check_run

        rng = np.random.default_rng(seed)
        feeds = {}
        shapes = {}
        for spec in self.inputs:
            shape = []
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int):
                    shape.append(dim)
                elif axis == 0:
                    shape.append(batch)
                elif spec.layout and size is not None and axis in ((2, 3) if spec.layout == "NCHW" else (1, 2)):
                    shape.append(size[0] if axis == (2 if spec.layout == "NCHW" else 1) else size[1])
                elif spec.layout and axis == (1 if spec.layout == "NCHW" else 3):
                    shape.append(3)
                else:
                    shape.append(224 if spec.layout else 1)
            shapes[spec.name] = shape
        check_run(self, shapes)  # before allocating: a declared 1×3×100000×100000 input is refused, not a MemoryError
        for spec in self.inputs:
            shape = shapes[spec.name]
            if np.issubdtype(spec.dtype, np.floating):
                feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == np.bool_:
                feeds[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
            else:
                feeds[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
        return feeds

    # -- export --------------------------------------------------------------------------
    def expose(self, path: str | os.PathLike) -> Path:
        """Write the tapped model to ``path`` (atomically; external data stays external)."""
        from ..graph.save import write_model

        tapped = apply_plan(self.loaded.with_weights(), self.plan) if (self.loaded.weights or self.loaded.weights_in_source) else self.tapped_proto
        return write_model(tapped, Path(path), source=self.loaded)

    def summary(self) -> dict[str, Any]:
        """Inputs, outputs, tap plan and counts, as plain data."""
        from ..graph.summary import model_summary

        return model_summary(self)

    def __repr__(self) -> str:
        return f"Model({self.loaded.source!r}, {len(self.taps)} taps, tap={self.plan.mode!r})"


def _with_images(capture: Capture, images: Any) -> Capture:
    """Remember the image files / PIL images a capture was made from (not arrays or feeds)."""
    if images is not None and not isinstance(images, np.ndarray):
        capture.images = [images] if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence) else list(images)
    return capture


def load(
    source: ModelSource,
    tap: str | Sequence[str] | None = "conv",
    layers: str | Sequence[str] | None = None,
    provider: str = "auto",
    session_config: dict[str, str] | None = None,
    optimization: Optimization = "all",
    tensors: str | Sequence[str] | None = None,
    threads: int = 0,
) -> Model:
    """Load an ONNX model and plan taps on its layers.

    ``source``: a path (external data is read from its folder), bytes or ``onnx.ModelProto``.
    ``tap``: one kind or several (``"conv,pool"`` or ``("conv", "pool")``): ``"conv"`` for each
    conv layer's output (bias included), ``"activation"`` for the end of each Conv's
    BatchNorm/activation chain, ``"pool"``, ``"dense"``, ``"merge"`` for those layers' outputs,
    ``"layer"`` for every layer's; None with ``tensors`` only. ``tensors``: tensor names to tap
    as well. ``layers``: glob(s), or ``re:``-prefixed regexes, selecting layers. ``provider``: ``"auto"`` (CUDA when really active, else CPU), ``"cpu"`` or ``"cuda"``.
    ``session_config``: onnxruntime session config entries for the session(s) onnxviz creates.
    ``optimization``: onnxruntime's graph optimization level for them: ``all`` (default) builds
    slower and suits repeated captures; ``extended`` or ``basic`` build ~0.1 s faster on a
    ResNet-50 and suit a single run (the CLI's default is ``extended``).
    ``threads``: onnxruntime's intra-op threads per session (0: one per core). Set it where
    several sessions share a machine (Ray actors, worker processes): onnxruntime does not see
    their CPU reservations.
    """
    if provider not in ("auto", "cpu", "cuda"):
        raise OnnxvizError(f"unknown provider {provider!r}: use auto, cpu or cuda")
    if optimization not in OPTIMIZATIONS:
        raise OnnxvizError(f"unknown graph optimization level {optimization!r}: use {', '.join(OPTIMIZATIONS)}")
    if not isinstance(threads, int) or threads < 0:
        raise OnnxvizError(f"threads must be a non-negative integer, got {threads!r}")
    loaded = load_model(source)
    graph = group_layers(loaded.proto)
    plan = plan_taps(loaded.proto, tap, layers, tensors, layer_graph=graph)
    return Model(loaded, plan, provider, session_config, optimization, layer_graph=graph, threads=threads)
