"""The local run: one onnxruntime session using every core, the next batch decoded on another
thread while the current one runs, and a :class:`~.engine.Part` handed over at the end of every
shard (to be checkpointed and merged). Memory stays bounded whatever the number of images: at
most two decoded batches wait, and one batch's activations exist at a time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .engine import Engine, Part

__all__ = ["run_local", "shard_indices"]

_DONE = object()


def shard_indices(todo: np.ndarray, shard_size: int, batch: int) -> list[np.ndarray]:
    """Split the images still to do into shards of about ``shard_size`` (a multiple of the batch)."""
    size = max(batch, (max(shard_size, 1) + batch - 1) // batch * batch)
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def run_local(
    engine: Engine,
    images: Sequence[str],
    keys: np.ndarray,
    todo: np.ndarray,
    shard_size: int,
    on_part: Callable[[Part], None],
    progress: Any = None,
) -> None:
    """Process the images at indices ``todo``; ``on_part`` receives each finished shard."""
    batch = engine.spec.batch
    shards = shard_indices(np.asarray(todo, np.int64), shard_size, batch)
    pending: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for number, shard in enumerate(shards):
                for b0 in range(0, len(shard), batch):
                    index = shard[b0 : b0 + batch]
                    paths = [images[i] for i in index]
                    decoded = engine.decode_many(paths, paths)
                    if not put((number, index, decoded, b0 + batch >= len(shard))):
                        return
            put(_DONE)
        except BaseException as exc:  # handed to the main thread, which raises it
            put(exc)

    worker = threading.Thread(target=decode, name="onnxviz-decode", daemon=True)
    worker.start()
    try:
        part, started = Part(), time.perf_counter()
        while True:
            item = pending.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            number, index, (batch_array, ok, bad), last = item
            part.skipped += [(int(index[i]), reason) for i, reason in bad]
            if ok:
                chosen = index[np.asarray(ok, np.int64)]
                engine.run(batch_array, part, chosen, keys[chosen])
            if progress is not None:
                progress.update(len(index))
            if last:
                part.images = shards[number].copy()
                part.seconds = time.perf_counter() - started
                on_part(part)
                part, started = Part(), time.perf_counter()
    finally:
        stop.set()
        while True:  # unblock the decoder if it waits on a full queue
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=10)
