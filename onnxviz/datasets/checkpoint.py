"""Resumable runs: every finished shard (or Ray partial) is written to a checkpoint folder beside
the output folder, ``DIR.onnxviz-resume/``, and a rerun of the same job reads them back and only
does the rest.

The folder holds ``job.json`` (what the job is: the model file's hash, the image list's hash and
every setting the results depend on) and one ``part-NNNNNN.npz`` per finished part, each written
under a temporary name and renamed, so an interruption never leaves a half-written part. A
checkpoint from another job is refused (``--restart`` discards it); a folder that is not an
onnxviz checkpoint is never touched. The folder is removed once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxvizError
from ..graph.save import write_file_atomic
from .engine import Part

__all__ = ["Checkpoint", "checkpoint_dir", "job_identity"]

MARKER = "onnxviz_dataset_checkpoint"
JOB = "job.json"


def checkpoint_dir(output: Path) -> Path:
    output = Path(output)
    return output.parent / f"{output.name}.onnxviz-resume"


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def job_identity(model_path: str | None, images: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same job: the model's content, the image list, the settings."""
    digest = hashlib.blake2b(digest_size=16)
    for image in images:
        digest.update(os.path.abspath(image).encode("utf-8", "surrogateescape") + b"\n")
    model_hash = None
    if model_path is not None and Path(model_path).is_file():
        model_hash = _file_hash(Path(model_path))
    return {"model_hash": model_hash, "images": len(images), "images_hash": digest.hexdigest(), "settings": settings}


class Checkpoint:
    """The checkpoint folder of one output folder (created when the first part is saved)."""

    def __init__(self, folder: Path, identity: dict[str, Any], *, restart: bool = False) -> None:
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity))  # as it reads back from JSON
        self._next = 0
        if self.folder.exists() or self.folder.is_symlink():
            self._check_ours()
            if restart:
                shutil.rmtree(self.folder)
            elif self._read_identity() != self.identity:
                raise OnnxvizError(
                    f"checkpoint {self.folder} is from a different job (the model, the images or the settings changed): "
                    "pass --restart to discard it, or choose another -o"
                )

    def _check_ours(self) -> None:
        if self.folder.is_symlink() or not self.folder.is_dir():
            raise OnnxvizError(f"{self.folder} exists and is not an onnxviz checkpoint folder; move it away or choose another -o")
        try:
            data = json.loads((self.folder / JOB).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get(MARKER) != 1:
            raise OnnxvizError(f"{self.folder} exists and is not an onnxviz checkpoint folder; move it away or choose another -o")
        unknown = [
            p.name for p in self.folder.iterdir()
            if p.name != JOB and not (p.name.startswith(("part-", ".part-", ".job.json.")))
        ]  # fmt: skip
        if unknown:
            raise OnnxvizError(f"checkpoint folder {self.folder} holds files onnxviz did not write ({unknown[0]}); move them away")

    def _read_identity(self) -> Any:
        return json.loads((self.folder / JOB).read_text(encoding="utf-8")).get("job")

    @property
    def exists(self) -> bool:
        return (self.folder / JOB).is_file()

    def load(self) -> tuple[Part | None, int]:
        """The merge of every saved part (None when there is none) and how many parts there were."""
        if not self.exists:
            return None, 0
        total: Part | None = None
        for stale in self.folder.glob(".*"):  # a write cut short by a hard kill (a file, or a scratch folder)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        files = sorted(self.folder.glob("part-*.npz"))
        for path in files:
            try:
                part = Part.from_bytes(path.read_bytes())
            except (OSError, ValueError, KeyError) as exc:
                raise OnnxvizError(f"checkpoint part {path} cannot be read ({exc}); pass --restart to start over") from None
            total = part if total is None else total.merge(part)
            self._next = max(self._next, int(path.stem.split("-")[1]) + 1)
        return total, len(files)

    def save(self, part: Part | bytes) -> Path:
        """Write one finished part (atomically), creating the folder on first use."""
        if not self.exists:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write(JOB, json.dumps({MARKER: 1, "job": self.identity}, indent=1).encode("utf-8"))
        data = part if isinstance(part, bytes) else part.to_bytes()
        name = f"part-{self._next:06d}.npz"
        self._next += 1
        return self._write(name, data)

    def _write(self, name: str, data: bytes) -> Path:
        # Atomic, with the user's umask, and nothing left behind on a handled exit.
        write_file_atomic(self.folder / name, data)
        return self.folder / name

    def remove(self) -> None:
        if self.exists:
            shutil.rmtree(self.folder, ignore_errors=True)


def done_mask(part: Part | None, n: int) -> np.ndarray:
    """Which of the job's ``n`` images a (merged) part already covers."""
    mask = np.zeros(n, bool)
    if part is not None and part.images.size:
        mask[part.images[(part.images >= 0) & (part.images < n)]] = True
    return mask
