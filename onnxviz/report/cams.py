"""Writing CAM results: per image the heat map over the image, the heat map alone, the raw map
and the map at the input's size as ``.npy``, and a ``manifest.json``; and the CAM section of the
HTML report. Folders are staged and renamed into place like every onnxviz output.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..common import printable
from ..common import json_number
from ..rendering import render
from .output import MANIFEST, staged_dir, write_json

if TYPE_CHECKING:
    from ..explain.cam import CamResult

__all__ = ["write_cam", "save_cam_files", "cam_section", "method_token"]


def method_token(method: str) -> str:
    """A file-name token for a method (``gradcam++`` → ``gradcampp``)."""
    return method.replace("+", "p")


def _stats(a: np.ndarray) -> dict[str, Any]:
    return {"min": json_number(a.min()), "max": json_number(a.max()), "mean": json_number(a.mean(dtype=np.float64))}


def save_cam_files(result: "CamResult", folder: Path, *, prefix: str = "", alpha: float = 0.5, cmap: str = "inferno") -> list[dict[str, Any]]:
    """Write every image's files for ``result`` into ``folder``; return one manifest entry per image."""
    token = method_token(result.method)
    entries: list[dict[str, Any]] = []
    for k in range(len(result)):
        stem = f"{prefix}{k:03d}_{token}"
        names = {"overlay": f"{stem}.png", "heatmap": f"{stem}.heatmap.png", "map": f"{stem}.npy", "map_input": f"{stem}.input.npy"}
        result.overlay(k, alpha=alpha, cmap=cmap).save(folder / names["overlay"])
        render(result.heatmaps[k], cmap=cmap, min_tile=None).save(folder / names["heatmap"])
        np.save(folder / names["map"], result.maps[k].astype(np.float32))
        np.save(folder / names["map_input"], result.heatmaps[k].astype(np.float32))
        pred = result.predictions[k]
        probs = pred["probability"]
        entries.append({
            "index": k,
            "class": result.classes[k],
            "class_score": json_number(result.class_scores[k]),
            "prediction": {"class": pred["class"], "score": json_number(pred["score"]),
                           "probability": None if probs is None else json_number(probs),
                           **({"name": pred["name"]} if "name" in pred else {})},
            **({"class_name": result.class_name(result.classes[k])} if result.class_names is not None else {}),
            "map_shape": list(result.maps[k].shape),
            "map_stats": _stats(result.maps[k]),
            **names,
        })
    return entries


def write_cam(
    result: "CamResult",
    out_dir: str | Path,
    *,
    model_name: str,
    inputs: Sequence[dict[str, Any]] | None = None,
    alpha: float = 0.5,
    cmap: str = "inferno",
) -> dict[str, Any]:
    """Write ``result`` into ``out_dir`` (staged, then renamed into place); return the manifest."""
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        entries = save_cam_files(result, tmp, alpha=alpha, cmap=cmap)
        images = inputs or [{"image": None if result.images is None else str(result.images[k]), "index": k} for k in range(len(result))]
        for entry, image in zip(entries, images):
            entry["image"] = image.get("image")
        files = [e[key] for e in entries for key in ("overlay", "heatmap", "map", "map_input")]
        manifest: dict[str, Any] = {
            "onnxviz_version": __version__,
            "model": model_name,
            "provider": result.provider,
            "method": result.method,
            "layer": result.layer.as_dict(),
            "score": result.score.as_dict(),
            "inputs": list(images),
            "images": entries,
            "cmap": cmap,
            "alpha": alpha,
            "details": result.details,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def _e(value: Any) -> str:
    """HTML-escaped, with control and bidi characters shown as escapes (model names are untrusted)."""
    return html.escape(printable(value), quote=True)


def cam_section(results: Sequence["CamResult"], errors: Sequence[tuple[str, str]], folder: Path, *, alpha: float, cmap: str) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The report's CAM section: its HTML, its manifest entries and the files it wrote.

    ``errors``: (method, reason) for methods that could not run on this model, shown instead.
    """
    figs: list[str] = []
    entries: list[dict[str, Any]] = []
    files: list[str] = []
    for result in results:
        images = save_cam_files(result, folder, prefix="cam_", alpha=alpha, cmap=cmap)
        files += [e[key] for e in images for key in ("overlay", "heatmap", "map", "map_input")]
        entries.append({"method": result.method, "layer": result.layer.as_dict(), "score": result.score.as_dict(),
                        "images": images, "details": result.details})
        through = "".join(f" → {op}" for op in result.layer.through)
        for e in images:
            pred = e["prediction"]
            prob = "" if pred["probability"] is None else f", p={pred['probability']:.3g}"
            logit = "n/a" if e["class_score"] is None else format(e["class_score"], ".4g")  # NaN/Inf logits: null
            named = f" {e['class_name']}" if e.get("class_name") else ""
            top = f" {pred['name']}" if pred.get("name") else ""
            caption = (f"{result.method} · image {e['index']} · class {e['class']}{named} (logit {logit}) · "
                       f"top prediction {pred['class']}{top}{prob} · layer {result.layer.name}{through}")
            figs.append(f'<figure class="small"><img src="{_e(e["overlay"])}" alt="{_e(result.method)} map over input {e["index"]}" '
                        f'loading="lazy" decoding="async"><figcaption>{_e(caption)}</figcaption></figure>')
    notes = "".join(f'<p class="note">{_e(m)}: {_e(reason)}</p>' for m, reason in errors)
    entries += [{"method": m, "error": reason} for m, reason in errors]
    body = (f'<section id="cams"><h2>Class activation maps</h2><p class="meta">where the model looked for the class it scored: '
            f"heat map over each input, upsampled from the layer</p>{notes}<div class=figs>{''.join(figs)}</div></section>")
    return body, entries, files
