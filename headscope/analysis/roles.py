"""Head roles: explicit criteria over scores, intervals, baselines and the random-init control -> a tidy roles table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import OWN
from ..tasks import ALPHA, MARGIN, MAX_SYNTAX, MIN_N, NOOP, TASKS, Tested, rules

__all__ = ["ALPHA", "MARGIN", "MIN_N", "assign_roles", "criteria", "primary_roles", "short_label", "tested",
           "with_evidence"]

ROLE_COLUMNS = ["model", "dataset", "layer", "head", "role", "family", "task", "relation", "direction", "metric",
                "score", "ci_low", "ci_high", "baseline", "baseline_score", "baseline_ci_low", "baseline_ci_high",
                "own_score", "own_ci_low", "own_ci_high", "written_share",
                "q_value", "control_best", "control_ci_low", "control_ci_high", "beats_control", "criterion",
                "primary"]
# own_*: the head's own positional prediction (syntax roles); written_share: the share of what a sink head
# writes that comes from its target (value-weighted); primary: the head's most telling role (one per head).
# Families in the order a head's primary role is chosen (most specific evidence first).
FAMILY_RANK = {"coreference": 0, "syntax": 1, "induction": 2, "positional": 3, "sink": 4, "broad": 5, "no-op": 6,
               "none": 9}
# The written share that splits each sink role, and what the target is called in the role's name.
SINK_SHARES = {"first": "first_written", "sep": "sep_written"}

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
    out.append(("active / no-op sink", f"where the run has what each key's value writes (headscope's attention "
                                       f"function), a sink is active when at least {NOOP} of what the head writes "
                                       f"(sum_j alpha_ij ||v_j W_O^h||) comes from its target, and a no-op when less "
                                       f"does: it parks its weight there and writes little from it"))
    out.append(("primary", "each head's most telling role: coreference, then syntax, induction, positional, sink, "
                           "broad, no-op sink; within a family the largest margin over its baselines"))
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

    def add(self, r: Any, role: str, family: str, criterion: str, baseline: Any = None, own: Any = None,
            written: float | None = None) -> bool:
        """Add head row ``r``'s ``role`` (with the ``baseline`` row it beat, and the head's ``own`` baseline
        row where its task has one) unless the control matches it; whether it was added."""
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
            "own_score": nan if own is None else _num(own["score"]),
            "own_ci_low": nan if own is None else _num(own["ci_low"]),
            "own_ci_high": nan if own is None else _num(own["ci_high"]),
            "written_share": nan if written is None else float(written),
            "q_value": _num(r["q_value"]), "control_best": cbest, "control_ci_low": clo, "control_ci_high": chi,
            "beats_control": beats, "criterion": criterion, "primary": False})
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
    bases = rows[(rows["task"] == task) & rows["baseline"].notna() & rows["layer"].isna()]
    return (bases.sort_values("score").groupby(["relation", "direction", "metric"], dropna=False)
            .tail(1).set_index(["relation", "direction", "metric"]))


def _own_baselines(heads: Any, task: str, spec: Tested) -> dict:
    """``(relation, direction, layer, head) -> row`` of each head's own baseline of ``task`` (``spec.own``)."""
    if spec.own is None:
        return {}
    own = heads[(heads["task"] == task) & (heads["baseline"] == spec.own)].fillna({"direction": ""})
    return {(r["relation"], r["direction"], int(r["layer"]), int(r["head"])): r for _, r in own.iterrows()}


def _tested_roles(heads: Any, rows: Any, named: _Named) -> None:
    """Roles of the tested tasks: heads that beat the best baseline (and their own baseline, where the task has
    one) after Benjamini–Hochberg by ``MARGIN``. ``heads``: one dataset's head rows of the model; ``rows``: all
    its rows (baselines too)."""
    import pandas as pd

    for task, spec in tested().items():
        t = _significant(heads, task, spec)
        if t.empty:
            continue
        best_base = _best_baselines(rows, task)
        own_base = _own_baselines(heads, task, spec)
        for _, r in t.iterrows():
            try:
                b = best_base.loc[(r["relation"], r["direction"], r["metric"])]
            except KeyError:
                b = None
            direction = "" if pd.isna(r["direction"]) else r["direction"]
            own = own_base.get((r["relation"], direction, int(r["layer"]), int(r["head"])))
            bar = max([float(x["score"]) for x in (b, own) if x is not None and x["score"] == x["score"]],
                      default=float("-inf"))
            if float(r["score"]) - bar < MARGIN:
                continue
            named.add(r, spec.role_of(r), spec.family, f"beats {spec.baseline} (BH q = {r['q_value']:.2g} < {ALPHA})",
                      b, own)


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
            if named.add(r, *_sink_kind(rule, r, heads)):
                have.setdefault(key, set()).add(rule.role)


