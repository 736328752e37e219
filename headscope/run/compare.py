"""``compare``: per-head score differences between two runs (or a run and its control), with intervals and heatmaps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError
from .reading import read_run
from ..tasks import BOUNDED_METRICS, measures

log = logging.getLogger(__name__)

MIN_N = 30   # "largest changes" skip measures with fewer instances (a one-sentence relation swings by 100 points)
KEYS = ["dataset", "task", "relation", "direction", "metric", "layer", "head"]


def _as_run(run: Any) -> tuple[Any, dict, str]:
    """(scores, meta, label) from an AnalysisResult or a run folder."""
    from ..schema import weighted

    if hasattr(run, "scores") and hasattr(run, "meta"):
        return weighted(run.scores), run.meta.record(), str(run.model.name)
    scores, meta = read_run(Path(run))
    scores = weighted(scores)
    main = (meta.get("model") or {}).get("name") if isinstance(meta.get("model"), dict) else None
    return scores, meta, main or (str(scores["model"].iloc[0]) if len(scores) else str(run))


@dataclass
class Comparison:
    """Per-head differences A − B: positive means run A's head scores higher."""

    label_a: str
    label_b: str
    table: Any                     # tidy: KEYS + score_a, score_b, diff, ci_low, ci_high, clear
    meta: dict = field(default_factory=dict)

    def summary(self):
        """Per measure: heads compared, mean difference, heads whose interval excludes 0, the largest change."""
        t = self.table
        rows = []
        for key, g in t.groupby(["dataset", "task", "relation", "direction", "metric"], dropna=False, sort=False):
            top = g.loc[g["diff"].abs().idxmax()]
            rows.append(dict(zip(["dataset", "task", "relation", "direction", "metric"], key),
                             heads=len(g), mean_a=float(g["score_a"].mean()), mean_b=float(g["score_b"].mean()),
                             mean_diff=float(g["diff"].mean()), higher_in_a=int((g["ci_low"] > 0).sum()),
                             higher_in_b=int((g["ci_high"] < 0).sum()),
                             largest=f"L{int(top['layer'])}.H{int(top['head'])}", largest_diff=float(top["diff"])))
        import pandas as pd

        return pd.DataFrame(rows)

    def top(self, k: int = 10):
        """The ``k`` head x measure rows with the largest absolute difference (fraction-valued measures,
        measured on at least ``MIN_N`` instances in both runs when any are)."""
        t = self.table[self.table["metric"].isin(BOUNDED_METRICS)]
        enough = t[(t["n_a"].fillna(0) >= MIN_N) & (t["n_b"].fillna(0) >= MIN_N)]
        t = enough if len(enough) else t
        return t.loc[t["diff"].abs().sort_values(ascending=False).index[:k]]

    def figures(self, out_dir: str | Path) -> list[str]:
        """Difference heatmaps (A - B, diverging colours) for the headline measures present."""
        from ..reports.figures import file_part, heatmap_png, plain_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        t = self.table
        for dataset in t["dataset"].dropna().unique():
            for task, rel, direction, metric, stem in ((m.task, m.relation, m.direction, m.metric, m.stem)
                                                       for m in measures(where="diff")):
                s = t[(t["dataset"] == dataset) & (t["task"] == task) & (t["relation"] == rel)
                      & (t["metric"] == metric)]
                s = s[s["direction"] == direction] if direction else s[s["direction"].isna()]
                if s.empty:
                    continue
                grid = s.pivot_table(index="layer", columns="head", values="diff", aggfunc="mean")
                lim = max(float(abs(grid.to_numpy()).max()), 1e-6)
                name = f"diff_{file_part(dataset)}_{stem}.png"
                heatmap_png(grid, plain_text(f"{rel} {direction or ''} {metric}: {self.label_a} − {self.label_b}"
                                             f" ({dataset})"), out / name, vmin=-lim, vmax=lim, cmap="RdBu_r",
                            label="A − B")
                written.append(name)
        return written

    def markdown(self, figure_files: list[str] = ()) -> str:
        """compare.md: the largest differences per measure, with their intervals and the figures."""
        from ..reports.markdown import md_text

        lines = [f"# headscope compare: {md_text(self.label_a)} vs {md_text(self.label_b)}", "",
                 f"Differences are A − B (A = {md_text(self.label_a)}, B = {md_text(self.label_b)}), per head and "
                 f"measure, over {len(self.table)} head × measure pairs present in both runs. "
                 f"{self.meta.get('interval', '')}"]
        lines += [f"- Warning: {md_text(w)}." for w in self.meta.get("warnings", [])]
        lines += ["",
                 "| data | task | measure | heads | mean A | mean B | mean A − B | higher in A | higher in B | "
                 "largest change |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in self.summary().itertuples():
            measure = md_text(r.relation) + (f" {r.direction}" if isinstance(r.direction, str) else "")
            lines.append(f"| {md_text(r.dataset)} | {r.task} | {measure} {r.metric} | {r.heads} | {r.mean_a:.3f} | "
                         f"{r.mean_b:.3f} | {r.mean_diff:+.3f} | {r.higher_in_a} | {r.higher_in_b} | "
                         f"{r.largest} ({r.largest_diff:+.3f}) |")
        lines += ["", "Largest per-head changes:", "", "| data | task | measure | head | A | B | A − B [95% CI] |",
                  "|---|---|---|---|---:|---:|---:|"]
        for r in self.top(15).itertuples():
            measure = md_text(r.relation) + (f" {r.direction}" if isinstance(r.direction, str) else "")
            ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            lines.append(f"| {md_text(r.dataset)} | {r.task} | {measure} | L{int(r.layer)}.H{int(r.head)} | "
                         f"{r.score_a:.3f} | {r.score_b:.3f} | {r.diff:+.3f}{ci} |")
        if figure_files:
            lines += ["", "## Difference heatmaps", ""] + [f"![{md_text(f)}](figures/{md_text(f)})"
                                                            for f in figure_files]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, *, figures: bool = True, force: bool = False) -> Path:
        """compare.csv (every pair), compare_summary.csv, compare.md and difference heatmaps into ``out_dir``,
        written whole (see ``reports.folder.staged_output``)."""
        from ..reports.folder import staged_output
        from ..reports.writer import write_csv, write_text

        with staged_output(Path(out_dir), "compare", force=force) as out:
            write_csv(self.table, out / "compare.csv")
            write_csv(self.summary(), out / "compare_summary.csv")
            files = self.figures(out / "figures") if figures else []
            write_text(out / "compare.md", self.markdown(files))
        return Path(out_dir)


