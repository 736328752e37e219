"""report.html: one self-contained page (inline CSS, images as data URIs, no script but the attention viewer's,
allowed by its CSP hash) from the report content."""

from __future__ import annotations

import base64
from pathlib import Path

from ..tasks import ALPHA, MARGIN, MIN_N


def data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(content: dict, figures: dict, viewer: dict | None = None) -> str:
    """The page. Every value from data or models goes through Jinja's autoescaping; ``viewer`` (a
    ``viewer.payload``) adds the attention viewer of the example sentences, whose data block escapes itself."""
    import jinja2

    from .viewer import asset, csp_hash, fragment

    from .markdown import counts_text
    from .sections import effect_text, interval_text, q_text, runs_html, score_text

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True)
    env.globals.update(score=score_text, ci=lambda lo, hi, metric: interval_text(lo, hi, metric).strip(), qfmt=q_text,
                       runs=runs_html, effect=effect_text, alpha=ALPHA, margin=f"{MARGIN:g}",
                       min_n=MIN_N, counts_text=counts_text)
    template = env.get_template("report.html.j2")
    no_role = [f"L{layer}.H{head}" for layer, row in enumerate(content["roles"]["grid"])
               for head, cell in enumerate(row) if not cell["roles"]]
    embed = None
    if viewer is not None:
        script = asset("viewer.js")
        embed = {"script": script, "script_hash": csp_hash(script), "css": asset("viewer.css"),
                 "fragment": fragment(viewer)}
    return template.render(c=content, figures=figures, no_role=no_role, viewer=embed)