def _sink_kind(rule: Any, r: Any, heads: Any) -> tuple:
    """``(role, family, criterion, None, None, written share)`` of head row ``r`` under threshold ``rule``: a
    sink splits into an active sink and a no-op one by the share of what the head writes that comes from its
    target (where the run has it: ``positional``'s ``first_written`` / ``sep_written``)."""
    share_of = SINK_SHARES.get(rule.relation) if rule.family == "sink" else None
    if share_of is None:
        return rule.role, rule.family, rule.text, None, None, None
    got = heads[(heads["task"] == rule.task) & (heads["relation"] == share_of) & (heads["layer"] == r["layer"])
                & (heads["head"] == r["head"])]
    if got.empty:
        return rule.role, rule.family, rule.text, None, None, None
    share = float(got["score"].iloc[0])
    if share < NOOP:
        return (f"no-op {rule.role}", "no-op", f"{rule.text}, and less than {NOOP} of what the head writes comes "
                f"from there (value-weighted share {share:.2f}): it parks its weight and writes little",
                None, None, share)
    return (f"active {rule.role}", rule.family, f"{rule.text}, and at least {NOOP} of what the head writes comes "
            f"from there (value-weighted share {share:.2f})", None, None, share)


def _with_unnamed(roles: Any, own: Any, model: str, num_layers: int | None, num_heads: int | None) -> Any:
    """``roles`` with a ``none`` row for each head of the grid that has no role, typed and sorted."""
    import pandas as pd

    if num_layers is None:
        num_layers = int(own["layer"].max()) + 1 if len(own) else 0
    if num_heads is None:
        num_heads = int(own["head"].max()) + 1 if len(own) else 0
    named = set(zip(roles["layer"], roles["head"]))
    none = [{"model": model, "dataset": None, "layer": layer, "head": head, "role": "none", "family": "none",
             "criterion": "meets no role criterion", "primary": True}
            for layer in range(num_layers) for head in range(num_heads) if (layer, head) not in named]
    if none:
        roles = pd.concat([roles, pd.DataFrame(none, columns=ROLE_COLUMNS)], ignore_index=True)
    roles["layer"] = roles["layer"].astype("int64")
    roles["head"] = roles["head"].astype("int64")
    roles["beats_control"] = roles["beats_control"].astype("boolean")
    roles["primary"] = roles["primary"].astype(bool)
    return roles.sort_values(["layer", "head", "family", "role"], ignore_index=True)


def assign_roles(scores: Any, *, model: str, is_decoder: bool = False, control: str | None = None,
                 datasets: list[str] | None = None, num_layers: int | None = None, num_heads: int | None = None):
    """Every head of ``model`` with zero or more roles per dataset, by the criteria in :func:`criteria`.

    Returns a tidy DataFrame (``ROLE_COLUMNS``): one row per (dataset, head, role), plus a row with
    role ``none`` for each head that has no role on any dataset.
    """
    import pandas as pd

    own = scores[(scores["model"] == model) & scores["layer"].notna() & (scores["baseline"].isna()
                                                                          | (scores["baseline"] == OWN))]
    if datasets is None:
        datasets = [d for d in own["dataset"].dropna().unique()]
    named = _Named(model, control, _control_table(scores, control))
    for dataset in datasets:
        heads = own[own["dataset"] == dataset]
        _tested_roles(heads, scores[(scores["dataset"] == dataset) & (scores["model"] == model)], named)
        _threshold_roles(heads, rules(is_decoder), named)
    roles = _mark_primary(_cap_syntax(pd.DataFrame(named.rows, columns=ROLE_COLUMNS)))
    return _with_unnamed(roles, own, model, num_layers, num_heads)


def _margins(roles: Any) -> Any:
    """Each role's margin over the higher of its baselines (0 where it has none)."""
    import numpy as np

    bar = np.fmax(roles["baseline_score"].astype(float), roles["own_score"].astype(float))
    return (roles["score"].astype(float) - bar).fillna(0.0)


def _cap_syntax(roles: Any) -> Any:
    """At most ``MAX_SYNTAX`` syntax roles per head and dataset: those with the largest margins; the criterion
    of the ones kept names the relations left out (a head that beats its baselines on many relations is a
    general-purpose head, not a specialist of each)."""
    if roles.empty:
        return roles
    roles = roles.assign(_margin=_margins(roles))
    drop = []
    syntax = roles[roles["family"] == "syntax"].sort_values("_margin", ascending=False, kind="stable")
    for _, grp in syntax.groupby(["dataset", "layer", "head"], sort=False):
        if len(grp) <= MAX_SYNTAX:
            continue
        rest = grp.iloc[MAX_SYNTAX:]
        drop += list(rest.index)
        names = ", ".join(str(r).removeprefix("syntax:") for r in rest["role"])
        for i in grp.index[:MAX_SYNTAX]:
            roles.at[i, "criterion"] += (f"; it also beats its baselines on {len(rest)} more (kept out: a head keeps "
                                         f"its {MAX_SYNTAX} largest margins): {names}")
    return roles.drop(index=drop).drop(columns="_margin").reset_index(drop=True)


