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
from ..rendering import default_cmap

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
    title: bool = False,
    sums: bool = False,
    sum_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Render every captured layer for every image into ``out_dir`` (staged, then renamed).

    ``render_options`` go to :func:`onnxviz.render` (cmap, norm, max_channels, select, min_tile…).
    Layers without 2-D maps are drawn as bar charts or strips of cells (``report.views``).
    ``title``: the layer name above each image; ``sums``: also the sum of each layer's maps at
    ``sum_size`` (the input's H, W) as ``NNN_<slug>.sum.png``; ``class_names``: names for the
    top-5 of the model's outputs (manifest ``predictions``) and of vector layers that fit them.
    """
    from ..progress import Progress
    from .views import layer_view, n_images_of, predictions

    options = dict(render_options or {})
    out_dir = Path(out_dir)
    n_images = n_images_of(capture)
    layers: list[dict[str, Any]] = []
    files: list[str] = []
    with staged_dir(out_dir) as tmp, Progress(len(capture) * n_images, "layer images", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # Rendering is numpy and PNG encoding is zlib, both of which release the GIL: encode the
        # previous layers' PNGs on worker threads while the next layer renders.
        pending = []
        for index, layer in enumerate(capture.values()):
            view = layer_view(layer, capture, class_names)
            slug = f"{index:03d}_{slugify(layer.name)}"
            pngs, sum_pngs, shown = [], [], 0
            for image in range(view.images if view.view else 0):
                stem = slug if view.images == 1 else f"{slug}__img{image}"
                rendered = view.render(image, options, title=title)
                shown = len(rendered.channels)
                pending.append(pool.submit(rendered.save, tmp / f"{stem}.png"))
                pngs.append(f"{stem}.png")
                summed = view.sum_image(image, sum_size, options.get("cmap"), title=title) if sums else None
                if summed is not None:
                    pending.append(pool.submit(summed.save, tmp / f"{stem}.sum.png"))
                    sum_pngs.append(f"{stem}.sum.png")
            bar.update(n_images)
            files.extend(pngs + sum_pngs)
            stats = layer_stats(layer.values()) if view.view else {"min": None, "max": None, "mean": None, "nonfinite": 0}
            entry = {
                "name": layer.name,
                "label": layer.label,
                "kind": layer.kind,
                "bn_folded": layer.bn_folded,
                "tensor": layer.tensor,
                "node": layer.node,
                "op": layer.op,
                "shape": list(layer.shape),
                "png": pngs[0] if pngs else None,
                "pngs": pngs,
                "min": stats["min"],
                "max": stats["max"],
                "mean": stats["mean"],
                "nonfinite": stats["nonfinite"],
                "through": list(layer.through_ops),
                "quantized": layer.scale is not None,
                "channels_shown": shown,  # maps (or values, for bar charts and strips) drawn
                **view.manifest(),
            }
            if sums:
                entry["sum_png"], entry["sum_pngs"] = (sum_pngs[0] if sum_pngs else None), sum_pngs
            layers.append(entry)
        for job in pending:
            job.result()  # re-raise any encoding error before the folder is committed
        manifest: dict[str, Any] = {
            "onnxviz_version": __version__,
            "model": model_name,
            "provider": capture.provider,
            "inputs": list(inputs),
            "layers": layers,
            "outputs": {name: list(arr.shape) for name, arr in capture.outputs.items()},
            "predictions": predictions(capture, class_names),
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
    norm: str = "filter",
    title: bool = False,
    inputs: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Render every tapped layer's filters into ``out_dir``; unviewable layers are listed with the reason.

    ``norm``: ``filter`` (each filter its own range) or ``layer`` (one range per layer);
    ``title``: the layer name above each image; ``inputs``: only these input channels of each filter."""
    from ..rendering.filters import filter_banks, filter_caption, render_filters
    from ..rendering import with_caption, with_title

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
                image = render_filters(bank, mode=mode, cmap=cmap, max_filters=max_filters, min_tile=min_tile, norm=norm, inputs=inputs)
                image = with_caption(image, filter_caption(bank))
                (with_title(image, bank.label) if title else image).save(tmp / fname)
                files.append(fname)
                entry.update({"shape": list(bank.weights.shape), "png": fname, **bank.stats()})
                if bank.bn_folded:
                    entry["note"] = "weights include folded BatchNorm scale"
                if bank.integer_units:
                    entry["note"] = "ConvInteger weights in integer units (zero point removed, no scale)"
            else:
                entry.update({"shape": None, "png": None, "reason": bank.reason})
            layers.append(entry)
        manifest = {"onnxviz_version": __version__, "model": model_name, "mode": mode, "cmap": cmap, "norm": norm, "layers": layers,
                    "files": files}
        write_json(tmp / MANIFEST, manifest)
    return manifest
