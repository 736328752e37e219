"""report.md: best head per relation against the best baseline, positional highlights, provenance."""

from __future__ import annotations

from typing import Any

from ..schema import head_label


def _fmt(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(row: Any) -> str:
    """`` [lo, hi]`` in percent when the row has a bootstrap interval."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f" [{_fmt(lo)}, {_fmt(hi)}]"


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


def _syntax_section(df, dataset: str, causal: bool = False) -> list[str]:
    sub = df[(df["task"] == "syntax") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    lines = ["", f"### Syntax — {dataset}", "",
             "Accuracy (%) of the best head per relation and direction against the best fixed-offset baseline "
             "(chosen on the same data: an optimistic, Clark-et-al.-style number); [95% bootstrap interval over "
             "sentences]."]
    if causal:
        lines[-1] += (" Causal model: `reachable` counts the instances the mask lets any head get right "
                      "(dep_to_head: the head word is to the left; head_to_dep: to the right); accuracy is over "
                      "all n, so reachable / n is the ceiling, and the offset baselines obey the same mask.")
    lines += ["",
             "| relation | direction | n | reachable | best head | score | best baseline | baseline score | margin |",
             "|---|---|---:|---:|---|---:|---|---:|---:|"]
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
            top = h.loc[h["score"].idxmax()]
            if int(top["n_reachable"]) == 0:
                lines.append(f"| {rel} | {direction} | {int(top['n'])} | 0 | — | — | — | — | — |")
                continue
            b = bases[(bases["relation"] == rel) & (bases["direction"] == direction)]
            if len(b):
                bt = b.loc[b["score"].idxmax()]
                bname, bscore = str(bt["baseline"]), float(bt["score"])
            else:
                bname, bscore = "—", float("nan")
            margin = float(top["score"]) - bscore
            lines.append(f"| {rel} | {direction} | {int(top['n'])} | {int(top['n_reachable'])} | "
                         f"{head_label(top['layer'], top['head'])} | {_fmt(top['score'])}{_ci(top)} | {bname} | "
                         f"{_fmt(bscore) if bscore == bscore else '—'}{_ci(bt) if len(b) else ''} | "
                         f"{_fmt(margin) if margin == margin else '—'} |")
    return lines


def _tree_section(df, dataset: str) -> list[str]:
    sub = df[(df["task"] == "tree") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    lines = ["", f"### Whole-tree UAS — {dataset}", "",
             "| direction | best head | UAS | right-branching | left-branching |", "|---|---|---:|---:|---:|"]
    for direction in ("dep_to_head", "head_to_dep"):
        s = sub[sub["direction"] == direction]
        h = s[s["baseline"].isna()]
        if h.empty:
            continue
        top = h.loc[h["score"].idxmax()]
        base = {str(r["baseline"]): float(r["score"]) for _, r in s[s["baseline"].notna()].iterrows()}
        lines.append(f"| {direction} | {head_label(top['layer'], top['head'])} | {_fmt(top['score'])} | "
                     f"{_fmt(base.get('right_branching', float('nan')))} | "
                     f"{_fmt(base.get('left_branching', float('nan')))} |")
    return lines


POSITIONAL_SHOWN = ("self", "prev", "next", "first", "last", "sep", "punct", "local")


def _positional_section(df, dataset: str, causal: bool = False) -> list[str]:
    from ..analysis.positional import POSITIONAL_SHARE

    sub = df[(df["task"] == "positional") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    lines = ["", f"### Positional patterns — {dataset}", "",
             "Mean attention mass per query token; the head with the most of each, and how many heads put "
             "over half their attention there.", "",
             "| pattern | top head | mass | heads > 0.5 | layer means (0..L-1) |", "|---|---|---:|---:|---|"]
    for name in POSITIONAL_SHOWN:
        s = sub[(sub["relation"] == name)]
        if s.empty:
            continue
        top = s.loc[s["score"].idxmax()]
        if causal and name == "next":
            lines.append("| next | — | — | — | not visible under the causal mask |")
            continue
        by_layer = s.groupby("layer")["score"].mean()
        lo, hi = top.get("ci_low"), top.get("ci_high")
        interval = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi and lo is not None else ""
        lines.append(f"| {name} | {head_label(top['layer'], top['head'])} | {top['score']:.3f}{interval} | "
                     f"{int((s['score'] > 0.5).sum())} | {' '.join(f'{v:.2f}' for v in by_layer)} |")
    ent = sub[sub["relation"] == "entropy_norm"]
    conf = sub[sub["relation"] == "confidence"]
    if len(ent) and len(conf):
        lo = ent.loc[ent["score"].idxmin()]
        hi = ent.loc[ent["score"].idxmax()]
        c = conf.loc[conf["score"].idxmax()]
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
            best = merged.loc[merged["score"].idxmax()]
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


def _best_vs_baselines(sub, relation: str):
    heads = sub[(sub["relation"] == relation) & sub["baseline"].isna()]
    if heads.empty:
        return None, {}
    top = heads.loc[heads["score"].idxmax()]
    bases = {str(r["baseline"]): float(r["score"]) for _, r in sub[(sub["relation"] == relation)
                                                                   & sub["baseline"].notna()].iterrows()}
    return top, bases


def _coref_section(df, dataset: str, d: dict) -> list[str]:
    from ..analysis.coref import BASELINES, GROUPS

    sub = df[(df["task"] == "coref") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    lines = ["", f"### Coreference — {dataset}", "",
             "Antecedent selection accuracy (%): the mention's head word attends most, among earlier words, to the "
             "head of an antecedent (best head chosen on the same data), against rule baselines.", "",
             "| mention type | n | best head | score | " + " | ".join(BASELINES) + " |",
             "|---|---:|---|---:|" + "---:|" * len(BASELINES)]
    for group in GROUPS:
        top, bases = _best_vs_baselines(sub, group)
        if top is None:
            continue
        lines.append(f"| {group} | {int(top['n'])} | {head_label(top['layer'], top['head'])} | {_fmt(top['score'])} | "
                     + " | ".join(_fmt(bases[b]) if b in bases else "—" for b in BASELINES) + " |")
    return lines


def _gap_section(df, dataset: str) -> list[str]:
    sub = df[(df["task"] == "gap") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    top, bases = _best_vs_baselines(sub, "all")
    pick = sub[(sub["layer"] == top["layer"]) & (sub["head"] == top["head"])]
    val = {r["relation"]: float(r["score"]) for _, r in pick.iterrows()}
    near = {r["relation"]: float(r["score"]) for _, r in sub[sub["baseline"] == "nearest"].iterrows()}
    lines = ["", f"### GAP — {dataset}", "",
             "Accuracy (%) on rows with exactly one referent: the name whose words get more attention from the "
             "pronoun. Bias = feminine / masculine accuracy (1.0 is unbiased).", "",
             "| | overall | masculine | feminine | bias F/M |", "|---|---:|---:|---:|---:|"]
    for label, v in ((f"best head {head_label(top['layer'], top['head'])}", val), ("nearest name", near)):
        lines.append(f"| {label} | {_fmt(v.get('all', float('nan')))} | {_fmt(v.get('masculine', float('nan')))} | "
                     f"{_fmt(v.get('feminine', float('nan')))} | {v.get('bias', float('nan')):.3f} |")
    return lines


def _pairs_section(df, dataset: str) -> list[str]:
    sub = df[(df["task"] == "pairs") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    heads = sub[(sub["relation"] == "pair") & sub["baseline"].isna()].nlargest(5, "score")
    n = int(heads["n"].iloc[0])
    lines = ["", f"### Minimal pairs — {dataset}", "",
             f"A head gets a pair right when the pronoun attends more to the right candidate in both sentences "
             f"({n} pairs; chance 25%, a fixed-position preference 0%). Top heads:", ""]
    lines += [f"- {head_label(r['layer'], r['head'])}: {_fmt(r['score'])}% of pairs" for _, r in heads.iterrows()]
    return lines


def _induction_section(df, dataset: str, d: dict, info: Any = None) -> list[str]:
    sub = df[(df["task"] == "induction") & (df["dataset"] == dataset)]
    if sub.empty:
        return []
    lines = ["", f"### Induction, duplicate-token and previous-token heads — {dataset}", "",
             f"Mean attention to each row's target on {d.get('sequences', '?')} sequences "
             f"{'BOS ' if d.get('bos') else ''}r r of {d.get('length', '?')} random tokens (rows with a target only).",
             "", "| pattern | top heads (score) |", "|---|---|"]
    for pattern in ("induction", "duplicate", "previous"):
        top = sub[sub["relation"] == pattern].nlargest(3, "score")
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


def render_markdown(result: Any, figure_files: list[str]) -> str:
    meta = result.meta
    info = result.model
    df = result.scores
    lines = [f"# headscope report: {info.name}", "",
             f"- Model: {info.describe()}",
             f"- Tasks: {', '.join(meta.get('tasks', []))}",
             "- Heads are named `L<layer>.H<head>`, both 0-based (Clark et al. print 1-based `layer-head`)."]
    kv = _kv_groups(info)
    if kv:
        lines.append(kv)
    if not meta.get("complete", True):
        lines.append("- **Run interrupted: these results cover only the sentences scored before the stop.**")
    for d in meta.get("datasets", []):
        lines.append(f"- Data `{d['name']}` ({d.get('kind', '?')}; tasks {', '.join(d.get('tasks', []))}): "
                     + _data_line(d, meta["config"]["max_length"]))
    for d in meta.get("datasets", []):
        name = d["name"]
        lines += _syntax_section(df, name, info.is_decoder)
        lines += _tree_section(df, name)
        lines += _positional_section(df, name, info.is_decoder)
        lines += _coref_section(df, name, d)
        lines += _gap_section(df, name)
        lines += _pairs_section(df, name)
        lines += _induction_section(df, name, d, info)
    if figure_files:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}](figures/{f})" for f in figure_files]
    v = meta.get("versions", {})
    lines += ["", "## Provenance", "",
              f"headscope {v.get('headscope', '?')}, torch {v.get('torch', '?')}, transformers "
              f"{v.get('transformers', '?')}, Python {v.get('python', '?')}; run took {meta.get('seconds', '?')} s. "
              "Full configuration, versions and dataset checksums are in `run.json`; every number is in `scores.csv`.",
              ""]
    return "\n".join(lines)
