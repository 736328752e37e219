"""The object ``analyze`` returns: the tidy score table, provenance, and ways to query and save it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError
from ..schema import weighted
from ..types import ModelInfo


# run.json's keys in order; those after the first group appear only when set
_ALWAYS = ("complete", "tasks", "config", "model", "models", "control", "selection", "datasets", "versions",
           "seconds")
_WHEN_SET = ("interrupted", "shard", "merged", "distributed", "ablation", "patching", "command")


@dataclass
class RunMeta:
    """What a run was and how it went: run.json's account of it, typed. ``complete``: False when a Ctrl-C
    stopped it (``interrupted`` says where); ``tasks``; ``config`` (``RunConfig.record``); ``model``
    (``ModelInfo`` as a dict) and ``models`` (with the control's); ``control`` and ``selection`` (None when the
    run had none); ``datasets``: one dict per dataset scored (its kind, counts, checksums and what its scorers
    summarised); ``versions``; ``seconds``; ``shard``, ``merged``, ``distributed``: how it was split;
    ``ablation``: the causal evidence's settings (``headscope run --ablate``); ``patching``: the contrast pairs'
    patching's (``headscope run --patch``); ``command``; ``extra``: any other
    key of a run.json read back (``files``, ``report_seconds``)."""

    complete: bool = True
    interrupted: str | None = None
    tasks: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    models: list = field(default_factory=list)
    control: dict | None = None
    selection: dict | None = None
    datasets: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    seconds: float | None = None
    shard: dict | None = None
    merged: dict | None = None
    distributed: dict | None = None
    ablation: dict | None = None
    patching: dict | None = None
    command: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, record: dict) -> "RunMeta":
        """From run.json's dict (keys it does not know go to ``extra``)."""
        known = set(_ALWAYS) | set(_WHEN_SET)
        return cls(**{k: v for k, v in record.items() if k in known},
                   extra={k: v for k, v in record.items() if k not in known})

    def record(self) -> dict:
        """run.json's dict: the keys every run has, then those this run set, then ``extra``."""
        out = {"complete": self.complete}
        if self.interrupted is not None:
            out["interrupted"] = self.interrupted
        out.update({k: getattr(self, k) for k in _ALWAYS[1:]})
        out.update({k: getattr(self, k) for k in _WHEN_SET[1:] if getattr(self, k) is not None})
        return {**out, **self.extra}

    def stopped(self, where: str) -> None:
        """The run was cut short ``where``: what is written covers what was finished."""
        self.complete, self.interrupted = False, where

    @property
    def scored(self) -> int:
        """Inputs scored, over every dataset."""
        return sum(d["scored"] for d in self.datasets)


