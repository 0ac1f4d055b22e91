"""From values to palette levels: bring any capture to a stack of 2-D maps, choose the maps to
show, and normalise them (``channel``, ``layer``, ``zscore``, ``percentile``, ``signed``) to 8-bit
levels with NaN/Inf marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np

from ..errors import OnnxvizError
from .palette import LEVELS, NAN_INDEX

__all__ = ["NORMS", "SELECTS", "Norm", "MapsLike", "as_map_stack", "select_channels"]

NORMS = ("channel", "layer", "zscore", "percentile", "signed")
SELECTS = ("first", "mean", "max", "absmean")

Norm = Literal["channel", "layer", "zscore", "percentile", "signed"]
MapsLike = Union[np.ndarray, Any]  # an array, or anything with an ``array`` attribute (LayerCapture)


def as_map_stack(maps: MapsLike, image: int = 0) -> np.ndarray:
    """Bring ``maps`` to a C×H×W stack of 2-D maps.

    Accepts H×W, C×H×W, N×C×H×W (image ``image`` of the batch), a 1-D conv's N×C×L (shown as one
    C×L map), a 3-D conv's N×C×D×H×W (the middle depth slice), or an object with ``.array``.
    """
    arr = np.asarray(getattr(maps, "array", maps))
    batched = arr.ndim >= 4 or (arr.ndim == 3 and hasattr(maps, "array"))
    if batched and not 0 <= image < arr.shape[0]:
        raise OnnxvizError(f"image {image} out of range: the batch holds {arr.shape[0]}")
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if hasattr(maps, "array"):  # a 1-D conv capture: N×C×L
            return arr[image][None]
        return arr
    if arr.ndim == 4:
        return arr[image]
    if arr.ndim == 5:
        return arr[image][:, arr.shape[2] // 2]
    raise OnnxvizError(f"cannot render an array of shape {arr.shape} as maps: expected 2 to 5 dims (vectors: render_vector)")


def _float(stack: np.ndarray) -> np.ndarray:
    return stack if stack.dtype in (np.float32, np.float64) else stack.astype(np.float32)


def _finite_minmax(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-row min and max over finite values (0 for rows without any), and the finite mask if needed."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: a NaN sum is all this probe needs
        all_finite = np.isfinite(flat.sum(axis=1, dtype=np.float64)).all()
    if all_finite:
        return flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64), None
    finite = np.isfinite(flat)
    lo = np.where(finite, flat, np.inf).min(axis=1).astype(np.float64)
    hi = np.where(finite, flat, -np.inf).max(axis=1).astype(np.float64)
    empty = ~np.isfinite(lo)
    lo[empty] = 0.0
    hi[empty] = 0.0
    return lo, hi, finite


def _ranges(flat: np.ndarray, norm: str, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-channel (lo, hi) of the chosen normalisation, and the finite mask (None: all finite)."""
    lo, hi, finite = _finite_minmax(flat)
    if norm == "channel":
        return lo, hi, finite
    if norm == "layer":
        return np.full_like(lo, lo.min()), np.full_like(hi, hi.max()), finite
    if norm == "signed":
        m = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0)))
        return np.full_like(lo, -m), np.full_like(hi, m), finite
    values = flat if finite is None else np.where(finite, flat, np.nan)
    with np.errstate(all="ignore"):
        if norm == "zscore":
            mu = np.nanmean(values, axis=1, dtype=np.float64) if finite is not None else values.mean(axis=1, dtype=np.float64)
            sigma = np.nanstd(values, axis=1, dtype=np.float64) if finite is not None else values.std(axis=1, dtype=np.float64)
            mu, sigma = np.nan_to_num(mu), np.nan_to_num(sigma)
            # (x - μ) / σ · 64 + 128, clipped to 0..255: the range μ - 2σ .. μ + 127/64 σ
            return mu - 2.0 * sigma, mu + (127.0 / 64.0) * sigma, finite
        if norm == "percentile":
            p_lo, p_hi = percentiles
            if not 0 <= p_lo < p_hi <= 100:
                raise OnnxvizError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
            q = np.nanpercentile(values, [p_lo, p_hi], axis=1) if finite is not None else np.percentile(values, [p_lo, p_hi], axis=1)
            return np.nan_to_num(q[0]).astype(np.float64), np.nan_to_num(q[1]).astype(np.float64), finite
    raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")


def _to_levels(flat: np.ndarray, lo: np.ndarray, hi: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """Map each row linearly from [lo, hi] to levels 0..LEVELS-1 (clipped); flat rows → 0."""
    span = hi - lo
    with np.errstate(divide="ignore", over="ignore"):
        gain = np.where(span > 0, (LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    gain[~np.isfinite(gain)] = 0.0
    # Spans near float32's limits (denormal or ~1e38) would overflow the gain in float32.
    work = np.float64 if (gain.max(initial=0.0) > 1e30 or np.abs(span).max(initial=0.0) > 1e30) else flat.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        levels = (flat.astype(work, copy=False) - lo[:, None].astype(work)) * gain[:, None].astype(work)
        levels += 0.5
        np.clip(levels, 0, LEVELS - 1, out=levels)
    if finite is not None:
        levels[~finite] = 0
    out = levels.astype(np.uint8)
    if finite is not None:
        out[~finite] = NAN_INDEX
    return out


def select_channels(
    stack: np.ndarray,
    *,
    max_channels: int | None = None,
    select: str = "first",
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Indices of the maps to show: an explicit list, the first N, or the top N by a score.

    ``select``: ``"first"``, or ``"mean"``, ``"max"``, ``"absmean"`` (top ``max_channels`` maps by
    that statistic, highest first; NaN/Inf ignored).
    """
    c = stack.shape[0]
    if max_channels is not None and max_channels < 1:
        raise OnnxvizError("max_channels must be at least 1")
    if channels is not None:
        idx = np.asarray(list(channels), dtype=np.int64)
        if idx.size == 0:
            raise OnnxvizError("channels is empty")
        bad = idx[(idx < 0) | (idx >= c)]
        if bad.size:
            raise OnnxvizError(f"channel {int(bad[0])} out of range: the stack has {c} maps (0..{c - 1})")
        return idx[:max_channels] if max_channels else idx
    if select == "first":
        return np.arange(min(c, max_channels or c))
    if select not in SELECTS:
        raise OnnxvizError(f"unknown channel selection {select!r}: use {', '.join(SELECTS)}")
    flat = _float(stack).reshape(c, -1)
    finite = np.isfinite(flat)
    with np.errstate(all="ignore"):
        if select == "max":
            score = np.where(finite, flat, -np.inf).max(axis=1)
        else:
            values = np.abs(flat) if select == "absmean" else flat
            score = np.where(finite, values, 0).sum(axis=1, dtype=np.float64) / np.maximum(finite.sum(axis=1), 1)
    order = np.argsort(-score, kind="stable")
    return order[: max_channels or c]
