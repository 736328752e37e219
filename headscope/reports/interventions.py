"""report.md of the intervention folders: what ablating heads did (``headscope ablate``) and which heads need the
whole context (``headscope context``), rendered as Markdown."""

from __future__ import annotations

import math
from typing import Any

from .markdown import md_text

SHOWN = 30          # rows of a table shown in report.md; every row is in the CSV
TOP_RETRIEVAL = 10  # the retrieval heads set against windowability


def _num(x: Any, digits: int = 4, sign: str = "") -> str:
    """A number to ``digits`` decimals (``sign="+"``: always signed); a dash for a missing one."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:{sign}.{digits}f}"


def _signed(x: Any) -> str:
    return _num(x, 4, "+")


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def ablation_markdown(result: Any) -> str:
    """report.md of an ablation folder: the effects against random heads, flagged where nothing changed, and
    the importance ranking and pruning curve when they were computed."""
    meta, table = result.meta, result.table
    model = meta["model"]["name"] if isinstance(meta.get("model"), dict) else meta.get("model", "?")
    datasets = ", ".join(md_text(d) for d in dict.fromkeys(table["dataset"])) or "–"
    lines = [f"# Head ablation: {md_text(model)}", "",
             f"- Method `{md_text(meta['method'])}`; measures {', '.join(md_text(m) for m in meta['measures'])}; "
             f"data {datasets} ({int(table['n'].max()) if len(table) else 0} units).",
             f"- Each group is set against {meta['random_draws']} groups of as many random heads (seed "
             f"{meta['seed']}); `× random` is the effect over their median. Intervals: 95% bootstrap over units "
             f"({meta['bootstrap']} replicates)." if meta.get("bootstrap") else
             f"- Each group is set against {meta['random_draws']} groups of as many random heads (seed "
             f"{meta['seed']}); no intervals (bootstrap 0).",
             f"- {md_text(meta.get('note', ''))[:1].upper()}{md_text(meta.get('note', ''))[1:]}."]
    if meta.get("selected_by"):
        lines.append(f"- Heads chosen by a scoring pass: {md_text(meta['selected_by'])}.")
    flagged = [bool(x) for x in table["no_effect"]]
    lines += ["", "## Effects", "",
              f"{sum(flagged)} of {len(table)} ablations change nothing measurable ({md_text(meta.get('no_effect_rule', ''))}); they are "
              f"flagged, not left out." + (f" The {SHOWN} largest effects are shown; every row is in "
                                                f"`ablation.csv`." if len(table) > SHOWN else ""), ""]
    lines += [f"![{md_text(name)}]({md_text(name)})" for name in meta.get("figures", [])]
    lines += ["", "| heads | measure | base | ablated | effect [95% CI] | random median | × random | |",
              "|---|---|---|---|---|---|---|---|"]
    order = table.assign(_flag=flagged).sort_values("effect", ascending=False).head(SHOWN)
    for _, r in order.iterrows():
        ratio = float(r["ratio_to_random"])
        lines.append(f"| {md_text(r['heads'])} | {md_text(r['measure'])} | {_num(r['base'])} | {_num(r['ablated'])} | "
                     f"{_signed(r['effect'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}] | "
                     f"{_signed(r['random_median'])} | {'–' if math.isnan(ratio) else f'{ratio:.1f}'} | "
                     f"{'no effect' if r['_flag'] else ''} |")
    imp = result.importance
    if imp is not None:
        total = len(imp.table)
        top = imp.table.sort_values("rank").head(10)
        cost = (f"a rise of the loss under {100 * imp.tolerance:g}%" if imp.measure == "loss"
                else f"a hidden-state change (1 − cosine) under {imp.tolerance:g}")
        lines += ["", "## Importance and pruning", "",
                  f"Importance: {md_text(imp.table['how'].iloc[0])}. **{imp.prunable} of {total} heads "
                  f"({100 * imp.prunable / total:.0f}%) can be removed at {cost}**, removing the least important "
                  f"first (`pruning.csv`).", "", "![pruning curve](pruning.png)", "",
                  "Most important heads: " + ", ".join(f"L{int(r['layer'])}.H{int(r['head'])} "
                                                       f"({float(r['importance']):.3g})" for _, r in top.iterrows())
                  + "."]
    lines += ["", "## Files", "",
              "`ablation.csv` (one row per group × measure × method), "
              + "".join(f"`{md_text(name)}`, " for name in meta.get("figures", []))
              + ("`importance.csv`, `pruning.csv`, `pruning.png`, " if imp is not None else "")
              + "`run.json` (what was run, with the command)."]
    if meta.get("command"):
        lines += ["", f"Command: `{md_text(meta['command'])}`"]
    return "\n".join(lines) + "\n"


def _spearman(x: list[float], y: list[float]) -> float:
    import numpy as np
    import pandas as pd

    if len(x) < 3:
        return float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def context_markdown(result: Any) -> str:
    """report.md of a context folder: the heads that could stream with the KV cache they would save, and the
    retrieval heads set against the windows they need."""
    import pandas as pd

    meta, heads = result.meta, result.heads
    model = meta["model"]["name"]
    windows = meta["windows"]
    largest = max(windows)
    tol = meta["tolerance"]
    if meta["measure"] == "loss":
        keeps = f"keeps the next-token loss within +{100 * tol:g}% (unablated: {_num(meta['base'])} nats)"
    else:
        keeps = f"keeps the final hidden states' change (1 − cosine) under {tol:g}"
    needles = bool(meta.get("window_needles"))
    lines = [f"# Which heads need the whole context: {md_text(model)}", "",
             f"- Data: {meta['documents']} document(s) of {meta['tokens']} tokens of {md_text(meta['dataset'])}'s "
             f"running text.",
             f"- Windows tried: {', '.join(map(str, windows))} keys (`window:W`: the first key and the W nearest), "
             f"smallest first, one head at a time. A head can be windowed at the smallest W that {keeps} on the "
             f"text" + (f" and keeps the loss on the copies of {meta['window_needles']} needle inputs (below) "
                        f"within +{100 * tol:g}% (unablated: {_num(meta.get('base_needles'))} nats): natural text "
                        f"rarely needs a far key, a copy of a far needle does (the passkey check of DuoAttention)"
                        if needles else "") + "."]
    tested = heads[heads["tested"]]
    windowed = tested[tested["smallest_window"].notna()]
    lines += ["", "## Which heads could stream", "",
              f"**{len(windowed)} of {len(tested)} heads tested can be windowed** with at most {largest} keys; "
              f"{len(tested) - len(windowed)} need more.", "",
              "| smallest window | heads | on the text alone |" + (" on the needles alone |" if needles else ""),
              "|---|---|---|" + ("---|" if needles else "")]
    for w in windows:
        lines.append(f"| {w} | {int((tested['smallest_window'] == w).sum())} | "
                     f"{int((tested['smallest_window_text'] == w).sum())} |"
                     + (f" {int((tested['smallest_window_needles'] == w).sum())} |" if needles else ""))
    lines.append(f"| none up to {largest} | {len(tested) - len(windowed)} | "
                 f"{int(tested['smallest_window_text'].isna().sum())} |"
                 + (f" {int(tested['smallest_window_needles'].isna().sum())} |" if needles else ""))
    if len(tested) < len(heads):
        lines += ["", f"{len(heads) - len(tested)} heads were not tested; they count as needing the whole context."]
    joint = meta.get("joint") or {}
    if joint:
        parts = [f"the text's {'loss' if meta['measure'] == 'loss' else 'hidden states'} by "
                 + (f"{100 * joint['text']:+.1f}%" if meta["measure"] == "loss" else f"{joint['text']:.4f}")]
        if "needles" in joint:
            parts.append(f"the needle-copy loss by {100 * joint['needles']:+.1f}%")
        over = any(v > tol for k, v in joint.items() if k != "heads")
        lines += ["", f"Windowing all {joint['heads']} windowable heads at once, each at its window, changes "
                      + " and ".join(parts) + "." + (" **That is more than the tolerance: the windows found one head "
                                                     "at a time do not add up, so the saving below is an upper "
                                                     "bound.**" if over else " The windows add up.")]
    kv = result.kv
    if not kv:
        lines += ["", "An encoder reads its whole input at once and keeps no KV cache: windowed heads save attention "
                      "compute here, not cache memory."]
    else:
        first = kv[0]
        lines += ["", f"KV cache of one sequence ({first['bytes_per_value'] * 8}-bit keys and values) if every "
                      f"windowed head kept only the first key and its window. Under GQA a key/value head shrinks only "
                      f"when every query head reading it can be windowed: {first['kv_heads_windowed']} of "
                      f"{first['kv_heads']} key/value heads.", "",
                  "| context | full cache | with windowed heads | saved |", "|---|---|---|---|"]
        for k in kv:
            lines.append(f"| {k['context']:,} tokens | {_bytes(k['full_bytes'])} | {_bytes(k['windowed_bytes'])} | "
                         f"{_bytes(k['saved_bytes'])} ({100 * k['saved_share']:.1f}%) |")
    lines += ["", "## Retrieval heads", ""]
    if meta.get("retrieval"):
        lines.append(f"Not scored: {md_text(meta['retrieval'])}.")
    else:
        copied, rows = int(heads["copied"].iloc[0]), int(heads["rows"].iloc[0])
        lines.append(f"{meta['needles']} inputs of {meta['tokens']} tokens, each a {meta['needle_length']}-token "
                     f"needle of random tokens placed in the text and repeated at the end. The model copied "
                     f"{copied} of {rows} needle tokens (its top prediction at the copy was the needle's next token). "
                     f"A head's retrieval score is the share of those at which its strongest key was the token being "
                     f"copied (Wu et al. 2024).")
        if copied:
            ranked = heads.sort_values("retrieval", ascending=False)
            top = ranked.head(TOP_RETRIEVAL)
            lines += ["", "| head | retrieval | smallest window |", "|---|---|---|"]
            for _, r in top.iterrows():
                w = r["smallest_window"]
                need = "not tested" if not r["tested"] else f"none up to {largest}" if pd.isna(w) else str(int(w))
                lines.append(f"| L{r['layer']}.H{r['head']} | {_num(r['retrieval'], 2)} | {need} |")
            top_t = top[top["tested"]]
            criterion = (f"keeps both losses within +{100 * tol:g}%" if needles else keeps.split(" (")[0])
            unwindowed = int(top_t["smallest_window"].isna().sum())
            overall = len(tested) - len(windowed)
            rho = _spearman(list(tested["retrieval"]), [largest * 4.0 if pd.isna(w) else float(w)
                                                       for w in tested["smallest_window"]])
            lines += ["", f"**Of the {len(top_t)} tested heads with the highest retrieval scores, {unwindowed} cannot "
                          f"be windowed** (no window up to {largest} keys {criterion}), against "
                          f"{overall} of {len(tested)} heads tested overall. Rank correlation (Spearman) of the "
                          f"retrieval score with the smallest window (none ranked last): "
                          f"{'–' if math.isnan(rho) else f'{rho:+.2f}'}."]
    lines += ["", "## Files", "",
              "`windows.csv` (one row per head, inputs and window tried), `heads.csv` (one row per head: its smallest "
              "window, on each input, and its retrieval score), `run.json` (what was run, with the KV-cache sizes)."]
    if meta.get("command"):
        lines += ["", f"Command: `{md_text(meta['command'])}`"]
    return "\n".join(lines) + "\n"
