"""Per-channel statistics of one layer over a set of images, with one associative merge.

:class:`LayerStats` holds, for every channel: the count of finite values, their mean and sum of
squared deviations (float64, merged with Chan et al.'s parallel update, so any split of the
images over batches, processes or machines gives the same moments up to float rounding), minimum,
maximum, the count of positive and of non-finite values, a histogram over fixed bins
(:mod:`.bins`, exact under merging), and the top-k images by the channel's maximum over its map,
with where that maximum is. Ties in the top-k are broken by a stable key of the image path, then
by the image's index, so the top-k of a merge never depends on the order of the parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxvizError
from .bins import NBINS
from .rows import RowStats, histogram

__all__ = ["LayerStats", "EMPTY_KEY"]

EMPTY_KEY = np.iinfo(np.uint64).max
_FIELDS = ("count", "mean", "m2", "min", "max", "positive", "nonfinite", "hist", "top_score", "top_key", "top_image", "top_pos")


@dataclass(eq=False)
class LayerStats:
    """Statistics of one tapped layer: arrays over its C channels (top-k arrays C×k)."""

    name: str
    channels: int
    map_shape: tuple[int, ...]
    k: int
    images: int = 0
    count: np.ndarray = field(default=None)  # type: ignore[assignment]
    mean: np.ndarray = field(default=None)  # type: ignore[assignment]
    m2: np.ndarray = field(default=None)  # type: ignore[assignment]
    min: np.ndarray = field(default=None)  # type: ignore[assignment]
    max: np.ndarray = field(default=None)  # type: ignore[assignment]
    positive: np.ndarray = field(default=None)  # type: ignore[assignment]
    nonfinite: np.ndarray = field(default=None)  # type: ignore[assignment]
    hist: np.ndarray = field(default=None)  # type: ignore[assignment]
    top_score: np.ndarray = field(default=None)  # type: ignore[assignment]
    top_key: np.ndarray = field(default=None)  # type: ignore[assignment]
    top_image: np.ndarray = field(default=None)  # type: ignore[assignment]
    top_pos: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        c, k = self.channels, self.k
        self.map_shape = tuple(int(d) for d in self.map_shape)
        defaults = {
            "count": np.zeros(c, np.int64), "mean": np.zeros(c, np.float64), "m2": np.zeros(c, np.float64),
            "min": np.full(c, np.inf), "max": np.full(c, -np.inf), "positive": np.zeros(c, np.int64),
            "nonfinite": np.zeros(c, np.int64), "hist": np.zeros((c, NBINS), np.int64),
            "top_score": np.full((c, k), -np.inf), "top_key": np.full((c, k), EMPTY_KEY, np.uint64),
            "top_image": np.full((c, k), -1, np.int64), "top_pos": np.full((c, k), -1, np.int64),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    # -- derived statistics ------------------------------------------------------------------
    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of each channel's finite values (NaN when none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, np.sqrt(np.maximum(self.m2, 0) / np.maximum(self.count, 1)), np.nan)

    @property
    def frac_positive(self) -> np.ndarray:
        """Fraction of each channel's finite values that are > 0."""
        return self.positive / np.maximum(self.count, 1)

    @property
    def dead(self) -> np.ndarray:
        """Channels that were never positive on any image (their maximum is <= 0)."""
        return (self.count > 0) & (self.max <= 0)

    def saturated(self, threshold: float = 0.5) -> np.ndarray:
        """Channels stuck near their maximum: on at least ``threshold`` of the histogram's sampled
        positions the value lies in the bin of the channel's maximum (within ~19% below it) — a
        channel clipped at a bound (ReLU6, sigmoid, uint8 255) or constant. Dead channels excluded."""
        from .bins import bin_index

        total = self.hist.sum(axis=1)
        top_bin = bin_index(np.where(np.isfinite(self.max), self.max, 0).astype(np.float32), wide=True)
        at_top = np.take_along_axis(self.hist, top_bin[:, None], axis=1)[:, 0]
        return (total > 0) & ~self.dead & (self.max > 0) & (at_top >= threshold * np.maximum(total, 1))

    def top_locations(self) -> np.ndarray:
        """C×k×len(map_shape) coordinates of each top-k maximum within the map (-1 for empty slots)."""
        pos = self.top_pos
        coords = np.stack(np.unravel_index(np.maximum(pos, 0), self.map_shape or (1,)), axis=-1) if self.map_shape else np.zeros((*pos.shape, 0), np.int64)
        return np.where((pos >= 0)[..., None], coords, -1)

    # -- accumulation ----------------------------------------------------------------------
    def add_rows(self, rows: RowStats, image_index: np.ndarray, image_key: np.ndarray) -> "LayerStats":
        """Fold one batch's per-image rows in (``image_index``/``image_key``: one per image)."""
        n = rows.max.shape[0]
        if rows.max.shape[1] != self.channels:
            raise OnnxvizError(f"layer {self.name}: batch has {rows.max.shape[1]} channels, expected {self.channels}")
        count = rows.count.sum(axis=0)
        weights = rows.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, (weights * rows.mean).sum(axis=0) / np.maximum(count, 1), 0.0)
        m2 = rows.m2.sum(axis=0) + (weights * (rows.mean - mean) ** 2).sum(axis=0)
        self._merge_moments(count, mean, m2)
        np.minimum(self.min, rows.min.min(axis=0), out=self.min)
        np.maximum(self.max, rows.max.max(axis=0), out=self.max)
        self.positive += rows.positive.sum(axis=0)
        self.nonfinite += rows.nonfinite.sum(axis=0)
        self.hist += histogram(rows.samples)
        self.images += n
        score = rows.max.T.astype(np.float64)  # C×N
        index = np.broadcast_to(np.asarray(image_index, np.int64)[None, :], score.shape)
        key = np.broadcast_to(np.asarray(image_key, np.uint64)[None, :], score.shape)
        self._merge_top(score, key, index, rows.argmax.T)
        return self

    def merge(self, other: "LayerStats") -> "LayerStats":
        """Fold another part's statistics in (same layer; in place, returns self)."""
        if (other.channels, other.map_shape) != (self.channels, self.map_shape):
            raise OnnxvizError(
                f"layer {self.name}: cannot merge statistics of {other.channels} channels {other.map_shape} "
                f"into {self.channels} channels {self.map_shape}"
            )
        self._merge_moments(other.count, other.mean, other.m2)
        np.minimum(self.min, other.min, out=self.min)
        np.maximum(self.max, other.max, out=self.max)
        self.positive += other.positive
        self.nonfinite += other.nonfinite
        self.hist += other.hist
        self.images += other.images
        self._merge_top(other.top_score, other.top_key, other.top_image, other.top_pos)
        return self

    def _merge_moments(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        na = self.count.astype(np.float64)
        nb = np.asarray(count, np.float64)
        n = na + nb
        safe = np.maximum(n, 1)
        delta = mean - self.mean
        self.mean = np.where(n > 0, self.mean + delta * (nb / safe), 0.0)
        self.m2 = self.m2 + m2 + delta * delta * (na * nb / safe)
        self.count = self.count + np.asarray(count, np.int64)

    def _merge_top(self, score: np.ndarray, key: np.ndarray, index: np.ndarray, pos: np.ndarray) -> None:
        score = np.where(np.isfinite(score) | (score > 0), score, -np.inf)  # NaN and -Inf never rank
        empty = (score == -np.inf) | (index < 0)
        score = np.where(empty, -np.inf, score)
        key = np.where(empty, EMPTY_KEY, key)
        index = np.where(empty, -1, index)
        pos = np.where(empty, -1, pos)
        all_score = np.concatenate([self.top_score, score], axis=1)
        all_key = np.concatenate([self.top_key, key.astype(np.uint64)], axis=1)
        all_index = np.concatenate([self.top_image, index.astype(np.int64)], axis=1)
        all_pos = np.concatenate([self.top_pos, pos.astype(np.int64)], axis=1)
        # Highest score first; ties by path key, then by image index (empty slots sort last).
        order = np.lexsort((all_index, all_key, -all_score), axis=1)[:, : self.k]
        self.top_score = np.take_along_axis(all_score, order, axis=1)
        self.top_key = np.take_along_axis(all_key, order, axis=1)
        self.top_image = np.take_along_axis(all_index, order, axis=1)
        self.top_pos = np.take_along_axis(all_pos, order, axis=1)

    def remap_images(self, mapping: np.ndarray) -> "LayerStats":
        """Replace the top-k image indices by ``mapping[index]`` (a part's local → the job's global)."""
        valid = self.top_image >= 0
        self.top_image = np.where(valid, np.asarray(mapping, np.int64)[np.maximum(self.top_image, 0)], -1)
        return self

    # -- (de)serialisation -----------------------------------------------------------------
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {prefix + name: getattr(self, name) for name in _FIELDS}
        arrays[prefix + "meta"] = np.array([self.channels, self.k, self.images, len(self.map_shape), *self.map_shape], np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, name: str, arrays: Mapping[str, np.ndarray], prefix: str = "") -> "LayerStats":
        meta = [int(v) for v in arrays[prefix + "meta"]]
        channels, k, images, rank = meta[:4]
        shape = tuple(meta[4 : 4 + rank])
        values = {field_name: np.asarray(arrays[prefix + field_name]) for field_name in _FIELDS}
        stats = cls(name=name, channels=channels, map_shape=shape, k=k, images=images, **values)
        if stats.hist.shape != (channels, NBINS) or stats.top_score.shape != (channels, k):
            raise OnnxvizError(f"layer {name}: statistics arrays have unexpected shapes")
        return stats

    def copy(self) -> "LayerStats":
        return LayerStats.from_arrays(self.name, {k: np.array(v, copy=True) for k, v in self.to_arrays().items()})

    def __repr__(self) -> str:
        return f"LayerStats({self.name!r}, {self.channels} channels, map {'×'.join(map(str, self.map_shape))}, {self.images} images)"
