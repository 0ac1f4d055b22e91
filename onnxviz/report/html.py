"""A self-contained HTML report: summary, graph, and for every tapped layer its maps, the sum of
its maps over the input image, its filters and statistics, with navigation between layers.

The folder opens from disk with no server and no network: images are local files, lazy-loaded;
CSS is inline; there is no script. Everything taken from the model (names, metadata) is escaped,
and file names are slugs, never model strings.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..common import plural, printable
from ..graph.naming import slugify
from .output import MANIFEST, staged_dir, write_json
from ..progress import Progress
from ..rendering import overlay, reduce_maps, with_caption
from ..graph.summary import _fmt_shape, model_summary, total_line
from .writers import layer_stats

if TYPE_CHECKING:
    from ..explain.cam import CamResult
    from ..run.capture import Capture
    from ..run.model import Model

__all__ = ["write_report"]

GRAPH_TIMEOUT = 30.0  # seconds of Graphviz layout the report waits for

_CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#dde2e6; --accent:#c0392b; --bg:#fbfbfc; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color:var(--fg); background:var(--bg); }
nav { position:fixed; top:0; left:0; bottom:0; width:240px; overflow-y:auto; padding:12px; border-right:1px solid var(--line); background:#fff; }
nav h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:12px 0 6px; }
nav ol { margin:0; padding-left:22px; } nav li { margin:2px 0; word-break:break-all; }
nav a { color:var(--fg); text-decoration:none; } nav a:hover { color:var(--accent); }
main { margin-left:240px; padding:20px 28px 60px; max-width:1500px; }
h1 { font-size:22px; margin:0 0 4px; word-break:break-all; } h2 { font-size:18px; margin:0 0 8px; word-break:break-all; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 18px; margin:16px 0; }
.meta { color:var(--muted); margin:0 0 10px; word-break:break-all; }
table { border-collapse:collapse; font-size:13px; } td, th { padding:3px 10px 3px 0; text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; } td.num { text-align:right; font-variant-numeric:tabular-nums; }
.figs { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
figure { margin:0; } figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
figure img { display:block; max-width:100%; height:auto; image-rendering:pixelated; border:1px solid var(--line); background:#202020; }
figure.maps img { max-width:min(100%, 900px); } figure.small img { max-width:360px; }
.note { color:var(--accent); } .pager { margin-top:10px; font-size:13px; } .pager a { margin-right:14px; }
details summary { cursor:pointer; color:var(--muted); margin:8px 0; }
.graphbox { max-height:70vh; overflow:auto; border:1px solid var(--line); border-radius:6px; padding:8px; }
.graphbox figure img { max-width:none; image-rendering:auto; background:#fff; border:0; }
"""


def _e(value: Any) -> str:
    """HTML-escaped, with control and bidi characters shown as escapes (``\\u202e``)."""
    return html.escape(printable(value), quote=True)


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def _img(src: str, alt: str, caption: str, cls: str = "") -> str:
    return (
        f'<figure class="{cls}"><img src="{_e(src)}" alt="{_e(alt)}" loading="lazy" decoding="async">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


class _FedArray:
    """One fed sample standing in for an image (``write_report`` without ``images``): shown min-max scaled."""

    def __init__(self, array: np.ndarray, layout: str | None) -> None:
        self.array, self.layout = np.asarray(array), layout

    def __str__(self) -> str:
        return f"fed array {'×'.join(map(str, self.array.shape))}"

    def picture(self) -> np.ndarray:
        x = self.array.astype(np.float32)
        if x.ndim == 3 and self.layout == "NCHW":
            x = np.moveaxis(x, 0, -1)
        x = x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x
        x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
        finite = np.isfinite(x)
        lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 0.0)
        return np.clip(np.where(finite, (x - lo) * (255.0 / (hi - lo) if hi > lo else 0.0), 0) + 0.5, 0, 255).astype(np.uint8)


