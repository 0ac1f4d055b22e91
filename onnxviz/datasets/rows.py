"""Per-image, per-channel reductions of one tapped layer (``RowStats``), computed in numpy.

A batch's activations N×C×(spatial) become N×C numbers — the maximum and where it is, the
minimum, the mean and the sum of squared deviations from it, the count of positive and of
non-finite values — plus the values at a fixed subgrid of positions, for the histogram. Everything a
:class:`~onnxviz.datasets.stats.LayerStats` needs, and nothing that depends on which other images
share the batch: that is what makes any split of the images merge to the same result.

The rows are reduced in float32 in cache-sized chunks (the maximum, minimum and sum in one sweep
each while the chunk is hot, the squared deviations from each row's own mean), then widened to
float64; rows holding NaN or Inf are redone in float64 over their finite values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bins import NBINS, bin_index

__all__ = ["RowStats", "numpy_rows", "sample_slices", "rows_from_parts", "histogram"]

_CHUNK = 1 << 17  # float32 values per chunk (512 KiB): every sweep after the first hits the cache


@dataclass
class RowStats:
    """N×C reductions of one layer for one batch (plus the histogram of the sampled positions)."""

    max: np.ndarray  # float32, the finite maximum (-inf when a row has no finite value)
    argmax: np.ndarray  # int64, flat position of the maximum within the map (-1 when none)
    min: np.ndarray  # float32, finite minimum (+inf when none)
    mean: np.ndarray  # float64, mean of the finite values
    m2: np.ndarray  # float64, sum of squared deviations from that mean
    count: np.ndarray  # int64, finite values
    positive: np.ndarray  # int64, values > 0
    nonfinite: np.ndarray  # int64, NaN / Inf values
    samples: np.ndarray  # N×C×… the values at the histogram's fixed subgrid of positions

    def head(self, n: int) -> "RowStats":
        """The first ``n`` images' rows (a padded batch without its padding)."""
        return RowStats(**{name: getattr(self, name)[:n] for name in self.__dataclass_fields__})


def sample_slices(spatial: tuple[int, ...], grid: int) -> tuple[slice, ...]:
    """The fixed subgrid of positions whose values go into the histogram: about ``grid`` positions
    per spatial axis, evenly spaced and centred (``grid=0``: every position)."""
    if grid <= 0:
        return tuple(slice(None) for _ in spatial)
    slices = []
    for size in spatial:
        step = max(1, math.ceil(size / grid))
        slices.append(slice(step // 2, None, step))
    return tuple(slices)


def histogram(samples: np.ndarray) -> np.ndarray:
    """C×NBINS counts of an N×C×… array of sampled values."""
    n, c = samples.shape[:2]
    # int32 indices (bin + channel·NBINS): bincount on them measured 3× faster than on intp ones.
    index = bin_index(samples).reshape(n, c, -1).astype(np.int32)
    index += (np.arange(c, dtype=np.int32) * NBINS)[None, :, None]
    return np.bincount(index.ravel(), minlength=c * NBINS).reshape(c, NBINS).astype(np.int64, copy=False)


def _redo_nonfinite(flat: np.ndarray, rows: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Rows with NaN/Inf (or a float32 sum that overflowed): statistics over their finite values, in float64."""
    for r in rows:
        row = flat[r].astype(np.float64)
        finite = np.isfinite(row)
        k = int(finite.sum())
        out["nonfinite"][r] = row.size - k
        out["count"][r] = k
        out["positive"][r] = int(np.count_nonzero(row[finite] > 0))
        if k == 0:
            out["max"][r], out["argmax"][r], out["min"][r], out["mean"][r], out["m2"][r] = -np.inf, -1, np.inf, 0.0, 0.0
            continue
        masked = np.where(finite, row, -np.inf)
        idx = int(masked.argmax())
        vals = row[finite]
        mean = vals.mean()
        out["max"][r], out["argmax"][r], out["min"][r] = row[idx], idx, vals.min()
        out["mean"][r], out["m2"][r] = mean, float(((vals - mean) ** 2).sum())


def _chunk(flat, r0, r1, hw, out, sums, m2, buf, gt) -> None:
    """Rows r0:r1, every sweep over the same cache-sized block."""
    blk = flat[r0:r1]
    k = r1 - r0
    idx = blk.argmax(axis=1)
    out["argmax"][r0:r1] = idx
    out["max"][r0:r1] = blk[np.arange(k), idx]
    np.min(blk, axis=1, out=out["min"][r0:r1])
    np.sum(blk, axis=1, out=sums[r0:r1])
    mu = sums[r0:r1] / np.float32(hw)
    b = buf[:k]
    np.subtract(blk, mu[:, None], out=b)
    np.multiply(b, b, out=b)
    np.sum(b, axis=1, out=m2[r0:r1])  # pairwise like the sum: a row's result never depends on its chunk
    out["mean"][r0:r1] = mu
    g = gt[:k]
    np.greater(blk, 0, out=g)
    out["positive"][r0:r1] = np.add.reduce(g.view(np.uint8), axis=1, dtype=np.int32)


def numpy_rows(acts: np.ndarray, grid: int) -> RowStats:
    """Reduce one layer's N×C×(spatial) activations (float; other dtypes are converted)."""
    a = np.asarray(acts)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a)
    n, c = a.shape[:2]
    spatial = a.shape[2:]
    hw = max(1, math.prod(spatial))
    rows = n * c
    flat = a.reshape(rows, hw)
    out = {
        "max": np.empty(rows, np.float32), "argmax": np.empty(rows, np.int64), "min": np.empty(rows, np.float32),
        "mean": np.empty(rows, np.float64), "m2": np.empty(rows, np.float64), "count": np.full(rows, hw, np.int64),
        "positive": np.empty(rows, np.int64), "nonfinite": np.zeros(rows, np.int64),
    }
    step = max(1, _CHUNK // hw)
    buf = np.empty((min(step, rows), hw), np.float32)
    gt = np.empty((min(step, rows), hw), np.bool_)
    sums = np.empty(rows, np.float32)
    m2 = np.empty(rows, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf rows are redone below
        for r0 in range(0, rows, step):
            _chunk(flat, r0, min(rows, r0 + step), hw, out, sums, m2, buf, gt)
    out["m2"][:] = m2
    bad = np.flatnonzero(~np.isfinite(sums))
    if bad.size:
        _redo_nonfinite(flat, bad, out)
    samples = a[(slice(None), slice(None), *sample_slices(spatial, grid))]
    shaped = {key: value.reshape(n, c) for key, value in out.items()}
    return RowStats(samples=np.ascontiguousarray(samples), **shaped)


def rows_from_parts(parts: dict[str, np.ndarray], samples: np.ndarray, hw: int) -> RowStats:
    """RowStats from reductions computed elsewhere (the graph-side path): N×C arrays named like
    the fields (``sum`` instead of ``mean``), and the sampled values."""
    total = parts["sum"].astype(np.float64)
    return RowStats(
        max=parts["max"].astype(np.float32, copy=False), argmax=parts["argmax"].astype(np.int64, copy=False),
        min=parts["min"].astype(np.float32, copy=False), mean=total / hw, m2=parts["m2"].astype(np.float64),
        count=np.full(total.shape, hw, np.int64), positive=np.rint(parts["positive"]).astype(np.int64),
        nonfinite=np.zeros(total.shape, np.int64), samples=np.asarray(samples, np.float32),
    )
