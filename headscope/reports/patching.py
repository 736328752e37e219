"""The patching output folder: patching.csv, a layer x head heatmap per method and direction, report.md (the heads
that carry the logit difference, groups, and how attribution agrees with exact patching) and run.json."""

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
    heads = result.meta["heads"]
    missed = [f"L{i // heads}.H{i % heads}" for i in sorted(top5 - top10)]
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
    lines += ["Single-head patching finds bottlenecks: heads that do the same job side by side (several induction "
              "heads) each move little alone; patch them as a group to see their joint effect.", ""]
    return "\n".join(lines)


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
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_title(f"{method} patching, {direction}\nshare of the logit difference moved", fontsize=9)
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            name = f"patching_{method}_{direction}.png"
            fig.savefig(folder / name, dpi=110)
            plt.close(fig)
            names.append(name)
    return names


def save_patching(result: Any, out: Any, *, force: bool = False) -> Any:
    """patching.csv, the heatmaps, report.md and run.json of a ``PatchResult`` into ``out``, written whole (see
    ``reports.folder.staged_output``)."""
    import json
    from pathlib import Path

    from .folder import staged_output
    from .writer import write_csv, write_text

    with staged_output(Path(out), "patching", force=force) as folder:
        write_csv(result.table, folder / "patching.csv")
        patching_figures(result, folder)
        write_text(folder / "report.md", patching_markdown(result))
        meta = {**result.meta, "agreement": {d: agreement(result, d) for d in result.meta["directions"]}}
        write_text(folder / "run.json", json.dumps(meta, indent=2, default=str) + "\n")
    return Path(out)
