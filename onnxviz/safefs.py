"""Where onnxviz's files go, and scratch space that never outlives a run.

**Output paths** (``-o``, :func:`real_output`): a symlink is written through — the output lands
at the link's target and the link stays; only the last component of the path is created (a
missing parent folder is an error, never a silently created tree); what onnxviz creates gets the
user's umask like any other tool's output (folders ``0777 & ~umask``, files ``0666 & ~umask``).

**Scratch folders** — an output folder being staged, an old output being replaced, a model being
written, activations spilled to disk — are named ``.STEM.onnxviz-KIND-PID-TOKEN`` beside the
output (``onnxviz-spill-PID-TOKEN``, ``onnxviz-keras-…``, ``onnxviz-ray-…`` in the temp folder) and hold a marker file with the same
random token. Each is removed on every exit path: by the code that made it, and by
:func:`remove_scratch`, which the CLI calls before it exits (also on SIGINT/SIGTERM/SIGHUP) and
``atexit`` calls for the Python API. SIGKILL cannot be handled: the next run into the same folder
(:func:`clean_stale`) removes earlier runs' scratch folders whose process is gone (same host and
user, untouched for :data:`STALE_AFTER` seconds).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OnnxvizError
from .interrupts import shielded

__all__ = [
    "real_output", "scratch_dir", "temp_scratch_dir", "temp_scratch", "discard", "keep", "remove_scratch", "clean_stale", "is_no_space", "STALE_AFTER",
    "SCRATCH_MARKER",
]

SCRATCH_MARKER = ".onnxviz-scratch"
STALE_AFTER = 120.0  # seconds a dead run's scratch folder is left alone before the next run removes it
_NAME = re.compile(r"^(?:\.(?P<stem>.*)\.)?onnxviz-(?P<kind>[a-z]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{16})$")
_live: set[Path] = set()  # scratch folders of this process, removed at exit whatever happens


def real_output(path: str | os.PathLike, *, what: str = "output") -> Path:
    """The path that really receives the output ``path`` (symlinks resolved: written through).

    Raises a one-line :class:`OnnxvizError` when its parent folder is missing, not a folder or not
    writable: onnxviz creates only the last component.
    """
    given = Path(path)
    real = Path(os.path.realpath(given))
    parent = real.parent
    if not parent.exists():
        raise OnnxvizError(
            f"{what} {given} cannot be created: folder {given.parent} does not exist "
            "(onnxviz creates only the last component of -o)"
        )
    if not parent.is_dir():
        raise OnnxvizError(f"{what} {given} cannot be created: {given.parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OnnxvizError(f"{what} {given} cannot be created: {parent} is not writable")
    return real


def is_no_space(exc: BaseException) -> bool:
    """A full filesystem or exhausted quota (also numpy's short write, which carries no errno)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return exc.errno is None and bool(re.fullmatch(r"\d+ requested and \d+ written", str(exc)))


def scratch_dir(parent: Path, stem: str, kind: str, *, private: bool = False) -> Path:
    """Create and register a scratch folder ``.STEM.onnxviz-KIND-PID-TOKEN`` in ``parent``."""
    prefix = f".{stem[:40]}." if stem else ""
    mode = 0o700 if private else 0o777
    for _ in range(100):
        token = secrets.token_hex(8)
        path = Path(parent) / f"{prefix}onnxviz-{kind}-{os.getpid()}-{token}"
        with shielded():
            try:
                os.mkdir(path, mode)  # the umask applies, as for any folder the user creates
            except FileExistsError:
                continue
            _live.add(path)
        try:
            with open(path / SCRATCH_MARKER, "w", encoding="utf-8") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": token, "kind": kind}, fh)
        except BaseException:
            discard(path)
            raise
        return path
    raise OnnxvizError(f"cannot create a scratch folder in {parent}")


def temp_scratch_dir(kind: str) -> Path:
    """A private scratch folder ``onnxviz-KIND-PID-TOKEN`` in the temp folder (registered like every
    scratch folder); earlier runs' folders there whose process died (SIGKILL) are removed first."""
    import tempfile

    temp = Path(tempfile.gettempdir())
    clean_stale(temp)
    return scratch_dir(temp, "", kind, private=True)


@contextmanager
def temp_scratch(kind: str) -> Iterator[Path]:
    """:func:`temp_scratch_dir` for the ``with`` block, removed when it ends."""
    path = temp_scratch_dir(kind)
    try:
        yield path
    finally:
        discard(path)


def discard(path: Path) -> None:
    """Remove a scratch folder (or file) and forget it."""
    with shielded():
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass
        _live.discard(Path(path))


def keep(path: Path) -> None:
    """Forget a scratch folder that became a real output (it was renamed into place)."""
    _live.discard(Path(path))


def remove_scratch() -> None:
    """Remove every scratch folder this process still holds (at exit, on every path)."""
    for path in list(_live):
        discard(path)


atexit.register(remove_scratch)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process (or no way to tell): leave it alone
    return True


def _marked(path: Path, token: str) -> bool:
    try:
        with open(path / SCRATCH_MARKER, encoding="utf-8") as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("token") == token and marker.get("host") == socket.gethostname()


def clean_stale(parent: Path, owned: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove earlier runs' scratch folders in ``parent`` (see the module docstring).

    A folder qualifies when its name is a scratch name, it is a real folder of this user, its
    process is gone, it was untouched for :data:`STALE_AFTER` seconds, and it holds the marker
    with its token written on this host — or, for an interrupted replacement, ``owned(folder)``
    says it is an output folder onnxviz wrote. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    now = time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match:
            continue
        path = Path(entry.path)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid) or now - st.st_mtime < STALE_AFTER:
            continue
        if _alive(int(match["pid"])):
            continue
        if _marked(path, match["token"]) or (owned is not None and owned(path)):
            with shielded():
                shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
