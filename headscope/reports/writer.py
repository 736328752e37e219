"""Write a result's files into an output folder: scores.csv, report.md, run.json, figures/*.png."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError

log = logging.getLogger(__name__)


def _write_text(path: Path, text: str) -> None:
    # Write to a temporary name first, so an interrupted write never leaves a half file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadscopeError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise HeadscopeError(f"output folder {out_dir} is not writable; choose another with --out")


def write_csv(table: Any, path: Path) -> None:
    """A table as CSV, written under a temporary name first (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_report(result: Any, out_dir: Path, *, figures: bool = True, command: str | None = None) -> Path:
    from .figures import heatmaps
    from .markdown import render_markdown

    prepare_out_dir(out_dir)
    write_csv(result.scores, out_dir / "scores.csv")
    run = dict(result.meta)
    if command is not None:
        run["command"] = command
    run.setdefault("command", "headscope (library call)")
    run["files"] = ["scores.csv", "report.md", "run.json"]
    for name, table in getattr(result, "tables", {}).items():
        write_csv(table, out_dir / f"{name}.csv")
        run["files"].append(f"{name}.csv")
    figure_files: list[str] = []
    if figures and len(result.scores):
        try:
            figure_files = heatmaps(result.scores, out_dir / "figures")
        except Exception as exc:  # a figure must never cost the tables
            log.warning("figures were not written: %s", exc)
    run["files"] += [f"figures/{f}" for f in figure_files]
    _write_text(out_dir / "report.md", render_markdown(result, figure_files))
    _write_text(out_dir / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    return out_dir
