"""Writing activation-maximisation results: the grid of all images, one PNG per target, the images
and the inputs as fed as ``.npy``, and ``manifest.json``; staged and renamed into place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..common import json_number
from ..graph.naming import slugify
from ..rendering import RGBImage, render
from .output import MANIFEST, staged_dir, write_json

if TYPE_CHECKING:
    from ..explain.maximize import DreamResult

__all__ = ["write_dream"]


def write_dream(result: "DreamResult", out_dir: str | Path, *, model_name: str, ncols: int | None = None) -> dict[str, Any]:
    """Write ``result`` into ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    files: list[str] = []
    entries: list[dict[str, Any]] = []
    with staged_dir(out_dir) as tmp:
        result.grid(ncols=ncols).save(tmp / "grid.png")
        files.append("grid.png")
        for k, (target, image) in enumerate(zip(result.targets, result.images)):
            name = f"{k:03d}_{slugify(target.label)}.png"
            if image.shape[-1] >= 3:
                RGBImage(np.ascontiguousarray(image[..., :3])).save(tmp / name)
            else:
                render(image[..., 0].astype(np.float32), cmap="gray", min_tile=None).save(tmp / name)
            files.append(name)
            entries.append({"index": k, "target": target.label, "class": target.index if target.layer is None else None,
                            "layer": target.layer, "channel": target.index if target.layer is not None else None,
                            "objective_start": json_number(result.start[k]), "objective": json_number(result.objectives[k]),
                            "png": name})
        np.save(tmp / "images.npy", result.images)
        np.save(tmp / "inputs.npy", result.fed)
        files += ["images.npy", "inputs.npy"]
        manifest: dict[str, Any] = {
            "onnxviz_version": __version__,
            "model": model_name,
            "provider": result.provider,
            "method": result.method,
            "objective": ("class logit" + (f" ({result.score.tensor}, before the final {result.score.squash})" if result.score and result.score.squash else "")
                          if result.layer is None else f"mean of the channel's map ({result.layer.tensor})"),
            "targets": entries,
            "settings": result.settings,
            "history": [[json_number(v) for v in row] for row in result.history],
            "grid": "grid.png",
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
