"""The report's detail sections, one per task and dataset, built once as data that Markdown, HTML and JSON render."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..schema import OWN, head_label, weighted
from ..tasks import MASS, TASKS, measures


class Data(str):
    """Text that comes from the data or the model (dataset, relation, baseline names): each renderer makes it
    inert in its format. Other text of a section is headscope's own, where `x` marks code."""


@dataclass
class Section:
    """One task's details on one dataset: a paragraph, a table and points after it. A paragraph or point is a
    list of runs (``str`` or :class:`Data`); a cell is one run. ``align``: ``l`` or ``r`` per column."""

    task: str
    dataset: str
    title: str
    intro: list = field(default_factory=list)
    columns: list = field(default_factory=list)
    align: str = ""
    rows: list = field(default_factory=list)
    points: list = field(default_factory=list)

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What a section builder reads: one model's score rows, whether it is a decoder, the held-out selection
    dataset (None: best heads chosen on the reported data), the dataset's run.json entry and the model."""

    scores: Any
    causal: bool = False
    select_on: str | None = None
    meta: dict = field(default_factory=dict)
    info: Any = None


def best_head(heads: Any, selection: Any = None, *, lowest: bool = False) -> tuple[Any, bool]:
    """The best head's row among ``heads`` (one measure's head rows on the reported data), and whether it was
    chosen on ``selection`` (the same measure's head rows on the held-out selection data): the head that
    scores best there, reported here; the best head here when there is no selection or it lacks the head.
    ``lowest``: the best is the lowest score (the most focused head's entropy)."""
    def top(rows: Any) -> Any:
        return rows.loc[rows["score"].idxmin() if lowest else rows["score"].idxmax()]

    if selection is not None and len(selection):
        pick = top(selection)
        match = heads[(heads["layer"] == pick["layer"]) & (heads["head"] == pick["head"])]
        if len(match):
            return match.iloc[0], True
    return top(heads), False


def ranked_heads(heads: Any, k: int, selection: Any = None) -> Any:
    """The ``k`` best head rows of ``heads``, ranked on ``selection`` when given (as in :func:`best_head`)."""
    if selection is None or not len(selection):
        return heads.nlargest(k, "score")
    order = selection.nlargest(len(selection), "score")[["layer", "head"]]
    return order.merge(heads, on=["layer", "head"], how="inner").head(k)


# Every score, accuracy and share in a report is on one 0–1 scale (never in %), with three decimals.
SCALE = "Scores, accuracies and shares are on a 0–1 scale throughout (an accuracy of 0.419 is 41.9%)"


def _num(x: float) -> str:
    """A score or a difference of scores on the 0–1 scale."""
    return f"{x:.3f}"


def _ci(row: Any) -> str:
    """`` [lo, hi]`` when the row has a bootstrap interval."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f" [{_num(lo)}, {_num(hi)}]"


def q_text(q: Any) -> str:
    """A Benjamini–Hochberg q-value as the reports print it."""
    if q is None or q != q or str(q) == "<NA>":
        return "—"
    return "<1e-4" if q < 1e-4 else f"{q:.2g}"


def score_text(value: Any, metric: Any) -> str:
    """A score as the reports print it: on the 0–1 scale (``SCALE``), accuracies too."""
    if value is None or value != value:
        return "—"
    return _num(value)


def interval_text(lo: Any, hi: Any, metric: Any) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return " [no interval]"
    return f" [{score_text(lo, metric)}, {score_text(hi, metric)}]"


def effect_text(r: dict) -> tuple[str, str]:
    """A role's ablation effect with its interval (``no effect`` when flagged), and its ratio to random heads."""
    effect = r.get("ablation_effect")
    if effect is None or effect != effect:
        return "—", "—"
    lo, hi, ratio = r.get("ablation_ci_low"), r.get("ablation_ci_high"), r.get("ablation_ratio_to_random")
    ci = f" [{lo:+.3g}, {hi:+.3g}]" if lo is not None and lo == lo and hi is not None and hi == hi else ""
    return (f"{effect:+.3g}{ci}" + (" (no effect)" if r.get("no_effect") else ""),
            "—" if ratio is None or ratio != ratio else f"{ratio:.1f}")


