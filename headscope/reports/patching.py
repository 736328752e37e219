"""The patching output folder: patching.csv, a layer x head heatmap per method and direction, report.md and
report.html (the heads that carry the logit difference, groups, and how attribution agrees with exact patching),
run.json, and with
position-resolved patching patching_positions.csv and positions.html (each pair's tokens coloured by a head's
effect there)."""

from __future__ import annotations

from typing import Any

TOP = 10


def agreement(result: Any, direction: str = "noising") -> dict | None:
    """How attribution ranks the heads against exact patching: Spearman over the heads, and how many of exact's
    top 5 are in attribution's top 10 (None unless both ran)."""
    import numpy as np
    from scipy.stats import spearmanr

    if not {"exact", "attribution"} <= set(result.meta["methods"]):
        return None
    exact, attr = (result.effects(m, direction).ravel() for m in ("exact", "attribution"))
    top5 = set(np.argsort(-exact, kind="stable")[:5])
    top10 = set(np.argsort(-attr, kind="stable")[:10])
    kv = bool(result.meta.get("kv"))
    heads = result.meta["kv_heads" if kv else "heads"]
    missed = [f"L{i // heads}.{'KV' if kv else 'H'}{i % heads}" for i in sorted(top5 - top10)]
    return {"spearman": float(spearmanr(exact, attr).statistic), "top5_in_top10": len(top5 & top10),
            "missed": missed}


def _heads_table(table: Any, method: str, direction: str) -> list[str]:
    t = table[(table["method"] == method) & (table["direction"] == direction)]
    t = t.reindex(t["effect"].abs().sort_values(ascending=False).index).head(TOP)
    lines = ["| heads | effect | 95% CI |", "|---|---:|---|"]
    lines += [f"| {r.heads} | {r.effect:+.3f} | {r.ci_low:+.3f} .. {r.ci_high:+.3f} |" for r in t.itertuples()]
    return lines


def patching_markdown(result: Any) -> str:
    meta, table = result.meta, result.table
    lines = [f"# Activation patching: {meta['model']} on {meta['dataset']}", "",
             f"{meta['pairs']} contrast pairs; the metric is the logit difference answer - foil at the answer "
             f"position: {meta['ld_clean']:.3f} on the clean inputs, {meta['ld_corrupt']:.3f} on the corrupt ones "
             f"(means over pairs). An effect is the share of that difference a head's output moves: noising puts "
             f"the corrupt run's output into the clean run, denoising the clean output into the corrupt run. "
             f"Intervals: {meta['bootstrap']} bootstrap draws over pairs.", ""]
    for direction in meta["directions"]:
        for method in meta["methods"]:
            lines += [f"## {method.capitalize()} patching, {direction}", ""]
            lines += _heads_table(table[table["layer"].notna() | (method == "exact")], method, direction) + [""]
        got = agreement(result, direction)
        if got is not None:
            lines += [f"Attribution against exact ({direction}): Spearman {got['spearman']:.2f} over the heads; "
                      f"{got['top5_in_top10']} of exact's top 5 in attribution's top 10"
                      + (f" (missed: {', '.join(got['missed'])})." if got["missed"] else "."), ""]
    groups = table[table["layer"].isna()]
    if len(groups):
        lines += ["## Groups patched together", "", "| heads | direction | effect | 95% CI |", "|---|---|---:|---|"]
        lines += [f"| {r.heads} | {r.direction} | {r.effect:+.3f} | {r.ci_low:+.3f} .. {r.ci_high:+.3f} |"
                  for r in groups.itertuples()]
        lines.append("")
    lines += _positions_lines(result)
    lines += ["Single-head patching finds bottlenecks: heads that do the same job side by side (several induction "
              "heads) each move little alone; patch them as a group to see their joint effect.", ""]
    return "\n".join(lines)


