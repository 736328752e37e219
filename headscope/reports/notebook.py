"""What Jupyter shows for a result (``AnalysisResult._repr_html_``): the summary, the best head per measure and
the role map with its legend, as escaped HTML with no script."""

from __future__ import annotations

from typing import Any

# Syntax relations in the notebook's table (the most frequent first); report.html has all of them.
NOTEBOOK_RELATIONS = 4

TEMPLATE = """\
<div class="headscope-result" style="font: 13px/1.4 system-ui, sans-serif">
<p><b>{{ s.model }}</b>: {{ s.layers }} layers × {{ s.heads }} heads{% if s.is_decoder %}, decoder{% endif %};
{{ s.tasks|join(", ") }} on {% for d in s.datasets %}{{ d.name }}{% if d.get("scored") is not none %} ({{ d.scored }} {{ d.get("kind") or "inputs" }}){% endif %}{% if not loop.last %}, {% endif %}{% endfor %}.
{{ roles.heads_with_a_role }} heads have a role, {{ roles.heads_without_a_role }} none.{% if not s.complete %}
<b>Incomplete run.</b>{% endif %}</p>
{% for name, rows in tops.items() %}
<table style="border-collapse: collapse">
<tr><th colspan="6" style="text-align: left">best head per measure on {{ name }}</th></tr>
<tr><th>task</th><th>measure</th><th>head</th><th>score [95% CI]</th><th>best baseline</th><th>q</th></tr>
{% for r in rows %}<tr><td>{{ r.task }}</td><td>{{ r.relation or "" }}{% if r.direction %} {{ r.direction }}{% endif %}</td>
<td>{{ r.head }}</td><td>{{ score(r.score, r.metric) }} {{ ci(r.ci_low, r.ci_high, r.metric) }}</td>
<td>{{ r.baseline or "—" }}{% if r.baseline_score is not none %} {{ score(r.baseline_score, r.metric) }}{% endif %}</td>
<td>{{ qfmt(r.q_value) }}</td></tr>
{% endfor %}{% if more[name] %}<tr><td colspan="6">… and {{ more[name] }} more syntax relations in report.html</td></tr>{% endif %}</table>
{% endfor %}
<table style="border-collapse: collapse; margin-top: 8px" class="headscope-role-map">
<tr><th title="layer \\ head">L\\H</th>{% for h in range(s.heads) %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in roles.grid %}<tr><th>{{ loop.index0 }}</th>{% for cell in row %}<td title="L{{ loop.index0 }}: {{ cell.roles|join("; ") or "no role" }}" style="background: {{ colours.get(cell.family, "#eee") }}; color: {{ "#000" if cell.family in ("none", "broad") else "#fff" }}; min-width: 3.2em; padding: 1px 3px; font-size: 11px; border: 1px solid #fff">{{ cell.label }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p style="font-size: 11px">{% for f, c in colours.items() %}<span style="border-left: 12px solid {{ c }}; padding-left: 4px; margin-right: 10px">{{ f }}</span>{% endfor %}</p>
</div>
"""


def result_html(result: Any) -> str:
    """The HTML that Jupyter shows for ``result``."""
    import jinja2

    from .content import build_content
    from .figures import FAMILY_COLORS
    from .sections import interval_text, q_text, score_text

    content = build_content(result, result.roles)
    tops, more = {}, {}
    for name, rows in content["top_heads"].items():
        syntax = [r for r in rows if r["task"] == "syntax" and r["relation"] != "all"]
        shown = syntax[:2 * NOTEBOOK_RELATIONS]                      # both directions of the most frequent
        keep = {id(r) for r in shown}
        tops[name] = [r for r in rows if r["task"] != "syntax" or r["relation"] == "all" or id(r) in keep]
        more[name] = len({r["relation"] for r in syntax}) - len({r["relation"] for r in shown})
    env = jinja2.Environment(autoescape=True)
    env.globals.update(score=score_text, ci=lambda lo, hi, metric: interval_text(lo, hi, metric).strip(), qfmt=q_text)
    return env.from_string(TEMPLATE).render(s=content["summary"], roles=content["roles"], tops=tops, more=more,
                                            colours={"none": "#eeeeee", **{k: v for k, v in FAMILY_COLORS.items()
                                                                          if k != "none"}})