def _input_image(source: Any, hw: tuple[int, int] | None) -> np.ndarray:
    """The input as fed (any bit depth read as the model reads it; huge JPEGs decoded at a reduced scale)."""
    from ..run.inputs import open_image
    from ..run.pixels import picture

    if isinstance(source, _FedArray):
        return source.picture()

    img = open_image(source, draft=None if hw is None else (hw[1], hw[0]))
    return picture(img, hw if hw is not None else (img.size[1], img.size[0]))


def _summary_html(summary: dict[str, Any], capture: "Capture", tap: str) -> str:
    io_rows = "".join(
        f"<tr><th>input</th><td>{_e(i['name'])}</td><td>{_e(_fmt_shape(i['shape']))}</td><td>{_e(i['dtype'])} {_e(i['layout'] or '')}</td></tr>"
        for i in summary["inputs"]
    ) + "".join(
        f"<tr><th>output</th><td>{_e(o['name'])}</td><td>{_e(_fmt_shape(o['shape']))}</td><td></td></tr>" for o in summary["outputs"]
    )
    c = summary["counts"]
    note = f"<br><span class=meta>{_e(summary['params_note'])}</span>" if summary.get("params_note") else ""
    counts = (
        f"<p>{_e(total_line(summary))}{note}</p><p>{plural(c['conv'], 'conv layer')} ({c['conv_main']} + {c['downsample']} downsample) · "
        f"{plural(c['linear'], 'linear layer')} · {plural(c['pooling'], 'pooling layer')} · {plural(c['blocks'], 'residual block')} · "
        f"{plural(c['stages'], 'stage')} · {c['taps']} tapped ({_e(tap)}) · {plural(c['nodes'], 'node')}</p>"
    )
    rows = "".join(
        f"<tr><td>{'●' if r['tapped'] else ''}</td><td>{_e(r['name'])}</td><td>{_e(r.get('class') or r.get('kind') or '')}</td>"
        f"<td>{_e(r['op'] or '')}</td><td>{'vanished in ONNX' if r.get('vanished') else _e(_fmt_shape(r['shape']))}</td>"
        f"<td class=num>{r['params']:,}</td><td>{_e(r.get('note') or '')}</td></tr>"
        for r in summary["table"]
    )
    table = (
        f"<details><summary>layer table ({len(summary['table'])} layers, like Keras's model.summary())</summary><table>"
        f"<tr><th></th><th>layer</th><th>type</th><th>op</th><th>output shape</th><th>params</th><th>note</th></tr>{rows}</table></details>"
    )
    verify = ""
    if capture.verify is not None:
        v = capture.verify
        cls = "" if v.ok else ' class="note"'
        verify = f"<p{cls}>Model outputs, tapped vs untapped: max abs diff {v.max_abs:.3g}, max rel diff {v.max_rel:.3g} ({'ok' if v.ok else 'above tolerance'})</p>"
    skipped = "".join(f"<li>{_e(s['node'])} ({_e(s['op'])}): {_e(s['reason'])}</li>" for s in summary["skipped"])
    skipped = f"<p>Not tapped:</p><ul>{skipped}</ul>" if skipped else ""
    producer = f" · {_e(summary['producer'])}" if summary["producer"] else ""
    return (
        f'<section id="summary"><h2>Summary</h2><p class="meta">IR {summary["ir_version"]} · opsets '
        f"{_e(summary['opsets'])}{producer} · provider {_e(capture.provider)}</p>"
        f"<table>{io_rows}</table>{counts}{verify}{skipped}{table}</section>"
    )


