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
CHUNK_BYTES = 32 << 20  # working copies are made this many bytes at a time, whatever the layer's size
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


def _blocks(shape: tuple[int, int]):
    """(rows, cols) slices covering a 2-D array in blocks of about ``CHUNK_BYTES`` of float32."""
    n_rows, n_cols = shape
    elems = max(1, CHUNK_BYTES // 4)
    col_step = min(max(n_cols, 1), elems)
    row_step = max(1, elems // max(col_step, 1))
    for r in range(0, n_rows, row_step):
        for c in range(0, max(n_cols, 1), col_step):
            yield slice(r, r + row_step), slice(c, c + col_step)


Finite = Union[np.ndarray, bool, None]  # a finite mask, True ("some values are not: test per block"), or None (all finite)


def _finite_minmax(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, Finite]:
    """Per-row min and max over finite values (0 for rows without any), and ``True`` when some
    value is NaN/Inf (None otherwise). Works block by block: no full-size copy or mask."""
    n = flat.shape[0]
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    finite: Finite = None
    exact = not np.issubdtype(flat.dtype, np.floating)  # integers are all finite
    for rows, cols in _blocks(flat.shape):
        block = flat[rows, cols]
        if exact:
            ok = None
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: a NaN sum is all this probe needs
                ok = None if np.isfinite(block.sum(axis=1, dtype=np.float64)).all() else np.isfinite(block)
        if ok is None:
            b_lo, b_hi = block.min(axis=1), block.max(axis=1)
        else:
            finite = True
            b_lo = np.where(ok, block, np.inf).min(axis=1)
            b_hi = np.where(ok, block, -np.inf).max(axis=1)
        np.minimum(lo[rows], b_lo.astype(np.float64), out=lo[rows])
        np.maximum(hi[rows], b_hi.astype(np.float64), out=hi[rows])
    empty = ~np.isfinite(lo)
    lo[empty] = 0.0
    hi[empty] = 0.0
    return lo, hi, finite


def _mask(finite: Finite, flat: np.ndarray, rows: slice | np.ndarray, cols: slice = slice(None)) -> np.ndarray | None:
    """The finite mask of ``flat[rows, cols]`` (None when every value is finite)."""
    if finite is None:
        return None
    if finite is True:
        return np.isfinite(flat[rows, cols])
    return finite[rows, cols]


def _ranges(flat: np.ndarray, norm: str, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, Finite]:
    """Per-channel (lo, hi) of the chosen normalisation, and the finite mask (None: all finite)."""
    lo, hi, finite = _finite_minmax(flat)
    if norm == "channel":
        return lo, hi, finite
    if norm == "layer":
        return np.full_like(lo, lo.min()), np.full_like(hi, hi.max()), finite
    if norm == "signed":
        m = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0)))
        return np.full_like(lo, -m), np.full_like(hi, m), finite
    if norm not in ("zscore", "percentile"):
        raise OnnxvizError(f"unknown normalisation {norm!r}: use {', '.join(NORMS)}")
    if norm == "percentile":
        p_lo, p_hi = percentiles
        if not 0 <= p_lo < p_hi <= 100:
            raise OnnxvizError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    lo_out = np.zeros(flat.shape[0], np.float64)
    hi_out = np.zeros(flat.shape[0], np.float64)
    # Rows without a finite value keep (0, 0): numpy's nan-functions warn on them ("All-NaN slice").
    if finite is None:
        rows = np.arange(flat.shape[0])
    else:
        rows = np.flatnonzero([_mask(finite, flat, slice(r, r + 1)).any() for r in range(flat.shape[0])])
    for start in range(0, len(rows), _chunk_rows(flat)):
        idx = rows[start : start + _chunk_rows(flat)]
        part = _float(flat[idx])
        part = part if finite is None else np.where(_mask(finite, flat, idx), part, np.nan)
        with np.errstate(all="ignore"):
            if norm == "zscore":
                if finite is None:
                    mu, sigma = part.mean(axis=1, dtype=np.float64), part.std(axis=1, dtype=np.float64)
                else:
                    mu, sigma = np.nanmean(part, axis=1, dtype=np.float64), np.nanstd(part, axis=1, dtype=np.float64)
                mu, sigma = np.nan_to_num(mu), np.nan_to_num(sigma)
                # (x - μ) / σ · 64 + 128, clipped to 0..255: the range μ - 2σ .. μ + 127/64 σ
                lo_out[idx], hi_out[idx] = mu - 2.0 * sigma, mu + (127.0 / 64.0) * sigma
            else:
                q = (np.percentile if finite is None else np.nanpercentile)(part, [p_lo, p_hi], axis=1)
                lo_out[idx], hi_out[idx] = np.nan_to_num(q[0]), np.nan_to_num(q[1])
    return lo_out, hi_out, finite


def _chunk_rows(flat: np.ndarray) -> int:
    """Rows per chunk so that a float64 working copy of one chunk stays near ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(1, flat.shape[1] * 8))


def _to_levels(flat: np.ndarray, lo: np.ndarray, hi: np.ndarray, finite: Finite) -> np.ndarray:
    """Map each row linearly from [lo, hi] to levels 0..LEVELS-1 (clipped); flat rows → 0; NaN/Inf
    (``finite`` False) → ``NAN_INDEX``. Works block by block into the uint8 result: the float
    working copy is one block (``CHUNK_BYTES``), never the whole array."""
    span = hi - lo
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        gain = np.where(span > 0, (LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    gain[~np.isfinite(gain)] = 0.0
    # Spans near float32's limits (denormal or ~1e38) would overflow the gain in float32.
    wide = gain.max(initial=0.0) > 1e30 or np.abs(span).max(initial=0.0) > 1e30
    work = np.float64 if (wide or flat.dtype == np.float64) else np.float32
    lo_w, gain_w = lo.astype(work), gain.astype(work)
    out = np.empty(flat.shape, dtype=np.uint8)
    for rows, cols in _blocks(flat.shape):
        with np.errstate(invalid="ignore", over="ignore"):
            levels = flat[rows, cols].astype(work)
            levels -= lo_w[rows, None]
            levels *= gain_w[rows, None]
            levels += 0.5
            np.clip(levels, 0, LEVELS - 1, out=levels)
            ok = _mask(finite, flat, rows, cols)
            if ok is not None:
                bad = ~ok
                levels[bad] = 0
            block = levels.astype(np.uint8)
        if ok is not None:
            block[bad] = NAN_INDEX
        out[rows, cols] = block
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
