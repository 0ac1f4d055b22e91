"""Writing files atomically: the tapped model of ``expose``, converters' output, ``graph``'s SVG/DOT.

A file (and a model's ``.data`` file when weights stay external) is written under a scratch
folder beside the destination and renamed into place, so a failed or interrupted write, or a full
filesystem, leaves nothing behind and an earlier file as it was. An output path that is a symlink
is written through (the link's target is replaced, the link stays); only the last component is
created. ``expose`` never writes over a file its input model reads: the output model and its
``.data`` file are compared with the input model and each of its external data files by real path
and by inode (symlinks and hard links included), in both directions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from ..errors import OnnxvizError
from ..interrupts import hold, reraise_if_interrupted, shielded
from ..safefs import clean_stale, discard, is_no_space, real_output, scratch_dir

__all__ = ["write_model", "save_model_atomic", "write_file_atomic", "same_file"]


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same file: same inode, or (not existing yet) the same real path."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _writable_file(path: Path, shown: Path, what: str) -> Path:
    real = real_output(path, what=what)
    if real.exists() and not real.is_file():
        raise OnnxvizError(f"output path exists and is not a file: {shown}")
    return real


def write_model(proto: onnx.ModelProto, path: Path, *, source: Any = None) -> Path:
    """Save ``proto`` to ``path`` atomically; keep weights external when the source had them."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".onnx")
    real = _writable_file(path, path, "output model")
    external = bool(getattr(source, "has_external_data", False))
    outputs = [(real, path)]
    if external:
        outputs.append((real.parent / (real.name + ".data"), path.parent / (real.name + ".data")))
    model_path = getattr(source, "path", None)
    for src in (source.source_files() if hasattr(source, "source_files") else [model_path] if model_path else []):
        for out, shown in outputs:
            if same_file(out, src):
                what = "the input model" if model_path is not None and same_file(src, model_path) else "the input model's data file"
                raise OnnxvizError(f"refusing to overwrite {what} {src} with {shown}; choose another -o")
    if external:
        data = outputs[1][0]
        if data.exists() and not data.is_file():
            raise OnnxvizError(f"output data path exists and is not a file: {outputs[1][1]}")
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    if external:
        from onnx import external_data_helper

        source.check_unchanged()
        external_data_helper.load_external_data_for_model(model, str(source.base_dir))
    save_model_atomic(model, path, external=external)
    return path


def save_model_atomic(model: onnx.ModelProto, path: Path, *, external: bool) -> None:
    """Write ``path`` (and ``path.data`` when ``external``) under temporary names, then rename."""
    real = _writable_file(Path(path), Path(path), "output model")
    data_name = real.name + ".data"
    with _scratch(real, path) as tmpdir:
        tmp_model = tmpdir / real.name
        if external:
            # Not save_model(save_as_external_data=True): onnx refuses when a file named like the
            # data file exists in the *current* folder, whatever folder the model goes to.
            from onnx import external_data_helper

            for tensor in external_data_helper._get_initializer_tensors(model):
                if tensor.HasField("raw_data"):
                    external_data_helper.set_external_data(tensor, data_name)
            open(tmpdir / data_name, "wb").close()  # created here, with the umask (onnx makes it 0600)
        onnx.save_model(model, tmp_model)
        hold("model")
        with shielded():
            reraise_if_interrupted()  # a signal that a library swallowed: do not replace anything
            if external:
                os.replace(tmpdir / data_name, real.parent / data_name)
            os.replace(tmp_model, real)


def write_file_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str: as UTF-8) to ``path`` atomically: a failed write leaves nothing behind."""
    real = _writable_file(Path(path), Path(path), "output")
    with _scratch(real, path) as tmpdir:
        (tmpdir / real.name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        with shielded():
            reraise_if_interrupted()
            os.replace(tmpdir / real.name, real)


@contextmanager
def _scratch(real: Path, shown: Path | str) -> Iterator[Path]:
    """A scratch folder beside ``real``, removed on every way out; a full disk is one clear error."""
    clean_stale(real.parent)
    tmpdir = None
    try:
        tmpdir = scratch_dir(real.parent, real.name, "tmp")
        yield tmpdir
    except OSError as exc:
        if is_no_space(exc):
            raise OnnxvizError(f"no space left on device writing {shown} (nothing was written)") from None
        raise
    finally:
        if tmpdir is not None:
            discard(tmpdir)
