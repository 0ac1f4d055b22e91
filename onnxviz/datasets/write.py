"""The dataset output folder, written staged and renamed into place (``report.output``):

- ``NNN_<layer>.npz``: the layer's statistics (every :class:`~.stats.LayerStats` array, plus std,
  fraction positive, dead and saturated flags, the histogram's bin edges and the top-k positions);
- ``NNN_<layer>.topk.png``: the top-k receptive-field patches of the chosen channels;
- ``NNN_<layer>.html`` and ``index.html``: the report section (channel tables sortable by any
  statistic, dead and saturated channels, the top-k grids);
- ``images.txt`` (the job's images, one per line: top-k indices point into it) and
  ``dataset.json``, the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..common import json_number
from ..graph.naming import slugify
from ..report.output import staged_dir, write_json
from .bins import NBINS, bin_edges

if TYPE_CHECKING:
    from .result import DatasetStats

__all__ = ["write_dataset", "MERGE_INFO", "MANIFEST_NAME"]

MANIFEST_NAME = "dataset.json"

MERGE_INFO = {
    "moments": "count, mean and sum of squared deviations per channel in float64, merged with Chan et al.'s parallel update "
               "(any split of the images gives the same mean and std up to float rounding)",
    "extrema_counts": "min, max, positive and non-finite counts merge exactly",
    "histogram": f"{NBINS} fixed bins from float32 bits (sign, exponent, 2 mantissa bits: 4 bins per octave from 2^-16 "
                 "to 2^16, zero, tiny, overflow and NaN bins); counts add exactly",
    "top_k": "highest maximum over the map first; ties by a 64-bit BLAKE2b key of the image's absolute path, then by "
             "the image's index",
}  # fmt: skip


def _layer_arrays(stats: "DatasetStats", name: str) -> dict[str, np.ndarray]:
    s = stats[name]
    arrays = s.to_arrays()
    arrays.update({
        "channel": np.arange(s.channels), "std": s.std, "frac_positive": s.frac_positive, "dead": s.dead,
        "saturated": s.saturated(stats.saturation), "hist_edges": bin_edges(), "top_location": s.top_locations(),
    })  # fmt: skip
    return arrays


def _summary(stats: "DatasetStats", name: str) -> dict[str, Any]:
    s = stats[name]
    finite_std = s.std[np.isfinite(s.std)]
    return {
        "mean_of_means": json_number(float(np.mean(s.mean))) if s.channels else None,
        "median_std": json_number(float(np.median(finite_std))) if finite_std.size else None,
        "min": json_number(float(np.min(s.min))) if s.channels else None,
        "max": json_number(float(np.max(s.max))) if s.channels else None,
        "frac_positive": json_number(float(s.positive.sum() / max(int(s.count.sum()), 1))),
        "nonfinite": int(s.nonfinite.sum()),
    }


def write_dataset(
    stats: "DatasetStats",
    out_dir: str | os.PathLike,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int | None = 16,
    tile: int = 64,
    pngs: bool = True,
    html: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write ``stats`` into ``out_dir``; returns the manifest.

    ``channels``: the channels the top-k PNGs show (in every layer that has them), else the first
    ``max_channels`` (None: all). ``tile``: pixels per patch.
    """
    from ..progress import Progress
    from .crops import FedImages, choose_channels, grid_with_caption

    out = Path(out_dir)
    size = stats.input.get("size") or [0, 0]
    fed = FedImages((int(size[0]), int(size[1])), int(stats.input.get("channels") or 3))
    files: list[str] = []
    layers: list[dict[str, Any]] = []
    with staged_dir(out) as tmp, Progress(len(stats), "layers written", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        (tmp / "images.txt").write_text("".join(p + "\n" for p in stats.images), encoding="utf-8", errors="surrogateescape")
        files.append("images.txt")
        pending = []
        for index, name in enumerate(stats):
            s = stats[name]
            slug = f"{index:03d}_{slugify(name)}"
            entry: dict[str, Any] = dict(stats.info.get(name, {"name": name}))
            entry.update({
                "name": name, "channels": s.channels, "map_shape": list(s.map_shape), "images": s.images,
                "receptive_field": stats.receptive_field(name).as_dict(), "stats": f"{slug}.npz",
                "dead": stats.dead(name), "saturated": stats.saturated(name), "summary": _summary(stats, name),
            })  # fmt: skip
            np.savez_compressed(tmp / f"{slug}.npz", **_layer_arrays(stats, name))
            files.append(f"{slug}.npz")
            shown = choose_channels(stats, name, channels, max_channels)
            entry["channels_shown"] = shown
            if pngs and shown and len(s.map_shape) == 2:
                image = grid_with_caption(stats, name, shown, tile=tile, images=fed)
                pending.append(pool.submit(image.save, tmp / f"{slug}.topk.png"))
                entry["topk_png"] = f"{slug}.topk.png"
                files.append(entry["topk_png"])
            if html:
                entry["html"] = f"{slug}.html"
            layers.append(entry)
            bar.update()
        for job in pending:
            job.result()
        manifest: dict[str, Any] = {
            "kind": "onnxviz-dataset",
            "onnxviz_version": __version__,
            "model": stats.model,
            "images": {
                "count": len(stats.images), "processed": stats.count, "skipped": len(stats.skipped), "list": "images.txt",
            },
            "input": stats.input,
            "settings": stats.settings,
            "run": _jsonable(stats.run),
            "merge": MERGE_INFO,
            "histogram": {"bins": NBINS, "grid": stats.settings.get("hist_grid"), "edges": "hist_edges in each layer's .npz"},
            "saturation": stats.saturation,
            "layers": layers,
            "skipped": [{"index": i, "image": stats.images[i], "reason": r} for i, r in stats.skipped],
        }
        if html:
            from .html import write_pages

            files += write_pages(stats, manifest, tmp)
            manifest["report"] = "index.html"
        manifest["files"] = files
        write_json(tmp / MANIFEST_NAME, manifest)
    return manifest


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return json_number(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
