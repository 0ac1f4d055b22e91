"""The batch callable Ray Data's actors run (it lives in the installed package so that every
worker can import it; it imports no Ray itself).

Each actor builds its own onnxruntime session in ``__init__`` from the model path — a session
cannot be pickled — with an explicit thread count, since onnxruntime does not see Ray's CPU
reservations. Each call receives a batch of image files as bytes (``read_binary_files``), decodes
them with onnxviz's own input pipeline (``ray.data.read_images`` decodes and resizes differently),
runs them in batches of ``spec.batch`` and returns one compressed :class:`~.engine.Part`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import Engine, JobSpec, image_key

__all__ = ["DatasetWorker"]


class DatasetWorker:
    """``map_batches`` callable: ``{"bytes", "path"}`` rows in, one ``{"part", "images"}`` row out."""

    def __init__(self, spec: JobSpec) -> None:
        self.engine = Engine(spec)  # unreadable images are listed in the part; the driver applies --strict

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        data = [bytes(b) for b in batch["bytes"]]
        keys = np.array([image_key(p) for p in paths], np.uint64)
        part = self.engine.process(data, paths, np.arange(len(paths), dtype=np.int64), keys)
        part.paths = paths
        blob = np.empty(1, dtype=object)
        blob[0] = part.to_bytes()
        return {"part": blob, "images": np.array([len(paths)], np.int64)}