def _top_table(top: list[dict[str, Any]], caption: str) -> str:
    rows = "".join(
        f"<tr><td class=num>{t['rank']}</td><td>{_e(t['label'] if t['label'] is not None else '')}</td><td class=num>{t['index']}</td>"
        f"<td class=num>{_num(t['score'])}</td><td class=num>{t['probability']:.3f}</td></tr>"
        for t in top
    )
    return (f"<figure><table><tr><th>#</th><th>class</th><th>index</th><th>score</th><th>probability</th></tr>{rows}</table>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _predictions_html(preds: list[dict[str, Any]], images: list[Any]) -> str:
    if not preds:
        return ""
    figs = "".join(
        _top_table(p["top"], f"{p['output']} · input {p['image']}" + (f": {Path(str(images[p['image']])).name}" if p["image"] < len(images) else ""))
        for p in preds
    )
    return f'<section id="predictions"><h2>Predictions</h2><div class=figs>{figs}</div></section>'


def write_report(
    model: "Model",
    capture: "Capture",
    out_dir: str | Path,
    *,
    model_name: str | None = None,
    images: list[Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    render_options: dict[str, Any] | None = None,
    alpha: float = 0.5,
    overlay_cmap: str = "jet",
    filters_mode: str = "auto",
    graph: bool = True,
    progress: bool | None = None,
    title: bool = False,
    class_names: list[str] | None = None,
    cams: Sequence["CamResult"] = (),
    cam_errors: Sequence[tuple[str, str]] = (),
    cam_cmap: str = "inferno",
    extra_sections: Sequence[Callable[[Path], tuple[str, str, str, list[str]]]] = (),
) -> dict[str, Any]:
    """Write ``out_dir/index.html`` with every tapped layer's maps, sum overlay, filters and stats.

    Layers without 2-D maps show as bar charts or strips with their top-5 where they are the
    model's output (``class_names`` name the classes); ``title`` writes the layer name on each image.
    ``cams`` (results of :func:`onnxviz.cam`) and ``cam_errors`` ((method, reason) pairs) add a
    "Class activation maps" section and the manifest's ``cams`` field. ``extra_sections``: sections
    from other stages (``onnxviz report --dataset``), each a callable given the staging folder that
    writes its files there and returns (anchor, title, HTML, file names).

    ``model_name`` defaults to the model's source (its path); ``images`` to the files or PIL images
    the capture was made from, else the fed arrays (shown min-max scaled)."""
    from PIL import Image

    from .views import layer_view, predictions, vanished_layers

    from ..rendering.filters import filter_banks, filter_caption, render_filters
    from ..errors import OnnxvizError
    from ..graph.draw import INSTALL_HINT, MAX_DRAWN_NODES, dot_available, drawn_count, to_svg

    out_dir = Path(out_dir)
    options = dict(render_options or {})
    summary = model_summary(model)
    preds = predictions(capture, class_names)
    banks = {b.name: b for b in filter_banks(model)}
    spec = model.inputs[0] if model.inputs else None
    fed = capture.feeds.get(spec.name) if spec is not None else None
    model_name = str(model.loaded.source) if model_name is None else model_name
    if images is None:
        images = capture.images if capture.images is not None else ([] if fed is None else [_FedArray(fed[k], spec.layout) for k in range(len(fed))])
    n_images = len(images)
    hw = None
    if spec is not None and spec.layout and fed is not None:
        hw = (fed.shape[2], fed.shape[3]) if spec.layout == "NCHW" else (fed.shape[1], fed.shape[2])
    files: list[str] = []
    layers: list[dict[str, Any]] = []
    sections: list[str] = []
    names = list(capture)
    with staged_dir(out_dir) as tmp, Progress(len(names) + 1, "report layers", enabled=progress) as bar:
        bases = []
        input_figs = []
        for k, source in enumerate(images):
            base = _input_image(source, hw)
            bases.append(base)
            fname = f"input_{k}.png"
            Image.fromarray(base).save(tmp / fname, compress_level=1)
            files.append(fname)
            input_figs.append(_img(fname, f"input image {k}", f"input {k}: {Path(str(source)).name} (as fed, {base.shape[1]}×{base.shape[0]})", "small"))
        graph_html = ""
        if graph:
            if dot_available():
                # Never lose the report over the drawing: a graph too large for Graphviz is drawn as
                # the overview of its tapped layers, and a failed or slow layout becomes a note.
                try:
                    simplified = drawn_count(model) > MAX_DRAWN_NODES
                    (tmp / "graph.svg").write_text(to_svg(model, timeout=GRAPH_TIMEOUT), encoding="utf-8")
                except OnnxvizError as exc:
                    graph_html = f'<section id="graph"><h2>Graph</h2><p class="note">graph not drawn: {_e(exc)}</p></section>'
                else:
                    files.append("graph.svg")
                    meta = ("tapped layers only: the graph has too many nodes to draw in full (onnxviz graph -o graph.dot writes all of it)"
                            if simplified else "one box per layer with its output shape (onnxviz graph --ops draws the ONNX ops); tapped layers and tensors in red")
                    graph_html = f'<section id="graph"><h2>Graph</h2><p class="meta">{meta}</p><div class=graphbox>{_img("graph.svg", "model graph", "model graph")}</div></section>'
            else:
                graph_html = f'<section id="graph"><h2>Graph</h2><p class="note">{_e(INSTALL_HINT)}</p></section>'
        cam_html, cam_entries = "", None
        if cams or cam_errors:
            from .cams import cam_section

            cam_html, cam_entries, cam_files = cam_section(cams, cam_errors, tmp, alpha=alpha, cmap=cam_cmap)
            files += cam_files
        extra_html, extra_nav, extra_ids = "", "", []
        for make in extra_sections:
            anchor, heading, section_html, section_files = make(tmp)
            extra_html += section_html
            extra_nav += f'<li><a href="#{_e(anchor)}">{_e(heading)}</a></li>'
            extra_ids.append(anchor)
            files += section_files
        bar.update()
        for index, name in enumerate(names):
            layer = capture[name]
            slug = f"{index:03d}_{slugify(name)}"
            figs: list[str] = []
            entry: dict[str, Any] = {"name": layer.name, "label": layer.label, "kind": layer.kind, "tensor": layer.tensor, "node": layer.node, "op": layer.op,
                                     "shape": list(layer.shape), "bn_folded": layer.bn_folded, "through": list(layer.through_ops)}
            pngs, overlays = [], []
            view = layer_view(layer, capture, class_names)
            for k in range(view.images if view.view else 0):
                suffix = "" if view.images == 1 else f"_img{k}"
                maps_name = f"{slug}.maps{suffix}.png"
                rendered = view.render(k, options, title=title)
                rendered.save(tmp / maps_name)
                pngs.append(maps_name)
                if view.view == "maps":
                    shown = f"feature maps, image {k} ({len(rendered.channels)} of {layer.shape[1] if len(layer.shape) > 1 else 1} maps)"
                else:
                    shown = f"{len(rendered.channels)} values as a {'bar chart' if view.view == 'bars' else 'strip of cells'}" + (
                        f", image {k}" if view.per_image else "")
                figs.append(_img(maps_name, f"output of {layer.label}", shown, "maps"))
                if bases and view.view == "maps" and view.per_image and layer.array.ndim == 4:
                    over_name = f"{slug}.overlay{suffix}.png"
                    overlay(reduce_maps(layer, "sum", image=k), bases[k], alpha=alpha, cmap=overlay_cmap).save(tmp / over_name)
                    overlays.append(over_name)
                    figs.append(_img(over_name, f"sum of the maps of {layer.label} over the input", f"sum of all maps over input {k}", "small"))
            files += pngs + overlays
            stats = layer_stats(layer.values()) if view.view else {"min": None, "max": None, "mean": None, "nonfinite": 0}
            entry.update({"png": pngs[0] if pngs else None, "pngs": pngs, "overlays": overlays, **stats, **view.manifest()})
            if view.note:
                figs.append(f'<p class="note">{_e(view.note)}</p>')
            for k, top in enumerate(entry.get("tops", [])):
                figs.append(_top_table(top, f"top-{len(top)}" + (f", image {k}" if len(entry["tops"]) > 1 else "")))
            bank = banks.get(name)
            filter_html = ""
            if bank is not None and bank.viewable:
                filt_name = f"{slug}.filters.png"
                with_caption(render_filters(bank, mode=filters_mode, min_tile=48), filter_caption(bank)[1:]).save(tmp / filt_name)
                files.append(filt_name)
                st = bank.stats()
                entry["filters"] = {"png": filt_name, "shape": list(bank.weights.shape), **st}
                figs.append(_img(filt_name, f"filters of {layer.label}", f"filters {tuple(bank.weights.shape)}", "small"))
                note = '<p class="note">weights include folded BatchNorm scale</p>' if bank.bn_folded else ""
                filter_html = (
                    f"<tr><th>weights</th><td>min {_num(st['min'])}</td><td>max {_num(st['max'])}</td><td>mean {_num(st['mean'])}</td>"
                    f"<td>std {_num(st['std'])}</td><td>near-zero {'–' if st['near_zero'] is None else format(st['near_zero'], '.1%')}</td>"
                    + (f"<td class=note>{st['nan']:,} NaN, {st['inf']:,} Inf weights</td>" if st.get("nan") or st.get("inf") else "")
                    + f"</tr></table>{note}<table>"
                )
            elif bank is not None:
                entry["filters"] = {"png": None, "reason": bank.reason}
                filter_html = f"<tr><th>weights</th><td colspan=5>not viewable: {_e(bank.reason)}</td></tr>"
            nonfinite = f"<td class=note>{entry['nonfinite']} NaN/Inf values</td>" if entry["nonfinite"] else "<td></td>"
            through = " → ".join(layer.through_ops) or "–"
            pager = (
                (f'<a href="#layer-{index - 1}">← previous</a>' if index else "")
                + (f'<a href="#layer-{index + 1}">next →</a>' if index + 1 < len(names) else "")
                + '<a href="#top">top</a>'
            )
            sections.append(
                f'<section class="layer" id="layer-{index}"><h2>{index}. {_e(layer.label)}</h2>'
                f'<p class="meta">{_e(layer.kind)} layer · {_e(layer.op)} · node {_e(layer.node)} · tensor {_e(layer.tensor)} · shape {_e("×".join(map(str, layer.shape)))} · through {_e(through)}</p>'
                f"<table><tr><th>activations</th><td>min {_num(entry['min'])}</td><td>max {_num(entry['max'])}</td><td>mean {_num(entry['mean'])}</td>{nonfinite}</tr>"
                f"{filter_html}</table><div class=figs>{''.join(figs)}</div><p class=pager>{pager}</p></section>"
            )
            layers.append(entry)
            bar.update()
        cam_nav = '<li><a href="#cams">CAMs</a></li>' if cam_html else ""
        nav = "".join(f'<li><a href="#layer-{i}">{_e(capture[n].label)}</a></li>' for i, n in enumerate(names))
        page = (
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>onnxviz report: {_e(model_name)}</title><style>{_CSS}</style></head><body id=top>"
            f'<nav><h2>Report</h2><ol start=0 style="list-style:none;padding-left:0"><li><a href="#summary">Summary</a></li>'
            f'{"<li><a href=#predictions>Predictions</a></li>" if preds else ""}'
            f'<li><a href="#graph">Graph</a></li><li><a href="#inputs">Inputs</a></li>{cam_nav}{extra_nav}</ol><h2>Layers</h2><ol start=0>{nav}</ol></nav>'
            f"<main><h1>{_e(Path(model_name).name)}</h1><p class=meta>{_e(model_name)} · onnxviz {__version__} · "
            f"{plural(len(names), 'layer')} · {plural(n_images, 'image')}</p>"
            f"{_summary_html(summary, capture, model.plan.mode)}{_predictions_html(preds, images)}{graph_html}"
            f'<section id="inputs"><h2>Inputs</h2><div class=figs>{"".join(input_figs)}</div></section>{cam_html}{extra_html}'
            f"{''.join(sections)}</main></body></html>\n"
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
        files.append("index.html")
        manifest: dict[str, Any] = {
            "onnxviz_version": __version__,
            "model": model_name,
            "provider": capture.provider,
            "inputs": inputs or [{"image": str(s), "index": k} for k, s in enumerate(images)],
            "layers": layers,
            "tap": model.plan.mode,
            "optimization": model.optimization,
            "report": "index.html",
            "capture": capture.plan.as_dict(),
            "predictions": preds,
            "vanished": vanished_layers(model),
        }
        if capture.verify is not None:
            manifest["verify"] = capture.verify.as_dict()
        if cam_entries is not None:
            manifest["cams"] = cam_entries
        if extra_ids:
            manifest["sections"] = extra_ids
        manifest["files"] = files
        write_json(tmp / MANIFEST, manifest)
    return manifest
