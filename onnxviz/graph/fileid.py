"""Identity of the files a loaded model reads its weights from, to notice when they change.

Weights are read from the files after ``load()`` (onnxruntime at each session build, the filter
viewer, ``expose``), at byte offsets recorded at load. A file replaced or rewritten in between
would hand over the wrong bytes (all-NaN maps, filters of 3e32) with no error, so each file's
device, inode, size and modification time are recorded at load and compared before each read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import onnx
from onnx import external_data_helper

from ..errors import ModelLoadError

__all__ = ["identity", "external_files", "check_files"]

Identity = tuple[int, int, int, int]


def identity(path: Path) -> Identity | None:
    """(device, inode, size, mtime in ns) of ``path``, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def external_files(model: onnx.ModelProto, base_dir: Path, in_memory: str) -> list[Path]:
    """The external data files ``model`` reads (resolved, each once, in order of first use)."""
    found: dict[Path, None] = {}
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            location = external_data_helper.ExternalDataInfo(tensor).location
            if location != in_memory:
                found[Path(os.path.realpath(base_dir / location))] = None
    return list(found)


def check_files(files: Iterable[tuple[Path, Identity]], model_path: Path | None, source: str) -> None:
    """One-line :class:`ModelLoadError` if any of ``files`` changed since its identity was taken."""
    for name, ident in files:
        if identity(name) != ident:
            if name == model_path:
                raise ModelLoadError(f"model file {name} changed on disk since it was loaded; load it again")
            raise ModelLoadError(f"external data file {name} of {source} changed on disk since it was loaded; load the model again")
