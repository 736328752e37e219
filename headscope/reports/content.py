"""What a report says, as plain data: summary, roles, top heads with intervals, the detail sections, control,
examples, provenance."""

from __future__ import annotations

import math
from typing import Any

from ..schema import head_label, weighted
from ..tasks import ALPHA, measures
from .sections import best_head, build_sections, by_key

MAX_SYNTAX_RELATIONS = 20


def _f(x: Any) -> float | None:
    """A JSON-safe float: None for missing, NaN or infinite (a ratio over a zero denominator)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _s(x: Any) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)) or str(x) == "<NA>":
        return None
    return str(x)


def _key_rows(df, task: str, relation: str | None, metric: str):
    sub = df[(df["task"] == task) & (df["metric"] == metric)]
    if relation is not None:
        sub = sub[sub["relation"] == relation]
    return sub


def top_heads(scores: Any, *, model: str, dataset: str, select_on: str | None = None, control: str | None = None,
              causal: bool = False) -> list[dict]:
    """For every measure of ``dataset``: the best head (chosen on ``select_on`` when given), its score and
    interval on ``dataset``, the best baseline with its interval, the BH q-value and the control's best."""
    df = scores[scores["dataset"] == dataset]
    own = df[(df["model"] == model)]
    heads_all = own[own["baseline"].isna() & own["layer"].notna()]
    bases_all = own[own["baseline"].notna()]
    sel = None
    if select_on is not None:
        s = scores[(scores["dataset"] == select_on) & (scores["model"] == model)]
        sel = s[s["baseline"].isna() & s["layer"].notna()]
    ctrl = df[(df["model"] == control) & df["baseline"].isna()] if control else None
    out = []
    for task, relation, metric in ((m.task, m.relation, m.metric) for m in measures(where="top")):
        heads = _key_rows(heads_all, task, relation, metric)
        if heads.empty:
            continue
        head_rows = by_key(heads)
        keys = list(head_rows)
        if task == "syntax":
            n_by = heads.groupby("relation")["n"].max().sort_values(ascending=False)
            order = ["all"] + [r for r in n_by.index if r != "all"][:MAX_SYNTAX_RELATIONS]
            keys = sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else 10**6, k[1] or ""))
            keys = [k for k in keys if k[0] in order]
        base_rows = by_key(_key_rows(bases_all, task, relation, metric))
        sel_rows = by_key(_key_rows(sel, task, relation, metric)) if sel is not None else {}
        ctrl_rows = by_key(_key_rows(ctrl, task, relation, metric)) if ctrl is not None else {}
        for key in keys:
            (rel, direction), h = key, head_rows[key]
            if causal and task == "positional" and rel == "next":
                continue
            s = sel_rows.get(key)
            top, chosen = best_head(h, s)
            picked_on = select_on if chosen else dataset
            b = base_rows.get(key)
            bt = b.loc[b["score"].idxmax()] if b is not None else None
            row = {"task": task, "relation": rel, "direction": direction or None, "metric": metric,
                   "head": head_label(top["layer"], top["head"]), "layer": int(top["layer"]),
                   "head_index": int(top["head"]), "score": _f(top["score"]), "ci_low": _f(top["ci_low"]),
                   "ci_high": _f(top["ci_high"]), "n": int(top["n"]) if _f(top["n"]) is not None else None,
                   "n_reachable": int(top["n_reachable"]) if _f(top["n_reachable"]) is not None else None,
                   "q_value": _f(top["q_value"]), "selected_on": picked_on,
                   "baseline": _s(bt["baseline"]) if bt is not None else None,
                   "baseline_score": _f(bt["score"]) if bt is not None else None,
                   "baseline_ci_low": _f(bt["ci_low"]) if bt is not None else None,
                   "baseline_ci_high": _f(bt["ci_high"]) if bt is not None else None}
            q = row["q_value"]
            row["beats_baseline"] = None if q is None else bool(q < ALPHA)
            c = ctrl_rows.get(key)
            if c is not None:
                ct = c.loc[c["score"].idxmax()]
                row.update(control_head=head_label(ct["layer"], ct["head"]), control_score=_f(ct["score"]),
                           control_ci_low=_f(ct["ci_low"]), control_ci_high=_f(ct["ci_high"]))
            out.append(row)
    return out


def _records(table) -> list[dict]:
    out = []
    for rec in table.to_dict("records"):
        out.append({k: (_f(v) if isinstance(v, float) else (None if _s(v) is None else v)) for k, v in rec.items()})
    return out


