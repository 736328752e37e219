"""Write a result's files into an output folder: scores, roles, report.md/.html/.json, run.json, and the figures
(drawn by ``figures``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .figures import Drawn, ReportFigures

log = logging.getLogger(__name__)


def write_text(path: Path, text: str) -> None:
    """UTF-8 text, written under a temporary name first (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(table: Any, path: Path) -> None:
    """A table as CSV, written under a temporary name first (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_report(result: Any, out_dir: Path, *, figures: bool = True, command: str | None = None,
                 force: bool = False) -> Path:
    """scores.csv, roles.csv, report.md, report.html, report.json, run.json and figures/ into ``out_dir``.

    The folder is written whole: into a temporary sibling that replaces ``out_dir`` at the end (see
    ``folder.staged_output``; a folder of other files is refused unless ``force``). Tables come
    first, so a failing figure never costs them. Ctrl-C while figures are drawn stops the drawing;
    the tables, reports and run.json are still written, and the run is marked partial
    (``result.meta.complete`` is False, ``interrupted`` says where).
    """
    from ..run.interrupts import shielded
    from .folder import staged_output

    with shielded() as noted, staged_output(Path(out_dir), "run", force=force) as tmp:
        _write_run(result, tmp, figures=figures, command=command, noted=noted)
    return Path(out_dir)


def _write_run(result: Any, out_dir: Path, *, figures: bool, command: str | None, noted: Any) -> None:
    """Everything but the figures runs shielded from Ctrl-C (``noted`` says whether one came)."""
    import time

    from ..run.interrupts import interruptible
    from .content import build_content

    started = time.perf_counter()
    scores = result.scores
    write_csv(scores, out_dir / "scores.csv")
    run = result.meta.record()
    if command is not None:
        run["command"] = command
    run.setdefault("command", "headscope (library call)")
    control = (run.get("control") or {}).get("model")
    roles = result.roles
    write_csv(roles, out_dir / "roles.csv")
    run["files"] = ["scores.csv", "roles.csv", "report.md", "report.html", "report.json", "run.json"]
    for name, table in getattr(result, "tables", {}).items():
        write_csv(table, out_dir / f"{name}.csv")
        run["files"].append(f"{name}.csv")
    drawing = None
    if figures and len(scores) and not noted.hit:
        drawing = ReportFigures(result, roles, control, out_dir / "figures")     # drawn while content is built
    content = build_content(result, roles, command=run["command"])
    interrupted = "while writing the tables: figures were not drawn" if noted.hit else None
    drawn = Drawn()
    if drawing is not None and interrupted is not None:
        drawing.cancel(drawn)
    elif drawing is not None:
        try:
            with interruptible():
                drawing.finish(drawn)
        except KeyboardInterrupt:
            interrupted = "while drawing figures: only the figures finished before it are kept"
            log.warning("interrupted %s", interrupted)
            drawn.keep_finished(out_dir / "figures")
    if interrupted:
        result.meta.stopped(interrupted)
        run.update(complete=False, interrupted=interrupted)
        content["summary"]["complete"] = False
    _write_reports(result, content, drawn, out_dir)
    run["files"] += content["figures"]
    run["report_seconds"] = round(time.perf_counter() - started, 3)
    write_text(out_dir / "run.json", json.dumps(run, indent=2, default=str) + "\n")


def _write_reports(result: Any, content: dict, drawn: Drawn, out_dir: Path) -> None:
    """report.md, report.json and report.html, with the figures that were drawn."""
    from .html import data_uri, render_html
    from .markdown import render_markdown

    fig_dir = out_dir / "figures"
    if drawn.examples:
        content["example_heads"] = drawn.example_heads
        content["example_why"] = drawn.example_why
    content["examples"] = [e for e in content["examples"] if any(e["words"] == ex["words"] for _, ex, _ in drawn.examples)]
    content["figures"] = [f"figures/{f}" for f in drawn.files()]
    html_figures = {"role_map": data_uri(fig_dir / "role_map.png") if drawn.role_map else None,
                    "role_map_norm": data_uri(fig_dir / "role_map_norm.png") if drawn.role_map_norm else None,
                    "heatmaps": [{"name": f, "src": data_uri(fig_dir / f)} for f in drawn.heatmaps],
                    "control": [{"name": f, "src": data_uri(fig_dir / f)} for f in drawn.control],
                    "examples": [{"dataset": ex.get("dataset"), "sent_id": ex.get("sent_id"), "text": text,
                                  "src": data_uri(fig_dir / name)} for name, ex, text in drawn.examples]}
    write_text(out_dir / "report.md", render_markdown(result, drawn.files(), content=content))
    write_text(out_dir / "report.json", json.dumps(content, indent=2, default=str, allow_nan=False) + "\n")
    write_text(out_dir / "report.html", render_html(content, html_figures, viewer=_viewer(result)))


def _viewer(result: Any) -> dict | None:
    """The attention viewer's data for the run's example sentences (None: no examples with links), opened on
    the first head of the most telling role family."""
    from ..analysis.roles import primary_roles
    from .viewer import payload

    examples = [e for e in getattr(result, "examples", []) if e.get("links")]
    if not examples:
        return None
    info, roles = result.model, result.roles
    if "model" in roles.columns:
        roles = roles[roles["model"] == info.name]
    primary = primary_roles(roles) if len(roles) else {}
    order = ("syntax", "coreference", "induction", "positional")
    ranked = sorted(((order.index(f), key) for key, (_, f) in primary.items() if f in order))
    layer, head = ranked[0][1] if ranked else (0, 0)
    docs = []
    for e in examples:
        text = " ".join(e["words"])
        title = " ".join(str(x) for x in (e.get("dataset"), e.get("sent_id")) if x) + ": " + text
        docs.append({"title": title if len(title) <= 100 else title[:99] + "…", "links": e["links"],
                     "distance": e.get("distance")})
    return payload(docs, model=info.name, num_layers=info.num_layers, num_heads=info.num_heads, roles=roles,
                   initial={"layer": int(layer), "head": int(head), "word": 0, "level": "word"})
