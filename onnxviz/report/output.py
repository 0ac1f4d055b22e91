"""Writing results safely: staged output folders, the ownership marker, and JSON manifests.

Nothing is half-written: a folder is filled under a scratch name beside the target
(``.NAME.onnxviz-stage-PID-TOKEN``) and renamed into place at the end; on any failure, signal or
full filesystem it is removed and an earlier output stays as it was.

Ownership: every output folder gets a marker file, ``.onnxviz-output``, written last, holding a
random token and the exact list of what onnxviz wrote (each regular file's size and mtime, each
subfolder). An existing target is replaced only when it is empty or when every entry in it is one
the marker lists, unchanged (a regular file of the same size and mtime, a listed subfolder, no
symlinks). Anything else — a user's file, a file edited since, a copied or hand-edited
``manifest.json`` (the manifest is never trusted for this), a folder written before onnxviz had
the marker — makes onnxviz refuse, naming those entries, and touch nothing.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..common import json_number
from ..errors import OnnxvizError
from ..interrupts import hold, reraise_if_interrupted, shielded
from ..safefs import SCRATCH_MARKER, clean_stale, discard, is_no_space, keep, real_output, scratch_dir

__all__ = [
    "check_output_dir", "staged_dir", "write_json", "json_number", "foreign_entries", "MANIFEST", "MANIFESTS", "OWNER_MARKER",
]

MANIFEST = "manifest.json"
MANIFESTS = (MANIFEST, "dataset.json")  # the manifest names an onnxviz output folder may carry (not trusted for ownership)
OWNER_MARKER = ".onnxviz-output"
_FORMAT = "onnxviz output folder v1"
_SHOWN = 5  # foreign entries named in a refusal


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _walk(folder: Path, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``folder`` (relative posix path, lstat), symlinks not followed."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = f"{rel}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        yield name, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(Path(entry.path), name + "/")


def _write_owner_marker(folder: Path) -> None:
    files: dict[str, list[int]] = {}
    dirs: list[str] = []
    for name, st in _walk(folder):
        if name in (OWNER_MARKER, SCRATCH_MARKER):
            continue
        if stat.S_ISREG(st.st_mode):
            files[name] = [st.st_size, st.st_mtime_ns]
        elif stat.S_ISDIR(st.st_mode):
            dirs.append(name)
    marker = {"format": _FORMAT, "token": secrets.token_hex(16), "files": files, "dirs": dirs}
    with open(folder / OWNER_MARKER, "w", encoding="utf-8") as fh:
        json.dump(marker, fh, separators=(",", ":"))


def _read_owner_marker(folder: Path) -> tuple[dict[str, tuple[int, int]], set[str]] | None:
    try:
        st = os.lstat(folder / OWNER_MARKER)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
            return None
        with open(folder / OWNER_MARKER, encoding="utf-8") as fh:
            marker = json.load(fh)
        token, files, dirs = marker["token"], marker["files"], marker["dirs"]
        if marker["format"] != _FORMAT or not (isinstance(token, str) and len(token) == 32 and int(token, 16) >= 0):
            return None
        listed = {str(k): (int(v[0]), int(v[1])) for k, v in files.items()}
        return listed, {str(d) for d in dirs}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _show(name: str, st: os.stat_result) -> str:
    shown = name if name.isprintable() else ascii(name)[1:-1]
    if stat.S_ISLNK(st.st_mode):
        return f"{shown} (symlink)"
    return f"{shown}/" if stat.S_ISDIR(st.st_mode) else shown


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that onnxviz did not write (or that changed since); [] if all are its own."""
    marker = _read_owner_marker(folder)
    files, dirs = marker if marker is not None else ({}, set())
    foreign: list[str] = []
    skip: str | None = None  # a foreign subfolder: its content is not listed separately
    for name, st in _walk(folder):
        if skip is not None and name.startswith(skip):
            continue
        mode = st.st_mode
        if name == OWNER_MARKER and marker is not None and stat.S_ISREG(mode):
            continue
        if stat.S_ISREG(mode) and files.get(name) == (st.st_size, st.st_mtime_ns):
            continue
        if stat.S_ISDIR(mode) and name in dirs:
            continue
        foreign.append(_show(name, st))
        skip = name + "/" if stat.S_ISDIR(mode) else None
    return foreign


def _owned(folder: Path) -> bool:
    try:
        return not foreign_entries(folder)
    except OSError:
        return False


def _refusal(target: Path, foreign: list[str]) -> OnnxvizError:
    shown = ", ".join(foreign[:_SHOWN]) + (f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else "")
    return OnnxvizError(
        f"output directory {target} is not empty and was not written by onnxviz (not onnxviz's, or changed since: "
        f"{shown}); choose another -o or remove them"
    )


def check_output_dir(target: Path) -> Path:
    """Fail early (before any work) when ``target`` cannot receive onnxviz output; return where it goes.

    A symlink is written through: the returned path is the link's target.
    """
    target = Path(target)
    real = real_output(target, what="output directory")
    if real.exists() and not real.is_dir():
        raise OnnxvizError(f"output path exists and is not a directory: {target}")
    if real.is_dir():
        try:
            foreign = foreign_entries(real)
        except OSError as exc:
            raise OnnxvizError(f"cannot read output directory {target}: {exc.strerror}") from None
        if foreign:
            raise _refusal(target, foreign)
    return real


def _commit(tmp: Path, real: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``real``, replacing an earlier onnxviz output there."""
    for _ in range(5):
        try:
            os.rename(tmp, real)  # also replaces an empty folder
            keep(tmp)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        foreign = foreign_entries(real)
        if foreign:
            raise _refusal(target, foreign)
        old = real.parent / f".{real.name[:40]}.onnxviz-old-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            os.rename(real, old)
        except FileNotFoundError:
            continue  # another run moved it away meanwhile: try again
        foreign = foreign_entries(old)  # again, now that nothing can add to it under its name
        if foreign:
            os.rename(old, real)
            raise _refusal(target, foreign)
        try:
            os.rename(tmp, real)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                os.rename(old, real)
                raise
            shutil.rmtree(old, ignore_errors=True)
            continue  # a concurrent run committed first: replace its output in turn
        keep(tmp)
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OnnxvizError(f"output directory {target} keeps changing (other runs writing to it?); try again")


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder beside ``target``; on success it replaces ``target`` at once.

    ``target`` may be a symlink to a folder: the output lands at the link's target. Only the last
    path component is created. A full filesystem is a one-line error; the earlier output stays.
    """
    target = Path(target)
    real = check_output_dir(target)
    clean_stale(real.parent, owned=_owned)
    try:
        tmp = scratch_dir(real.parent, real.name, "stage")
    except OSError as exc:
        if is_no_space(exc):
            raise _no_space(target, real) from None
        raise
    try:
        try:
            yield tmp
            _write_owner_marker(tmp)
            os.unlink(tmp / SCRATCH_MARKER)
        except OSError as exc:
            if is_no_space(exc):
                raise _no_space(target, real) from None
            raise
        hold("stage")
        with shielded():
            reraise_if_interrupted()  # a signal that a library swallowed: do not commit
            _commit(tmp, real, target)
    except BaseException:
        discard(tmp)
        raise


def _no_space(target: Path, real: Path) -> OnnxvizError:
    kept = f"; the earlier {target} is unchanged" if real.exists() else ""
    return OnnxvizError(f"no space left on device writing {target} (nothing was written{kept})")
