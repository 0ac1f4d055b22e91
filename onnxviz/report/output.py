"""Writing results safely: staged output folders and JSON manifests.

Nothing is half-written: a folder is filled under a temporary name beside the target and renamed
into place at the end. An existing target is replaced only when it is empty or holds exactly the
files an earlier onnxviz run listed in its manifest, so user files are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..common import json_number
from ..errors import OnnxvizError

__all__ = ["check_output_dir", "staged_dir", "write_json", "json_number", "MANIFEST", "MANIFESTS"]

MANIFEST = "manifest.json"
MANIFESTS = (MANIFEST, "dataset.json")  # the manifest names an onnxviz output folder may carry


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _owned_files(target: Path) -> set[str] | None:
    """Files listed by an earlier onnxviz manifest in ``target`` (None if it is not ours)."""
    for name in MANIFESTS:
        try:
            manifest = json.loads((target / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and "onnxviz_version" in manifest and isinstance(manifest.get("files"), list):
            return {str(f) for f in manifest["files"]} | {name}
    return None


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
