"""report.md: the summary, roles, top heads, the detail sections and provenance, rendered as Markdown."""

from __future__ import annotations

from typing import Any

from .sections import Data, effect_text, interval_text, q_text, score_text

_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]",
               "\\": "\\\\", "\n": " ", "\r": " "}


def md_text(value: Any) -> str:
    """Text from data (words, names, paths) made inert in Markdown: no HTML, no table breaks, no links or code."""
    return "".join(_MD_ESCAPES.get(c, c) for c in str(value))


def _kv_groups(heads: int, kv_heads: int) -> str | None:
    """One line naming each key/value head's query heads (GQA/MQA); None when every head has its own."""
    if kv_heads >= heads:
        return None
    size = heads // kv_heads
    groups = ", ".join(f"H{k * size}–H{k * size + size - 1} → KV {k}" if size > 1 else f"H{k} → KV {k}"
                       for k in range(kv_heads))
    return (f"- Key/value groups ({'MQA' if kv_heads == 1 else 'GQA'}): {groups}; query heads are what is "
            f"scored, and `kv_head` in scores.csv names each one's group.")


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
    if d.get("unusable_rows"):
        text += (f"; {d['unusable_rows']} rows not counted in the accuracy, having no single referent ("
                 + ", ".join(f"{reason}: {n}" for reason, n in d.get("unusable_reasons", {}).items()) + ")")
    if d.get("first_token") and kind != "generated":
        text += f"; inputs start with `{d['first_token']}`"
        if d.get("bos_added"):
            text += f" (put first by headscope in {d['bos_added']}: the tokenizer adds no BOS)"
    if d.get("words_replaced_by_unk"):
        text += f"; {d['words_replaced_by_unk']} words had no piece and were read as the unknown token"
    return text + "."


def _md_runs(runs: Any) -> str:
    """A paragraph of a section: text from data made inert, headscope's own text as it is."""
    return "".join(md_text(r) if isinstance(r, Data) else r for r in ([runs] if isinstance(runs, str) else runs))


def _md_row(cells: list) -> str:
    return "|" + "|".join(f" {_md_runs(c)} " if c else " " for c in cells) + "|"


def render_section(section: dict) -> list[str]:
    """One detail section (``sections.Section.record()``) as Markdown lines."""
    blocks = []
    if section["intro"]:
        blocks.append([_md_runs(section["intro"])])
    if section["columns"]:
        blocks.append([_md_row(section["columns"]),
                       "|" + "|".join("---:" if a == "r" else "---" for a in section["align"]) + "|",
                       *(_md_row(r) for r in section["rows"])])
    if section["points"]:
        blocks.append([f"- {_md_runs(p)}" for p in section["points"]])
    lines = ["", f"### {section['title']} — {md_text(section['dataset'])}"]
    for block in blocks:
        lines += ["", *block]
    return lines


_FAMILY_WORDS = {"coreference": "coreference", "syntax": "syntax", "induction": "induction",
                 "positional": "positional", "sink": "active sink", "no-op": "no-op sink", "broad": "broad",
                 "none": "no role"}


def counts_text(counts: list[dict]) -> str:
    """'15 syntax (29 syntax roles on 17 heads), 2 active sink, ...': heads by the family of their main role,
    and where more heads have roles of that family, how many."""
    parts = []
    for c in counts:
        word = _FAMILY_WORDS.get(c["family"], c["family"])
        have = len(c["names"])
        extra = (f" ({c['roles']} {word} roles on {have} heads)" if c["roles"] > c["heads"] and have != c["heads"]
                 else f" ({c['roles']} roles)" if c["roles"] > c["heads"] else "")
        parts.append(f"{c['heads']} {word}{extra}")
    return ", ".join(parts)


def _notable_section(content: dict) -> list[str]:
    notable = content.get("notable") or {}
    lines = ["", "## Notable heads", ""]
    if notable.get("heads"):
        lines += ["The heads to look at first (each one's main role; the evidence; more roles it has):", ""]
        for h in notable["heads"]:
            also = f" Also: {md_text(', '.join(h['also']))}." if h["also"] else ""
            lines.append(f"- **{h['head']}** {md_text(h['role'])} — {md_text(h['why'])}.{also}")
    else:
        lines.append("No head has a role beyond sinks and broad attention on this data.")
    counts = notable.get("counts") or []
    if counts:
        lines += ["", f"Heads by main role: {counts_text(counts)}."]
        noop = next((c for c in counts if c["family"] == "no-op"), None)
        if noop and noop["names"]:
            lines.append(f"No-op sinks put most of their weight on a sink token but write little from it "
                         f"(value-weighted): {', '.join(noop['names'])}.")
    return lines