def compare(a: Any, b: Any = None, *, model_a: str | None = None, model_b: str | None = None) -> Comparison:
    """Per-head differences of run ``a`` minus run ``b`` on every measure both scored.

    ``a`` / ``b``: an :class:`AnalysisResult` or a run's output folder (its scores.csv). Without
    ``b``, ``a`` must hold a random-init control (``--control random-init``), and the trained model
    is compared with it. ``model_a`` / ``model_b`` pick a model inside a run with several.
    Intervals: when both runs hold per-head intervals, the difference's 95% interval combines them
    as independent (``d ± sqrt(ea² + eb²)`` per side): wider than a paired interval when the two
    runs' per-sentence scores are positively correlated, narrower when negatively. Runs with
    different layer x head grids are refused; a dataset that differs between the runs (another
    file or another number of inputs under the same name) is warned about. ``clear`` marks
    intervals that exclude 0.
    """
    import numpy as np

    scores_a, meta_a, label_a = _as_run(a)
    if b is None:
        scores_b, meta_b, label_b = scores_a, meta_a, _control_of(scores_a, meta_a, label_a)
    else:
        scores_b, meta_b, label_b = _as_run(b)
    label_a = model_a or label_a
    label_b = model_b or label_b
    ha = _head_rows(scores_a, label_a, "A")
    hb = _head_rows(scores_b, label_b, "B")
    grid_a, grid_b = _grid(ha, meta_a, label_a), _grid(hb, meta_b, label_b)
    if grid_a != grid_b:
        raise HeadscopeError(f"{label_a} has {grid_a[0]} layers x {grid_a[1]} heads and {label_b} has "
                             f"{grid_b[0]} x {grid_b[1]}: a per-head comparison needs the same layer x head grid "
                             f"(compare each run's report for the best heads instead)")
    table = _differences(ha, hb)
    table.insert(0, "model_b", label_b)
    table.insert(0, "model_a", label_a)
    with_ci = int(np.isfinite(table["ci_low"]).sum())
    notes = [] if b is None else _dataset_notes(table, meta_a, meta_b)
    for note in notes:
        log.warning("compare: %s", note)
    meta = {"interval": ("95% intervals of A − B combine each run's bootstrap interval as if the runs were "
                         "independent (wider than a paired interval when the two runs' per-sentence scores are "
                         "positively correlated, narrower when negatively)." if with_ci else
                         "The runs carry no intervals (--bootstrap 0), so the differences have none."),
            "pairs": len(table), "with_interval": with_ci, "warnings": notes}
    return Comparison(label_a=label_a, label_b=label_b, table=table, meta=meta)


