"""The object ``analyze`` returns: the tidy score table, provenance, and ways to query and save it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError
from ..types import ModelInfo


@dataclass
class AnalysisResult:
    """Scores of every head (``scores``, a tidy DataFrame) with the run's provenance (``meta``)."""

    scores: Any
    model: ModelInfo
    meta: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)   # further tidy tables by name, e.g. "mentions"
    examples: list = field(default_factory=list)  # word-level attention maps of a few sentences (explain.word_maps)
    _roles: Any = field(default=None, repr=False, compare=False)
    # a shard's scorer states, ``{model: {job: [state, ...]}}`` (``analyze(shard=...)``); empty otherwise
    states: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def select_on(self) -> str | None:
        """The dataset the best heads were chosen on (held-out selection), or None."""
        return ((self.meta.get("selection") or {}).get("select_on") or [None])[0]

    @property
    def report_datasets(self) -> list[str] | None:
        """The datasets reported on: every dataset scored but the selection data (None: not recorded)."""
        if "datasets" not in self.meta:
            return None
        picked = set((self.meta.get("selection") or {}).get("select_on") or [])
        return [d["name"] for d in self.meta["datasets"] if d["name"] not in picked]

    @property
    def roles(self) -> Any:
        """Every head's roles on the reported datasets, by the criteria of ``analysis.roles.criteria``, with the
        run's random-init control when it had one: the table that roles.csv and the reports show."""
        if self._roles is None:
            from ..analysis.roles import assign_roles

            info = self.model
            control = (self.meta.get("control") or {}).get("model")
            self._roles = assign_roles(self.scores, model=info.name, is_decoder=info.is_decoder, control=control,
                                       datasets=self.report_datasets, num_layers=info.num_layers,
                                       num_heads=info.num_heads)
            if "ablation" in self.tables:
                from ..analysis.roles import with_evidence

                self._roles = with_evidence(self._roles, self.tables["ablation"])
        return self._roles

    def _repr_html_(self) -> str:
        """Jupyter's view: the summary, the best head per measure and the role map (``reports.notebook``)."""
        from ..reports.notebook import result_html

        return result_html(self)

    def add_ablation(self, ablation: Any) -> None:
        """Join the causal evidence of an ``ablate(..., heads="each")`` result: ``roles`` (and roles.csv and the
        reports) then show beside each role what removing the head did, flagging heads whose removal changed
        nothing; the table is saved as ablation.csv."""
        table = ablation.table
        if table.empty or table["heads"].str.contains(",").all():
            raise HeadscopeError("the ablation has no single-head rows; ablate with heads='each' to give each role "
                                 "its evidence")
        if set(table["model"]) != {self.model.name}:
            raise HeadscopeError(f"the ablation is of {', '.join(sorted(set(table['model'])))}, not of "
                                 f"{self.model.name}; ablate the model that was analysed")
        self.tables["ablation"] = table
        self.meta["ablation"] = {k: ablation.meta.get(k) for k in ("method", "measures", "random_draws", "seed",
                                                                   "bootstrap", "note", "no_effect_rule")}
        self._roles = None

    def _select(self, task: str, relation: str | None, direction: str | None, metric: str | None,
                dataset: str | None, baselines: bool):
        df = self.scores
        mask = (df["task"] == task) & (df["model"] == self.model.name)
        if relation is not None:
            mask &= df["relation"] == relation
        if direction is not None:
            mask &= df["direction"] == direction
        if metric is not None:
            mask &= df["metric"] == metric
        if dataset is not None:
            mask &= df["dataset"] == dataset
        mask &= df["baseline"].notna() if baselines else df["baseline"].isna()
        out = df[mask.fillna(False)]
        if out.empty:
            have = sorted(set(df.loc[df["task"] == task, "relation"].dropna()))
            raise HeadscopeError(f"no {'baseline' if baselines else 'head'} scores for task={task!r} "
                                 f"relation={relation!r} direction={direction!r}; relations present: "
                                 f"{', '.join(have[:30]) or 'none (task not run)'}")
        return out

    def top(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
            metric: str | None = None, dataset: str | None = None, k: int = 5):
        """The ``k`` best heads (highest score) for a task / relation / direction."""
        return self._select(task, relation, direction, metric, dataset, False).nlargest(k, "score")

    def best(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
             metric: str | None = None, dataset: str | None = None):
        """The best head's row (a Series with ``layer``, ``head``, ``score``, ``n`` ...)."""
        return self.top(task, relation, direction, metric=metric, dataset=dataset, k=1).iloc[0]

    def best_baseline(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
                      metric: str | None = None, dataset: str | None = None):
        """The best baseline's row for the same selection."""
        return self._select(task, relation, direction, metric, dataset, True).nlargest(1, "score").iloc[0]

    def save(self, out_dir: str | Path, *, figures: bool = True) -> Path:
        """Write scores.csv, report.md, run.json and heatmaps into ``out_dir``."""
        from ..reports import write_report

        return write_report(self, Path(out_dir), figures=figures)

    def __repr__(self) -> str:
        tasks = ", ".join(sorted(set(self.scores["task"].dropna()))) if len(self.scores) else "none"
        return f"AnalysisResult(model={self.model.name!r}, tasks=[{tasks}], rows={len(self.scores)})"
