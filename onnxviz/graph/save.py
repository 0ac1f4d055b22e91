"""Writing ONNX models atomically: the tapped model of ``expose``, and converters' output.

A model (and its ``.data`` file when weights stay external) is written under temporary names in
the destination folder and renamed into place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from ..errors import OnnxvizError

__all__ = ["write_model", "save_model_atomic"]


def write_model(proto: onnx.ModelProto, path: Path, *, source: Any = None) -> Path:
    """Save ``proto`` to ``path`` atomically; keep weights external when the source had them."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".onnx")
    resolved = path.resolve()
    src_path = getattr(source, "path", None)
    if src_path is not None and resolved == Path(src_path).resolve():
        raise OnnxvizError(f"refusing to overwrite the input model {path}; choose another -o")
    if path.exists() and not path.is_file():
        raise OnnxvizError(f"output path exists and is not a file: {path}")
    parent = resolved.parent
    if not parent.is_dir():
        raise OnnxvizError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OnnxvizError(f"output folder is not writable: {parent}")
    external = bool(getattr(source, "has_external_data", False))
    data_name = path.name + ".data"
    if external and getattr(source, "base_dir", None) is not None and (parent / data_name).resolve().parent == Path(source.base_dir).resolve():
        # Would the new data file replace one the input model reads?
        from onnx import external_data_helper

        used = {
            external_data_helper.ExternalDataInfo(t).location
            for t in external_data_helper._get_all_tensors(source.proto)
            if external_data_helper.uses_external_data(t)
        }
        if data_name in used:
            raise OnnxvizError(f"refusing to overwrite the input model's data file {data_name}; choose another -o")
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    if external:
        from onnx import external_data_helper

        external_data_helper.load_external_data_for_model(model, str(source.base_dir))
    save_model_atomic(model, path, external=external)
    return path


def save_model_atomic(model: onnx.ModelProto, path: Path, *, external: bool) -> None:
    """Write ``path`` (and ``path.data`` when ``external``) under temporary names, then rename."""
    resolved = Path(path).resolve()
    parent = resolved.parent
    data_name = resolved.name + ".data"
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxviz-", dir=parent))
    try:
        tmp_model = tmpdir / resolved.name
        if external:
            onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=0)
            os.replace(tmpdir / data_name, parent / data_name)
        else:
            onnx.save_model(model, tmp_model)
        os.replace(tmp_model, resolved)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