def _positions_lines(result: Any) -> list[str]:
    """Where each head chosen for position-resolved patching acts: its three strongest positions, counted from the
    answer position (0: the answer's own; -1: the token before), with the mean effect over pairs there."""
    t = result.positions
    if t is None or not len(t):
        return []
    t = t.assign(offset=t["position"] - t["answer_at"])
    lines = ["## Where the heads act (position-resolved patching)", "",
             "Each chosen head patched at one position at a time (`positions.html` colours every pair's tokens; "
             "`patching_positions.csv` has every row). Positions are counted from the answer position; the token "
             "is the first pair's there.", "", "| heads | method | direction | strongest positions (mean effect) |",
             "|---|---|---|---|"]
    for (heads, method, direction), g in t.groupby(["heads", "method", "direction"], sort=False):
        mean = g.groupby("offset")["effect"].mean()
        first = g[g["pair"] == g["pair"].iloc[0]].set_index("offset")["token"]
        best = mean.reindex(mean.abs().sort_values(ascending=False).index).head(3)
        lines.append(f"| {heads} | {method} | {direction} | " + ", ".join(
            f"{o:+d} {first.get(o, '')!r} {100 * e:+.0f}%" for o, e in best.items()) + " |")
    return lines + [""]


def patching_figures(result: Any, folder: Any) -> list[str]:
    """``patching_<method>_<direction>.png``: the single heads' effects as a layer x head heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    for method in result.meta["methods"]:
        for direction in result.meta["directions"]:
            grid = result.effects(method, direction)
            top = max(1e-6, float(np.nanmax(np.abs(grid))))
            fig, ax = plt.subplots(figsize=(max(4.5, 1.2 + 0.3 * grid.shape[1]), 1.0 + 0.22 * grid.shape[0]))
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto")
            ax.set_xlabel("KV head (its query heads together)" if result.meta.get("kv") else "head")
            ax.set_ylabel("layer")
            ax.set_title(f"{method} patching, {direction}\nshare of the logit difference moved", fontsize=9)
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            name = f"patching_{method}_{direction}.png"
            fig.savefig(folder / name, dpi=110)
            plt.close(fig)
            names.append(name)
    return names


REPORT_STYLE = ("body{font:14px system-ui,sans-serif;margin:1.5em;max-width:70em;color:#222}"
                "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em}"
                "td.num{text-align:right}img{max-width:100%;margin:.5em 1em .5em 0}.muted{color:#666}")


def patching_html(result: Any, figures: list[str]) -> str:
    """report.html: what report.md says, as tables, with the heatmaps; no script, nothing from outside."""
    import html as h

    from .viewer import csp_hash

    meta, table = result.meta, result.table
    esc = h.escape
    title = f"Activation patching: {meta['model']} on {meta['dataset']}"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p>{meta['pairs']} contrast pairs; the metric is the logit difference answer − foil at the answer "
            f"position: {meta['ld_clean']:.3f} on the clean inputs, {meta['ld_corrupt']:.3f} on the corrupt ones "
            "(means over pairs). An effect is the share of that difference a head's output moves: noising puts the "
            "corrupt run's output into the clean run, denoising the clean output into the corrupt run. Intervals: "
            f"{meta['bootstrap']} bootstrap draws over pairs.</p>"]

    def rows_html(t: Any, with_direction: bool = False) -> str:
        head = "<tr><th>heads</th>" + ("<th>direction</th>" if with_direction else "") + \
               "<th>effect</th><th>95% CI</th></tr>"
        return "<table>" + head + "".join(
            f"<tr><td>{esc(str(r.heads))}</td>" + (f"<td>{esc(r.direction)}</td>" if with_direction else "")
            + f"<td class=\"num\">{r.effect:+.3f}</td><td>{r.ci_low:+.3f} .. {r.ci_high:+.3f}</td></tr>"
            for r in t.itertuples()) + "</table>"

    for direction in meta["directions"]:
        for method in meta["methods"]:
            t = table[(table["method"] == method) & (table["direction"] == direction)
                      & (table["layer"].notna() | (method == "exact"))]
            t = t.reindex(t["effect"].abs().sort_values(ascending=False).index).head(TOP)
            body += [f"<h2>{esc(method.capitalize())} patching, {esc(direction)}</h2>", rows_html(t)]
        got = agreement(result, direction)
        if got is not None:
            missed = f" (missed: {esc(', '.join(got['missed']))})" if got["missed"] else ""
            body.append(f"<p>Attribution against exact ({esc(direction)}): Spearman {got['spearman']:.2f} over the "
                        f"heads; {got['top5_in_top10']} of exact's top 5 in attribution's top 10{missed}.</p>")
    groups = table[table["layer"].isna()]
    if len(groups):
        body += ["<h2>Groups patched together</h2>", rows_html(groups, with_direction=True)]
    if result.positions is not None and len(result.positions):
        body.append("<h2>Where the heads act</h2><p><a href=\"positions.html\">positions.html</a> colours each "
                    "pair's tokens by a chosen head's effect at each position (patching_positions.csv has every "
                    "row).</p>")
    body.append("<h2>Heatmaps</h2>" + "".join(f"<img src=\"{esc(f)}\" alt=\"{esc(f)}\">" for f in figures))
    body.append("<p class=\"muted\">Single-head patching finds bottlenecks: heads that do the same job side by side "
                "each move little alone; patch them as a group to see their joint effect. Every row is in "
                "patching.csv.</p>")
    policy = f"default-src 'none'; style-src {csp_hash(REPORT_STYLE)}; img-src 'self'; base-uri 'none'"
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            f"<title>{esc(title)}</title>\n<style>{REPORT_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


POSITIONS_SCRIPT = """
const data = JSON.parse(document.getElementById("hs-positions-data").textContent);
const pick = id => document.getElementById(id);
function fill(id, values, labels) {
  const el = pick(id);
  el.replaceChildren(...values.map((v, i) => { const o = document.createElement("option");
    o.value = String(v); o.textContent = labels ? labels[i] : String(v); return o; }));
}
const uniq = key => [...new Set(data.rows.map(r => r[key]))];
fill("hs-head", uniq("heads"));
fill("hs-method", uniq("method"));
fill("hs-direction", uniq("direction"));
const pairs = uniq("pair");
fill("hs-pair", (data.aligned ? ["mean"] : []).concat(pairs),
     (data.aligned ? ["mean over pairs"] : []).concat(pairs));
