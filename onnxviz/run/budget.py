"""Memory cap for captures: size each tap for the actual input, group taps under the cap.

Tap sizes come from onnx shape inference on the (weightless) model with the input dims fixed to
the feed's shape. A capture over the cap runs one pass per group, each in a short-lived session
whose outputs are just that group's taps, and streams every tap to an ``.npy`` file that comes
back memory-mapped, so at most one group's activations are held in memory at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..common import parse_size, plural
from ..errors import OnnxvizError
from ..graph.taps import Tap
from .memory import inferred_sizes, tensor_bytes

__all__ = ["parse_size", "tap_bytes", "group_taps", "CapturePlan", "Spill"]

def tap_bytes(model: onnx.ModelProto, taps: Sequence[Tap], feeds: Mapping[str, np.ndarray]) -> dict[str, int | None]:
    """Bytes of each tap's tensor for these feeds (None where shape inference cannot tell)."""
    dims = inferred_sizes(model, {name: array.shape for name, array in feeds.items()})
    sizes: dict[str, int | None] = {}
    for tap in taps:
        found = dims.get(tap.tensor)
        if found is not None and not found[1]:
            found = (found[0], tap.elem_type)
        known = found is not None and found[0] and all(d is not None and d > 0 for d in found[0]) and found[1]
        sizes[tap.tensor] = tensor_bytes(found) if known else None
    return sizes


@dataclass(frozen=True)
class CapturePlan:
    """How a capture ran: one pass, or several passes over layer groups streamed to disk."""

    passes: int
    total_bytes: int | None  # estimated bytes of all taps (None if some are unknown)
    max_memory: int | None
    spill_dir: str | None = None
    oversized: tuple[str, ...] = ()  # taps alone above the cap (a group of their own)

    def as_dict(self) -> dict[str, object]:
        """For manifests."""
        return {"passes": self.passes, "max_memory": self.max_memory, "activation_bytes": self.total_bytes,
                "streamed_to_disk": self.spill_dir is not None, "strategy": self.describe()}

    def describe(self) -> str:
        if self.passes == 1 and self.spill_dir is None:
            total = f" ({self.total_bytes / 2**20:.0f} MiB of activations)" if self.total_bytes is not None else ""
            return f"one pass{total}"
        text = (
            f"{self.passes} passes over layer groups of at most {self.max_memory / 2**20:.0f} MiB each, "
            f"taps streamed to {self.spill_dir}/*.npy"
        )
        if self.oversized:
            alone = "alone exceeds" if len(self.oversized) == 1 else "alone exceed"
            text += f"; {plural(len(self.oversized), 'layer')} {alone} the cap: {', '.join(self.oversized[:3])}"
        return text


def group_taps(taps: Sequence[Tap], sizes: Mapping[str, int | None], budget: int) -> list[list[Tap]]:
    """Greedy groups in graph order, each at most ``budget`` bytes (an unknown or oversized tap alone)."""
    groups: list[list[Tap]] = []
    current: list[Tap] = []
    used = 0
    for tap in taps:
        size = sizes.get(tap.tensor)
        if size is None or size > budget:
            if current:
                groups.append(current)
            groups.append([tap])
            current, used = [], 0
            continue
        if current and used + size > budget:
            groups.append(current)
            current, used = [], 0
        current.append(tap)
        used += size
    if current:
        groups.append(current)
    return groups


class Spill:
    """``with Spill(spill_dir) as folder:`` — where a capture in groups streams its taps.

    ``spill_dir``, or else a private scratch folder in the temp folder (``onnxviz-spill-PID-TOKEN``,
    see :mod:`onnxviz.safefs`; stale ones of killed runs are removed first). On any failure or
    signal the scratch folder is removed (a full filesystem becomes a one-line error); on success
    :meth:`tie` makes it live as long as the Capture (and at most until the process exits).
    """

    def __init__(self, spill_dir: str | os.PathLike | None) -> None:
        self.owned = spill_dir is None
        self.folder = Path(spill_dir) if spill_dir is not None else None

    def __enter__(self) -> Path:
        from ..safefs import temp_scratch_dir

        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        else:
            self.folder = temp_scratch_dir("spill")
        return self.folder

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        from ..safefs import discard, is_no_space

        if exc is None or self.folder is None:
            return
        if self.owned:
            discard(self.folder)
        if is_no_space(exc):
            raise OnnxvizError(f"no space left on device for the activations spilled to {self.folder.parent} (--max-memory)") from None

    def tie(self, capture: Any) -> None:
        if self.owned and self.folder is not None:
            import weakref

            from ..safefs import discard

            weakref.finalize(capture, discard, self.folder)
