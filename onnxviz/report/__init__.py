"""The writing stage: output folders staged and renamed into place, PNG + manifest writers, and
the self-contained HTML report (``onnxviz.report.write_report``)."""

from __future__ import annotations

from .html import write_report

__all__ = ["write_report"]