def _mark_primary(roles: Any) -> Any:
    """Mark each head's primary role: its most specific evidence (``FAMILY_RANK``), then the largest margin
    over its baselines, then the highest score."""
    if roles.empty:
        return roles
    ranked = roles.assign(_rank=roles["family"].map(FAMILY_RANK).fillna(8), _margin=_margins(roles),
                          _score=roles["score"].astype(float))
    ranked = ranked.sort_values(["_rank", "_margin", "_score"], ascending=[True, False, False], kind="stable")
    first = ranked.drop_duplicates(["layer", "head"]).index
    roles["primary"] = roles.index.isin(first)
    return roles


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


# Added by ``with_patching`` when the run patched every head on contrast pairs (``headscope run --patch``).
PATCH_COLUMNS = ["patching_method", "patching_effect", "patching_ci_low", "patching_ci_high", "patching_causal"]
PATCH_MIN = 0.02   # a patching effect below this share of the logit difference is no causal effect


def patching_causal(effect: Any, low: Any, high: Any) -> bool:
    """Whether a head's patching effect counts: at least ``PATCH_MIN`` of the logit difference, and an interval
    (where there is one) that leaves out 0."""
    import math

    if effect is None or effect != effect or abs(float(effect)) < PATCH_MIN:
        return False
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return True
    return float(low) > 0 or float(high) < 0


def patching_per_head(table: Any) -> Any:
    """One row per single head of a patching table (``interventions.patching``): the exact noising effect where
    it ran, else attribution's, with ``causal`` (``patching_causal``)."""
    single = table[table["layer"].notna() & table["head"].notna() & (table["direction"] == "noising")]
    method = "exact" if (single["method"] == "exact").any() else "attribution"
    out = single[single["method"] == method][["layer", "head", "heads", "method", "effect", "ci_low", "ci_high"]]
    out = out.assign(layer=out["layer"].astype(int), head=out["head"].astype(int))
    out["causal"] = [patching_causal(e, lo, hi) for e, lo, hi in zip(out["effect"], out["ci_low"], out["ci_high"])]
    return out.reset_index(drop=True)


def with_patching(roles: Any, table: Any) -> Any:
    """``roles`` with each head's patching effect on contrast pairs beside each of its roles (``PATCH_COLUMNS``:
    the share of the logit difference that patching the head's output moves, noising, exact where it ran, its
    interval, and whether it counts, ``patching_causal``)."""
    per = patching_per_head(table).set_index(["layer", "head"])
    out = roles.copy()
    keys = list(zip(out["layer"].astype(int), out["head"].astype(int))) if len(out) else []
    got = [per.loc[k] if k in per.index else None for k in keys]
    for column, field_name in zip(PATCH_COLUMNS, ("method", "effect", "ci_low", "ci_high", "causal")):
        out[column] = [None if g is None else g[field_name] for g in got]
    out["patching_causal"] = out["patching_causal"].astype("boolean")
    return out


def primary_roles(roles: Any) -> dict[tuple[int, int], tuple[str, str]]:
    """``(layer, head) -> (short label, family)``: each head's primary role (``_mark_primary``: coreference,
    syntax, induction, positional, sink, broad, no-op sink, by the largest margin within a family), for the
    role map. Tables read back from a roles.csv written before there was a ``primary`` column are ranked
    here the same way."""
    out: dict[tuple[int, int], tuple[str, str]] = {}
    if roles is None or not len(roles):
        return out
    r = roles if "primary" in roles.columns and roles["primary"].any() else _mark_primary(
        roles.assign(own_score=roles.get("own_score", float("nan"))).reset_index(drop=True))
    for _, top in r[r["primary"].astype(bool)].iterrows():
        out[(int(top["layer"]), int(top["head"]))] = (short_label(str(top["role"])), str(top["family"]))
    return out


def short_label(role: str) -> str:
    """A few characters for a cell of the role map: ``obj>h`` for ``syntax:obj dep_to_head`` (``>d``: head_to_dep)."""
    if role.startswith("syntax:"):
        rel, _, direction = role[len("syntax:"):].partition(" ")
        return rel + (">d" if direction == "head_to_dep" else ">h" if direction == "dep_to_head" else "")
    if role.startswith(("no-op ", "active ")):     # no-op sinks in parentheses: they write little
        kind, _, sink = role.partition(" ")
        label = short_label(sink)
        return f"({label})" if kind == "no-op" else label
    return {"previous-token": "prev", "next-token": "next", "coreference": "coref", "duplicate-token": "dup",
            "induction": "induct", "local window": "local", "punctuation": "punct", "BOS sink": "BOS",
            "[CLS] sink": "CLS", "[SEP] sink": "SEP", "none": ""}.get(role, role)
