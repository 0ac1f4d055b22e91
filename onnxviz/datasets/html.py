"""The dataset section of the HTML report: ``index.html`` (the run, every layer with its dead and
saturated channels and top-k grid) and one page per layer with its full channel table.

Tables are sortable by any statistic with a click on a column head (a small inline script); the
pages work without it (tables come sorted by channel) and load from disk with no server or
network. Everything taken from the model or the file system is HTML-escaped.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..report.html import _CSS, _e, _img

if TYPE_CHECKING:
    from .result import DatasetStats

__all__ = ["write_pages", "report_section", "SORT_SCRIPT"]

_EXTRA_CSS = """
table.sortable th { cursor:pointer; user-select:none; white-space:nowrap; }
table.sortable th[data-dir=asc]::after { content:" ▲"; } table.sortable th[data-dir=desc]::after { content:" ▼"; }
table.sortable tbody tr:nth-child(even) { background:#f5f7f9; }
td.flag { color:var(--accent); font-weight:600; } td.files { color:var(--muted); font-size:12px; max-width:420px; word-break:break-all; }
.chips span { display:inline-block; padding:1px 6px; margin:1px 2px; border:1px solid var(--line); border-radius:10px; font-size:12px; }
.tablebox { max-height:75vh; overflow:auto; border:1px solid var(--line); border-radius:6px; }
.tablebox thead th { position:sticky; top:0; background:#fff; }
"""

# Sort a table by the clicked column: numbers by their data-v value (NaN last), ties keep channel order.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.title = "sort by " + th.textContent;
    th.addEventListener("click", function () {
      var dir = th.dataset.dir === "desc" ? "asc" : "desc";
      Array.prototype.forEach.call(heads, function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (row) { var v = parseFloat(row.cells[col].dataset.v); return isNaN(v) ? null : v; };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null) || a.dataset.i - b.dataset.i; }
        return (dir === "asc" ? x - y : y - x) || a.dataset.i - b.dataset.i;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _v(value: Any) -> str:
    """A table cell with a sortable value."""
    if isinstance(value, (bool, np.bool_)):
        return f'<td data-v="{int(value)}" class="{"flag" if value else ""}">{"yes" if value else ""}</td>'
    number = float(value)
    text = "–" if not math.isfinite(number) else (f"{number:.4g}" if not float(number).is_integer() or abs(number) >= 1e6 else f"{int(number)}")
    data = repr(number) if math.isfinite(number) else "NaN"
    return f'<td class=num data-v="{data}">{_e(text)}</td>'


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}{_EXTRA_CSS}</style></head><body id=top>"
        f"<main style=\"margin-left:0\">{body}</main><script>{SORT_SCRIPT}</script></body></html>\n"
    )


def _chips(channels: list[int], empty: str) -> str:
    if not channels:
        return f"<span class=meta>{_e(empty)}</span>"
    shown = "".join(f"<span>{c}</span>" for c in channels[:200])
    more = f" … and {len(channels) - 200} more" if len(channels) > 200 else ""
    return f"<div class=chips>{shown}{_e(more)}</div>"


def _channel_table(stats: "DatasetStats", name: str) -> str:
    table = stats.table(name)
    s = stats[name]
    heads = ["channel", "mean", "std", "min", "max", "positive", "top score", "dead", "saturated", "top images"]
    rows = []
    for c in range(s.channels):
        tops = ", ".join(Path(stats.images[i]).name for i in s.top_image[c, :3] if i >= 0)
        cells = "".join(_v(table[col][c]) for col in ("channel", "mean", "std", "min", "max", "frac_positive", "top_score", "dead", "saturated"))
        rows.append(f'<tr data-i="{c}">{cells}<td class=files>{_e(tops)}</td></tr>')
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    return f'<div class=tablebox><table class=sortable><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def write_pages(stats: "DatasetStats", manifest: dict[str, Any], folder: Path) -> list[str]:
    """Write ``index.html`` and one page per layer into ``folder``; returns their names."""
    files = []
    overview_rows, sections = [], []
    run = manifest.get("run", {})
    for index, entry in enumerate(manifest["layers"]):
        name = entry["name"]
        s = stats[name]
        rf = entry["receptive_field"]
        rf_text = "×".join(f"{v:.0f}" for v in rf["size"]) + ("" if rf["exact"] else " (approx.)")
        grid = _img(entry["topk_png"], f"top-{s.k} patches of {entry.get('label', name)}", f"top {s.k} images of the first channels, receptive-field patches around each maximum", "maps") if entry.get("topk_png") else ""
        summary = entry["summary"]
        overview_rows.append(
            f'<tr data-i="{index}"><td data-v="{index}"><a href="#layer-{index}">{_e(entry.get("label", name))}</a></td>'
            f"{_v(s.channels)}<td>{_e('×'.join(map(str, s.map_shape)))}</td><td>{_e(rf_text)}</td>{_v(len(entry['dead']))}"
            f"{_v(len(entry['saturated']))}{_v(summary['frac_positive'] if summary['frac_positive'] is not None else float('nan'))}"
            f"{_v(summary['max'] if summary['max'] is not None else float('nan'))}</tr>"
        )
        page = entry["html"]
        sections.append(
            f'<section id="layer-{index}"><h2>{index}. {_e(entry.get("label", name))}</h2>'
            f'<p class=meta>{_e(entry.get("op", ""))} · tensor {_e(entry.get("tensor", ""))} · {s.channels} channels · map '
            f'{_e("×".join(map(str, s.map_shape)))} · receptive field {_e(rf_text)} · <a href="{_e(page)}">channel table (sortable)</a></p>'
            f"<p><b>dead</b> (never positive on any image): {_chips(entry['dead'], 'none')}</p>"
            f"<p><b>saturated</b> (at least {stats.saturation:.0%} of sampled values in the bin of the channel's maximum): "
            f"{_chips(entry['saturated'], 'none')}</p><div class=figs>{grid}</div></section>"
        )
        body = (
            f'<p><a href="index.html">← all layers</a></p><h1>{_e(entry.get("label", name))}</h1>'
            f"<p class=meta>{_e(stats.model)} · {stats.count} images · {s.channels} channels · click a column to sort</p>"
            f"<section>{_channel_table(stats, name)}</section><div class=figs>{grid}</div>"
        )
        (folder / page).write_text(_page(f"onnxviz dataset: {name}", body), encoding="utf-8")
        files.append(page)
    skipped = ""
    if stats.skipped:
        items = "".join(f"<li>{_e(stats.images[i])}: {_e(reason)}</li>" for i, reason in stats.skipped[:500])
        skipped = f'<section id="skipped"><h2>Skipped images ({len(stats.skipped)})</h2><ul>{items}</ul></section>'
    speed = run.get("images_per_second")
    settings = stats.settings
    overview = (
        "<div class=tablebox><table class=sortable><thead><tr><th>layer</th><th>channels</th><th>map</th><th>receptive field</th>"
        f"<th>dead</th><th>saturated</th><th>positive</th><th>max</th></tr></thead><tbody>{''.join(overview_rows)}</tbody></table></div>"
    )
    body = (
        f"<h1>{_e(Path(stats.model).name)}: dataset statistics</h1>"
        f"<p class=meta>{_e(stats.model)} · onnxviz {__version__} · {stats.count} images"
        f"{f' ({len(stats.skipped)} skipped)' if stats.skipped else ''} · {len(stats)} layers · tap {_e(settings.get('tap'))} · "
        f"input {_e('×'.join(map(str, stats.input.get('size', []))))} · {_e(run.get('runner', ''))}"
        f"{f' · {speed:.1f} images/s' if speed else ''}</p>"
        f'<section id="layers"><h2>Layers</h2>{overview}</section>{"".join(sections)}{skipped}'
    )
    (folder / "index.html").write_text(_page(f"onnxviz dataset: {Path(stats.model).name}", body), encoding="utf-8")
    return ["index.html", *files]


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def report_section(stats: "DatasetStats", source: Path, folder: Path, names: list[str]) -> tuple[str, str, str, list[str]]:
    """The dataset section of ``onnxviz report --dataset DIR``: for every report layer the run has,
    its dead and saturated channels, top-k grid (copied from ``source``) and sortable channel table.
    Returns (anchor, title, HTML, files written into ``folder``)."""
    from ..errors import OnnxvizError

    matched = [name for name in names if name in stats]
    if not matched:
        raise OnnxvizError(
            f"the dataset run in {source} has none of the report's layers (it has {', '.join(list(stats)[:5])}): "
            "run onnxviz dataset with the same model and --tap"
        )
    try:
        entries = {e["name"]: e for e in json.loads((source / "dataset.json").read_text(encoding="utf-8"))["layers"]}
    except (OSError, ValueError, KeyError, TypeError):
        entries = {}
    parts, files = [], []
    for name in matched:
        s = stats[name]
        png = str(entries.get(name, {}).get("topk_png") or "")
        figure = ""
        if _SAFE_NAME.match(png) and (source / png).is_file() and not (source / png).is_symlink():
            target = f"dataset_{png}"
            shutil.copyfile(source / png, folder / target)
            files.append(target)
            figure = f"<div class=figs>{_img(target, f'top-{s.k} patches of {name}', f'top {s.k} images per channel', 'maps')}</div>"
        dead, saturated = stats.dead(name), stats.saturated(name)
        parts.append(
            f"<h3>{_e(stats.info.get(name, {}).get('label', name))}</h3>"
            f"<p class=meta>{s.channels} channels · {s.images} images · dead: {len(dead)} · saturated: {len(saturated)}</p>"
            f"<p><b>dead</b>: {_chips(dead, 'none')}</p><p><b>saturated</b>: {_chips(saturated, 'none')}</p>{figure}"
            f"<details><summary>channel table ({s.channels} channels; click a column to sort)</summary>{_channel_table(stats, name)}</details>"
        )
    missing = [name for name in names if name not in stats]
    note = f"<p class=note>not in the dataset run: {_e(', '.join(missing))}</p>" if missing else ""
    html = (
        f'<style>{_EXTRA_CSS}</style><section id="dataset"><h2>Dataset statistics</h2>'
        f"<p class=meta>{stats.count} images · {_e(stats.model)} · from {_e(source)} (onnxviz dataset)</p>{note}"
        f"{''.join(parts)}<script>{SORT_SCRIPT}</script></section>"
    )
    return "dataset", "Dataset", html, files
