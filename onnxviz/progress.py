"""A minimal progress bar on stderr, shown only on a terminal (never in pipes, logs or CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "maps") as bar: bar.update()`` — draws ``[#####     ] 12/53 maps``."""

    def __init__(self, total: int, desc: str = "", *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = max(total, 0)
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.05 or self.count >= self.total):
            self._last = now
            width = 28
            done = int(width * self.count / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * done}{' ' * (width - done)}] {self.count}/{self.total} {self.desc}")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
