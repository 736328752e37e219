"""Report writers (CSV, Markdown, run.json, heatmaps), built only from result tables and metadata."""

from __future__ import annotations

from .writer import write_report

__all__ = ["write_report"]