def _patching_section(content: dict) -> list[str]:
    """What patching every head on contrast pairs showed, beside the attention roles (``run --patch``)."""
    p = content.get("patching")
    if not p:
        return []
    if "skipped" in p:
        return ["", "## Causal evidence from patching", "", f"Patching was not done: {md_text(p['skipped'])}."]
    lines = ["", "## Causal evidence from patching", "",
             f"Every head's output was patched from the corrupt into the clean run ({p['method']}, noising) on "
             f"{p['pairs']} contrast pairs of `{md_text(p['dataset'])}`; the logit difference answer − foil is "
             f"{p['ld_clean']:.3f} clean and {p['ld_corrupt']:.3f} corrupt. An effect is the share of that "
             f"difference the head moves; it counts when {p['rule']}.", "",
             "| head | effect [95% CI] | attention roles |", "|---|---:|---|"]
    for r in p["top"]:
        lines.append(f"| {r['head']} | {r['effect']:+.2f}{_share_interval(r)} | "
                     f"{md_text(', '.join(r['roles'])) or 'none'} |")
    lines.append("")
    if p["without_role"]:
        lines.append(f"**Heads that move the answer but have no attention role** ({len(p['without_role'])}): "
                     + ", ".join(f"{r['head']} ({r['effect']:+.2f})" for r in p["without_role"]) + ".")
    elif p["causal_heads"]:
        lines.append("Every head that moves the answer has an attention role.")
    else:
        lines.append("No head alone moves the answer measurably on these pairs.")
    lines.append(f"{p['roles_without_effect']} of {p['roles']} role assignments come from heads whose patching "
                 f"moves nothing on these pairs" + (f": {md_text(', '.join(p['idle_roles'][:12]))}"
                                                     + (" …" if len(p['idle_roles']) > 12 else "") if p['idle_roles']
                                                     else "") + ". Every head's effect is in `patching.csv`.")
    return lines


def _share_interval(r: dict) -> str:
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return "" if lo is None or hi is None else f" [{lo:+.2f}, {hi:+.2f}]"


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
                  "to dependent; in parentheses, `(CLS)`: a no-op sink):", "",
              "| layer | " + " | ".join(f"H{h}" for h in range(len(grid[0]) if grid else 0)) + " |",
              "|---|" + "---|" * (len(grid[0]) if grid else 0)]
    for layer, row in enumerate(grid):
        lines.append(f"| L{layer} | " + " | ".join(md_text(c["label"]) + ("+" if len(c["roles"]) > 1 else "")
                                                   for c in row) + " |")
    control = any(r.get("beats_control") is not None for r in roles["table"])
    evidence = roles.get("evidence")
    if evidence:
        lines += ["", f"Causal evidence: every head was ablated alone (`{md_text(evidence['method'])}`, measured by "
                      f"{md_text(evidence['measures'])}) and set against {evidence['random_draws']} random heads. "
                      f"**{evidence['roles_without_effect']} of {evidence['roles']} role assignments come from heads "
                      f"whose ablation changed nothing measurable** ({evidence['rule']}): flagged `no effect`, "
                      f"not hidden. Every head's effect is in `ablation.csv`."]
    lines += ["", "| head | role | data | score [95% CI] | best baseline: score [95% CI] | q | beats baseline |"
              + (" control best | beats control |" if control else "")
              + (" ablation effect [95% CI] | × random |" if evidence else ""),
              "|---|---|---|---:|---|---:|---|" + ("---:|---|" if control else "") + ("---:|---:|" if evidence else "")]
    for r in roles["table"]:
        base = (f"{md_text(r['baseline'])}: {score_text(r['baseline_score'], r['metric'])}"
                f"{interval_text(r.get('baseline_ci_low'), r.get('baseline_ci_high'), r['metric'])}" if r["baseline"] else "—")
        if r.get("own_score") is not None:
            base += (f"; own positional habit: {score_text(r['own_score'], r['metric'])}"
                     f"{interval_text(r.get('own_ci_low'), r.get('own_ci_high'), r['metric'])}")
        if r.get("written_share") is not None:
            base = f"writes {score_text(r['written_share'], 'share')} from there (value-weighted)"
        beats = "—" if r["q_value"] is None else ("yes" if r["q_value"] < ALPHA else "no")
        line = (f"| L{r['layer']}.H{r['head']} | {md_text(r['role'])} | {md_text(r['dataset'])} | "
                f"{score_text(r['score'], r['metric'])}{interval_text(r['ci_low'], r['ci_high'], r['metric'])} | "
                f"{base} | {q_text(r['q_value'])} | {beats} |")
        if control:
            bc = r.get("beats_control")
            line += (f" {score_text(r.get('control_best'), r['metric'])}"
                     f"{interval_text(r.get('control_ci_low'), r.get('control_ci_high'), r['metric'])} | "
                     f"{'—' if bc is None else 'yes' if bc else 'no'} |")
        if evidence:
            line += " {} | {} |".format(*effect_text(r))
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
                  "Scores on the 0–1 scale; [95% bootstrap interval]; q: BH-corrected p-value that the head beats "
                  "the best baseline (a role needs more: see the criteria).", "",
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
        below = [f"- {r['task']} {md_text(r['relation'])}{' ' + r['direction'] if r['direction'] else ''}: the best "
                 f"head is {r['below_chance']}." for r in rows if r.get("below_chance")]
        lines += [""] + below if below else []
    return lines


