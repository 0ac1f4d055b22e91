"""``onnxviz.dataset``: which images make each channel fire, over any number of images, locally
or on Ray — streamed in batches, checkpointed per shard, merged exactly."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OnnxvizError
from .engine import Engine, JobSpec, Part, check_input, image_key
from .result import DatasetStats

__all__ = ["dataset", "describe"]

_WRITE_OPTIONS = {"channels", "max_channels", "tile", "pngs", "html"}


def describe(model: Any, size: tuple[int, int]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-layer details (names, op, receptive field) and the input, from a loaded Model."""
    from .receptive import receptive_fields

    spec = model.inputs[0]
    fields = receptive_fields(model.proto, spec.name, spec.layout or "NCHW", [t.tensor for t in model.taps])
    info = {}
    for tap in model.taps:
        field = fields.get(tap.tensor)
        info[tap.name] = {
            "name": tap.name, "label": tap.label, "tensor": tap.tensor, "node": tap.node, "op": tap.op,
            "through": list(tap.through_ops), "bn_folded": tap.bn_folded, "quantized": tap.quantization is not None,
            "receptive_field": field.as_dict() if field is not None else None,
        }  # fmt: skip
    channels = spec.channels or 3
    return info, {"name": spec.name, "layout": spec.layout, "size": list(size), "channels": channels}


def _model_path(model: Any) -> tuple[str, Any]:
    """The model's path for workers and manifests, and a loaded Model when one was passed."""
    from ..run.model import Model

    if isinstance(model, Model):
        path = model.loaded.path
        return (str(path) if path is not None else model.loaded.source), model
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model), None
    raise OnnxvizError(f"dataset() takes a model path or a loaded onnxviz Model, not {type(model).__name__}")


