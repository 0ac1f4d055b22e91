"""The work every process does the same way, locally or in a Ray actor: decode images with
onnxviz's own input pipeline, run the model, reduce each tapped layer, fold the rows into a
:class:`Part`.

:class:`JobSpec` is the whole job's configuration (plain data, picklable: a Ray actor rebuilds the
session from it in its ``__init__``, since an onnxruntime session cannot be pickled). A
:class:`Part` is the statistics of some images — a shard, or one Ray batch — and parts merge with
one associative operation; ``to_bytes``/``from_bytes`` give the compressed form checkpoints and
Ray partials travel in.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, OnnxvizError
from .rows import RowStats, numpy_rows
from .stats import LayerStats

__all__ = ["JobSpec", "Part", "Engine", "image_key", "check_input", "REDUCE_MODES"]

REDUCE_MODES = ("auto", "numpy", "graph")


def image_key(path: str) -> int:
    """The stable tie-break key of an image: 64 bits of BLAKE2b of its absolute path."""
    text = os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class JobSpec:
    """What to compute: the model, which layers, how images become inputs, and the statistics."""

    model: str
    tap: str | tuple[str, ...] | None = "conv"
    layers: tuple[str, ...] | None = None
    tensors: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None
    scale: str | None = None  # None: unit for float inputs, raw for integer ones
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False
    provider: str = "auto"
    optimization: str = "all"
    threads: int = 0
    top_k: int = 9
    hist_grid: int = 4
    reduce: str = "auto"
    batch: int = 32

    def results_fingerprint(self) -> dict[str, Any]:
        """The settings results depend on (not the batch, threads or where reductions run)."""
        data = asdict(self)
        for key in ("threads", "batch", "reduce", "optimization"):
            data.pop(key)
        data["layers"] = list(self.layers) if self.layers else None
        data["tensors"] = list(self.tensors) if self.tensors else None
        data["tap"] = list(self.tap) if isinstance(self.tap, tuple) else self.tap
        data["size"] = list(self.size) if self.size else None
        data["mean"] = list(self.mean) if self.mean else None
        data["std"] = list(self.std) if self.std else None
        return data


@dataclass
class Part:
    """Statistics of some images: per layer, plus which images they cover.

    ``images`` are indices into the job's image list; a Ray worker, which only knows paths, fills
    ``paths`` and indexes them locally, and the driver maps them (:meth:`localized`).
    """

    layers: dict[str, LayerStats] = field(default_factory=dict)
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    skipped: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    paths: list[str] | None = None

    @property
    def done(self) -> int:
        return int(self.images.size)

    def merge(self, other: "Part") -> "Part":
        for name, stats in other.layers.items():
            if name in self.layers:
                self.layers[name].merge(stats)
            else:
                self.layers[name] = stats.copy()
        self.images = np.concatenate([self.images, other.images])
        self.skipped = self.skipped + list(other.skipped)
        self.seconds += other.seconds
        return self

    def localized(self, index_of: dict[str, int]) -> "Part":
        """Map a worker's local image indices to the job's, through its paths (in place)."""
        if self.paths is None:
            return self
        try:
            mapping = np.array([index_of[os.path.abspath(p)] for p in self.paths], np.int64)
        except KeyError as exc:
            raise OnnxvizError(f"a worker returned an image that is not in the job: {exc.args[0]}") from None
        for stats in self.layers.values():
            stats.remap_images(mapping)
        self.images = mapping[self.images] if self.images.size else self.images
        self.skipped = [(int(mapping[i]), reason) for i, reason in self.skipped]
        self.paths = None
        return self

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {"images": self.images, "seconds": np.array(self.seconds)}
        names = list(self.layers)
        arrays["layer_names"] = np.array(names, dtype=np.str_) if names else np.zeros(0, np.str_)
        for k, name in enumerate(names):
            arrays.update(self.layers[name].to_arrays(prefix=f"L{k}."))
        arrays["skipped_index"] = np.array([i for i, _ in self.skipped], np.int64)
        arrays["skipped_reason"] = np.array([r for _, r in self.skipped], dtype=np.str_) if self.skipped else np.zeros(0, np.str_)
        if self.paths is not None:
            arrays["paths"] = np.array(self.paths, dtype=np.str_) if self.paths else np.zeros(0, np.str_)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Part":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = [str(n) for n in z["layer_names"]]
            layers = {name: LayerStats.from_arrays(name, z, prefix=f"L{k}.") for k, name in enumerate(names)}
            skipped = [(int(i), str(r)) for i, r in zip(z["skipped_index"], z["skipped_reason"])]
            paths = [str(p) for p in z["paths"]] if "paths" in z.files else None
            return cls(layers, np.asarray(z["images"], np.int64), skipped, float(z["seconds"]), paths)


class Engine:
    """A loaded model and its session(s), turning batches of images into statistics."""

    def __init__(self, spec: JobSpec, model: Any = None, *, strict: bool = False) -> None:
        from ..run.model import load

        self.spec = spec
        self.strict = strict  # an unreadable image stops the run instead of being skipped and listed
        self.timings = {"decode": 0.0, "model": 0.0, "reduce": 0.0}
        if spec.reduce not in REDUCE_MODES:
            raise OnnxvizError(f"unknown reduce mode {spec.reduce!r}: use {', '.join(REDUCE_MODES)}")
        if spec.top_k < 1:
            raise OnnxvizError(f"top-k must be at least 1, got {spec.top_k}")
        # No spinning (decoding and reductions share the cores); no memory pattern (it kept each
        # run's freed activations from being reused by the next: RSS doubled from the second batch).
        config = {"session.intra_op.allow_spinning": "0", "session.enable_mem_pattern": "0"}
        if model is not None:
            # A model the caller loaded keeps its plan and weights, but the run gets a session of its
            # own with these settings (the caller's session, memory pattern on, doubled the peak).
            from ..run.model import Model

            model = Model(model.loaded, model.plan, model.requested_provider, {**model.session_config, **config},
                          model.optimization, model._layer_graph, spec.threads or model.threads)
        self.model = model if model is not None else load(
            spec.model, tap=spec.tap, layers=list(spec.layers) if spec.layers else None,
            tensors=list(spec.tensors) if spec.tensors else None, provider=spec.provider,
            session_config=config, optimization=spec.optimization, threads=spec.threads,  # type: ignore[arg-type]
        )
        self.size = check_input(self.model, spec)
        self.input = self.model.inputs[0]
        self.taps = self.model.taps
        self._reduction: Any = None
        self._graph_session: Any = None
        self._graph_provider = "cpu"
        self._maps: dict[str, tuple[int, ...]] = {}
        self._threads: Any = None
        self._lock = threading.Lock()
        # Build the one session the run needs (a bad model fails here, before any image is read):
        # the reductions graph where CUDA may be active (the provider really in use decides auto),
        # else the tapped model, whose activations numpy reduces.
        from ..run.session import import_onnxruntime

        cuda_listed = "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
        if spec.reduce == "numpy" or (spec.reduce == "auto" and (spec.provider == "cpu" or not cuda_listed)):
            self.reduce, self.provider = "numpy", self.model.provider
        else:
            self._graph(spec.batch)
            self.provider = self._graph_provider
            self.reduce = "graph" if spec.reduce == "graph" or self.provider == "cuda" else "numpy"
        self.pad_batches = self.provider == "cuda"  # cuDNN may pick other kernels for other batch sizes

    # -- inputs ----------------------------------------------------------------------------
    def decode(self, source: Any) -> np.ndarray:
        """One image (path, bytes or PIL image) → one input sample, exactly as ``capture`` feeds it.

        Files are read as bytes and decoded like Ray's ``read_binary_files`` rows, so a local run
        and a Ray run decode (and fail on) every image alike."""
        from ..run.inputs import images_to_array

        if isinstance(source, (str, os.PathLike)):
            source = _read(source)
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = _open_bytes(bytes(source))
        spec = self.spec
        return images_to_array(
            self.input, [source], size=self.size, scale=spec.scale, mean=spec.mean, std=spec.std, bgr=spec.bgr
        )[0]

    def decode_many(self, sources: Sequence[Any], names: Sequence[str]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Decode what can be decoded: the stacked batch, which positions it holds, and why others
        failed (reasons without the path: the job lists the images)."""
        start = time.perf_counter()
        samples, ok, bad = [], [], []
        for i, (source, name) in enumerate(zip(sources, names)):
            try:
                samples.append(self.decode(source))
                ok.append(i)
            except InputError as exc:
                if self.strict:
                    raise InputError(f"{name}: {exc} (without --strict, unreadable images are skipped and listed)") from None
                bad.append((i, str(exc)))
        batch = np.stack(samples) if samples else np.zeros((0,), np.float32)
        self.timings["decode"] += time.perf_counter() - start
        return batch, ok, bad

    # -- running -------------------------------------------------------------------------
    def _graph(self, n: int) -> Any:
        if self._reduction is None:
            from .graphreduce import build_reduction, spatial_shapes

            shape = (n, *(self._sample_shape()))
            tensors = [t.tensor for t in self.taps]
            spatial = spatial_shapes(self.model.proto, self.input.name, shape, tensors)
            quantized = set(self.model._quant)
            self._reduction = build_reduction(self.model.proto, self.taps, spatial, self.spec.hist_grid, quantized)
            self._graph_session, self._graph_provider = self.model._make_session(self._reduction.proto)
        return self._reduction

    def _sample_shape(self) -> tuple[int, ...]:
        c = self.input.channels or 3
        h, w = self.size
        return (c, h, w) if self.input.layout == "NCHW" else (h, w, c)

    def run(self, batch: np.ndarray, part: Part, image_index: np.ndarray, image_key: np.ndarray) -> None:
        """Run one decoded batch and fold its statistics into ``part``."""
        n = batch.shape[0]
        if n == 0:
            return
        feed = batch
        if self.pad_batches and n < self.spec.batch:
            feed = np.concatenate([batch, np.zeros((self.spec.batch - n, *batch.shape[1:]), batch.dtype)])
        name = self.input.name
        rows_by_tap: dict[str, Any] = {}
        start = time.perf_counter()
        model_time = 0.0
        if self.reduce == "graph":
            reduction = self._graph(feed.shape[0])
            t = time.perf_counter()
            results = dict(zip(reduction.output_names, self.model._run(self._graph_session, reduction.output_names, {name: feed})))
            model_time += time.perf_counter() - t
            for tap in self.taps:
                if tap.tensor not in reduction.outputs:
                    rows_by_tap[tap.tensor] = results[tap.tensor]  # exposed raw: reduced in numpy by _fold
                    continue
                rows = reduction.rows(tap.tensor, results)
                if not np.isfinite(rows.mean).all():
                    rows_by_tap = {}  # NaN/Inf somewhere: redo the batch in numpy, which handles them
                    break
                rows_by_tap[tap.tensor] = rows
        if not rows_by_tap:
            session = self.model._ensure_session()
            tensors = [t.tensor for t in self.taps]
            t = time.perf_counter()
            arrays = self.model._run(session, tensors, {name: feed})
            model_time += time.perf_counter() - t
            rows_by_tap = dict(zip(tensors, arrays))  # reduced in _fold, in parallel
            del arrays
        # onnxruntime is idle now: fold the layers in on every core (numpy releases the GIL).
        jobs = [(tap, rows_by_tap.pop(tap.tensor)) for tap in self.taps]
        list(self._pool().map(lambda job: self._fold(job[0], job[1], part, n, feed is not batch, image_index, image_key), jobs))
        self.timings["model"] += model_time
        self.timings["reduce"] += time.perf_counter() - start - model_time

    def _pool(self) -> Any:
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            workers = self.spec.threads or os.cpu_count() or 1
            self._threads = ThreadPoolExecutor(max_workers=max(1, min(workers, len(self.taps))), thread_name_prefix="onnxviz-reduce")
        return self._threads

    def close(self) -> None:
        """Stop the reduction threads (the session stays usable; a later run starts them again)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None

    def _fold(self, tap: Any, data: Any, part: Part, n: int, padded: bool, image_index: np.ndarray, image_key: np.ndarray) -> None:
        """One layer's batch (activations, or rows reduced in the graph) into ``part``."""
        rows = data if isinstance(data, RowStats) else self._numpy_rows(tap, data)
        del data  # the activations can go as soon as they are reduced
        if padded:
            rows = rows.head(n)
        stats = part.layers.get(tap.name)
        if stats is None:
            with self._lock:
                stats = part.layers.setdefault(tap.name, LayerStats(tap.name, rows.max.shape[1], self._map_shape(tap), self.spec.top_k))
        stats.add_rows(rows, image_index, image_key)

    def _numpy_rows(self, tap: Any, array: np.ndarray) -> Any:
        values = self.model._layer(tap, array).values()
        if values.ndim < 2:
            raise OnnxvizError(f"layer {tap.name} has shape {tuple(values.shape)}: expected N×C×…")
        self._maps[tap.tensor] = tuple(values.shape[2:])
        return numpy_rows(values, self.spec.hist_grid)

    def _map_shape(self, tap: Any) -> tuple[int, ...]:
        return self._maps[tap.tensor] if tap.tensor in self._maps else self._reduction.spatial[tap.tensor]

    def process(self, sources: Sequence[Any], names: Sequence[str], index: np.ndarray, keys: np.ndarray) -> Part:
        """Decode and run ``sources`` in batches of ``spec.batch``; a Part covering all of them."""
        start = time.perf_counter()
        part = Part()
        for b0 in range(0, len(sources), self.spec.batch):
            b1 = min(len(sources), b0 + self.spec.batch)
            batch, ok, bad = self.decode_many(sources[b0:b1], names[b0:b1])
            part.skipped += [(int(index[b0 + i]), reason) for i, reason in bad]
            if ok:
                chosen = np.asarray(ok, np.int64) + b0
                self.run(batch, part, index[chosen], keys[chosen])
        part.images = np.asarray(index, np.int64).copy()
        part.seconds = time.perf_counter() - start
        return part


