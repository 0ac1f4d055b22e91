"""Small helpers every stage shares."""

from __future__ import annotations

import math

__all__ = ["json_number"]


def json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: those become null."""
    value = float(value)
    return value if math.isfinite(value) else None
