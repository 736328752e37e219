"""Head roles: explicit criteria over scores, intervals, baselines and the random-init control -> a tidy roles table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tasks import ALPHA, MARGIN, MIN_N, TASKS, Tested, rules

__all__ = ["ALPHA", "MARGIN", "MIN_N", "assign_roles", "criteria", "primary_roles", "short_label", "tested",
           "with_evidence"]

ROLE_COLUMNS = ["model", "dataset", "layer", "head", "role", "family", "task", "relation", "direction", "metric",
                "score", "ci_low", "ci_high", "baseline", "baseline_score", "baseline_ci_low", "baseline_ci_high",
                "q_value", "control_best", "control_ci_low", "control_ci_high", "beats_control", "criterion"]

# Added by ``with_evidence`` when the run ablated every head: the causal evidence beside each role.
EVIDENCE_COLUMNS = ["ablation_measure", "ablation_effect", "ablation_ci_low", "ablation_ci_high",
                    "ablation_random_median", "ablation_ratio_to_random", "no_effect"]
# The measure that speaks to a role's task, where the ablation measured it (else the ablation's general one).
ROLE_MEASURES = {"induction": "induction-loss"}

def tested() -> dict[str, Tested]:
    """Tasks with baselines, in task order: a head has the role when it beats the best baseline after BH
    (q < ALPHA); each task's entry says how the role is named."""
    return {t.name: t.tested for t in TASKS.values() if t.tested is not None}


def criteria(is_decoder: bool) -> list[tuple[str, str]]:
    """``(role, criterion)`` for every role, in words, as the reports print them."""
    out = [(t.role.format(relation="<relation>", direction="<direction>"), t.criterion)
           for t in tested().values() if t.criterion]
    out += [(r.role, r.text) for r in rules(is_decoder)]
    out.append(("control", "with --control random-init, a role also needs its 95% lower bound above the best score "
                           "any head of the re-initialised model reaches on the same measure (otherwise architecture, "
                           "position or tokenisation alone explain it); beats_control says how each role fared. "
                           "Random heads attend almost uniformly, so 'broad' rarely survives the control: broad "
                           "attention is what an untrained model does"))
    out.append(("none", "a head that meets no criterion is listed with role 'none'"))
    return out


def _control_table(scores: Any, control: str | None) -> dict:
    """``(dataset, task, relation, direction, metric) -> (score, ci_low, ci_high)`` of the best control head."""
    if control is None:
        return {}
    c = scores[(scores["model"] == control) & scores["baseline"].isna() & scores["layer"].notna()]
    keys = ["dataset", "task", "relation", "direction", "metric"]
    c = c.fillna({"direction": ""}).sort_values("score").groupby(keys, dropna=False).tail(1)
    return {tuple(r[k] for k in keys): (float(r["score"]), _num(r["ci_low"]), _num(r["ci_high"]))
            for _, r in c.iterrows()}


def _num(x: Any) -> float:
    return float("nan") if x is None or x != x or str(x) == "<NA>" else float(x)


@dataclass
class _Named:
    """The role rows of one model named so far, and the random-init control each role must beat."""

    model: str
    control: str | None
    control_best: dict
    rows: list[dict] = field(default_factory=list)

    def add(self, r: Any, role: str, family: str, criterion: str, baseline: Any = None) -> bool:
        """Add head row ``r``'s ``role`` (with the ``baseline`` row it beat) unless the control matches it;
        whether it was added."""
        import pandas as pd

        direction = "" if pd.isna(r["direction"]) else r["direction"]
        nan = float("nan")
        cbest, clo, chi = self.control_best.get((r["dataset"], r["task"], r["relation"], direction, r["metric"]),
                                                (nan, nan, nan))
        bound = r["score"] if pd.isna(r["ci_low"]) else r["ci_low"]
        beats = None if self.control is None or cbest != cbest else bool(bound > cbest)
        if beats is False:
            return False
        self.rows.append({
            "model": self.model, "dataset": r["dataset"], "layer": int(r["layer"]), "head": int(r["head"]),
            "role": role, "family": family, "task": r["task"], "relation": r["relation"],
            "direction": direction or None, "metric": r["metric"], "score": float(r["score"]),
            "ci_low": _num(r["ci_low"]), "ci_high": _num(r["ci_high"]),
            "baseline": None if baseline is None else str(baseline["baseline"]),
            "baseline_score": nan if baseline is None else _num(baseline["score"]),
            "baseline_ci_low": nan if baseline is None else _num(baseline["ci_low"]),
            "baseline_ci_high": nan if baseline is None else _num(baseline["ci_high"]),
            "q_value": _num(r["q_value"]), "control_best": cbest, "control_ci_low": clo, "control_ci_high": chi,
            "beats_control": beats, "criterion": criterion})
        return True


