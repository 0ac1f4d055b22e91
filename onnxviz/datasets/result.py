""":class:`DatasetStats`: what ``onnxviz.dataset`` returns — per tapped layer, per channel
statistics over every image, the top-k images of each channel with where they fire, dead and
saturated channels — and how it reads back from an output folder."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxvizError
from .receptive import ReceptiveField, fallback_field
from .stats import LayerStats
from .write import MANIFEST_NAME

__all__ = ["DatasetStats", "MANIFEST_NAME", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("channel", "mean", "std", "min", "max", "frac_positive", "top_score", "dead", "saturated")


class DatasetStats(Mapping[str, LayerStats]):
    """Ordered mapping: layer name → :class:`~onnxviz.datasets.stats.LayerStats`, plus the images,
    the per-layer details (tensor, op, receptive field) and how the run went."""

    def __init__(
        self,
        *,
        model: str,
        images: list[str],
        layers: dict[str, LayerStats],
        info: dict[str, dict[str, Any]],
        skipped: list[tuple[int, str]] | None = None,
        settings: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        input: dict[str, Any] | None = None,
        saturation: float = 0.5,
    ) -> None:
        self.model = model
        self.images = list(images)
        self._layers = dict(layers)
        self.info = info
        self.skipped = list(skipped or [])
        self.settings = dict(settings or {})
        self.run = dict(run or {})
        self.input = dict(input or {})
        self.saturation = saturation

    def __getitem__(self, name: str) -> LayerStats:
        try:
            return self._layers[name]
        except KeyError:
            raise KeyError(f"no layer {name!r}; layers: {', '.join(self._layers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def count(self) -> int:
        """Images whose statistics are in (read and run; skipped ones excluded)."""
        return max((s.images for s in self._layers.values()), default=0)

    # -- per-channel views -----------------------------------------------------------------
    def table(self, layer: str) -> dict[str, np.ndarray]:
        """One array per column of :data:`TABLE_COLUMNS`, one row per channel."""
        s = self[layer]
        return {
            "channel": np.arange(s.channels), "mean": s.mean, "std": s.std, "min": s.min, "max": s.max,
            "frac_positive": s.frac_positive, "top_score": s.top_score[:, 0], "dead": s.dead, "saturated": s.saturated(self.saturation),
        }  # fmt: skip

    def dead(self, layer: str) -> list[int]:
        return [int(c) for c in np.flatnonzero(self[layer].dead)]

    def saturated(self, layer: str) -> list[int]:
        return [int(c) for c in np.flatnonzero(self[layer].saturated(self.saturation))]

    def receptive_field(self, layer: str) -> ReceptiveField:
        """The layer's receptive field (or the simpler fallback rule, ``exact=False``)."""
        field = self.info.get(layer, {}).get("receptive_field")
        if field:
            return ReceptiveField(tuple(field["size"]), tuple(field["stride"]), tuple(field["offset"]), bool(field.get("exact", True)))
        size = self.input.get("size") or [1, 1]
        shape = self[layer].map_shape
        return fallback_field((int(size[0]), int(size[1])), (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0] if shape else 1))

    def top(self, layer: str, channel: int) -> list[dict[str, Any]]:
        """The channel's top-k images, best first: path, index, score (the channel's maximum over
        its map), position of that maximum in the map, and the input box it sees (top, left,
        bottom, right) at the size the model was fed."""
        s = self[layer]
        if not 0 <= channel < s.channels:
            raise OnnxvizError(f"layer {layer} has {s.channels} channels; no channel {channel}")
        pos = s.top_pos[channel]
        shape = s.map_shape or (1,)
        locations = np.stack(np.unravel_index(np.maximum(pos, 0), shape), axis=-1)
        rf = self.receptive_field(layer)
        h, w = (self.input.get("size") or [0, 0])[:2]
        entries = []
        for slot in range(s.k):
            index = int(s.top_image[channel, slot])
            if index < 0:
                continue
            loc = [int(v) for v in locations[slot]]
            entry: dict[str, Any] = {"index": index, "path": self.images[index], "score": float(s.top_score[channel, slot]), "position": loc}
            if len(loc) == 2 and h and w:
                entry["box"] = list(rf.box(loc[0], loc[1], int(h), int(w)))
            entries.append(entry)
        return entries

    # -- files -----------------------------------------------------------------------------
    def save(self, out_dir: str | Path, **options: Any) -> dict[str, Any]:
        """Write the output folder (statistics, top-k PNGs, HTML, ``dataset.json``); see :func:`.write.write_dataset`."""
        from .write import write_dataset

        return write_dataset(self, out_dir, **options)

    @classmethod
    def load(cls, folder: str | Path) -> "DatasetStats":
        """Read an output folder written by ``onnxviz dataset`` / :meth:`save`."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OnnxvizError(f"{folder} holds no {MANIFEST_NAME}: not an onnxviz dataset folder") from None
        except (OSError, ValueError) as exc:
            raise OnnxvizError(f"cannot read {folder / MANIFEST_NAME}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != "onnxviz-dataset":
            raise OnnxvizError(f"{folder / MANIFEST_NAME} is not an onnxviz dataset manifest")
        try:
            images = (folder / manifest["images"]["list"]).read_text(encoding="utf-8").splitlines()
            layers, info = {}, {}
            for entry in manifest["layers"]:
                name = entry["name"]
                with np.load(folder / entry["stats"], allow_pickle=False) as z:
                    layers[name] = LayerStats.from_arrays(name, z)
                info[name] = {k: v for k, v in entry.items() if k not in ("summary",)}
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise OnnxvizError(f"dataset folder {folder} is incomplete or damaged: {exc}") from None
        skipped = [(int(s["index"]), str(s["reason"])) for s in manifest.get("skipped", [])]
        return cls(
            model=manifest.get("model", ""), images=images, layers=layers, info=info, skipped=skipped,
            settings=manifest.get("settings"), run=manifest.get("run"), input=manifest.get("input"),
            saturation=float(manifest.get("saturation", 0.5)),
        )

    def __repr__(self) -> str:
        return f"DatasetStats({len(self)} layers, {self.count} images, model={self.model!r})"
