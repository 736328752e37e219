"""Write a probe result: probes.csv, probe_heads.csv, report.md (probe section), run.json, a head-weight heatmap."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..schema import head_label
from .folder import staged_output
from .writer import write_csv, write_text

log = logging.getLogger(__name__)

METRIC_NAMES = {"uas": "UAS", "accuracy": "accuracy", "macro_f1": "macro-F1"}


def probe_table_lines(result: Any) -> list[str]:
    """The probe section: per model, task / control / selectivity for every probe and feature set."""
    lines = ["", "## Probes", "",
             "Trained on one treebank, tested on another (split by sentence). Parent probe: a linear scorer over "
             "each word's candidate heads (every other word and ROOT) with a softmax per word; UAS without "
             "punctuation. Relation probe: multinomial logistic regression on the gold (dependent, head) pair. "
             "Control: the same probe trained and tested on targets fixed at random per word type (Hewitt & "
             "Liang); selectivity = task − control. right_branching: each word's head is the previous word; "
             "left_branching: the next word. Values in %."]
    table = result.table
    for model in dict.fromkeys(table["model"]):
        wide = result.summary(model)
        meta = next((m for m in result.meta.get("models", []) if m["name"] == model), {})
        tr, te = meta.get("train", {}), meta.get("test", {})
        lines += ["", f"### {model}", "",
                  f"Train `{result.meta['train']['name']}`: {tr.get('used', '?')} sentences ({tr.get('words', '?')} "
                  f"words); test `{result.meta['test']['name']}`: {te.get('used', '?')} sentences "
                  f"({te.get('words', '?')} words); skipped as longer than the model: {tr.get('longer_than_model', 0)}"
                  f" / {te.get('longer_than_model', 0)}; {meta.get('seconds_total', '?')} s.", "",
                  "| probe | features | metric | task | control | selectivity |", "|---|---|---|---:|---:|---:|"]
        for _, r in wide.iterrows():
            lines.append(f"| {r['probe']} | {r['features']} | {METRIC_NAMES.get(r['metric'], r['metric'])} | "
                         f"{100 * r.get('task', float('nan')):.1f} | {100 * r.get('control', float('nan')):.1f} | "
                         f"{100 * r.get('selectivity', float('nan')):+.1f} |")
        heads = result.heads[result.heads["model"] == model] if len(result.heads) else result.heads
        if len(heads):
            top = heads.nlargest(5, "share")
            items = ", ".join(f"{head_label(r['layer'], r['head'])} ({100 * r['share']:.1f}%"
                              + (f", −{100 * r['drop_uas']:.1f} UAS without it" if r["drop_uas"] == r["drop_uas"]
                                 else "") + ")" for _, r in top.iterrows())
            lines += ["", f"- Heads with the largest share of the attention-only parent probe's weight "
                          f"(|w| on standardised features, both directions): {items}."]
    return lines


def render_probe_markdown(result: Any, figure_files: list[str]) -> str:
    meta = result.meta
    lines = [f"# headscope probe report: {meta['model']['name']}", "",
             f"- Probes: {', '.join(meta['probes'])}; feature sets: {', '.join(meta['features'])}; "
             f"control model: {meta.get('control') or 'none'}; seed {meta['seed']}."]
    if not meta.get("complete", True):
        lines.append("- **Interrupted: only the models listed below were finished.**")
    lines += probe_table_lines(result)
    if figure_files:
        lines += ["", "## Figures", ""] + [f"![{f}](figures/{f})" for f in figure_files]
    v = meta.get("versions", {})
    lines += ["", "## Provenance", "",
              f"headscope {v.get('headscope', '?')}, torch {v.get('torch', '?')}, scikit-learn via probes; run took "
              f"{meta.get('seconds', '?')} s. Configuration and dataset checksums are in `run.json`; every number is in "
              f"`probes.csv`, head weights in `probe_heads.csv`.", ""]
    return "\n".join(lines)


def _head_figures(result: Any, folder: Path) -> list[str]:
    from .figures import heatmap_png

    files = []
    for model in dict.fromkeys(result.heads["model"]):
        h = result.heads[result.heads["model"] == model]
        grid = h.pivot_table(index="layer", columns="head", values="share").to_numpy()
        stem = "probe_head_share" + ("" if model == result.meta["model"]["name"] else "_control")
        folder.mkdir(parents=True, exist_ok=True)
        heatmap_png(grid, f"{model}: share of the parent probe's weight", folder / f"{stem}.png", vmax=None)
        files.append(f"{stem}.png")
    return files


def write_probe_report(result: Any, out_dir: Path, *, figures: bool = True, command: str | None = None,
                       force: bool = False) -> Path:
    """probes.csv, probe_heads.csv, report.md, run.json and figures/ into ``out_dir``, written whole."""
    with staged_output(Path(out_dir), "probe", force=force) as out:
        write_csv(result.table, out / "probes.csv")
        write_csv(result.heads, out / "probe_heads.csv")
        figure_files: list[str] = []
        if figures and len(result.heads):
            try:
                figure_files = _head_figures(result, out / "figures")
            except Exception as exc:  # a figure must never cost the tables
                log.warning("figures were not written: %s", exc)
        run = dict(result.meta)
        run["command"] = command or "headscope (library call)"
        run["files"] = (["probes.csv", "probe_heads.csv", "report.md", "run.json"]
                        + [f"figures/{f}" for f in figure_files])
        write_text(out / "report.md", render_probe_markdown(result, figure_files))
        write_text(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    return Path(out_dir)
