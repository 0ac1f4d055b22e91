"""Which images a dataset run reads: folders (recursively), glob patterns and text files of paths.

The list is deterministic — each folder's and each glob's files sorted by path, arguments in the
order given, duplicates (the same absolute path) kept once — so a resumed run, a Ray run and a
local run see the same images with the same indices.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import InputError

__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "expand_images"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = frozenset("*?[")


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")


def _walk(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively (hidden files and folders skipped), sorted."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if _is_image_name(f))
    return sorted(found)


def _read_list(path: Path) -> list[str]:
    """Paths listed one per line (blank lines and ``#`` comments skipped), relative to the list's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"image list {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read image list {path}: {exc.strerror}") from None
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line)
        entries.append(str(entry if entry.is_absolute() else path.parent / entry))
    if not entries:
        raise InputError(f"image list {path} lists no images (one path per line; blank lines and # comments are skipped)")
    return entries


def _expand_one(arg: str) -> list[str]:
    path = Path(arg)
    if path.is_dir():
        found = _walk(path)
        if not found:
            raise InputError(f"no image files in folder {arg} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return found
    if path.is_file():
        return _read_list(path) if path.suffix.lower() in LIST_SUFFIXES else [arg]
    if _GLOB_CHARS & set(arg):
        found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p) and _is_image_name(os.path.basename(p)))
        if not found:
            raise InputError(f"no image files match {arg!r}")
        return found
    raise InputError(f"image path not found: {arg}")


def expand_images(args: Sequence[str | os.PathLike] | str | os.PathLike) -> list[str]:
    """The job's image paths from folders, globs, list files and plain paths, in a stable order.

    Paths from a list file are taken as listed (a missing one is reported when it is read, like
    any unreadable image); a folder, glob or plain path that yields nothing is an error.
    """
    if isinstance(args, (str, os.PathLike)):
        args = [args]
    if not args:
        raise InputError("no images given")
    seen: set[str] = set()
    images: list[str] = []
    for arg in _flatten(args):
        for entry in _expand_one(arg):
            key = os.path.abspath(entry)
            if key not in seen:
                seen.add(key)
                images.append(os.path.normpath(entry))
    if not images:
        raise InputError("no images given")
    return images


def _flatten(args: Iterable[str | os.PathLike]) -> Iterable[str]:
    for arg in args:
        text = os.fspath(arg)
        if not text:
            raise InputError("empty image path")
        yield text