function draw() {
  const head = pick("hs-head").value, method = pick("hs-method").value, direction = pick("hs-direction").value;
  const pair = pick("hs-pair").value;
  let rows = data.rows.filter(r => r.heads === head && r.method === method && r.direction === direction);
  let shown = rows.filter(r => r.pair === pair);
  if (pair === "mean") {
    const by = new Map();
    for (const r of rows) { const e = by.get(r.position) || {position: r.position, token: r.token,
      answer_at: r.answer_at, effect: 0, n: 0}; e.effect += r.effect; e.n += 1; by.set(r.position, e); }
    shown = [...by.values()].map(e => ({...e, effect: e.effect / e.n})).sort((a, b) => a.position - b.position);
  }
  const top = Math.max(1e-9, ...shown.map(r => Math.abs(r.effect)));
  const tokens = pick("hs-tokens");
  tokens.replaceChildren(...shown.map(r => { const s = document.createElement("span");
    const a = Math.abs(r.effect) / top;
    s.className = "tok" + (r.position === r.answer_at ? " answer" : "");
    s.style.background = r.effect >= 0 ? `rgba(214,39,40,${a})` : `rgba(31,119,180,${a})`;
    s.textContent = r.token; s.title = `position ${r.position}: ${(100 * r.effect).toFixed(1)}%`;
    s.dataset.position = String(r.position); s.dataset.effect = String(r.effect); return s; }));
  const best = [...shown].sort((a, b) => Math.abs(b.effect) - Math.abs(a.effect)).slice(0, 5);
  pick("hs-best").replaceChildren(...best.map(r => { const tr = document.createElement("tr");
    for (const v of [String(r.position), r.token, (100 * r.effect).toFixed(1) + "%"]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td); }
    return tr; }));
  document.body.dataset.ready = "1";
}
for (const id of ["hs-head", "hs-method", "hs-direction", "hs-pair"]) pick(id).addEventListener("change", draw);
draw();
"""
POSITIONS_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
select { margin-right: 1em; }
#hs-tokens { margin: 1em 0; line-height: 2.2; font-family: ui-monospace, monospace; }
.tok { padding: 0.15em 0.2em; margin: 0 1px; border-radius: 3px; white-space: pre; }
.tok.answer { outline: 2px solid #333; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; }
.muted { color: #666; }
"""