def _significant(heads: Any, task: str, spec: Tested) -> Any:
    """The head rows of ``task`` that beat their best baseline after BH, on enough instances, and may name a role
    (not the summary relation; with ``best_of``, each head's best row of that metric only)."""
    relation = heads["relation"]
    t = heads[(heads["task"] == task) & heads["q_value"].notna() & (heads["q_value"] < ALPHA)
              & (heads["n"] >= MIN_N) & (relation != spec.summary if spec.summary is not None
                                         else relation.notna())]
    if spec.best_of is not None:
        t = t[t["metric"] == spec.best_of]
        t = t.sort_values("score", ascending=False).drop_duplicates(["layer", "head"])
    return t


def _best_baselines(rows: Any, task: str) -> Any:
    """``task``'s best baseline row per ``(relation, direction, metric)`` (the index)."""
    bases = rows[(rows["task"] == task) & rows["baseline"].notna()]
    return (bases.sort_values("score").groupby(["relation", "direction", "metric"], dropna=False)
            .tail(1).set_index(["relation", "direction", "metric"]))


def _tested_roles(heads: Any, rows: Any, named: _Named) -> None:
    """Roles of the tested tasks: heads that beat the best baseline after Benjamini–Hochberg by ``MARGIN``.
    ``heads``: one dataset's head rows of the model; ``rows``: all its rows (baselines too)."""
    for task, spec in tested().items():
        t = _significant(heads, task, spec)
        if t.empty:
            continue
        best_base = _best_baselines(rows, task)
        for _, r in t.iterrows():
            try:
                b = best_base.loc[(r["relation"], r["direction"], r["metric"])]
            except KeyError:
                b = None
            if b is not None and float(r["score"]) - float(b["score"]) < MARGIN:
                continue
            named.add(r, spec.role_of(r), spec.family, f"beats {spec.baseline} (BH q = {r['q_value']:.2g} < {ALPHA})",
                      b)


def _threshold_roles(heads: Any, rule_list: list, named: _Named) -> None:
    """Threshold roles on positional and induction measures (``rules``) of one dataset's head rows."""
    have: dict[tuple[int, int], set] = {}
    for rule in rule_list:
        t = heads[(heads["task"] == rule.task) & (heads["relation"] == rule.relation)
                  & (heads["metric"] == rule.metric)]
        if t.empty:
            continue
        bound = t["ci_low"].where(t["ci_low"].notna(), t["score"])
        for _, r in t[bound >= rule.threshold].iterrows():
            key = (int(r["layer"]), int(r["head"]))
            if have.get(key, set()) & set(rule.unless):
                continue
            if named.add(r, rule.role, rule.family, rule.text):
                have.setdefault(key, set()).add(rule.role)


def _with_unnamed(roles: Any, own: Any, model: str, num_layers: int | None, num_heads: int | None) -> Any:
    """``roles`` with a ``none`` row for each head of the grid that has no role, typed and sorted."""
    import pandas as pd

    if num_layers is None:
        num_layers = int(own["layer"].max()) + 1 if len(own) else 0
    if num_heads is None:
        num_heads = int(own["head"].max()) + 1 if len(own) else 0
    named = set(zip(roles["layer"], roles["head"]))
    none = [{"model": model, "dataset": None, "layer": layer, "head": head, "role": "none", "family": "none",
             "criterion": "meets no role criterion"}
            for layer in range(num_layers) for head in range(num_heads) if (layer, head) not in named]
    if none:
        roles = pd.concat([roles, pd.DataFrame(none, columns=ROLE_COLUMNS)], ignore_index=True)
    roles["layer"] = roles["layer"].astype("int64")
    roles["head"] = roles["head"].astype("int64")
    roles["beats_control"] = roles["beats_control"].astype("boolean")
    return roles.sort_values(["layer", "head", "family", "role"], ignore_index=True)