def dataset(
    model: Any,
    images: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    tap: str | Sequence[str] | None = "conv",
    layers: str | Sequence[str] | None = None,
    tensors: str | Sequence[str] | None = None,
    top_k: int = 9,
    batch: int = 32,
    size: tuple[int, int] | None = None,
    scale: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    provider: str = "auto",
    optimization: str = "all",
    threads: int = 0,
    reduce: str = "auto",
    hist_grid: int = 4,
    shard_size: int = 1000,
    ray: str | None = None,
    workers: int | None = None,
    restart: bool = False,
    strict: bool = False,
    progress: bool | None = None,
    saturation: float = 0.5,
    **write_options: Any,
) -> DatasetStats:
    """Per-channel statistics of every tapped layer over ``images``, and each channel's top-k images.

    ``tap``/``layers``/``tensors``: which layers, as for :func:`onnxviz.load`.
    ``images``: folders (searched recursively), glob patterns, text files listing paths (``.txt``,
    ``.lst``), or image paths. Every image is decoded as :meth:`Model.capture` decodes it and
    resized to the model's input size (``size=(h, w)`` for models with a dynamic size).
    Statistics per channel: count, mean, std, min, max, fraction positive, a fixed-bin histogram
    (of a ``hist_grid``×``hist_grid`` subgrid of positions per map; 0: every position), the
    ``top_k`` images by the channel's maximum with where it is, dead and saturated channels.

    ``output``: write the folder (statistics ``.npz`` per layer, ``dataset.json``, top-k PNGs,
    HTML) and checkpoint each finished shard of ``shard_size`` images beside it in
    ``OUTPUT.onnxviz-resume/``, so that rerunning an interrupted job does only the rest
    (``restart=True`` discards a checkpoint). ``ray``: ``"auto"`` (a running cluster, else a new
    local one), ``"local"`` (a new local cluster) or a cluster address: the same job as Ray Data
    with ``workers`` actors. ``reduce``: where the per-channel reductions run — ``"numpy"``,
    ``"graph"`` (appended to the ONNX graph: on CUDA the activations never leave the GPU), or
    ``"auto"`` (graph on CUDA, numpy on CPU, where that measured faster).
    Remaining keywords go to :func:`~onnxviz.datasets.write.write_dataset` (``channels``,
    ``max_channels``, ``tile``).
    """
    from ..graph.taps import parse_tap
    from ..progress import Progress
    from .sources import expand_images

    if batch < 1 or shard_size < 1:
        raise OnnxvizError("batch and shard_size must be at least 1")
    if hist_grid < 0:
        raise OnnxvizError(f"hist_grid must be >= 0, got {hist_grid}")
    if workers is not None and workers < 1:
        raise OnnxvizError(f"workers must be at least 1, got {workers}")
    if workers is not None and ray is None:
        raise OnnxvizError("--workers sets the Ray actors: use it with --ray (a local run uses every core; --threads sets how many)")
    if not 0 < saturation <= 1:
        raise OnnxvizError(f"saturation must be within (0, 1], got {saturation}")
    unknown = sorted(set(write_options) - _WRITE_OPTIONS)
    if unknown:
        raise TypeError(f"dataset() got unexpected keyword argument(s): {', '.join(unknown)}")
    paths = expand_images(images)
    if any("\n" in p or "\r" in p for p in paths):
        raise InputError("an image path contains a line break; rename it")
    out = Path(output) if output is not None else None
    if out is not None:
        from ..report.output import check_output_dir

        check_output_dir(out)
    model_path, loaded = _model_path(model)
    layer_patterns = (layers,) if isinstance(layers, str) else (tuple(layers) if layers else None)
    tensor_names = (tensors,) if isinstance(tensors, str) else (tuple(tensors) if tensors else None)
    spec = JobSpec(
        model=model_path, tap=",".join(parse_tap(tap)) or None, layers=layer_patterns,
        tensors=tensor_names, size=tuple(size) if size else None, scale=scale,  # type: ignore[arg-type]
        mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None, bgr=bgr,
        provider=provider, optimization=optimization, threads=threads, top_k=top_k, hist_grid=hist_grid, reduce=reduce, batch=batch,
    )  # fmt: skip
    started = time.perf_counter()
    if ray is None:
        engine = Engine(spec, model=loaded, strict=strict)
        described = engine.model
        fed_size = engine.size
    else:
        from ..run.model import load

        if loaded is not None:
            raise OnnxvizError("with ray=, pass the model as a file path (each worker loads it)")
        described = load(model_path, tap=spec.tap, layers=list(layer_patterns) if layer_patterns else None,
                         tensors=list(tensor_names) if tensor_names else None, provider="cpu")
        fed_size = check_input(described, spec)  # the checks a worker would do, before any worker starts
    info, input_info = describe(described, fed_size)
    keys = np.array([image_key(p) for p in paths], np.uint64)

    checkpoint = None
    total: Part | None = None
    resumed = 0
    if out is not None:
        from .checkpoint import Checkpoint, checkpoint_dir, job_identity

        identity = job_identity(model_path if loaded is None or loaded.loaded.path else None, paths, spec.results_fingerprint())
        checkpoint = Checkpoint(checkpoint_dir(out), identity, restart=restart)
        total, resumed = checkpoint.load()
    from .checkpoint import done_mask

    todo = np.flatnonzero(~done_mask(total, len(paths)))

    def on_part(part: Part) -> None:
        nonlocal total
        if checkpoint is not None:
            checkpoint.save(part)
        total = part if total is None else total.merge(part)

    run_info: dict[str, Any] = {}
    try:
        with Progress(len(paths), "images", enabled=progress, rate=True, done=len(paths) - len(todo)) as bar:
            if len(todo) and ray is None:
                from .local import run_local

                run_local(engine, paths, keys, todo, shard_size, on_part, bar)
            elif len(todo):
                from .ray_run import run_ray

                run_info = run_ray(spec, paths, todo, on_part, address=ray, workers=workers, shard_size=shard_size, strict=strict, progress=bar)
    finally:
        if ray is None:
            engine.close()
    seconds = time.perf_counter() - started
    if total is None or not total.layers:
        first = f"{paths[total.skipped[0][0]]}: {total.skipped[0][1]}" if total is not None and total.skipped else "no image was processed"
        raise InputError(f"none of the {len(paths)} images could be read ({first})")
    run = {
        "runner": "ray" if ray is not None else "local", "seconds": seconds, "images_processed": int(len(todo)),
        "images_per_second": len(todo) / seconds if seconds > 0 else None, "resumed_parts": resumed, "shard_size": shard_size,
        "batch": batch, **run_info,
    }  # fmt: skip
    if ray is None:
        run.update({"provider": engine.provider, "reduce": engine.reduce, "threads": threads, "timings": dict(engine.timings)})
    stats = DatasetStats(
        model=model_path, images=paths, layers={name: total.layers[name] for name in info if name in total.layers},
        info=info, skipped=sorted(total.skipped), settings=spec.results_fingerprint(), run=run, input=input_info,
        saturation=saturation,
    )
    if out is not None:
        stats.save(out, progress=progress, **write_options)
        assert checkpoint is not None
        checkpoint.remove()
    return stats

