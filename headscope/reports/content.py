"""What a report says, as plain data: summary, roles, top heads with intervals, the detail sections, control,
examples, provenance."""

from __future__ import annotations

import math
from typing import Any

from ..schema import head_label, weighted
from ..tasks import ALPHA, BOUNDED_METRICS, MIN_N, measures
from .sections import SCALE, below_chance, best_head, build_sections, by_key

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
    bases_all = own[own["baseline"].notna() & own["layer"].isna()]   # not a head's own baseline
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
            order = ["all"] + [r for r in n_by.index if r != "all" and n_by[r] >= MIN_N][:MAX_SYNTAX_RELATIONS]
            keys = sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else 10**6, k[1] or ""))
            keys = [k for k in keys if k[0] in order]
        base_rows = by_key(_key_rows(bases_all, task, relation, metric))
        sel_rows = by_key(_key_rows(sel, task, relation, metric)) if sel is not None else {}
        ctrl_rows = by_key(_key_rows(ctrl, task, relation, metric)) if ctrl is not None else {}
        for key in keys:
            (rel, direction), h = key, head_rows[key]
            if causal and task == "positional" and rel == "next":
                continue
            if (h["n"].max() if h["n"].notna().any() else MIN_N) < MIN_N:
                continue     # too few instances to name a role: not a top head either
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
            if row["baseline"] == "chance":
                row["below_chance"] = below_chance(row["score"], row["ci_high"], row["baseline_score"])
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


NOTABLE = 8              # heads named at the top of a report
NOTABLE_PER_FAMILY = 2   # ... at most this many of one family
_NOTABLE_FAMILIES = ("coreference", "syntax", "induction", "positional", "sink")


def _share_text(x: Any) -> str:
    return "—" if x is None or x != x else f"{float(x):.2f}"


def evidence_text(r: Any) -> str:
    """One line of evidence for a role row: what the head does, against what."""
    from .sections import q_text, score_text

    metric = r["metric"]
    score = score_text(r["score"], metric)
    if r["family"] in ("syntax", "coreference") and r.get("baseline_score") == r.get("baseline_score"):
        text = f"{metric} {score} against {r['baseline']} {score_text(r['baseline_score'], metric)}"
        if r.get("own_score") == r.get("own_score") and r.get("own_score") is not None:
            text += f" and its own positional habit {score_text(r['own_score'], metric)}"
        return text + f" (q {q_text(r['q_value'])})"
    if r.get("written_share") == r.get("written_share") and r.get("written_share") is not None:
        return (f"{_share_text(r['score'])} of its weight on the sink, {_share_text(r['written_share'])} of what it "
                f"writes comes from there")
    lo = r.get("ci_low")
    return f"{r['relation']} {metric} {score}" + (f" (95% lower bound {score_text(lo, metric)})" if lo == lo and
                                                  lo is not None else "")


def _removed(r: Any) -> str:
    """What ablating the head did, where the run ablated every head ('' otherwise)."""
    effect = r.get("ablation_effect")
    if effect is None or effect != effect:
        return ""
    ratio = r.get("ablation_ratio_to_random")
    return (f"; removing it moves {r['ablation_measure']} by {float(effect):.3g}"
            + (f" ({float(ratio):.1f}x random heads)" if ratio == ratio and ratio is not None else "")
            + (", no measurable effect" if str(r.get("no_effect")) == "True" else ""))


def _patched(r: Any) -> str:
    """What patching the head's output between contrast pairs did, where the run patched every head ('' otherwise)."""
    effect = r.get("patching_effect")
    if effect is None or effect != effect:
        return ""
    return (f"; patching its output moves {float(effect):+.2f} of the logit difference"
            + ("" if str(r.get("patching_causal")) == "True" else " (no causal effect)"))


PATCH_SHOWN = 8   # heads listed by patching effect


def patching_summary(result: Any, roles: Any) -> dict | None:
    """What patching every head on contrast pairs showed (``headscope run --patch``): the heads that move the
    answer most, with their attention roles; heads that move it and have no role; role assignments whose head
    moves nothing. None without patching; ``{"skipped": why}`` when it failed."""
    from ..analysis.roles import PATCH_MIN, patching_per_head

    meta = result.meta.patching
    if meta and "skipped" in meta:
        return {"skipped": meta["skipped"]}
    table = getattr(result, "tables", {}).get("patching")
    if table is None or not meta:
        return None
    per = patching_per_head(table)
    named = roles[roles["role"] != "none"] if len(roles) else roles
    role_of: dict = {}
    for _, r in named.iterrows():
        role_of.setdefault((int(r["layer"]), int(r["head"])), []).append(str(r["role"]))
    ranked = per.reindex(per["effect"].abs().sort_values(ascending=False, kind="stable").index)

    def row(r: Any) -> dict:
        return {"head": head_label(r["layer"], r["head"]), "effect": _f(r["effect"]), "ci_low": _f(r["ci_low"]),
                "ci_high": _f(r["ci_high"]), "causal": bool(r["causal"]),
                "roles": list(dict.fromkeys(role_of.get((int(r["layer"]), int(r["head"])), [])))}

    causal = ranked[ranked["causal"]]
    without = [row(r) for _, r in causal.iterrows() if (int(r["layer"]), int(r["head"])) not in role_of]
    quiet = {(int(r["layer"]), int(r["head"])) for _, r in per.iterrows() if not r["causal"]}
    idle = [f"{head_label(la, h)} {role}" for (la, h), rs in sorted(role_of.items()) if (la, h) in quiet for role in rs]
    return {"dataset": meta.get("dataset"), "pairs": meta.get("pairs"), "ld_clean": _f(meta.get("ld_clean")),
            "ld_corrupt": _f(meta.get("ld_corrupt")), "method": str(per["method"].iloc[0]) if len(per) else None,
            "rule": f"|effect| >= {PATCH_MIN:g} of the logit difference and a 95% interval that leaves out 0",
            "top": [row(r) for _, r in ranked.head(PATCH_SHOWN).iterrows()], "causal_heads": int(len(causal)),
            "without_role": without, "roles": int(len(named)), "roles_without_effect": len(idle),
            "idle_roles": idle}


