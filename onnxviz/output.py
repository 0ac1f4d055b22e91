"""Writing results safely: staged output folders, atomic model files, JSON manifests.

Nothing is half-written: a folder is filled under a temporary name beside the target and renamed
into place at the end. An existing target is replaced only when it is empty or holds exactly the
files an earlier onnxviz run listed in its manifest, so user files are never touched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from .errors import OnnxvizError

__all__ = ["check_output_dir", "staged_dir", "write_model", "save_model_atomic", "write_json", "json_number", "MANIFEST"]

MANIFEST = "manifest.json"


def json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: those become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _owned_files(target: Path) -> set[str] | None:
    """Files listed by an earlier onnxviz manifest in ``target`` (None if it is not ours)."""
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "onnxviz_version" not in manifest or not isinstance(manifest.get("files"), list):
        return None
    return {str(f) for f in manifest["files"]} | {MANIFEST}


def check_output_dir(target: Path) -> None:
    """Fail early (before any work) when ``target`` cannot receive onnxviz output."""
    if target.exists() and not target.is_dir():
        raise OnnxvizError(f"output path exists and is not a directory: {target}")
    if target.is_dir():
        entries = {p.name for p in target.iterdir()}
        if entries:
            owned = _owned_files(target)
            if owned is None or not entries <= owned:
                raise OnnxvizError(
                    f"output directory {target} is not empty and was not written by onnxviz; choose another -o"
                )
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OnnxvizError(f"output directory {target} cannot be created: {probe} is not writable")


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` at once."""
    target = Path(target)
    check_output_dir(target)
    created: list[Path] = []
    parent = target.parent
    for p in reversed([parent, *parent.parents]):
        if not p.exists():
            try:
                p.mkdir()
            except OSError as exc:
                raise OnnxvizError(f"cannot create {p}: {exc.strerror}") from None
            created.append(p)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.onnxviz-", dir=parent))
    try:
        yield tmp
        check_output_dir(target)
        if target.is_dir():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.old-", dir=parent))
            os.rename(target, trash / "old")
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                pass
        raise


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