@dataclass
class AnalysisResult:
    """Scores of every head (``scores``, a tidy DataFrame) with the run's provenance (``meta``, a
    :class:`RunMeta`; a run.json dict is taken too)."""

    scores: Any
    model: ModelInfo
    meta: RunMeta = field(default_factory=RunMeta)
    tables: dict = field(default_factory=dict)   # further tidy tables by name, e.g. "mentions"
    examples: list = field(default_factory=list)  # word-level attention maps of a few sentences (capture.links.word_maps)
    _roles: Any = field(default=None, repr=False, compare=False)
    # a shard's scorer states, ``{model: {job: [state, ...]}}`` (``analyze(shard=...)``); empty otherwise
    states: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.meta, dict):
            self.meta = RunMeta.of(self.meta)

    @property
    def select_on(self) -> str | None:
        """The dataset the best heads were chosen on (held-out selection), or None."""
        return ((self.meta.selection or {}).get("select_on") or [None])[0]

    @property
    def report_datasets(self) -> list[str] | None:
        """The datasets reported on: every dataset scored but the selection data (None: not recorded)."""
        if not self.meta.datasets:
            return None
        picked = set((self.meta.selection or {}).get("select_on") or [])
        return [d["name"] for d in self.meta.datasets if d["name"] not in picked]

    @property
    def roles(self) -> Any:
        """Every head's roles on the reported datasets, by the criteria of ``analysis.roles.criteria``, with the
        run's random-init control when it had one: the table that roles.csv and the reports show."""
        if self._roles is None:
            from ..analysis.roles import assign_roles

            info = self.model
            control = (self.meta.control or {}).get("model")
            self._roles = assign_roles(weighted(self.scores), model=info.name, is_decoder=info.is_decoder, control=control,
                                       datasets=self.report_datasets, num_layers=info.num_layers,
                                       num_heads=info.num_heads)
            if "ablation" in self.tables:
                from ..analysis.roles import with_evidence

                self._roles = with_evidence(self._roles, self.tables["ablation"])
            if "patching" in self.tables:
                from ..analysis.roles import with_patching

                self._roles = with_patching(self._roles, self.tables["patching"])
        return self._roles

    def roles_by(self, weighting: str = "weight") -> Any:
        """The roles that the scores of one weighting name: ``"weight"`` is :attr:`roles`; ``"norm"`` names
        each head by what it writes (value-weighted attention), from a run with ``weighting="weight,norm"``.
        Under ``norm`` a sink is a head that writes mostly from the sink token."""
        if weighting == "weight":
            return self.roles
        rows = weighted(self.scores, weighting)
        if rows.empty:
            raise HeadscopeError(f"this run has no {weighting} scores; run it with weighting='weight,{weighting}'")
        from ..analysis.roles import assign_roles

        info = self.model
        return assign_roles(rows, model=info.name, is_decoder=info.is_decoder,
                            control=(self.meta.control or {}).get("model"), datasets=self.report_datasets,
                            num_layers=info.num_layers, num_heads=info.num_heads)

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
        self.meta.ablation = {k: ablation.meta.get(k) for k in ("method", "measures", "random_draws", "seed",
                                                                   "bootstrap", "note", "no_effect_rule")}
        self._roles = None

    def add_patching(self, patched: Any) -> None:
        """Join the patching of every head on contrast pairs (a ``patch(...)`` result of this model): ``roles``
        (and roles.csv and the reports) then show beside each role how much of the answer patching the head's
        output moves, and the reports name heads with a large effect and no attention role; the table is saved
        as patching.csv."""
        table = patched.table
        if table.empty or not (table["layer"].notna() & table["head"].notna()).any():
            raise HeadscopeError("the patching has no single-head rows; patch every head (not only groups or KV "
                                 "groups) to give each role its evidence")
        if set(table["model"]) != {self.model.name}:
            raise HeadscopeError(f"the patching is of {', '.join(sorted(set(table['model'])))}, not of "
                                 f"{self.model.name}; patch the model that was analysed")
        self.tables["patching"] = table
        self.meta.patching = {k: patched.meta.get(k) for k in ("dataset", "pairs", "ld_clean", "ld_corrupt",
                                                                 "methods", "directions", "bootstrap", "seed")}
        self._roles = None

    def _select(self, task: str, relation: str | None, direction: str | None, metric: str | None,
                dataset: str | None, baselines: bool, weighting: str = "weight"):
        df = weighted(self.scores, weighting)
        mask = (df["task"] == task) & (df["model"] == self.model.name)
        if relation is not None:
            mask &= df["relation"] == relation
        if direction is not None:
            mask &= df["direction"] == direction
        if metric is not None:
            mask &= df["metric"] == metric
        if dataset is not None:
            mask &= df["dataset"] == dataset
        # the baselines of every head alike, not one head's own (``OWN``)
        mask &= (df["baseline"].notna() & df["layer"].isna()) if baselines else df["baseline"].isna()
        out = df[mask.fillna(False)]
        if out.empty:
            have = sorted(set(df.loc[df["task"] == task, "relation"].dropna()))
            raise HeadscopeError(f"no {'baseline' if baselines else 'head'} scores for task={task!r} "
                                 f"relation={relation!r} direction={direction!r}; relations present: "
                                 f"{', '.join(have[:30]) or 'none (task not run)'}")
        return out

    def top(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
            metric: str | None = None, dataset: str | None = None, k: int = 5, weighting: str = "weight"):
        """The ``k`` best heads (highest score) for a task / relation / direction; ``weighting="norm"``: by
        value-weighted attention (a run with ``weighting="weight,norm"``)."""
        return self._select(task, relation, direction, metric, dataset, False, weighting).nlargest(k, "score")

    def best(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
             metric: str | None = None, dataset: str | None = None, weighting: str = "weight"):
        """The best head's row (a Series with ``layer``, ``head``, ``score``, ``n`` ...)."""
        return self.top(task, relation, direction, metric=metric, dataset=dataset, k=1, weighting=weighting).iloc[0]

    def best_baseline(self, task: str = "syntax", relation: str | None = "all", direction: str | None = None, *,
                      metric: str | None = None, dataset: str | None = None, weighting: str = "weight"):
        """The best baseline's row for the same selection."""
        return self._select(task, relation, direction, metric, dataset, True, weighting).nlargest(1, "score").iloc[0]

    def save(self, out_dir: str | Path, *, figures: bool = True, force: bool = False) -> Path:
        """Write scores.csv, report.md, run.json and heatmaps into ``out_dir`` (``force``: also into a folder of
        other files, or over another kind of headscope output; see ``reports.folder.staged_output``)."""
        from ..reports import write_report

        return write_report(self, Path(out_dir), figures=figures, force=force)

    def __repr__(self) -> str:
        tasks = ", ".join(sorted(set(self.scores["task"].dropna()))) if len(self.scores) else "none"
        return f"AnalysisResult(model={self.model.name!r}, tasks=[{tasks}], rows={len(self.scores)})"