def notable_heads(roles: Any) -> dict:
    """The first thing a report says: a few heads to look at first (each head's primary role, the strongest of
    each family) with their evidence, and how many heads have each kind of role."""
    named = roles[roles["role"] != "none"] if len(roles) else roles
    counts = []      # heads by the family of their main role; roles: every assignment of that family
    main = roles[roles["primary"].astype(bool)] if len(roles) and "primary" in roles else roles.iloc[:0]
    for family in ("coreference", "syntax", "induction", "positional", "sink", "no-op", "broad", "none"):
        heads = main[main["family"] == family].drop_duplicates(["layer", "head"])
        every = named[named["family"] == family] if len(named) else named
        if len(heads) or len(every):
            having = every.drop_duplicates(["layer", "head"]) if family != "none" else heads
            counts.append({"family": family, "heads": int(len(heads)), "roles": int(len(every)),
                           "names": [head_label(a, b) for a, b in zip(having["layer"], having["head"])]})
    picked: list[dict] = []
    if len(named) and "primary" in named:
        primary = named[named["primary"].astype(bool) & named["family"].isin(_NOTABLE_FAMILIES)]
        primary = primary.assign(
            _rank=primary["family"].map({f: i for i, f in enumerate(_NOTABLE_FAMILIES)}),
            _margin=(primary["score"].astype(float) - primary[["baseline_score", "own_score"]].astype(float)
                     .max(axis=1)).fillna(primary["score"].astype(float)))
        for _, grp in primary.sort_values(["_rank", "_margin"], ascending=[True, False]).groupby("_rank", sort=True):
            for _, r in grp.head(NOTABLE_PER_FAMILY).iterrows():
                others = named[(named["layer"] == r["layer"]) & (named["head"] == r["head"]) & ~named["primary"]]
                picked.append({"head": head_label(r["layer"], r["head"]), "layer": int(r["layer"]),
                               "head_index": int(r["head"]), "role": str(r["role"]), "family": str(r["family"]),
                               "dataset": _s(r["dataset"]), "why": evidence_text(r) + _removed(r) + _patched(r),
                               "also": list(dict.fromkeys(str(x) for x in others["role"]))})
    return {"heads": picked[:NOTABLE], "counts": counts}


DISAGREE = 12     # rows of the weight-vs-norm table


def weight_vs_norm(scores: Any, model: str, datasets: list[str], k: int = DISAGREE) -> dict | None:
    """Where attention weight and value-weighted attention (norm) disagree most: the ``k`` head x measure
    pairs (bounded measures, head rows, at least ``MIN_N`` instances) with the largest difference, and the median difference over all of
    them; None when the run scored no norm view."""
    import pandas as pd

    norm = weighted(scores, "norm")
    if norm.empty:
        return None
    keys = ["dataset", "task", "relation", "direction", "metric", "layer", "head"]

    def heads(df: Any) -> Any:
        return df[(df["model"] == model) & df["baseline"].isna() & df["layer"].notna() & df["dataset"].isin(datasets)
                  & df["metric"].isin(BOUNDED_METRICS) & (df["n"].fillna(MIN_N) >= MIN_N)]

    both = heads(weighted(scores)).merge(heads(norm), on=keys, suffixes=("_w", "_n"))
    if both.empty:
        return None
    diff = both["score_n"].astype(float) - both["score_w"].astype(float)
    top = both.assign(diff=diff).reindex(diff.abs().sort_values(ascending=False, kind="stable").index).head(k)
    rows = [{"head": head_label(r["layer"], r["head"]), "dataset": r["dataset"], "task": r["task"],
             "measure": " ".join(str(x) for x in (r["relation"], r["direction"]) if not pd.isna(x)),
             "metric": r["metric"], "weight": _f(r["score_w"]), "norm": _f(r["score_n"]), "diff": _f(r["diff"])}
            for _, r in top.iterrows()]
    return {"pairs": int(len(both)), "median_abs_diff": _f(float(diff.abs().median())), "rows": rows}


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
            "scale": SCALE,
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
        "notable": notable_heads(roles),
        "patching": patching_summary(result, roles),
        "weighting": weight_vs_norm(result.scores, info.name, report_sets),
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
