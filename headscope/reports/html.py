"""report.html: one self-contained page (inline CSS, images as data URIs, no scripts) from the report content."""

from __future__ import annotations

import base64
from pathlib import Path

from ..tasks import ALPHA, MARGIN, MIN_N


def data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(content: dict, figures: dict) -> str:
    """The page. Every value from data or models goes through Jinja's autoescaping."""
    import jinja2

    from .sections import effect_text, interval_text, q_text, runs_html, score_text

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True)
    env.globals.update(score=score_text, ci=lambda lo, hi, metric: interval_text(lo, hi, metric).strip(), qfmt=q_text,
                       runs=runs_html, effect=effect_text, alpha=ALPHA, margin_points=f"{100 * MARGIN:.0f}",
                       min_n=MIN_N)
    template = env.get_template("report.html.j2")
    no_role = [f"L{layer}.H{head}" for layer, row in enumerate(content["roles"]["grid"])
               for head, cell in enumerate(row) if not cell["roles"]]
    return template.render(c=content, figures=figures, no_role=no_role)