def _weighting_section(content: dict) -> list[str]:
    w = content.get("weighting")
    if not w:
        return []
    lines = ["", "## Weight and norm: where they disagree most", "",
             f"Attention weight α against value-weighted attention ‖α v W_O‖ (what the head writes, rows normalised; "
             f"`--weighting norm`): the median |norm − weight| over {w['pairs']} head × measure pairs is "
             f"{w['median_abs_diff']:.3f}; the largest differences:", "",
             "| head | data | task | measure | weight | norm | norm − weight |", "|---|---|---|---|---:|---:|---:|"]
    for r in w["rows"]:
        lines.append(f"| {r['head']} | {md_text(r['dataset'])} | {r['task']} | {md_text(r['measure'])} | "
                     f"{score_text(r['weight'], r['metric'])} | {score_text(r['norm'], r['metric'])} | "
                     f"{r['diff']:+.3f} |")
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


def _header(content: dict) -> list[str]:
    """The report's opening list: the model, the tasks, the data and how each dataset was read, the control and
    the held-out selection."""
    summary, provenance = content["summary"], content["provenance"]
    selection = summary.get("selection") or {}
    lines = [f"# headscope report: {md_text(summary['model'])}", "",
             f"- Model: {md_text(summary['description'])}",
             f"- Tasks: {', '.join(summary.get('tasks', []))}",
             "- Heads are named `L<layer>.H<head>`, both 0-based (Clark et al. print 1-based `layer-head`).",
             f"- {summary['scale']}."]
    kv = _kv_groups(summary["heads"], summary["kv_heads"])
    if kv:
        lines.append(kv)
    if not summary.get("complete", True):
        lines.append("- **Run interrupted: these results cover only the inputs scored before the stop** (counts "
                     "per dataset below). Batches run in a seeded random order, so the inputs scored are a random "
                     "sample of the batches, not the shortest inputs.")
    for d in summary.get("datasets", []):
        lines.append(f"- Data {md_text(d['name'])} ({d.get('kind', '?')}; tasks {', '.join(d.get('tasks', []))}): "
                     + _data_line(d, provenance["config"]["max_length"]))
    control = summary.get("control")
    if control:
        lines.append(f"- Control: {md_text(control['model'])}, {control['description']}.")
    if selection:
        lines.append(f"- Held-out selection: best heads chosen on {md_text(', '.join(selection['select_on']))}, "
                     f"reported on {md_text(', '.join(selection['report_on']))}.")
    return lines


def render_markdown(result: Any, figure_files: list[str], content: dict | None = None) -> str:
    """report.md, drawn from the content model (``content.build_content``; built here when not given)."""
    if content is None:
        from .content import build_content

        content = build_content(result, result.roles)
    lines = _header(content)
    lines += _notable_section(content)
    lines += _patching_section(content)
    lines += _roles_section(content)
    lines += _top_section(content)
    lines += _weighting_section(content)
    lines += _control_section(content)
    lines += ["", "## Details by dataset"]
    for section in content["details"]:
        lines += render_section(section)
    if content.get("examples") and content.get("example_heads"):
        lines += ["", "## Example sentences", "",
                  "Word-level attention maps of " + ", ".join(content.get("example_heads", [])) +
                  " for these sentences are in `figures/example_*.png` and in report.html (special tokens where "
                  "they stand in the input, each row a query). The heads drawn:", ""]
        lines += [f"- {h['head']}: {md_text(h['why'])}." for h in content.get("example_why", [])]
        lines += [""] + [f"{i + 1}. {md_text(' '.join(e['words']))}" for i, e in enumerate(content["examples"])]
    if figure_files:
        lines += ["", "## Figures", ""]
        lines += [f"![{md_text(f)}](figures/{md_text(f)})" for f in figure_files]
    v = content["provenance"].get("versions", {})
    seconds = content["provenance"].get("seconds")
    lines += ["", "## Provenance", "",
              f"headscope {v.get('headscope', '?')}, torch {v.get('torch', '?')}, transformers "
              f"{v.get('transformers', '?')}, Python {v.get('python', '?')}; run took {'?' if seconds is None else seconds} s. "
              "Full configuration, versions and dataset checksums are in `run.json`; every number is in `scores.csv`.",
              ""]
    return "\n".join(lines)
