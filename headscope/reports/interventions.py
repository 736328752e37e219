"""The intervention folders (``headscope ablate``, ``headscope context``): their report content, built once as
data (headings, paragraphs, points, tables and images whose data-derived text is ``Data``), its Markdown
rendering (report.md), the figures, and the folders written whole."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .markdown import md_text
from .sections import Data

SHOWN = 30          # rows of a table shown in report.md; every row is in the CSV
TOP_RETRIEVAL = 10  # the retrieval heads set against windowability


# --------------------------------------------------------------------------------------------- content


@dataclass
class Paragraph:
    """A paragraph: runs (``str``: headscope's own text, where `x` marks code; ``Data``: from the data)."""

    runs: list


@dataclass
class Points:
    """A bulleted list; each item is runs."""

    items: list


@dataclass
class Table:
    """A table: ``columns`` (headscope's own names; an empty one is a blank header) and ``rows`` of cells, each
    runs (a ``str``, ``Data`` or a list of them)."""

    columns: list
    rows: list = field(default_factory=list)


@dataclass
class Images:
    """Images, one a line: ``(alt text, file name)`` pairs, both from the data."""

    items: list


@dataclass
class Part:
    """A section of a report: a heading (None: the part under the title) and its blocks, in order."""

    heading: str | None
    blocks: list = field(default_factory=list)


@dataclass
class Report:
    """A whole report: its title (runs) and parts."""

    title: list
    parts: list = field(default_factory=list)

    def record(self) -> dict:
        """The content as plain data (JSON)."""
        return asdict(self)


# ------------------------------------------------------------------------------------------- Markdown


def _md_runs(runs: Any) -> str:
    return "".join(md_text(r) if isinstance(r, Data) else r for r in ([runs] if isinstance(runs, str) else runs))


def _md_block(block: Any) -> list[str]:
    if isinstance(block, Paragraph):
        return [_md_runs(block.runs)]
    if isinstance(block, Points):
        return [f"- {_md_runs(item)}" for item in block.items]
    if isinstance(block, Images):
        return [f"![{md_text(alt)}]({md_text(name)})" for alt, name in block.items]
    return (["|" + "|".join(f" {c} " if c else " " for c in block.columns) + "|",
             "|" + "---|" * len(block.columns)]
            + ["| " + " | ".join(_md_runs(c) for c in row) + " |" for row in block.rows])


def render_markdown(report: Report) -> str:
    """report.md: the title, then each part's heading and blocks, every one after a blank line."""
    lines = [f"# {_md_runs(report.title)}"]
    for part in report.parts:
        if part.heading is not None:
            lines += ["", f"## {part.heading}"]
        for block in part.blocks:
            lines += ["", *_md_block(block)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- numbers


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


def _spearman(x: list[float], y: list[float]) -> float:
    import numpy as np
    import pandas as pd

    if len(x) < 3:
        return float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _command(meta: dict) -> list:
    """The command line's paragraph, where run.json has one."""
    return [Paragraph(["Command: `", Data(meta["command"]), "`"])] if meta.get("command") else []


# ------------------------------------------------------------------------------------------ ablation


def ablation_content(result: Any) -> Report:
    """The report of an ablation folder: the effects against random heads, flagged where nothing changed, and
    the importance ranking and pruning curve when they were computed."""
    meta, table = result.meta, result.table
    model = meta["model"]["name"] if isinstance(meta.get("model"), dict) else meta.get("model", "?")
    parts = [Part(None, [Points(_ablation_points(meta, table))]), _effects_part(meta, table)]
    if result.importance is not None:
        parts.append(_importance_part(result.importance))
    files = ["`ablation.csv` (one row per group × measure × method), "]
    for name in meta.get("figures", []):
        files += ["`", Data(name), "`, "]
    if result.importance is not None:
        files.append("`importance.csv`, `pruning.csv`, `pruning.png`, ")
    files.append("`run.json` (what was run, with the command).")
    parts.append(Part("Files", [Paragraph(files), *_command(meta)]))
    return Report(["Head ablation: ", Data(model)], parts)


def _ablation_points(meta: dict, table: Any) -> list:
    datasets = ", ".join(str(d) for d in dict.fromkeys(table["dataset"])) or "–"
    units = int(table["n"].max()) if len(table) else 0
    against = (f"Each group is set against {meta['random_draws']} groups of as many random heads (seed "
               f"{meta['seed']}); ")
    note = str(meta.get("note", ""))
    points = [["Method `", Data(meta["method"]), "`; measures ", Data(", ".join(meta["measures"])), "; data ",
               Data(datasets), f" ({units} units)."],
              [against + (f"`× random` is the effect over their median. Intervals: 95% bootstrap over units "
                          f"({meta['bootstrap']} replicates)." if meta.get("bootstrap") else
                          "no intervals (bootstrap 0).")],
              [Data(note[:1].upper() + note[1:]), "."]]
    if meta.get("selected_by"):
        points.append(["Heads chosen by a scoring pass: ", Data(meta["selected_by"]), "."])
    return points


def _effects_part(meta: dict, table: Any) -> Part:
    flagged = [bool(x) for x in table["no_effect"]]
    shown = (f" The {SHOWN} largest effects are shown; every row is in `ablation.csv`." if len(table) > SHOWN
             else "")
    intro = Paragraph([f"{sum(flagged)} of {len(table)} ablations change nothing measurable (",
                       Data(meta.get("no_effect_rule", "")), f"); they are flagged, not left out.{shown}"])
    images = Images([(name, name) for name in meta.get("figures", [])])
    effects = Table(["heads", "measure", "base", "ablated", "effect [95% CI]", "random median", "× random", ""])
    order = table.assign(_flag=flagged).sort_values("effect", ascending=False).head(SHOWN)
    for _, r in order.iterrows():
        ratio = float(r["ratio_to_random"])
        effects.rows.append([Data(r["heads"]), Data(r["measure"]), _num(r["base"]), _num(r["ablated"]),
                             f"{_signed(r['effect'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]",
                             _signed(r["random_median"]), "–" if math.isnan(ratio) else f"{ratio:.1f}",
                             "no effect" if r["_flag"] else ""])
    return Part("Effects", [intro, images, effects])


def _importance_part(imp: Any) -> Part:
    total = len(imp.table)
    top = imp.table.sort_values("rank").head(10)
    cost = (f"a rise of the loss under {100 * imp.tolerance:g}%" if imp.measure == "loss"
            else f"a hidden-state change (1 − cosine) under {imp.tolerance:g}")
    heads = ", ".join(f"L{int(r['layer'])}.H{int(r['head'])} ({float(r['importance']):.3g})"
                      for _, r in top.iterrows())
    return Part("Importance and pruning", [
        Paragraph(["Importance: ", Data(imp.table["how"].iloc[0]),
                   f". **{imp.prunable} of {total} heads ({100 * imp.prunable / total:.0f}%) can be removed at "
                   f"{cost}**, removing the least important first (`pruning.csv`)."]),
        Images([("pruning curve", "pruning.png")]),
        Paragraph([f"Most important heads: {heads}."])])


def ablation_markdown(result: Any) -> str:
    """report.md of an ablation folder."""
    return render_markdown(ablation_content(result))


# ------------------------------------------------------------------------------------------- context


def context_content(result: Any) -> Report:
    """The report of a context folder: the heads that could stream with the KV cache they would save, and the
    retrieval heads set against the windows they need."""
    meta = result.meta
    parts = [Part(None, [Points(_context_points(meta))]), _stream_part(result), _retrieval_part(result)]
    parts.append(Part("Files", [Paragraph([
        "`windows.csv` (one row per head, inputs and window tried), `heads.csv` (one row per head: its smallest "
        "window, on each input, and its retrieval score), `run.json` (what was run, with the KV-cache sizes)."]),
        *_command(meta)]))
    return Report(["Which heads need the whole context: ", Data(meta["model"]["name"])], parts)


def _keeps(meta: dict) -> str:
    """What a window must keep, in words."""
    tol = meta["tolerance"]
    if meta["measure"] == "loss":
        return f"keeps the next-token loss within +{100 * tol:g}% (unablated: {_num(meta['base'])} nats)"
    return f"keeps the final hidden states' change (1 − cosine) under {tol:g}"


def _context_points(meta: dict) -> list:
    tol = meta["tolerance"]
    needles = (f" and keeps the loss on the copies of {meta['window_needles']} needle inputs (below) within "
               f"+{100 * tol:g}% (unablated: {_num(meta.get('base_needles'))} nats): natural text rarely needs a "
               f"far key, a copy of a far needle does (the passkey check of DuoAttention)"
               if meta.get("window_needles") else "")
    return [[f"Data: {meta['documents']} document(s) of {meta['tokens']} tokens of ", Data(meta["dataset"]),
             "'s running text."],
            [f"Windows tried: {', '.join(map(str, meta['windows']))} keys (`window:W`: the first key and the W "
             f"nearest), smallest first, one head at a time. A head can be windowed at the smallest W that "
             f"{_keeps(meta)} on the text{needles}."]]


def _stream_part(result: Any) -> Part:
    meta, heads = result.meta, result.heads
    largest = max(meta["windows"])
    needles = bool(meta.get("window_needles"))
    tested = heads[heads["tested"]]
    windowed = tested[tested["smallest_window"].notna()]
    counts = Table(["smallest window", "heads", "on the text alone"] + (["on the needles alone"] if needles else []))
    for w in meta["windows"]:
        counts.rows.append([str(w), str(int((tested["smallest_window"] == w).sum())),
                            str(int((tested["smallest_window_text"] == w).sum()))]
                           + ([str(int((tested["smallest_window_needles"] == w).sum()))] if needles else []))
    counts.rows.append([f"none up to {largest}", str(len(tested) - len(windowed)),
                        str(int(tested["smallest_window_text"].isna().sum()))]
                       + ([str(int(tested["smallest_window_needles"].isna().sum()))] if needles else []))
    blocks = [Paragraph([f"**{len(windowed)} of {len(tested)} heads tested can be windowed** with at most "
                         f"{largest} keys; {len(tested) - len(windowed)} need more."]), counts]
    if len(tested) < len(heads):
        blocks.append(Paragraph([f"{len(heads) - len(tested)} heads were not tested; they count as needing the "
                                 f"whole context."]))
    if meta.get("joint"):
        blocks.append(_joint_paragraph(meta))
    return Part("Which heads could stream", blocks + _kv_blocks(result.kv))


def _joint_paragraph(meta: dict) -> Paragraph:
    joint, loss = meta["joint"], meta["measure"] == "loss"
    parts = [f"the text's {'loss' if loss else 'hidden states'} by "
             + (f"{100 * joint['text']:+.1f}%" if loss else f"{joint['text']:.4f}")]
    if "needles" in joint:
        parts.append(f"the needle-copy loss by {100 * joint['needles']:+.1f}%")
    over = any(v > meta["tolerance"] for k, v in joint.items() if k != "heads")
    return Paragraph([f"Windowing all {joint['heads']} windowable heads at once, each at its window, changes "
                      + " and ".join(parts) + "." + (" **That is more than the tolerance: the windows found one "
                                                     "head at a time do not add up, so the saving below is an "
                                                     "upper bound.**" if over else " The windows add up.")])


def _kv_blocks(kv: list) -> list:
    if not kv:
        return [Paragraph(["An encoder reads its whole input at once and keeps no KV cache: windowed heads save "
                           "attention compute here, not cache memory."])]
    first = kv[0]
    local = first.get("kv_heads_local", 0)
    model = [k.get("model_bytes", k["full_bytes"]) for k in kv]
    sizes = Table(["context", "full cache"] + (["the model's own (local layers windowed)"] if local else [])
                  + ["with windowed heads", "saved"],
                  [[f"{k['context']:,} tokens", _bytes(k["full_bytes"])] + ([_bytes(m)] if local else [])
                   + [_bytes(k["windowed_bytes"]), f"{_bytes(k['saved_bytes'])} ({100 * k['saved_share']:.1f}%)"]
                   for k, m in zip(kv, model)])
    own = (f" The model's {local} key/value heads of local layers already keep only their sliding window, so its "
           f"own cache is the third column; the saving is what windowing heads adds to it, and a head of a local "
           f"layer counts only where its window is narrower than the layer's." if local else "")
    return [Paragraph([f"KV cache of one sequence ({first['bytes_per_value'] * 8}-bit keys and values) if every "
                       f"windowed head kept only the first key and its window. Under GQA a key/value head shrinks "
                       f"only when every query head reading it can be windowed: {first['kv_heads_windowed']} of "
                       f"{first['kv_heads']} key/value heads." + own]), sizes]


def _retrieval_part(result: Any) -> Part:
    meta, heads = result.meta, result.heads
    if meta.get("retrieval"):
        return Part("Retrieval heads", [Paragraph(["Not scored: ", Data(meta["retrieval"]), "."])])
    copied, rows = int(heads["copied"].iloc[0]), int(heads["rows"].iloc[0])
    blocks: list = [Paragraph([
        f"{meta['needles']} inputs of {meta['tokens']} tokens, each a {meta['needle_length']}-token needle of "
        f"random tokens placed in the text and repeated at the end. The model copied {copied} of {rows} needle "
        f"tokens (its top prediction at the copy was the needle's next token). A head's retrieval score is the "
        f"share of those at which its strongest key was the token being copied (Wu et al. 2024)."])]
    if copied:
        blocks += _retrieval_against_windows(meta, heads)
    return Part("Retrieval heads", blocks)


def _retrieval_against_windows(meta: dict, heads: Any) -> list:
    import pandas as pd

    largest = max(meta["windows"])
    tested = heads[heads["tested"]]
    top = heads.sort_values("retrieval", ascending=False).head(TOP_RETRIEVAL)
    ranked = Table(["head", "retrieval", "smallest window"])
    for _, r in top.iterrows():
        w = r["smallest_window"]
        need = "not tested" if not r["tested"] else f"none up to {largest}" if pd.isna(w) else str(int(w))
        ranked.rows.append([f"L{r['layer']}.H{r['head']}", _num(r["retrieval"], 2), need])
    top_t = top[top["tested"]]
    criterion = (f"keeps both losses within +{100 * meta['tolerance']:g}%" if meta.get("window_needles")
                 else _keeps(meta).split(" (")[0])
    unwindowed = int(top_t["smallest_window"].isna().sum())
    overall = len(tested) - int(tested["smallest_window"].notna().sum())
    rho = _spearman(list(tested["retrieval"]), [largest * 4.0 if pd.isna(w) else float(w)
                                               for w in tested["smallest_window"]])
    return [ranked, Paragraph([
        f"**Of the {len(top_t)} tested heads with the highest retrieval scores, {unwindowed} cannot be windowed** "
        f"(no window up to {largest} keys {criterion}), against {overall} of {len(tested)} heads tested overall. "
        f"Rank correlation (Spearman) of the retrieval score with the smallest window (none ranked last): "
        f"{'–' if math.isnan(rho) else f'{rho:+.2f}'}."])]


def context_markdown(result: Any) -> str:
    """report.md of a context folder."""
    return render_markdown(context_content(result))


# --------------------------------------------------------------------------------------- the folders


def ablation_figures(result: Any, folder: Any) -> list[str]:
    """ablation_effects.png (the largest effects against random heads) and, when every head was ablated alone,
    ablation_<measure>.png (a layer x head grid of effects); the names written (also in ``meta["figures"]``)."""
    from pathlib import Path

    from .figures import ablation_effects_png, ablation_grids, file_part, heatmap_png

    if not len(result.table):
        return []
    folder = Path(folder)
    ablation_effects_png(result.table, folder / "ablation_effects.png")
    names = ["ablation_effects.png"]
    meta = result.meta
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    if model.get("num_layers") and model.get("num_heads"):
        for measure, grid in ablation_grids(result.table, model["num_layers"], model["num_heads"]).items():
            name = f"ablation_{file_part(measure)}.png"
            low = float(min(0.0, grid.to_numpy().min()))
            heatmap_png(grid, f"Effect of removing each head alone on {measure} ({meta.get('method')})",
                        folder / name, vmax=None, vmin=low, label=measure)
            names.append(name)
    meta["figures"] = names
    return names


def save_importance(imp: Any, folder: Any) -> None:
    """importance.csv, pruning.csv and pruning.png of an ``ImportanceResult`` into ``folder``."""
    from pathlib import Path

    from .figures import pruning_curve_png
    from .writer import write_csv

    folder = Path(folder)
    write_csv(imp.table, folder / "importance.csv")
    write_csv(imp.curve, folder / "pruning.csv")
    pruning_curve_png(imp.curve, imp.tolerance, folder / "pruning.png")


def save_ablation(result: Any, out: Any, *, force: bool = False) -> Any:
    """ablation.csv, the figures, the importance files (when computed), report.md and run.json of an
    ``AblationResult`` into ``out``, written whole (see ``reports.folder.staged_output``)."""
    import json
    from pathlib import Path

    from .folder import staged_output
    from .writer import write_csv, write_text

    with staged_output(Path(out), "ablation", force=force) as folder:
        write_csv(result.table, folder / "ablation.csv")
        ablation_figures(result, folder)
        if result.importance is not None:
            save_importance(result.importance, folder)
        write_text(folder / "report.md", ablation_markdown(result))
        write_text(folder / "run.json", json.dumps(result.meta, indent=2, default=str) + "\n")
    return Path(out)


def save_context(result: Any, out: Any, *, force: bool = False) -> Any:
    """windows.csv, heads.csv, report.md and run.json (with the KV-cache sizes) of a ``ContextResult`` into
    ``out``, written whole."""
    import json
    from pathlib import Path

    from .folder import staged_output
    from .writer import write_csv, write_text

    with staged_output(Path(out), "context", force=force) as folder:
        write_csv(result.windows, folder / "windows.csv")
        write_csv(result.heads, folder / "heads.csv")
        write_text(folder / "report.md", context_markdown(result))
        write_text(folder / "run.json", json.dumps({**result.meta, "kv_cache": result.kv}, indent=2, default=str)
                   + "\n")
    return Path(out)
