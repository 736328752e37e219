"""report.html: one self-contained page (inline CSS, images as data URIs, no scripts) from the report content."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

PERCENT_METRICS = ("accuracy", "uas")


def _score(value: Any, metric: Any) -> str:
    if value is None or value != value:
        return "—"
    if metric in PERCENT_METRICS:
        return f"{100 * float(value):.1f}"
    return f"{float(value):.3f}"


def _ci(lo: Any, hi: Any, metric: Any) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return "[no interval]"
    return f"[{_score(lo, metric)}, {_score(hi, metric)}]"


def _q(q: Any) -> str:
    if q is None or q != q:
        return "—"
    return "<1e-4" if q < 1e-4 else f"{q:.2g}"


def data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(content: dict, figures: dict) -> str:
    """The page. Every value from data or models goes through Jinja's autoescaping."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True)
    env.globals.update(score=_score, ci=_ci, qfmt=_q)
    template = env.get_template("report.html.j2")
    no_role = [f"L{layer}.H{head}" for layer, row in enumerate(content["roles"]["grid"])
               for head, cell in enumerate(row) if not cell["roles"]]
    return template.render(c=content, figures=figures, no_role=no_role)
