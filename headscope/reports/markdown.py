"""report.md: best head per relation against the best baseline, positional highlights, provenance."""

from __future__ import annotations

from typing import Any

from ..schema import head_label
from ..tasks import MASS, measures
from .content import best_head, ranked_heads

_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]",
               "\\": "\\\\", "\n": " ", "\r": " "}


def md_text(value: Any) -> str:
    """Text from data (words, names, paths) made inert in Markdown: no HTML, no table breaks, no links or code."""
    return "".join(_MD_ESCAPES.get(c, c) for c in str(value))


def _fmt(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(row: Any) -> str:
    """`` [lo, hi]`` in percent when the row has a bootstrap interval."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f" [{_fmt(lo)}, {_fmt(hi)}]"


def q_text(q: Any) -> str:
    if q is None or q != q or str(q) == "<NA>":
        return "—"
    return "<1e-4" if q < 1e-4 else f"{q:.2g}"


def _kv_groups(info: Any) -> str | None:
    """One line naming each key/value head's query heads (GQA/MQA); None when every head has its own."""
    if info.num_kv_heads >= info.num_heads:
        return None
    size = info.kv_group_size
    groups = ", ".join(f"H{k * size}–H{k * size + size - 1} → KV {k}" if size > 1 else f"H{k} → KV {k}"
                       for k in range(info.num_kv_heads))
    return (f"- Key/value groups ({'MQA' if info.num_kv_heads == 1 else 'GQA'}): {groups}; query heads are what is "
            f"scored, and `kv_head` in scores.csv names each one's group.")


def _head_kv(layer: int, head: int, info: Any) -> str:
    """``L7.H4``, with ``[KV 1]`` appended when heads share key/value heads."""
    label = head_label(layer, head)
    if info is not None and info.num_kv_heads < info.num_heads:
        label += f" [KV {info.kv_head(int(head))}]"
    return label


def _chosen(select_on: str | None) -> str:
    return f"chosen on {md_text(select_on)}, reported here" if select_on else "chosen on the same data"


def _selected(df, task: str, select_on: str | None):
    """The head rows of ``task`` on the selection data (None without held-out selection)."""
    if not select_on:
        return None
    rows = df[(df["task"] == task) & (df["dataset"] == select_on) & df["baseline"].isna() & df["layer"].notna()]
    return rows if len(rows) else None   # the task did not run on the selection data


def _same(rows, relation: str | None = None, direction: str | None = None):
    """``rows`` (None passes through) of one relation and direction."""
    if rows is None:
        return None
    if relation is not None:
        rows = rows[rows["relation"] == relation]
    return rows if direction is None else rows[rows["direction"] == direction]


def _syntax_section(df, dataset: str, causal: bool = False, select_on: str | None = None) -> list[str]:
    sub = df[(df["task"] == "syntax") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    chosen = ("chosen on the same data: an optimistic, Clark-et-al.-style number" if not select_on else
              f"chosen on {md_text(select_on)}, reported here: held-out selection")
    lines = ["", f"### Syntax — {md_text(dataset)}", "",
             f"Accuracy (%) of the best head per relation and direction against the best fixed-offset baseline "
             f"({chosen}); [95% bootstrap interval over sentences]; q: Benjamini–Hochberg-corrected p-value that the "
             f"head beats that baseline."]
    sel = _selected(df, "syntax", select_on)
    if causal:
        lines[-1] += (" Causal model: `reachable` counts the instances the mask lets any head get right "
                      "(dep_to_head: the head word is to the left; head_to_dep: to the right); accuracy is over "
                      "all n, so reachable / n is the ceiling, and the offset baselines obey the same mask.")
    lines += ["",
             "| relation | direction | n | reachable | best head | score | best baseline | baseline score | margin | q |",
             "|---|---|---:|---:|---|---:|---|---:|---:|---:|"]
    heads = sub[sub["baseline"].isna()]
    bases = sub[sub["baseline"].notna()]
    order = (heads.groupby("relation")["n"].max().sort_values(ascending=False).index.tolist())
    if "all" in order:
        order.remove("all")
        order.insert(0, "all")
    for rel in order:
        for direction in ("dep_to_head", "head_to_dep"):
            h = heads[(heads["relation"] == rel) & (heads["direction"] == direction)]
            if h.empty:
                continue
            top, _ = best_head(h, _same(sel, rel, direction))
            if int(top["n_reachable"]) == 0:
                lines.append(f"| {md_text(rel)} | {direction} | {int(top['n'])} | 0 | — | — | — | — | — | — |")
                continue
            b = bases[(bases["relation"] == rel) & (bases["direction"] == direction)]
            if len(b):
                bt = b.loc[b["score"].idxmax()]
                bname, bscore = str(bt["baseline"]), float(bt["score"])
            else:
                bname, bscore = "—", float("nan")
            margin = float(top["score"]) - bscore
            lines.append(f"| {md_text(rel)} | {direction} | {int(top['n'])} | {int(top['n_reachable'])} | "
                         f"{head_label(top['layer'], top['head'])} | {_fmt(top['score'])}{_ci(top)} | {bname} | "
                         f"{_fmt(bscore) if bscore == bscore else '—'}{_ci(bt) if len(b) else ''} | "
                         f"{_fmt(margin) if margin == margin else '—'} | {q_text(top.get('q_value'))} |")
    return lines


def _tree_section(df, dataset: str, select_on: str | None = None) -> list[str]:
    sub = df[(df["task"] == "tree") & (df["dataset"] == dataset)]
    sel = _selected(df, "tree", select_on)
    if sub.empty:
        return []
    lines = ["", f"### Whole-tree UAS — {md_text(dataset)}", "",
             "| direction | best head | UAS | right-branching | left-branching |", "|---|---|---:|---:|---:|"]
    for direction in ("dep_to_head", "head_to_dep"):
        s = sub[sub["direction"] == direction]
        h = s[s["baseline"].isna()]
        if h.empty:
            continue
        top, _ = best_head(h, _same(sel, None, direction))
        base = {str(r["baseline"]): float(r["score"]) for _, r in s[s["baseline"].notna()].iterrows()}
        lines.append(f"| {direction} | {head_label(top['layer'], top['head'])} | {_fmt(top['score'])}{_ci(top)} | "
                     f"{_fmt(base.get('right_branching', float('nan')))} | "
                     f"{_fmt(base.get('left_branching', float('nan')))} |")
    return lines


def _positional_section(df, dataset: str, causal: bool = False, select_on: str | None = None) -> list[str]:
    from ..analysis.positional import POSITIONAL_SHARE

    sub = df[(df["task"] == "positional") & (df["dataset"] == dataset)]
    sel = _selected(df, "positional", select_on)
    if sub.empty:
        return []
    lines = ["", f"### Positional patterns — {md_text(dataset)}", "",
             "Mean attention mass per query token; the head with the most of each, and how many heads put "
             "over half their attention there.", "",
             f"| pattern | top head | mass | heads > {MASS} | layer means (0..L-1) |", "|---|---|---:|---:|---|"]
    for name in (m.relation for m in measures(where="detail", task="positional")):
        s = sub[(sub["relation"] == name)]
        if s.empty:
            continue
        top, _ = best_head(s, _same(sel, name))
        if causal and name == "next":
            lines.append("| next | — | — | — | not visible under the causal mask |")
            continue
        by_layer = s.groupby("layer")["score"].mean()
        lo, hi = top.get("ci_low"), top.get("ci_high")
        interval = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi and lo is not None else ""
        lines.append(f"| {name} | {head_label(top['layer'], top['head'])} | {top['score']:.3f}{interval} | "
                     f"{int((s['score'] > MASS).sum())} | {' '.join(f'{v:.2f}' for v in by_layer)} |")
    ent = sub[sub["relation"] == "entropy_norm"]
    conf = sub[sub["relation"] == "confidence"]
    if len(ent) and len(conf):
        lo, _ = best_head(ent, _same(sel, "entropy_norm"), lowest=True)
        hi, _ = best_head(ent, _same(sel, "entropy_norm"))
        c, _ = best_head(conf, _same(sel, "confidence"))
        lines += ["", f"- Most focused head (lowest normalised entropy): {head_label(lo['layer'], lo['head'])} "
                      f"({lo['score']:.3f}); broadest: {head_label(hi['layer'], hi['head'])} ({hi['score']:.3f}).",
                  f"- Most confident head (Voita): {head_label(c['layer'], c['head'])} (mean max weight "
                  f"{c['score']:.3f})."]
    share = sub[(sub["relation"] == "argmax_offset") & (sub["metric"] == "share")]
    offset = sub[(sub["relation"] == "argmax_offset") & (sub["metric"] == "offset")]
    if len(share):
        merged = share.merge(offset[["layer", "head", "score"]], on=["layer", "head"], suffixes=("", "_offset"))
        flagged = merged[merged["score"] >= POSITIONAL_SHARE].sort_values("score", ascending=False)
        if len(flagged):
            items = ", ".join(f"{head_label(r['layer'], r['head'])} (offset {int(r['score_offset']):+d}, "
                              f"{100 * r['score']:.0f}%)" for _, r in flagged.iterrows())
            lines.append(f"- Positional heads (argmax at one offset in ≥ {POSITIONAL_SHARE:.0%} of rows): {items}.")
        else:
            shares = None if sel is None else sel[(sel["relation"] == "argmax_offset") & (sel["metric"] == "share")]
            best, _ = best_head(merged, shares)
            lines.append(f"- No positional head (≥ {POSITIONAL_SHARE:.0%} of rows at one offset); closest: "
                         f"{head_label(best['layer'], best['head'])} at offset {int(best['score_offset']):+d} "
                         f"({100 * best['score']:.0f}%).")
    return lines


def _data_line(d: dict, max_length: int) -> str:
    kind = d.get("kind")
    unit = {"documents": "windows", "pairs": "pair sentences", "gap": "rows", "generated": "sequences"}.get(
        kind, "sentences")
    text = f"{d['scored']} of {d['sentences']} {unit} scored"
    if kind == "sentences":
        text += f" ({d.get('words', 0)} words)"
    if kind == "documents":
        text += (f" from {d.get('documents', 0)} documents; {d.get('mentions_scored', 0)} of "
                 f"{d.get('mentions_with_antecedent', 0)} mentions with an antecedent scored, "
                 f"{d.get('dropped_antecedent_outside_window', 0)} dropped (antecedents only in an earlier window), "
                 f"{d.get('dropped_sentence_longer_than_window', 0)} dropped (sentence longer than the window); "
                 f"mention heads by rule: {d.get('mention_head_rule', {})}")
    text += (f"; skipped: {d.get('skipped_bad_data', 0)} malformed, {d.get('skipped_too_long', 0)} longer than "
             f"{max_length} tokens")
    if d.get("first_token") and kind != "generated":
        text += f"; inputs start with `{d['first_token']}`"
        if d.get("bos_added"):
            text += f" (put first by headscope in {d['bos_added']}: the tokenizer adds no BOS)"
    if d.get("words_replaced_by_unk"):
        text += f"; {d['words_replaced_by_unk']} words had no piece and were read as the unknown token"
    return text + "."


def _best_vs_baselines(sub, relation: str, sel=None):
    heads = sub[(sub["relation"] == relation) & sub["baseline"].isna()]
    if heads.empty:
        return None, {}
    top, _ = best_head(heads, _same(sel, relation))
    bases = {str(r["baseline"]): float(r["score"]) for _, r in sub[(sub["relation"] == relation)
                                                                   & sub["baseline"].notna()].iterrows()}
    return top, bases


def _coref_section(df, dataset: str, d: dict, select_on: str | None = None) -> list[str]:
    from ..analysis.coref import BASELINES, GROUPS

    sub = df[(df["task"] == "coref") & (df["dataset"] == dataset)]
    sel = _selected(df, "coref", select_on)
    sel = None if sel is None else sel[sel["metric"] == "accuracy"]
    if sub.empty:
        return []
    lines = ["", f"### Coreference — {md_text(dataset)}", "",
             "Antecedent selection accuracy (%): the mention's head word attends most, among earlier words, to the "
             f"head of an antecedent (best head {_chosen(select_on if sel is not None else None)}), against rule "
             "baselines.", "",
             "| mention type | n | best head | score | " + " | ".join(BASELINES) + " |",
             "|---|---:|---|---:|" + "---:|" * len(BASELINES)]
    for group in GROUPS:
        top, bases = _best_vs_baselines(sub, group, sel)
        if top is None:
            continue
        lines.append(f"| {group} | {int(top['n'])} | {head_label(top['layer'], top['head'])} | "
                     f"{_fmt(top['score'])}{_ci(top)} | "
                     + " | ".join(_fmt(bases[b]) if b in bases else "—" for b in BASELINES) + " |")
    return lines


def _gap_section(df, dataset: str, select_on: str | None = None) -> list[str]:
    sub = df[(df["task"] == "gap") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    sel = _selected(df, "gap", select_on)
    top, bases = _best_vs_baselines(sub, "all", None if sel is None else sel[sel["metric"] == "accuracy"])
    pick = sub[(sub["layer"] == top["layer"]) & (sub["head"] == top["head"])]
    val = {r["relation"]: r for _, r in pick.iterrows()}
    near = {r["relation"]: r for _, r in sub[sub["baseline"] == "nearest"].iterrows()}
    lines = ["", f"### GAP — {md_text(dataset)}", "",
             "Accuracy (%) on rows with exactly one referent: the name whose words get more attention from the "
             "pronoun. Bias = feminine / masculine accuracy (1.0 is unbiased).", "",
             "| | overall | masculine | feminine | bias F/M |", "|---|---:|---:|---:|---:|"]
    def cell(v: dict, key: str, pct: bool = True) -> str:
        if key not in v:
            return "—"
        r = v[key]
        if pct:
            return f"{_fmt(r['score'])}{_ci(r)}"
        lo, hi = r.get("ci_low"), r.get("ci_high")
        interval = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi and lo is not None else ""
        return f"{r['score']:.3f}{interval}"

    for label, v in ((f"best head {head_label(top['layer'], top['head'])}", val), ("nearest name", near)):
        lines.append(f"| {label} | {cell(v, 'all')} | {cell(v, 'masculine')} | {cell(v, 'feminine')} | "
                     f"{cell(v, 'bias', pct=False)} |")
    return lines


def _pairs_section(df, dataset: str, select_on: str | None = None) -> list[str]:
    sub = df[(df["task"] == "pairs") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    sel = _selected(df, "pairs", select_on)
    heads = ranked_heads(sub[(sub["relation"] == "pair") & sub["baseline"].isna()], 5, _same(sel, "pair"))
    n = int(heads["n"].iloc[0])
    lines = ["", f"### Minimal pairs — {md_text(dataset)}", "",
             f"A head gets a pair right when the pronoun attends more to the right candidate in both sentences "
             f"({n} pairs; chance 25%, a fixed-position preference 0%). Top heads"
             + (f" ({_chosen(select_on)}):" if sel is not None else ":"), ""]
    lines += [f"- {head_label(r['layer'], r['head'])}: {_fmt(r['score'])}%{_ci(r)} of pairs"
              for _, r in heads.iterrows()]
    return lines


def _induction_section(df, dataset: str, d: dict, info: Any = None, select_on: str | None = None) -> list[str]:
    sub = df[(df["task"] == "induction") & (df["dataset"] == dataset)]
    sel = _selected(df, "induction", select_on)
    if sub.empty:
        return []
    lines = ["", f"### Induction, duplicate-token and previous-token heads — {md_text(dataset)}", "",
             f"Mean attention to each row's target on {d.get('sequences', '?')} sequences "
             f"{'BOS ' if d.get('bos') else ''}r r of {d.get('length', '?')} random tokens (rows with a target only).",
             "", "| pattern | top heads (score) |", "|---|---|"]
    for pattern in ("induction", "duplicate", "previous"):
        top = ranked_heads(sub[sub["relation"] == pattern], 3, _same(sel, pattern))
        lines.append(f"| {pattern} | " + ", ".join(f"{_head_kv(r['layer'], r['head'], info)} ({r['score']:.3f})"
                                                 for _, r in top.iterrows()) + " |")
    icl = d.get("in_context_loss") or {}
    if "skipped" in icl:
        lines += ["", f"- In-context-learning check not run: {icl['skipped']}."]
    elif icl:
        lines += ["", f"- In-context-learning check: mean next-token loss {icl['loss_second_copy']:.2f} nats on the "
                      f"second copy vs {icl['loss_first_copy']:.2f} on the first (difference "
                      f"{icl['difference']:+.2f}, {icl['sequences']} sequences × {icl['tokens_per_copy']} tokens "
                      f"per copy). A much lower second-copy loss means the model copies from context."]
    return lines


def score_text(value: Any, metric: Any) -> str:
    if value is None or value != value:
        return "—"
    return _fmt(value) if metric in ("accuracy", "uas") else f"{value:.3f}"


def interval_text(lo: Any, hi: Any, metric: Any) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return " [no interval]"
    return f" [{score_text(lo, metric)}, {score_text(hi, metric)}]"


def _roles_section(content: dict) -> list[str]:
    from ..analysis.roles import ALPHA

    roles = content["roles"]
    grid = roles["grid"]
    lines = ["", "## Roles", "",
             f"{roles['heads_with_a_role']} heads have at least one role and {roles['heads_without_a_role']} have "
             f"none; {roles['tested_roles_beating_baseline']} role assignments are heads that beat their best "
             f"baseline after Benjamini–Hochberg correction (q < {ALPHA}).", "", "Criteria:", ""]
    lines += [f"- `{r['role']}`: {r['criterion']}." for r in roles["criteria"]]
    lines += ["", "Role map (each head's main role; `+`: it has more; `>h`: dependent attends to head, `>d`: head "
                  "to dependent):", "",
              "| layer | " + " | ".join(f"H{h}" for h in range(len(grid[0]) if grid else 0)) + " |",
              "|---|" + "---|" * (len(grid[0]) if grid else 0)]
    for layer, row in enumerate(grid):
        lines.append(f"| L{layer} | " + " | ".join(md_text(c["label"]) + ("+" if len(c["roles"]) > 1 else "")
                                                   for c in row) + " |")
    control = any(r.get("beats_control") is not None for r in roles["table"])
    lines += ["", "| head | role | data | score [95% CI] | best baseline: score [95% CI] | q | beats baseline |"
              + (" control best | beats control |" if control else ""),
              "|---|---|---|---:|---|---:|---|" + ("---:|---|" if control else "")]
    for r in roles["table"]:
        base = (f"{md_text(r['baseline'])}: {score_text(r['baseline_score'], r['metric'])}"
                f"{interval_text(r.get('baseline_ci_low'), r.get('baseline_ci_high'), r['metric'])}" if r["baseline"] else "—")
        beats = "—" if r["q_value"] is None else ("yes" if r["q_value"] < ALPHA else "no")
        line = (f"| L{r['layer']}.H{r['head']} | {md_text(r['role'])} | {md_text(r['dataset'])} | "
                f"{score_text(r['score'], r['metric'])}{interval_text(r['ci_low'], r['ci_high'], r['metric'])} | "
                f"{base} | {q_text(r['q_value'])} | {beats} |")
        if control:
            bc = r.get("beats_control")
            line += (f" {score_text(r.get('control_best'), r['metric'])}"
                     f"{interval_text(r.get('control_ci_low'), r.get('control_ci_high'), r['metric'])} | "
                     f"{'—' if bc is None else 'yes' if bc else 'no'} |")
        lines.append(line)
    none = [f"L{layer}.H{head}" for layer, row in enumerate(grid) for head, c in enumerate(row) if not c["roles"]]
    if none:
        lines += ["", f"Heads without a role: {', '.join(none)}."]
    return lines


def _top_section(content: dict) -> list[str]:
    lines = []
    control = bool(content.get("control"))
    for name, rows in content["top_heads"].items():
        lines += ["", f"## Top heads — {md_text(name)}", "",
                  "Accuracies in %, masses and entropies as fractions; [95% bootstrap interval]; q: BH-corrected "
                  "p-value that the head beats the best baseline (a role needs more: see the criteria).", "",
                  "| task | measure | n | best head | chosen on | score | best baseline | baseline score | q |"
                  + (" control best |" if control else ""),
                  "|---|---|---:|---|---|---:|---|---:|---:|" + ("---:|" if control else "")]
        for r in rows:
            m = r["metric"]
            measure = md_text(r["relation"]) + (f" {r['direction']}" if r["direction"] else "")
            base = (f"{score_text(r['baseline_score'], m)}{interval_text(r['baseline_ci_low'], r['baseline_ci_high'], m)}"
                    if r["baseline"] else "—")
            line = (f"| {r['task']} | {measure} | {r['n'] if r['n'] is not None else ''} | {r['head']} | "
                    f"{md_text(r['selected_on'])} | {score_text(r['score'], m)}{interval_text(r['ci_low'], r['ci_high'], m)}"
                    f" | {md_text(r['baseline'] or '—')} | {base} | {q_text(r['q_value'])} |")
            if control:
                line += (f" {r['control_head']} {score_text(r['control_score'], m)}"
                         f"{interval_text(r['control_ci_low'], r['control_ci_high'], m)} |" if "control_score" in r
                         else " — |")
            lines.append(line)
    return lines


def _control_section(content: dict) -> list[str]:
    rows = content.get("control") or []
    if not rows:
        return []
    lines = ["", "## Control: trained vs re-initialised", "",
             "The best head of each model on each measure; what training added is the gap.", "",
             "| data | task | measure | trained best | score | control best | score |", "|---|---|---|---|---:|---|---:|"]
    for r in rows:
        m = r["metric"]
        lines.append(f"| {md_text(r['dataset'])} | {r['task']} | {md_text(r['relation'])}"
                     f"{' ' + r['direction'] if r['direction'] else ''} | {r['head']} | "
                     f"{score_text(r['score'], m)}{interval_text(r['ci_low'], r['ci_high'], m)} | {r['control_head']} | "
                     f"{score_text(r['control_score'], m)}{interval_text(r['control_ci_low'], r['control_ci_high'], m)} |")
    return lines


def render_markdown(result: Any, figure_files: list[str], content: dict | None = None) -> str:
    meta = result.meta
    info = result.model
    df = result.scores[result.scores["model"] == info.name]
    selection = meta.get("selection") or {}
    select_on = (selection.get("select_on") or [None])[0]
    lines = [f"# headscope report: {md_text(info.name)}", "",
             f"- Model: {md_text(info.describe())}",
             f"- Tasks: {', '.join(meta.get('tasks', []))}",
             "- Heads are named `L<layer>.H<head>`, both 0-based (Clark et al. print 1-based `layer-head`)."]
    kv = _kv_groups(info)
    if kv:
        lines.append(kv)
    if not meta.get("complete", True):
        lines.append("- **Run interrupted: these results cover only the inputs scored before the stop** (counts "
                     "per dataset below). Batches run in a seeded random order, so the inputs scored are a random "
                     "sample of the batches, not the shortest inputs.")
    for d in meta.get("datasets", []):
        lines.append(f"- Data {md_text(d['name'])} ({d.get('kind', '?')}; tasks {', '.join(d.get('tasks', []))}): "
                     + _data_line(d, meta["config"]["max_length"]))
    if meta.get("control"):
        lines.append(f"- Control: {md_text(meta['control']['model'])}, {meta['control']['description']}.")
    if selection:
        lines.append(f"- Held-out selection: best heads chosen on {md_text(', '.join(selection['select_on']))}, "
                     f"reported on {md_text(', '.join(selection['report_on']))}.")
    if content is not None:
        lines += _roles_section(content)
        lines += _top_section(content)
        lines += _control_section(content)
    lines += ["", "## Details by dataset"]
    for d in meta.get("datasets", []):
        name = d["name"]
        if name in (selection.get("select_on") or []):
            continue
        chosen_on = select_on if select_on != name else None
        lines += _syntax_section(df, name, info.is_decoder, chosen_on)
        lines += _tree_section(df, name, chosen_on)
        lines += _positional_section(df, name, info.is_decoder, chosen_on)
        lines += _coref_section(df, name, d, chosen_on)
        lines += _gap_section(df, name, chosen_on)
        lines += _pairs_section(df, name, chosen_on)
        lines += _induction_section(df, name, d, info, chosen_on)
    if content is not None and content.get("examples") and content.get("example_heads"):
        lines += ["", "## Example sentences", "",
                  "Word-level attention maps of " + ", ".join(content.get("example_heads", [])) +
                  " for these sentences are in `figures/example_*.png` and in report.html:", ""]
        lines += [f"{i + 1}. {md_text(' '.join(e['words']))}" for i, e in enumerate(content["examples"])]
    if figure_files:
        lines += ["", "## Figures", ""]
        lines += [f"![{md_text(f)}](figures/{md_text(f)})" for f in figure_files]
    v = meta.get("versions", {})
    lines += ["", "## Provenance", "",
              f"headscope {v.get('headscope', '?')}, torch {v.get('torch', '?')}, transformers "
              f"{v.get('transformers', '?')}, Python {v.get('python', '?')}; run took {meta.get('seconds', '?')} s. "
              "Full configuration, versions and dataset checksums are in `run.json`; every number is in `scores.csv`.",
              ""]
    return "\n".join(lines)