def _control_of(scores: Any, meta: dict, label: str) -> str:
    """The random-init control's model name in a run's scores (its run.json's, else the other model there)."""
    control = (meta.get("control") or {}).get("model")
    if control is None:
        models = [m for m in scores["model"].dropna().unique() if m != label]
        if not models:
            raise HeadscopeError("compare needs two runs, or one run made with --control random-init")
        control = models[0]
    return control


def _head_rows(scores: Any, label: str, which: str) -> Any:
    """Model ``label``'s head rows (no baselines, no offset measures) of run ``which`` (A or B); none is an error."""
    h = scores[(scores["model"] == label) & scores["baseline"].isna() & scores["layer"].notna()
               & (scores["metric"] != "offset")]
    if h.empty:
        have = sorted(set(scores["model"].dropna()))
        raise HeadscopeError(f"run {which} has no head scores for model {label!r}; it has {', '.join(have)}")
    return h


def _grid(heads: Any, meta: dict, label: str) -> tuple[int, int]:
    """``(layers, heads)`` of model ``label``: from the run's model record where it is that model's, else the
    largest layer and head scored."""
    m = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    if m.get("name") == label and m.get("num_layers") and m.get("num_heads"):
        return int(m["num_layers"]), int(m["num_heads"])
    return int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1


def _differences(ha: Any, hb: Any) -> Any:
    """The head x measure pairs present in both runs: KEYS, each run's score, interval and n (``_a``, ``_b``),
    ``diff`` (A − B), its interval (the two runs' combined as independent) and ``clear``."""
    import numpy as np

    cols = KEYS + ["score", "ci_low", "ci_high", "n"]
    left = ha[cols].astype({"direction": "string"}).fillna({"direction": ""})
    right = hb[cols].astype({"direction": "string"}).fillna({"direction": ""})
    table = left.merge(right, on=KEYS, suffixes=("_a", "_b"))
    if table.empty:
        da, db = sorted(set(ha["dataset"].dropna())), sorted(set(hb["dataset"].dropna()))
        raise HeadscopeError(f"the runs share no dataset and measure (A: {', '.join(da)}; B: {', '.join(db)}); "
                             f"score both on the same data")
    table["direction"] = table["direction"].replace("", None)
    table["diff"] = table["score_a"] - table["score_b"]
    ea_lo = (table["score_a"] - table["ci_low_a"]).to_numpy(dtype=float)
    ea_hi = (table["ci_high_a"] - table["score_a"]).to_numpy(dtype=float)
    eb_lo = (table["score_b"] - table["ci_low_b"]).to_numpy(dtype=float)
    eb_hi = (table["ci_high_b"] - table["score_b"]).to_numpy(dtype=float)
    d = table["diff"].to_numpy(dtype=float)
    table["ci_low"] = d - np.sqrt(ea_lo ** 2 + eb_hi ** 2)
    table["ci_high"] = d + np.sqrt(ea_hi ** 2 + eb_lo ** 2)
    table["clear"] = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    return table


def _dataset_notes(table: Any, meta_a: dict, meta_b: dict) -> list[str]:
    """Warnings about datasets compared under one name that are another file, or another number of inputs."""
    notes = []
    sets_a = {d.get("name"): d for d in meta_a.get("datasets", []) if isinstance(d, dict)}
    sets_b = {d.get("name"): d for d in meta_b.get("datasets", []) if isinstance(d, dict)}
    for name in sorted(set(table["dataset"].dropna()) & set(sets_a) & set(sets_b)):
        da, db = sets_a[name], sets_b[name]
        if da.get("sha256") and db.get("sha256") and da["sha256"] != db["sha256"]:
            notes.append(f"dataset {name} is a different file in the two runs (sha256 differs)")
        elif da.get("scored") != db.get("scored"):
            notes.append(f"dataset {name}: {da.get('scored')} inputs scored in A, {db.get('scored')} in B")
    return notes
