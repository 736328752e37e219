"""Write a result's files into an output folder: scores, roles, report.md/.html/.json, run.json, figures."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError

log = logging.getLogger(__name__)


def _write_text(path: Path, text: str) -> None:
    # Write to a temporary name first, so an interrupted write never leaves a half file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadscopeError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise HeadscopeError(f"output folder {out_dir} is not writable; choose another with --out")


def write_csv(table: Any, path: Path) -> None:
    """A table as CSV, written under a temporary name first (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _example_heads(roles: Any, num_layers: int, num_heads: int, k: int = 4) -> list[tuple[int, int, str]]:
    """Up to ``k`` heads to draw for the example sentences: the strongest head of each kind of role."""
    from ..analysis.roles import short_label

    named = roles[roles["role"] != "none"].copy()
    picked: list[tuple[int, int, str]] = []
    if len(named):
        named["margin"] = (named["score"].astype(float) - named["baseline_score"].astype(float)).fillna(
            named["score"].astype(float))
        for family in ("coreference", "syntax", "induction", "positional", "sink", "broad"):
            fam = named[named["family"] == family].sort_values("margin", ascending=False)
            for r in fam.itertuples():
                if len(picked) < k and all((r.layer, r.head) != (p[0], p[1]) for p in picked):
                    picked.append((int(r.layer), int(r.head), short_label(str(r.role))))
                    break
    if not picked:
        picked = [(num_layers // 2, 0, "")]
    return picked


def write_report(result: Any, out_dir: Path, *, figures: bool = True, command: str | None = None) -> Path:
    """scores.csv, roles.csv, report.md, report.html, report.json, run.json and figures/ into ``out_dir``.

    Tables are written first, so a failing figure never costs them; every file is written under a
    temporary name and renamed.
    """
    from ..analysis.roles import assign_roles
    from .content import build_content
    from .figures import example_maps, heatmaps, role_map
    from .html import data_uri, render_html
    from .markdown import render_markdown

    import time

    started = time.perf_counter()
    prepare_out_dir(out_dir)
    info = result.model
    scores = result.scores
    write_csv(scores, out_dir / "scores.csv")
    run = dict(result.meta)
    if command is not None:
        run["command"] = command
    run.setdefault("command", "headscope (library call)")
    control = (run.get("control") or {}).get("model")
    selection = run.get("selection") or {}
    report_sets = [d["name"] for d in run.get("datasets", []) if d["name"] not in (selection.get("select_on") or [])]
    roles = assign_roles(scores, model=info.name, is_decoder=info.is_decoder, control=control, datasets=report_sets,
                         num_layers=info.num_layers, num_heads=info.num_heads)
    write_csv(roles, out_dir / "roles.csv")
    run["files"] = ["scores.csv", "roles.csv", "report.md", "report.html", "report.json", "run.json"]
    for name, table in getattr(result, "tables", {}).items():
        write_csv(table, out_dir / f"{name}.csv")
        run["files"].append(f"{name}.csv")
    content = build_content(result, roles, command=run["command"])
    fig_dir = out_dir / "figures"
    figure_files: list[str] = []
    html_figures: dict = {"role_map": None, "heatmaps": [], "control": [], "examples": []}
    examples_drawn: list = []
    if figures and len(scores):
        fig_dir.mkdir(parents=True, exist_ok=True)

        def attempt(what: str, make: Any, default: Any) -> Any:
            try:
                return make()
            except Exception as exc:  # a figure must never cost the tables, nor the other figures
                log.warning("%s not written: %s", what, exc)
                return default

        own = scores[scores["model"] == info.name]
        main = attempt("heatmaps", lambda: heatmaps(own, fig_dir), [])
        ctrl = attempt("control heatmaps", lambda: heatmaps(scores[scores["model"] == control], fig_dir,
                                                             prefix="control_", suffix=" (random-init control)",
                                                             per_relation=False), []) if control else []
        has_map = attempt("role map", lambda: role_map(content["roles"]["grid"], fig_dir / "role_map.png",
                                                      f"Head roles — {info.name}") or True, False)
        heads = _example_heads(roles, info.num_layers, info.num_heads)
        for i, ex in enumerate(getattr(result, "examples", [])):
            name = f"example_{i + 1}.png"
            if attempt(f"example map {name}", lambda: example_maps(ex, heads, fig_dir / name) or True, False):
                examples_drawn.append((name, ex, " ".join(ex["words"])))
        figure_files = (["role_map.png"] if has_map else []) + main + ctrl + [e[0] for e in examples_drawn]
        html_figures = {"role_map": data_uri(fig_dir / "role_map.png") if has_map else None,
                        "heatmaps": [{"name": f, "src": data_uri(fig_dir / f)} for f in main],
                        "control": [{"name": f, "src": data_uri(fig_dir / f)} for f in ctrl],
                        "examples": [{"dataset": ex.get("dataset"), "sent_id": ex.get("sent_id"), "text": text,
                                      "src": data_uri(fig_dir / name)} for name, ex, text in examples_drawn]}
        if examples_drawn:
            content["example_heads"] = [f"L{layer}.H{head}" for layer, head, _ in heads]
    content["examples"] = [e for e in content["examples"]
                           if any(e["words"] == ex["words"] for _, ex, _ in examples_drawn)]
    content["figures"] = [f"figures/{f}" for f in figure_files]
    run["files"] += content["figures"]
    _write_text(out_dir / "report.md", render_markdown(result, figure_files, content=content))
    _write_text(out_dir / "report.json", json.dumps(content, indent=2, default=str, allow_nan=False) + "\n")
    _write_text(out_dir / "report.html", render_html(content, html_figures))
    run["report_seconds"] = round(time.perf_counter() - started, 3)
    _write_text(out_dir / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    return out_dir
