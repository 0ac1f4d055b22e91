"""A minimal progress bar on stderr, shown only on a terminal (never in pipes, logs or CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "maps") as bar: bar.update()`` — draws ``[#####     ] 12/53 maps``."""

    def __init__(
        self, total: int, desc: str = "", *, stream: TextIO | None = None, enabled: bool | None = None,
        rate: bool = False, done: int = 0,
    ) -> None:
        self.total = max(total, 0)
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = done  # already done (a resumed run): shown, but not counted in the rate
        self.rate = rate  # also show how many per second
        self._base = done
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.05 or self.count >= self.total):
            self._last = now
            width = 28
            done = int(width * self.count / self.total) if self.total else width
            speed = f" {(self.count - self._base) / (now - self._start):.1f}/s" if self.rate and now > self._start else ""
            self.stream.write(f"\r[{'#' * done}{' ' * (width - done)}] {self.count}/{self.total} {self.desc}{speed}")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
