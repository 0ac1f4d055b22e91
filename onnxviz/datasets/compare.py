"""``onnxviz dataset compare A B``: how each channel's statistics shift between two runs of the
same model (two datasets, or a model before and after a change).

Per channel: the standardised mean shift ``(mean_B - mean_A) / sqrt((var_A + var_B) / 2)``, the
ratio of standard deviations, the change in the fraction of positive values, and the total
variation distance between the two histograms (``½ Σ |p - q|`` over the fixed bins, 0 for equal
distributions, 1 for disjoint ones — exact, since both runs bin alike); channels that died or
came alive. Layers are matched by name and must have the same channel count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..common import json_number
from ..errors import OnnxvizError
from .result import DatasetStats

__all__ = ["compare", "format_comparison"]


def _layer_shift(a: Any, b: Any) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt((a.std**2 + b.std**2) / 2)
        shift = np.where(pooled > 0, (b.mean - a.mean) / pooled, 0.0)
        ratio = np.where(a.std > 0, b.std / a.std, np.where(b.std > 0, np.inf, 1.0))
        pa = a.hist / np.maximum(a.hist.sum(axis=1, keepdims=True), 1)
        pb = b.hist / np.maximum(b.hist.sum(axis=1, keepdims=True), 1)
    return {
        "mean_shift": shift, "std_ratio": ratio, "positive_change": b.frac_positive - a.frac_positive,
        "hist_distance": 0.5 * np.abs(pa - pb).sum(axis=1), "died": ~a.dead & b.dead, "woke": a.dead & ~b.dead,
    }  # fmt: skip


def compare(a: DatasetStats, b: DatasetStats, top: int = 10) -> dict[str, Any]:
    """Per-layer summaries and the ``top`` channels that moved most (by |mean shift|, then histogram distance)."""
    common = [name for name in a if name in b]
    if not common:
        raise OnnxvizError("the two runs have no layer in common (compare runs of the same model)")
    layers, skipped, movers = [], [], []
    for name in common:
        la, lb = a[name], b[name]
        if la.channels != lb.channels:
            skipped.append({"layer": name, "reason": f"{la.channels} channels in A, {lb.channels} in B"})
            continue
        shift = _layer_shift(la, lb)
        size = np.abs(np.nan_to_num(shift["mean_shift"]))
        worst = int(np.argmax(size)) if size.size else 0
        layers.append({
            "layer": name, "channels": la.channels, "mean_abs_shift": json_number(float(size.mean())) if size.size else None,
            "max_abs_shift": json_number(float(size[worst])) if size.size else None, "max_shift_channel": worst,
            "mean_hist_distance": json_number(float(shift["hist_distance"].mean())),
            "died": [int(c) for c in np.flatnonzero(shift["died"])], "woke": [int(c) for c in np.flatnonzero(shift["woke"])],
        })  # fmt: skip
        for c in range(la.channels):
            movers.append((float(size[c]), float(shift["hist_distance"][c]), name, c, {k: v[c] for k, v in shift.items()}))
    movers.sort(key=lambda m: (-m[0], -m[1], m[2], m[3]))
    channels = [
        {"layer": name, "channel": c, "mean_a": json_number(float(a[name].mean[c])), "mean_b": json_number(float(b[name].mean[c])),
         "std_a": json_number(float(a[name].std[c])), "std_b": json_number(float(b[name].std[c])),
         **{k: (bool(v) if isinstance(v, (bool, np.bool_)) else json_number(float(v))) for k, v in values.items()}}
        for _, _, name, c, values in movers[:top]
    ]  # fmt: skip
    return {"a": {"model": a.model, "images": a.count}, "b": {"model": b.model, "images": b.count},
            "only_in_a": [n for n in a if n not in b], "only_in_b": [n for n in b if n not in a],
            "layers": layers, "skipped": skipped, "top_channels": channels}


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a terminal table (the CLI escapes what it prints)."""
    def num(v: Any, fmt: str = ".3g") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"A: {result['a']['images']} images ({result['a']['model']})", f"B: {result['b']['images']} images ({result['b']['model']})", ""]
    width = max([len(layer["layer"]) for layer in result["layers"]] + [5])
    lines.append(f"{'layer':<{width}}  channels  mean|shift|  max|shift| (channel)  hist distance  died  woke")
    for layer in result["layers"]:
        lines.append(
            f"{layer['layer']:<{width}}  {layer['channels']:>8}  {num(layer['mean_abs_shift']):>11}  "
            f"{num(layer['max_abs_shift']):>10} ({layer['max_shift_channel']:>4})  {num(layer['mean_hist_distance']):>13}  "
            f"{len(layer['died']):>4}  {len(layer['woke']):>4}"
        )
    if result["top_channels"]:
        lines += ["", "channels that moved most (shift = mean difference in pooled standard deviations):"]
        for ch in result["top_channels"]:
            lines.append(
                f"  {ch['layer']} #{ch['channel']}: shift {num(ch['mean_shift'], '+.3g')}, mean {num(ch['mean_a'])} -> {num(ch['mean_b'])}, "
                f"std x{num(ch['std_ratio'])}, positive {num(ch['positive_change'], '+.3f')}, hist distance {num(ch['hist_distance'], '.3f')}"
            )
    for item in result["skipped"]:
        lines.append(f"skipped {item['layer']}: {item['reason']}")
    for side in ("a", "b"):
        if result[f"only_in_{side}"]:
            lines.append(f"only in {side.upper()}: {', '.join(result[f'only_in_{side}'])}")
    return "\n".join(lines)