def _head_kv(layer: int, head: int, info: Any) -> str:
    """``L7.H4``, with ``[KV 1]`` appended when heads share key/value heads."""
    label = head_label(layer, head)
    if info is not None and info.num_kv_heads < info.num_heads:
        label += f" [KV {info.kv_head(int(head))}]"
    return label


def _selected(ctx: Context, task: str) -> Any:
    """The head rows of ``task`` on the selection data (None without held-out selection)."""
    if not ctx.select_on:
        return None
    df = ctx.scores
    rows = df[(df["task"] == task) & (df["dataset"] == ctx.select_on) & df["baseline"].isna() & df["layer"].notna()]
    return rows if len(rows) else None   # the task did not run on the selection data


def _same(rows: Any, relation: str | None = None, direction: str | None = None) -> Any:
    """``rows`` (None passes through) of one relation and direction."""
    if rows is None:
        return None
    if relation is not None:
        rows = rows[rows["relation"] == relation]
    return rows if direction is None else rows[rows["direction"] == direction]


def by_key(rows: Any, columns: tuple[str, ...] = ("relation", "direction")) -> dict:
    """``rows`` split on ``columns`` in one pass, ``{key tuple: rows}`` with a missing value keyed as None
    (a section that looks up many keys reads a dict instead of masking the whole frame for each)."""
    import pandas as pd

    if rows is None or not len(rows):
        return {}
    out = {}
    for key, sub in rows.groupby(list(columns), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out[tuple(None if pd.isna(k) else k for k in key)] = sub
    return out


def _rows(ctx: Context, task: str, dataset: str) -> Any:
    df = ctx.scores
    return df[(df["task"] == task) & (df["dataset"] == dataset)]


def _best_vs_baselines(sub: Any, relation: str, sel: Any = None) -> tuple[Any, dict]:
    heads = sub[(sub["relation"] == relation) & sub["baseline"].isna()]
    if heads.empty:
        return None, {}
    top, _ = best_head(heads, _same(sel, relation))
    bases = {str(r["baseline"]): float(r["score"]) for _, r in sub[(sub["relation"] == relation)
                                                                   & sub["baseline"].notna()
                                                                   & sub["layer"].isna()].iterrows()}
    return top, bases


def _section(task: str) -> Any:
    """A section builder of ``task``, called as ``builder(ctx, dataset)``: it gets the task's rows on the dataset
    and its head rows on the selection data (None without selection), and is not called where the task has
    no rows."""
    import functools

    def wrap(build: Any) -> Any:
        @functools.wraps(build)
        def run(ctx: Context, dataset: str) -> Section | None:
            sub = _rows(ctx, task, dataset)
            return None if sub.empty else build(ctx, dataset, sub, _selected(ctx, task))
        return run
    return wrap


@_section("syntax")
def syntax(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    chosen = (["chosen on the same data: an optimistic, Clark-et-al.-style number"] if not ctx.select_on else
              ["chosen on ", Data(ctx.select_on), ", reported here: held-out selection"])
    intro = ["Accuracy of the best head per relation and direction against the best fixed-offset baseline (",
             *chosen, ") and against what the head's own positional habit predicts (`own`: how often its "
             "most-attended word lies at each offset, applied to the relation's instances); [95% bootstrap "
             "interval over sentences]; q: Benjamini–Hochberg-corrected p-value that the head beats both."]
    if ctx.causal:
        intro.append(" Causal model: `reachable` counts the instances the mask lets any head get right "
                     "(dep_to_head: the head word is to the left; head_to_dep: to the right); accuracy is over "
                     "all n, so reachable / n is the ceiling, and the offset baselines obey the same mask.")
    out = Section("syntax", dataset, "Syntax", intro, ["relation", "direction", "n", "reachable", "best head",
                                                       "score", "best baseline", "baseline score", "own", "margin",
                                                       "q"],
                  "llrrlrlrrrr")
    heads = sub[sub["baseline"].isna()]
    bases = sub[sub["baseline"].notna() & sub["layer"].isna()]
    own_rows = {(r["relation"], r["direction"], r["layer"], r["head"]): r
                for _, r in sub[sub["baseline"] == OWN].iterrows()}
    order = heads.groupby("relation")["n"].max().sort_values(ascending=False).index.tolist()
    if "all" in order:
        order.remove("all")
        order.insert(0, "all")
    head_rows, base_rows, sel_rows = by_key(heads), by_key(bases), by_key(sel)
    for rel in order:
        for direction in ("dep_to_head", "head_to_dep"):
            h = head_rows.get((rel, direction))
            if h is None:
                continue
            top, _ = best_head(h, sel_rows.get((rel, direction)))
            if int(top["n_reachable"]) == 0:
                out.rows.append([Data(rel), direction, str(int(top["n"])), "0", *["—"] * 7])
                continue
            b = base_rows.get((rel, direction), ())
            if len(b):
                bt = b.loc[b["score"].idxmax()]
                bname, bscore = str(bt["baseline"]), float(bt["score"])
            else:
                bname, bscore = "—", float("nan")
            own = own_rows.get((rel, direction, top["layer"], top["head"]))
            oscore = float("nan") if own is None else float(own["score"])
            margin = float(top["score"]) - (bscore if not oscore > bscore else oscore)
            out.rows.append([Data(rel), direction, str(int(top["n"])), str(int(top["n_reachable"])),
                             head_label(top["layer"], top["head"]), f"{_num(top['score'])}{_ci(top)}", Data(bname),
                             f"{_num(bscore) if bscore == bscore else '—'}{_ci(bt) if len(b) else ''}",
                             f"{_num(oscore)}{_ci(own)}" if own is not None else "—",
                             _num(margin) if margin == margin else "—", q_text(top.get("q_value"))])
    return out


@_section("tree")
def tree(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    out = Section("tree", dataset, "Whole-tree UAS", [], ["direction", "best head", "UAS", "right-branching",
                                                          "left-branching"], "llrrr")
    for direction in ("dep_to_head", "head_to_dep"):
        s = sub[sub["direction"] == direction]
        h = s[s["baseline"].isna()]
        if h.empty:
            continue
        top, _ = best_head(h, _same(sel, None, direction))
        base = {str(r["baseline"]): float(r["score"]) for _, r in s[s["baseline"].notna()].iterrows()}
        out.rows.append([direction, head_label(top["layer"], top["head"]), f"{_num(top['score'])}{_ci(top)}",
                         _num(base.get("right_branching", float("nan"))),
                         _num(base.get("left_branching", float("nan")))])
    return out


@_section("positional")
def positional(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    from ..analysis.positional import POSITIONAL_SHARE

    out = Section("positional", dataset, "Positional patterns",
                  ["Mean attention mass per query token; the head with the most of each, and how many heads put "
                   "over half their attention there."],
                  ["pattern", "top head", "mass", f"heads > {MASS}", "layer means (0..L-1)"], "llrrl")
    for name in (m.relation for m in measures(where="detail", task="positional")):
        s = sub[(sub["relation"] == name)]
        if s.empty:
            continue
        top, _ = best_head(s, _same(sel, name))
        if ctx.causal and name == "next":
            out.rows.append(["next", "—", "—", "—", "not visible under the causal mask"])
            continue
        by_layer = s.groupby("layer")["score"].mean()
        out.rows.append([name, head_label(top["layer"], top["head"]), f"{_num(top['score'])}{_ci(top)}",
                         str(int((s["score"] > MASS).sum())), " ".join(f"{v:.2f}" for v in by_layer)])
    ent = sub[sub["relation"] == "entropy_norm"]
    conf = sub[sub["relation"] == "confidence"]
    if len(ent) and len(conf):
        lo, _ = best_head(ent, _same(sel, "entropy_norm"), lowest=True)
        hi, _ = best_head(ent, _same(sel, "entropy_norm"))
        c, _ = best_head(conf, _same(sel, "confidence"))
        out.points += [[f"Most focused head (lowest normalised entropy): {head_label(lo['layer'], lo['head'])} "
                        f"({lo['score']:.3f}); broadest: {head_label(hi['layer'], hi['head'])} ({hi['score']:.3f})."],
                       [f"Most confident head (Voita): {head_label(c['layer'], c['head'])} (mean max weight "
                        f"{c['score']:.3f})."]]
    share = sub[(sub["relation"] == "argmax_offset") & (sub["metric"] == "share")]
    offset = sub[(sub["relation"] == "argmax_offset") & (sub["metric"] == "offset")]
    if len(share):
        merged = share.merge(offset[["layer", "head", "score"]], on=["layer", "head"], suffixes=("", "_offset"))
        flagged = merged[merged["score"] >= POSITIONAL_SHARE].sort_values("score", ascending=False)
        if len(flagged):
            items = ", ".join(f"{head_label(r['layer'], r['head'])} (offset {int(r['score_offset']):+d}, "
                              f"{r['score']:.2f} of rows)" for _, r in flagged.iterrows())
            out.points.append([f"Positional heads (argmax at one offset in ≥ {POSITIONAL_SHARE:g} of rows): "
                               f"{items}."])
        else:
            shares = None if sel is None else sel[(sel["relation"] == "argmax_offset") & (sel["metric"] == "share")]
            best, _ = best_head(merged, shares)
            out.points.append([f"No positional head (≥ {POSITIONAL_SHARE:g} of rows at one offset); closest: "
                               f"{head_label(best['layer'], best['head'])} at offset {int(best['score_offset']):+d} "
                               f"({best['score']:.2f} of rows)."])
    return out


def _chosen(ctx: Context, held_out: bool) -> list:
    return ["chosen on ", Data(ctx.select_on), ", reported here"] if held_out and ctx.select_on else \
        ["chosen on the same data"]


@_section("coref")
def coref(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    from ..analysis.coref import BASELINES, GROUPS

    sel = None if sel is None else sel[sel["metric"] == "accuracy"]
    out = Section("coref", dataset, "Coreference",
                  ["Antecedent selection accuracy: the mention's head word attends most, among earlier words, to "
                   "the head of an antecedent (best head ", *_chosen(ctx, sel is not None), "), against rule "
                   "baselines."],
                  ["mention type", "n", "best head", "score", *BASELINES], "lrlr" + "r" * len(BASELINES))
    for group in GROUPS:
        top, bases = _best_vs_baselines(sub, group, sel)
        if top is None:
            continue
        out.rows.append([group, str(int(top["n"])), head_label(top["layer"], top["head"]),
                         f"{_num(top['score'])}{_ci(top)}",
                         *(_num(bases[b]) if b in bases else "—" for b in BASELINES)])
    return out


@_section("gap")
def gap(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    top, _ = _best_vs_baselines(sub, "all", None if sel is None else sel[sel["metric"] == "accuracy"])
    pick = sub[(sub["layer"] == top["layer"]) & (sub["head"] == top["head"])]
    val = {r["relation"]: r for _, r in pick.iterrows()}
    near = {r["relation"]: r for _, r in sub[sub["baseline"] == "nearest"].iterrows()}
    out = Section("gap", dataset, "GAP",
                  ["Accuracy on rows with exactly one referent: the name whose words get more attention from the "
                   "pronoun. Bias = feminine / masculine accuracy (1.0 is unbiased)."],
                  ["", "overall", "masculine", "feminine", "bias F/M"], "lrrrr")

    def cell(v: dict, key: str) -> str:
        return f"{_num(v[key]['score'])}{_ci(v[key])}" if key in v else "—"

    for label, v in ((f"best head {head_label(top['layer'], top['head'])}", val), ("nearest name", near)):
        out.rows.append([label, cell(v, "all"), cell(v, "masculine"), cell(v, "feminine"), cell(v, "bias")])
    return out


@_section("pairs")
def pairs(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    from ..analysis.pairs import CHANCE

    heads = ranked_heads(sub[(sub["relation"] == "pair") & sub["baseline"].isna()], 5, _same(sel, "pair"))
    n = int(heads["n"].iloc[0])
    intro = [f"A head gets a pair right when the pronoun attends more to the right candidate in both sentences "
             f"({n} pairs; chance {CHANCE[0]:g}, a fixed-position preference 0). Top heads"]
    intro += [" (", *_chosen(ctx, True), "):"] if sel is not None else [":"]
    out = Section("pairs", dataset, "Minimal pairs", intro)
    out.points = [[f"{head_label(r['layer'], r['head'])}: {_num(r['score'])}{_ci(r)} of pairs"]
                  for _, r in heads.iterrows()]
    below = below_chance(heads.iloc[0]["score"], heads.iloc[0].get("ci_high"), CHANCE[0])
    if below:
        out.points.append([f"The best head is {below}."])
    return out


def below_chance(score: Any, ci_high: Any, chance: float) -> str | None:
    """What a pair accuracy under chance means, or None when it is not under chance."""
    if score is None or score != score or score >= chance:
        return None
    text = (f"below chance ({chance:g}): no head gets both sentences of a pair right more often than picking a "
            f"candidate at random would, so none follows the pronoun's referent here")
    if ci_high is not None and ci_high == ci_high and ci_high < chance:
        text += " (its whole 95% interval is below chance: the heads prefer one position or the wrong candidate)"
    return text


@_section("induction")
def induction(ctx: Context, dataset: str, sub: Any, sel: Any) -> Section:
    d = ctx.meta
    out = Section("induction", dataset, "Induction, duplicate-token and previous-token heads",
                  [f"Mean attention to each row's target on {d.get('sequences', '?')} sequences "
                   f"{'BOS ' if d.get('bos') else ''}r r of {d.get('length', '?')} random tokens (rows with a target "
                   f"only)."], ["pattern", "top heads (score)"], "ll")
    for pattern in ("induction", "duplicate", "previous"):
        top = ranked_heads(sub[sub["relation"] == pattern], 3, _same(sel, pattern))
        out.rows.append([pattern, ", ".join(f"{_head_kv(r['layer'], r['head'], ctx.info)} ({r['score']:.3f})"
                                            for _, r in top.iterrows())])
    icl = d.get("in_context_loss") or {}
    if "skipped" in icl:
        out.points.append([f"In-context-learning check not run: {icl['skipped']}."])
    elif icl:
        out.points.append([f"In-context-learning check: mean next-token loss {icl['loss_second_copy']:.2f} nats on "
                           f"the second copy vs {icl['loss_first_copy']:.2f} on the first (difference "
                           f"{icl['difference']:+.2f}, {icl['sequences']} sequences × {icl['tokens_per_copy']} "
                           f"tokens per copy). A much lower second-copy loss means the model copies from context."])
    return out


def runs_html(runs: Any) -> Any:
    """A paragraph, point or cell of a section as safe HTML: every run escaped, and `x` in headscope's own text
    set as code."""
    import re

    from markupsafe import Markup, escape

    out = []
    for r in [runs] if isinstance(runs, str) else runs:
        text = str(escape(r))
        out.append(text if isinstance(r, Data) else re.sub(r"`([^`]+)`", r"<code>\1</code>", text))
    return Markup("".join(out))


def builder(task: str) -> Any:
    """The section builder a task declares (``Task.section``, "module:function"), or None."""
    spec = TASKS[task].section if task in TASKS else ""
    if not spec:
        return None
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def build_sections(result: Any) -> list[Section]:
    """Every task's section on every reported dataset (the selection data is only chosen on), in dataset
    order and, within one, in task order."""
    meta = result.meta
    info = result.model
    scores = weighted(result.scores)
    df = scores[scores["model"] == info.name]
    selection = meta.selection or {}
    select_on = (selection.get("select_on") or [None])[0]
    out = []
    for d in meta.datasets:
        name = d["name"]
        if name in (selection.get("select_on") or []):
            continue
        ctx = Context(df, bool(info.is_decoder), select_on if select_on != name else None, d, info)
        for task in TASKS:
            make = builder(task)
            section = make(ctx, name) if make is not None else None
            if section is not None:
                out.append(section)
    return out