def positions_page(result: Any) -> str:
    """positions.html: pick a head, a method, a direction and a pair (or the mean over pairs, when all pairs have
    the same length); the pair's clean tokens coloured by the share of the logit difference that patching the
    head at each one moves (red: it moves the answer toward the foil's side when noising; blue: the other way),
    the answer position outlined, and the five strongest positions listed. Red: a positive effect (the patch at
    that position moves the logit difference toward the other input's), blue: negative. Self-contained."""
    import html as html_lib

    from .viewer import csp_hash, data_block

    t = result.positions
    lengths = t.groupby("pair")["position"].max()
    data = {"rows": [{"pair": str(r.pair), "heads": r.heads, "method": r.method, "direction": r.direction,
                      "position": int(r.position), "token": str(r.token), "answer_at": int(r.answer_at),
                      "effect": float(r.effect)} for r in t.itertuples()],
            "aligned": bool(len(set(lengths)) == 1)}
    meta = result.meta
    title = f"Position-resolved patching: {meta['model']} on {meta['dataset']}"
    policy = (f"default-src 'none'; script-src {csp_hash(POSITIONS_SCRIPT)}; style-src {csp_hash(POSITIONS_STYLE)}; "
              f"base-uri 'none'; form-action 'none'")
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            f"<title>{html_lib.escape(title)}</title>\n<style>{POSITIONS_STYLE}</style>\n</head>\n"
            "<body data-ready=\"0\">\n"
            f"<h1>{html_lib.escape(title)}</h1>\n"
            "<p class=\"muted\">Each token: the share of the mean clean − corrupt logit difference that patching the "
            "head's output at that one position moves (red positive, blue negative; the answer position outlined). "
            "Every row is in patching_positions.csv.</p>\n"
            "<label>head <select id=\"hs-head\"></select></label><label>method <select id=\"hs-method\"></select>"
            "</label><label>direction <select id=\"hs-direction\"></select></label><label>pair <select "
            "id=\"hs-pair\"></select></label>\n<div id=\"hs-tokens\"></div>\n<table><thead><tr><th>position</th>"
            "<th>token</th><th>effect</th></tr></thead><tbody id=\"hs-best\"></tbody></table>\n"
            f"{data_block(data, 'hs-positions-data')}\n<script>{POSITIONS_SCRIPT}</script>\n</body>\n</html>\n")


def save_patching(result: Any, out: Any, *, force: bool = False) -> Any:
    """patching.csv, the heatmaps, report.md, report.html and run.json of a ``PatchResult`` into ``out``, written
    whole (see ``reports.folder.staged_output``)."""
    import json
    from pathlib import Path

    from .folder import staged_output
    from .writer import write_csv, write_text

    with staged_output(Path(out), "patching", force=force) as folder:
        write_csv(result.table, folder / "patching.csv")
        figures = patching_figures(result, folder)
        write_text(folder / "report.md", patching_markdown(result))
        write_text(folder / "report.html", patching_html(result, figures))
        if result.positions is not None and len(result.positions):
            write_csv(result.positions, folder / "patching_positions.csv")
            write_text(folder / "positions.html", positions_page(result))
        meta = {**result.meta, "agreement": {d: agreement(result, d) for d in result.meta["directions"]}}
        write_text(folder / "run.json", json.dumps(meta, indent=2, default=str) + "\n")
    return Path(out)