def assign_roles(scores: Any, *, model: str, is_decoder: bool = False, control: str | None = None,
                 datasets: list[str] | None = None, num_layers: int | None = None, num_heads: int | None = None):
    """Every head of ``model`` with zero or more roles per dataset, by the criteria in :func:`criteria`.

    Returns a tidy DataFrame (``ROLE_COLUMNS``): one row per (dataset, head, role), plus a row with
    role ``none`` for each head that has no role on any dataset.
    """
    import pandas as pd

    own = scores[(scores["model"] == model) & scores["layer"].notna()]
    if datasets is None:
        datasets = [d for d in own["dataset"].dropna().unique()]
    named = _Named(model, control, _control_table(scores, control))
    for dataset in datasets:
        heads = own[own["dataset"] == dataset]
        _tested_roles(heads, scores[(scores["dataset"] == dataset) & (scores["model"] == model)], named)
        _threshold_roles(heads, rules(is_decoder), named)
    return _with_unnamed(pd.DataFrame(named.rows, columns=ROLE_COLUMNS), own, model, num_layers, num_heads)


def with_evidence(roles: Any, ablation: Any) -> Any:
    """``roles`` with the causal evidence of every head ablated alone (an ``ablate(heads="each")`` table) beside
    each role: the effect of removing the head on the measure that speaks to the role's task
    (``ROLE_MEASURES``, else the ablation's first general measure), its interval, the ratio to ablating random
    heads, and its ``no_effect`` flag (``ablation.no_effect``). Heads whose ablation changed nothing keep their
    roles, flagged."""
    single = ablation[~ablation["heads"].str.contains(",")]
    by = {(r["heads"], r["measure"]): r for _, r in single.iterrows()}
    measures = list(dict.fromkeys(single["measure"]))
    general = next((m for m in measures if m not in ROLE_MEASURES.values()), measures[0] if measures else None)
    out = roles.copy()
    cols: dict = {c: [] for c in EVIDENCE_COLUMNS}
    for _, r in roles.iterrows():
        measure = ROLE_MEASURES.get(r["task"]) if isinstance(r["task"], str) else None
        row = by.get((f"L{r['layer']}.H{r['head']}", measure if measure in measures else general))
        if row is None:
            for c in EVIDENCE_COLUMNS:
                cols[c].append(None)
            continue
        vals = [row["measure"], row["effect"], row["ci_low"], row["ci_high"], row["random_median"],
                row["ratio_to_random"]]
        for c, v in zip(EVIDENCE_COLUMNS, vals):
            cols[c].append(v)
        cols["no_effect"].append(bool(row["no_effect"]))
    for c, v in cols.items():
        out[c] = v
    out["no_effect"] = out["no_effect"].astype("boolean")
    return out


def primary_roles(roles: Any) -> dict[tuple[int, int], tuple[str, str]]:
    """``(layer, head) -> (short label, family)``: each head's most telling role, for the role map.

    Order of preference: coreference, syntax (largest margin over its baseline), induction, positional,
    sink, broad; then 'none'.
    """
    rank = {"coreference": 0, "syntax": 1, "induction": 2, "positional": 3, "sink": 4, "broad": 5, "none": 9}
    out: dict[tuple[int, int], tuple[str, str]] = {}
    if roles is None or not len(roles):
        return out
    r = roles.copy()
    r["margin"] = (r["score"].astype(float) - r["baseline_score"].astype(float)).fillna(0.0)
    r["rank"] = r["family"].map(rank).fillna(8)
    for (layer, head), grp in r.sort_values(["rank", "margin"], ascending=[True, False]).groupby(["layer", "head"]):
        top = grp.iloc[0]
        out[(int(layer), int(head))] = (short_label(str(top["role"])), str(top["family"]))
    return out


def short_label(role: str) -> str:
    """A few characters for a cell of the role map: ``obj>h`` for ``syntax:obj dep_to_head`` (``>d``: head_to_dep)."""
    if role.startswith("syntax:"):
        rel, _, direction = role[len("syntax:"):].partition(" ")
        return rel + (">d" if direction == "head_to_dep" else ">h" if direction == "dep_to_head" else "")
    return {"previous-token": "prev", "next-token": "next", "coreference": "coref", "duplicate-token": "dup",
            "induction": "induct", "local window": "local", "punctuation": "punct", "BOS sink": "BOS",
            "[CLS] sink": "CLS", "[SEP] sink": "SEP", "none": ""}.get(role, role)