def role_grid(roles: Any, num_layers: int, num_heads: int) -> list[list[dict]]:
    """``[layer][head] -> {"label", "family", "roles"}`` for the layer x head role map."""
    from ..analysis.roles import primary_roles

    primary = primary_roles(roles)
    named = roles[roles["role"] != "none"] if len(roles) else roles
    every: dict[tuple[int, int], list[str]] = {}
    for r in named.itertuples():
        every.setdefault((int(r.layer), int(r.head)), []).append(str(r.role))
    grid = []
    for layer in range(num_layers):
        row = []
        for head in range(num_heads):
            label, family = primary.get((layer, head), ("", "none"))
            row.append({"label": label, "family": family,
                        "roles": list(dict.fromkeys(every.get((layer, head), [])))})
        grid.append(row)
    return grid


def _evidence(meta: Any, named: Any) -> dict | None:
    """What the run's ablation was, and how many role assignments it found no effect for (None: no ablation)."""
    ablation = meta.ablation
    if not ablation or "no_effect" not in named:
        return None
    return {"rule": ablation.get("no_effect_rule"), "method": ablation.get("method"),
            "measures": ", ".join(ablation.get("measures") or []),
            "random_draws": ablation.get("random_draws"), "roles": int(len(named)),
            "roles_without_effect": int(named["no_effect"].fillna(False).sum())}


def build_content(result: Any, roles: Any, *, command: str | None = None) -> dict:
    """Everything the Markdown, HTML and JSON reports show, as JSON-ready data."""
    from ..analysis.roles import criteria

    meta = result.meta
    info = result.model
    control = (meta.control or {}).get("model")
    selection = meta.selection or {}
    select_on = (selection.get("select_on") or [None])[0]
    report_sets = [d["name"] for d in meta.datasets if d["name"] not in (selection.get("select_on") or [])]
    tops = {}
    for name in report_sets:
        tops[name] = top_heads(weighted(result.scores), model=info.name, dataset=name, control=control,
                               select_on=select_on if select_on and select_on != name else None,
                               causal=info.is_decoder)
    named = roles[roles["role"] != "none"]
    n_none = int(((roles["role"] == "none")).sum())
    tested = named[named["q_value"].notna()] if len(named) else named
    control_summary = []
    if control:
        for name in report_sets:
            for row in tops[name]:
                if "control_score" in row:
                    control_summary.append({"dataset": name, **{k: row[k] for k in (
                        "task", "relation", "direction", "metric", "head", "score", "ci_low", "ci_high",
                        "control_head", "control_score", "control_ci_low", "control_ci_high")}})
    return {
        "title": f"headscope report: {info.name}",
        "summary": {
            "model": info.name, "description": info.describe(), "is_decoder": bool(info.is_decoder),
            "layers": info.num_layers, "heads": info.num_heads, "kv_heads": info.num_kv_heads,
            "tasks": meta.tasks, "complete": bool(meta.complete),
            "datasets": meta.datasets, "control": meta.control, "selection": selection or None,
            "bootstrap": meta.config.get("bootstrap"),
            "head_names": "L<layer>.H<head>, both 0-based (Clark et al. print 1-based layer-head)",
        },
        "roles": {
            "criteria": [{"role": r, "criterion": c} for r, c in criteria(info.is_decoder)]
            + ([{"role": "no intervals", "criterion": "this run has no intervals (--bootstrap 0): the threshold roles "
                 "used the point estimates and no head was tested against its baseline"}]
               if not meta.config.get("bootstrap") else []),
            "heads_with_a_role": int(info.num_layers * info.num_heads - n_none),
            "heads_without_a_role": n_none,
            "tested_roles_beating_baseline": int(len(tested)),
            "table": _records(named),
            "grid": role_grid(roles, info.num_layers, info.num_heads),
            "evidence": _evidence(meta, named),
        },
        "top_heads": tops,
        "details": [s.record() for s in build_sections(result)],
        "control": control_summary,
        "examples": [{"dataset": e.get("dataset"), "sent_id": e.get("sent_id"), "words": e["words"],
                      "labels": e["labels"]} for e in getattr(result, "examples", [])],
        "provenance": {"command": command or meta.command or "headscope (library call)",
                       "versions": meta.versions, "config": meta.config,
                       "seconds": meta.seconds,
                       "datasets": [{k: d.get(k) for k in ("name", "path", "sha256")} for d in meta.datasets]},
    }
