"""Writing results to a folder: PNGs plus ``manifest.json``, staged and renamed into place.

``write_maps``: one PNG per captured layer (per image); ``write_filters``: one PNG per layer's filters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..run.capture import Capture
from ..graph.naming import slugify
from .output import json_number, staged_dir, write_json, MANIFEST
from ..rendering import default_cmap, render

__all__ = ["write_maps", "write_filters", "layer_stats"]


def layer_stats(array: np.ndarray) -> dict[str, Any]:
    """min/max/mean over finite values (null when none), and the count of NaN/Inf values."""
    a = array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf
        total = a.sum(dtype=np.float64)
    if np.isfinite(total):
        return {"min": json_number(a.min()), "max": json_number(a.max()), "mean": json_number(total / max(a.size, 1)), "nonfinite": 0}
    finite = np.isfinite(a)
    count = int(finite.sum())
    if count == 0:
        return {"min": None, "max": None, "mean": None, "nonfinite": int(a.size)}
    vals = a[finite]
    return {
        "min": json_number(vals.min()),
        "max": json_number(vals.max()),
        "mean": json_number(vals.mean(dtype=np.float64)),
        "nonfinite": int(a.size - count),
    }


def write_maps(
    capture: Capture,
    out_dir: str | Path,
    *,
    model_name: str,
    inputs: Sequence[dict[str, Any]],
    render_options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Render every captured layer for every image into ``out_dir`` (staged, then renamed).

    ``render_options`` go to :func:`onnxviz.render` (cmap, norm, max_channels, select, min_tile…).
    """
    from ..progress import Progress

    options = dict(render_options or {})
    max_channels = options.get("max_channels")
    out_dir = Path(out_dir)
    n_images = max((layer.array.shape[0] for layer in capture.values()), default=1)
    layers: list[dict[str, Any]] = []
    files: list[str] = []
    with staged_dir(out_dir) as tmp, Progress(len(capture) * n_images, "layer images", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # Rendering is numpy and PNG encoding is zlib, both of which release the GIL: encode the
        # previous layers' PNGs on worker threads while the next layer renders.
        pending = []
        for index, layer in enumerate(capture.values()):
            slug = f"{index:03d}_{slugify(layer.name)}"
            pngs = []
            for image in range(n_images):
                fname = f"{slug}.png" if n_images == 1 else f"{slug}__img{image}.png"
                pending.append(pool.submit(render(layer, image=image, **options).save, tmp / fname))
                pngs.append(fname)
                bar.update()
            files.extend(pngs)
            stats = layer_stats(layer.values())
            layers.append(
                {
                    "name": layer.name,
                    "label": layer.label,
                    "bn_folded": layer.bn_folded,
                    "tensor": layer.tensor,
                    "node": layer.node,
                    "op": layer.op,
                    "shape": list(layer.shape),
                    "png": pngs[0],
                    "pngs": pngs,
                    "min": stats["min"],
                    "max": stats["max"],
                    "mean": stats["mean"],
                    "nonfinite": stats["nonfinite"],
                    "through": list(layer.through_ops),
                    "quantized": layer.scale is not None,
                    "channels_shown": min(layer.shape[1], max_channels or layer.shape[1]) if len(layer.shape) > 1 else 1,
                }
            )
        for job in pending:
            job.result()  # re-raise any encoding error before the folder is committed
        manifest: dict[str, Any] = {
            "onnxviz_version": __version__,
            "model": model_name,
            "provider": capture.provider,
            "inputs": list(inputs),
            "layers": layers,
            "outputs": {name: list(arr.shape) for name, arr in capture.outputs.items()},
            "cmap": options.get("cmap") or default_cmap(options.get("norm", "channel")),
            "norm": options.get("norm", "channel"),
        }
        if capture.verify is not None:
            manifest["verify"] = capture.verify.as_dict()
        if extra:
            manifest.update(extra)
        manifest["files"] = files
        write_json(tmp / MANIFEST, manifest)
    return manifest


def write_filters(
    model: Any,
    out_dir: str | Path,
    *,
    model_name: str,
    mode: str = "auto",
    cmap: str = "gray",
    max_filters: int | None = 64,
    min_tile: int | None = 24,
) -> dict[str, Any]:
    """Render every tapped layer's filters into ``out_dir``; unviewable layers are listed with the reason."""
    from ..rendering.filters import filter_banks, filter_caption, render_filters
    from ..rendering import with_caption

    out_dir = Path(out_dir)
    layers: list[dict[str, Any]] = []
    files: list[str] = []
    banks = filter_banks(model)
    with staged_dir(out_dir) as tmp:
        for index, bank in enumerate(banks):
            entry: dict[str, Any] = {
                "name": bank.name,
                "label": bank.label,
                "node": bank.node,
                "op": bank.op,
                "group": bank.group,
                "bn_folded": bank.bn_folded,
                "viewable": bank.viewable,
            }
            if bank.viewable:
                fname = f"{index:03d}_{slugify(bank.name)}.png"
                image = render_filters(bank, mode=mode, cmap=cmap, max_filters=max_filters, min_tile=min_tile)
                with_caption(image, filter_caption(bank)).save(tmp / fname)
                files.append(fname)
                entry.update({"shape": list(bank.weights.shape), "png": fname, **bank.stats()})
                if bank.bn_folded:
                    entry["note"] = "weights include folded BatchNorm scale"
                if bank.integer_units:
                    entry["note"] = "ConvInteger weights in integer units (zero point removed, no scale)"
            else:
                entry.update({"shape": None, "png": None, "reason": bank.reason})
            layers.append(entry)
        manifest = {"onnxviz_version": __version__, "model": model_name, "mode": mode, "cmap": cmap, "layers": layers, "files": files}
        write_json(tmp / MANIFEST, manifest)
    return manifest