def check_input(model: Any, spec: JobSpec) -> tuple[int, int]:
    """The size every image is fed at, after checking the model suits dataset mode."""
    if not model.taps:
        raise OnnxvizError("no layer to collect statistics on: the tap plan is empty")
    if len(model.inputs) != 1 or model.inputs[0].layout is None:
        described = "; ".join(s.describe() for s in model.inputs)
        raise InputError(f"dataset mode needs a model with one image input (N×C×H×W or N×H×W×C); this one has {described}")
    spec_in = model.inputs[0]
    fixed = spec_in.hw
    if spec.size is None:
        if None in fixed:
            raise InputError(
                f"input {spec_in.describe()} has a dynamic size: pass --size HxW (size=(h, w)); every image is resized "
                "to it, since batching must not change the results"
            )
        return int(fixed[0]), int(fixed[1])  # type: ignore[arg-type]
    h, w = spec.size
    if h < 1 or w < 1:
        raise InputError(f"size must be positive, got {h}x{w}")
    if (fixed[0] and fixed[0] != h) or (fixed[1] and fixed[1] != w):
        raise InputError(f"input {spec_in.describe()} has a fixed size; size {h}x{w} conflicts with it")
    return int(h), int(w)


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError("file not found") from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from None


def _open_bytes(data: bytes) -> Any:
    """Decode image bytes as ``open_image`` decodes a file (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise InputError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot decode image: {exc}") from None

