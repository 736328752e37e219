"""``analyze``: model + data -> capture -> scorers -> AnalysisResult, streaming batch by batch."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..capture.session import rows_per_block
from ..config import RunConfig
from ..errors import HeadscopeError
from .state import RunState
from .jobs import Job, as_sources, bos_meta, jobs_of, make_job, plan_jobs, source_kinds, unique_names
from ..tasks import TASKS, auto_tasks, default_tasks
from ..types import Corpus

log = logging.getLogger(__name__)


def add_q_values(scores: Any) -> None:
    """Fill ``q_value``: Benjamini–Hochberg over the head rows with a p-value of each model, dataset and task."""
    from ..analysis.stats import bh_adjust

    if not len(scores) or scores["p_value"].isna().all():
        return
    has = scores["p_value"].notna()
    for _, idx in scores[has].groupby(["model", "dataset", "task", "weighting"], dropna=False).groups.items():
        scores.loc[idx, "q_value"] = bh_adjust(scores.loc[idx, "p_value"].to_numpy(dtype=float))


def _examples(loaded: Any, plan: list, count: int, *, bos_id: int | None) -> list[dict]:
    """Word-level attention maps of up to ``count`` short sentences of the first sentence dataset (for reports).

    Only sentences the model can read are drawn; anything that goes wrong here is a warning, never
    the loss of a finished run.
    """
    from ..capture.alignment import encode_sentences
    from ..capture.links import word_maps

    if count <= 0:
        return []
    for source, _ in plan:
        if isinstance(source, Corpus) and source.sentences:
            try:
                candidates = [s for s in source.sentences[:500] if 3 <= len(s) <= 16]
                fits: list = []
                for k in range(0, len(candidates), 4 * count):   # tokenise only as many as it takes
                    chunk = candidates[k:k + 4 * count]
                    fits += [s for s, e in zip(chunk, encode_sentences(loaded.tokenizer, chunk, bos_id=bos_id))
                             if len(e) <= loaded.info.max_length]
                    if len(fits) >= count:
                        break
                fits = fits[:count]
                return [dict(m, dataset=source.name) for m in word_maps(loaded, fits, bos_id=bos_id)] if fits else []
            except Exception as exc:  # examples are illustrations: never lose the scores for them
                log.warning("example attention maps were not made: %s", exc)
                return []
    return []


def block_rows(scorers: list, num_heads: int, attention_memory: float) -> Any:
    """Query rows per attention block for a batch, when every scorer reads row blocks (``rows_per_block``: the
    block's scores and probabilities and the scorers' temporaries, four blocks, within ``attention_memory`` MiB);
    None (whole maps) otherwise or when the whole map is that small."""
    if not scorers or not all(getattr(s, "row_blocks", False) for s in scorers):
        return None
    budget = attention_memory * 2 ** 20

    def rows(batch: Any) -> int | None:
        b, t = batch.input_ids.shape
        return rows_per_block(t, b * num_heads * t * 4, budget, copies=4)

    return rows


def _restore(scorers: list, states: list[list[dict]]) -> list:
    """Each scorer holding the sums of every shard's state of it, merged."""
    out = []
    for scorer, per_shard in zip(scorers, states):
        parts = [scorer.from_state(st) for st in per_shard]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        out.append(merged)
    return out


class _Feed:
    """The capture's callbacks for one job: every scorer sees each batch and layer; the inputs scored so far are
    counted (and, with a checkpoint, saved every few batches)."""

    def __init__(self, scorers: list, state: RunState, model: str, job_key: str, weightings: list) -> None:
        self.scorers, self.state, self.model, self.job_key = scorers, state, model, job_key
        self.weightings = weightings
        self.done: list = []           # the inputs scored so far (a checkpoint records them)
        self.scored = 0

    def batch_start(self, batch: Any) -> None:
        for s in self.scorers:
            s.start_batch(batch)

    def layer(self, layer: int, weights: Any, batch: Any) -> None:
        self._update(layer, weights, batch, "weight")

    def norm_layer(self, layer: int, shares: Any, batch: Any) -> None:
        self._update(layer, shares, batch, "norm")

    @property
    def reads_norm(self) -> bool:
        return "norm" in self.weightings

    def _update(self, layer: int, maps: Any, batch: Any, weighting: str) -> None:
        from ..analysis.base import LayerView

        view = LayerView(layer, maps, batch)
        for s, w in zip(self.scorers, self.weightings):
            if w == weighting:
                s.update(view)

    def batch_end(self, batch: Any) -> None:
        for s in self.scorers:
            s.end_batch()
        self.scored += batch.size
        checkpoint = self.state.checkpoint
        if checkpoint is not None:
            self.done.extend(e.index for e in batch.encoded)
            checkpoint.batch_done(self.model, self.job_key, self.scorers, self.done, self.scored)
        self.state.advance(batch.size)


def _inputs(loaded: Any, job: Job, *, bos_id: int | None, shard: tuple[int, int] | None,
            documents: int | None = None) -> tuple[list, int]:
    """The job's inputs that the model can read (this shard's), and how many were too long for it; none
    is an error that says the ways out (``documents``: the words per joined document, when the run joins them)."""
    from ..capture.alignment import encode_sentences

    info = loaded.info
    if not job.sentences:
        raise HeadscopeError(f"{job.meta['path'] or job.name}: no input to score (the data is empty)")
    encoded_all = job.encoded
    if encoded_all is None:
        encoded_all = encode_sentences(loaded.tokenizer, job.sentences, bos_id=bos_id, max_length=info.max_length)
    encoded = [e for e in encoded_all if len(e) <= info.max_length]
    too_long = len(job.sentences) - len(encoded)
    if not encoded:
        shorter = (f"join fewer words per document (a smaller documents= than {documents})" if documents else
                   "split them into shorter ones (e.g. one sentence per line)")
        raise HeadscopeError(f"{job.meta['path'] or job.name}: every input is longer than the model's "
                             f"{info.max_length} tokens; {shorter}, or use a model with a longer context "
                             f"(model=, e.g. 'gemma3': 32768 tokens)")
    if shard is not None:          # this shard's inputs (it may have none when there are more shards)
        encoded = [e for e in encoded if e.index % shard[1] == shard[0]]
    if too_long:
        log.warning("%s: %d inputs longer than %d tokens were skipped", job.name, too_long, info.max_length)
    return encoded, too_long


def _read(loaded: Any, job: Job, job_key: str, encoded: list, cfg: RunConfig, state: RunState) -> _Feed:
    """Score the job's inputs (or restore its scorers from a checkpoint or from the shards' states)."""
    from ..capture.session import capture

    info = loaded.info
    feed = _Feed(job.scorers, state, info.name, job_key, job.weightings)
    prior = state.checkpoint.prior(info.name, job_key) if state.checkpoint is not None else None
    restored = state.restored_for(info.name)

    def where() -> str:
        log.warning("interrupted after %d inputs; results are partial", state.done)
        return f"while scoring: {state.done} of {state.total} inputs were scored"

    with state.stop_point(where):
        if prior is not None:          # resumed: the sums so far, and only the inputs not yet scored
            feed.scorers = job.scorers = _restore(feed.scorers, [[st] for st in prior["states"]])
            feed.done[:], feed.scored = list(prior["done"]), prior["n"]
            finished = set(prior["done"])
            encoded = [e for e in encoded if e.index not in finished]
            state.done += feed.scored
        if restored is not None and job_key in restored:
            feed.scorers = job.scorers = _restore(feed.scorers, restored[job_key][0])
            feed.scored = restored[job_key][1]
        elif encoded:
            capture(loaded, job.sentences, encoded, feed.layer, batch_size=cfg.batch_size,
                    on_batch_start=feed.batch_start, on_batch_end=feed.batch_end,
                    block_rows=block_rows(feed.scorers, info.num_heads, cfg.attention_memory),
                    row_stats=any(getattr(s, "wants_row_stats", False) for s in feed.scorers),
                    value_norms=any(getattr(s, "wants_value_norms", False) for s in feed.scorers),
                    on_norm_layer=feed.norm_layer if feed.reads_norm else None)
    return feed


def _collect(job: Job, scorers: list, bootstrap: int, seed: int, state: RunState, tables: list, extra: dict) -> None:
    """Each scorer's intervals and result tables (a Ctrl-C here keeps what is collected)."""
    import pandas as pd

    from .interrupts import shielded

    for s, weighting in zip(scorers, job.weightings):
        if bootstrap and state.interrupted is None and callable(getattr(s, "intervals", None)):
            with state.stop_point("while computing intervals: the scores have no intervals from that task on"):
                s.intervals(n_boot=bootstrap, seed=seed)
        with shielded() as noted:
            df = s.result()
            if len(df):
                tables.append(df.assign(dataset=job.name, weighting=weighting))
            summary = getattr(s, "summary", None)
            if callable(summary) and weighting == "weight":
                job.meta.update(summary())
            for key, table in (s.tables() if hasattr(s, "tables") and weighting == "weight" else {}).items():
                extra[key] = pd.concat([extra[key], table.assign(dataset=job.name)], ignore_index=True) \
                    if key in extra else table.assign(dataset=job.name)
        if noted.hit and state.partial_on_interrupt and state.interrupted is None:
            state.interrupted = "while collecting the scores: the tasks after it were not collected"


def _score_job(loaded: Any, job: Job, k: int, cfg: RunConfig, state: RunState, *, bos_id: int | None,
               tables: list, extra: dict) -> dict:
    """Read one job's inputs with the model, and collect its scorers into ``tables`` and ``extra``; returns the
    dataset's provenance for run.json."""
    info = loaded.info
    job_key = f"{k}|{job.name}"    # a dataset can feed two jobs (documents: coref, and positional)
    kept, too_long = _inputs(loaded, job, bos_id=bos_id, shard=state.shard, documents=cfg.documents)
    feed = _read(loaded, job, job_key, kept, cfg, state)
    if state.interrupted is None and job.meta.get("kind") == "generated":
        from ..analysis.induction import in_context_loss

        with state.stop_point("while checking the in-context loss (not recorded)"):
            job.meta["in_context_loss"] = (
                in_context_loss(loaded.model, job.scorers[0].sequences) if info.is_decoder
                else {"skipped": "not a causal language model (next-token loss is undefined)"})
    collect = state.collect_for(info.name)
    if collect is not None:
        collect[job_key] = [s.state() for s in feed.scorers]
    if state.checkpoint is not None and state.interrupted is None:
        state.checkpoint.job_done(info.name, job_key, feed.scorers, feed.done, feed.scored)
    _collect(job, feed.scorers, 0 if state.shard else cfg.bootstrap, cfg.seed, state, tables, extra)
    return {**job.meta, **bos_meta(loaded, kept), "sentences": len(job.sentences), "scored": feed.scored,
            "skipped_too_long": too_long, "words_replaced_by_unk": sum(e.replaced_words for e in kept)}


def _score_jobs(loaded: Any, jobs: list[Job], cfg: RunConfig, state: RunState, *, bos_id: int | None
                ) -> tuple[list, list, dict]:
    """Run one model over every job's inputs; each job's scorers end in tables (and per-dataset provenance).
    A Ctrl-C (with ``state.partial_on_interrupt``) stops after the job it came in, noted in ``state``."""
    tables: list = []
    datasets: list = []
    extra: dict = {}  # further tables (e.g. mentions) -> <name>.csv
    for k, job in enumerate(jobs):
        datasets.append(_score_job(loaded, job, k, cfg, state, bos_id=bos_id, tables=tables, extra=extra))
        if state.interrupted is not None:
            break
    return tables, datasets, extra


@dataclass
class _Plan:
    """What a run reads: its tasks, and each dataset (the selection data last) with the tasks that run on it."""

    tasks: list[str]
    jobs: list          # [(dataset, [task, ...]), ...]
    selection: list     # the same, of the selection data only


def _plan(data: Any, select_on: Any, cfg: RunConfig) -> _Plan:
    """The datasets and the tasks that run on each, bundled data filling in where a task has none."""
    from ..analysis.induction import RepeatedTokens

    sources = as_sources(data, keep_subtypes=cfg.keep_subtypes, on_error=cfg.on_error,
                         max_sentences=cfg.max_sentences, fmt=cfg.fmt)
    task_list = list(cfg.tasks) if cfg.tasks is not None else None
    if task_list is None:
        kinds = set().union(*(source_kinds(s) for s in sources)) if sources else set()
        task_list = auto_tasks(kinds) if sources else default_tasks()
    repeats = RepeatedTokens(count=cfg.induction_count, length=cfg.induction_length, seed=cfg.seed)
    plan = plan_jobs(task_list, unique_names(sources), keep_subtypes=cfg.keep_subtypes,
                     max_sentences=cfg.max_sentences, repeats=repeats)
    if cfg.documents is not None:
        from ..datasets.documents import documents as join_documents

        plan = [(join_documents(s, cfg.documents) if isinstance(s, Corpus) else s, ts) for s, ts in plan]
    return _Plan(task_list, plan, [])


def _selection(select_on: Any, plan: _Plan, cfg: RunConfig) -> list:
    """The jobs of the held-out selection data (``select_on``), named apart from the reported data."""
    if select_on is None:
        return []
    picked = as_sources(select_on, keep_subtypes=cfg.keep_subtypes, on_error=cfg.on_error,
                        max_sentences=cfg.max_sentences, fmt=cfg.fmt)
    if len(picked) > 1:
        raise HeadscopeError(f"select_on= takes one dataset, got {len(picked)}; join them into one file")
    plan_names = {s.name for s, _ in plan.jobs}
    selection = []
    for src in picked:
        name = src.name if src.name not in plan_names else f"{src.name} (selection)"
        src = src if name == src.name else dataclasses.replace(src, name=name)
        ts = [t for t in plan.tasks if TASKS[t].data in source_kinds(src)]
        if not ts:
            raise HeadscopeError(f"select_on={str(getattr(src, 'path', '') or src.name)!r}: none of the tasks "
                                 f"{', '.join(plan.tasks)} can run on it")
        selection.extend(jobs_of(src, ts))
    return selection


@dataclass
class _Scored:
    """Every model's scores, further tables and dataset provenance."""

    tables: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    control_datasets: list = field(default_factory=list)


def _score_models(models: list, plan: _Plan, cfg: RunConfig, state: RunState, *, bos_id: int | None,
                  lead: bool) -> _Scored:
    """Score every model (the model, then its control) on every job of the plan."""
    import pandas as pd

    from ..schema import frame

    out = _Scored()
    jobs_plan = plan.jobs + plan.selection
    for m in models:
        jobs = [make_job(s, ts, m, max_sentences=cfg.max_sentences, window=cfg.window, bos_id=bos_id, lead=lead,
                         keep_units=cfg.bootstrap > 0, weighting=cfg.weighting) for s, ts in jobs_plan]
        if m is models[0]:
            state.total = sum(len(j.sentences) for j in jobs) * len(models)
        tables, model_datasets, extra = _score_jobs(m, jobs, cfg, state, bos_id=bos_id)
        frame_ = pd.concat(tables, ignore_index=True) if tables else frame([])
        frame_["model"] = pd.array([m.info.name] * len(frame_), dtype="string")
        out.tables.append(frame_)
        for key, table in extra.items():
            table = table.assign(model=m.info.name)
            out.extra[key] = pd.concat([out.extra[key], table], ignore_index=True) if key in out.extra else table
        if m is models[0]:
            out.datasets = model_datasets
        else:
            out.control_datasets = model_datasets
        if state.interrupted is not None:
            break
    return out


def _meta(cfg: RunConfig, plan: _Plan, models: list, scored: _Scored, state: RunState, seconds: float) -> Any:
    """run.json's account of the run: what ran, on what, and whether it finished."""
    from .provenance import package_versions
    from .result import RunMeta

    loaded, info, control = models[0], models[0].info, cfg.control
    picked = {x.name for x, _ in plan.selection}
    return RunMeta(
        complete=state.interrupted is None, interrupted=state.interrupted, tasks=plan.tasks,
        config=cfg.record(device=str(loaded.device), max_length=info.max_length, tasks=plan.tasks,
                          devices=sorted({str(p.device) for p in loaded.model.parameters()}),
                          weights_dtype=str(next(loaded.model.parameters()).dtype).replace("torch.", "")),
        model=asdict(info), models=[m.info.name for m in models],
        control=({"kind": control, "model": models[1].info.name, "seed": cfg.seed,
                  "description": "the same architecture and tokenizer with freshly initialised weights "
                                 "(torch seed = --seed), scored on the same data in the same run",
                  "datasets": scored.control_datasets} if control else None),
        selection=({"select_on": [s.name for s, _ in plan.selection],
                    "report_on": [s.name for s, _ in plan.jobs if s.name not in picked]} if plan.selection else None),
        datasets=scored.datasets, versions=package_versions(), seconds=round(seconds, 3),
        shard={"index": state.shard[0], "count": state.shard[1]} if state.shard else None)


def _load(model: Any, tokenizer: Any, cfg: RunConfig) -> tuple[list, int | None, bool]:
    """The model (and its random-init control), the token that leads every input, and whether one does."""
    from ..models.loading import leading_token, load_model

    loaded = load_model(model, tokenizer=tokenizer, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                        part=cfg.part, dtype=cfg.dtype, device_map=cfg.device_map)
    lead = loaded.info.is_decoder if cfg.prepend_bos is None else cfg.prepend_bos
    models = [loaded]
    if cfg.control == "random-init":
        from ..models.loading import random_init

        models.append(random_init(loaded, seed=cfg.seed))
    return models, leading_token(loaded, cfg.prepend_bos), lead


def _finish(models: list, plan: _Plan, scored: _Scored, cfg: RunConfig, state: RunState, *, bos_id: int | None,
            t0: float) -> Any:
    """The result: the score table with its q-values, the example maps and run.json's account."""
    import pandas as pd

    from ..schema import frame
    from .interrupts import Noted, interruptible, shielded
    from .result import AnalysisResult

    loaded, info = models[0], models[0].info
    # Past this point a Ctrl-C is noted, not raised (when partial results are wanted): the scores are done.
    with (shielded() if state.partial_on_interrupt else contextlib.nullcontext(Noted())) as noted:
        scores = pd.concat(scored.tables, ignore_index=True) if scored.tables else frame([])
        scores["dataset"] = scores["dataset"].astype("string")
        scores["model"] = scores["model"].astype("string")
        scores["weighting"] = scores["weighting"].astype("string")
        scores["kv_head"] = (scores["head"] // info.kv_group_size).astype("Int64")
        add_q_values(scores)
        examples = []
        if state.interrupted is None and cfg.n_examples and not noted.hit:
            with state.stop_point("while making the example maps (the report has none)"):
                with interruptible() if state.partial_on_interrupt else contextlib.nullcontext():
                    examples = _examples(loaded, plan.jobs + plan.selection, cfg.n_examples, bos_id=bos_id)
        if noted.hit and state.interrupted is None:
            state.interrupted = "after scoring, while collecting the results"
        meta = _meta(cfg, plan, models, scored, state, time.perf_counter() - t0)
    return AnalysisResult(scores=scores, model=info, meta=meta, tables=scored.extra, examples=examples,
                          states=state.states)


def run_analysis(model: Any, data: Any, cfg: RunConfig, state: RunState, *, tokenizer: Any = None,
                 select_on: Any = None) -> Any:
    """``analyze`` as one part of a larger run: a shard, a launcher's rank, a merge of shards, a checkpointed or
    interruptible run (``state``; see :class:`headscope.run.state.RunState`). A model object given (an
    ``nn.Module`` or a ``LoadedModel``) gets back the attention implementation it had, also on error."""
    import torch

    from ..models.loading import attention_kept

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    plan = _plan(data, select_on, cfg)
    with attention_kept(model):
        models, bos_id, lead = _load(model, tokenizer, cfg)
        plan.selection = _selection(select_on, plan, cfg)
        scored = _score_models(models, plan, cfg, state, bos_id=bos_id, lead=lead)
        return _finish(models, plan, scored, cfg, state, bos_id=bos_id, t0=t0)


def analyze(model: Any = "minilm", data: Any = None, *, config: RunConfig | None = None, tokenizer: Any = None,
            select_on: Any = None, progress: Callable[[int, int], None] | None = None, **options: Any):
    """Score every attention head of ``model`` on ``data`` for the given tasks.

    ``model``: alias (``minilm``), Hugging Face id, local folder, ``nn.Module`` (with ``tokenizer``)
    or a ``LoadedModel``. ``data``: None (bundled samples), a path, a Corpus / DocumentCorpus /
    GapCorpus / PairCorpus, Sentences, strings, or a list of those. ``tasks``: any of TASK_NAMES
    (``headscope.tasks.TASKS``); each runs on the data that suits it (``pairs`` and the treebank tasks fall back to the bundled samples,
    ``induction`` generates its sequences). ``tasks=None``: without data DEFAULT_NAMES on the bundled
    samples; with data, those of AUTO_NAMES that the data supports.
    The settings are those of :class:`headscope.config.RunConfig`, given as keywords (``tasks=``,
    ``batch_size=``, ...) or as ``config=``; each is checked there before anything runs.
    ``max_sentences`` caps
    sentences (coreference: the documents of the first N), GAP rows or pairs per dataset.
    ``prepend_bos``: put the tokenizer's BOS first when it does not add one (default: for decoders).
    ``bootstrap``: replicates for the 95%
    intervals over units (``ci_low``/``ci_high``; sentences, documents for coreference, rows for GAP,
    pairs, generated sequences; 0 turns them off); head rows of tasks with baselines also get ``p_value`` (paired
    bootstrap test that the head beats the best baseline) and ``q_value`` (Benjamini–Hochberg).
    ``control="random-init"``: also score the same architecture with re-initialised weights (seeded
    by ``seed``); its rows carry its own ``model`` name. ``select_on``: data (as ``data``) scored as
    well, so that reports choose each relation's best head there and report it on ``data``
    (held-out selection). ``n_examples``: sentences whose word-level attention maps are kept for
    the report (``result.examples``). ``trust_remote_code``: let a model folder run its own Python code
    (``auto_map``); off unless asked. ``attention_memory``: MiB that one layer's attention may take; when
    every task reads row blocks (positional, syntax, coref, induction) and a batch's maps are larger,
    attention is computed and scored in blocks of query rows, so no ``[head, T, T]`` tensor is made.
    ``documents``: join consecutive sentences of each treebank or text into documents of at most this
    many words (sentence boundaries, trees and tags kept), for the long-range measures; inputs longer
    than the model are skipped. ``part="decoder"``: read an encoder-decoder's decoder self-attention,
    teacher-forced on the input, instead of its encoder (see ``load_model``). ``progress(done, total)`` is
    called after each batch. Shards, checkpoints and interruptible runs: :func:`run_analysis`
    (``headscope.run.shards.analyze_shard`` for one shard). Returns an :class:`AnalysisResult`.
    """
    cfg = RunConfig.given(config, options)
    return run_analysis(model, data, cfg, RunState(progress=progress), tokenizer=tokenizer, select_on=select_on)


# the task lists of the docstring come from the registry
analyze.__doc__ = (analyze.__doc__.replace("TASK_NAMES", ", ".join(f"``{name}``" for name in TASKS))
                   .replace("DEFAULT_NAMES", ", ".join(f"``{name}``" for name in default_tasks()))
                   .replace("AUTO_NAMES", ", ".join(f"``{t.name}``" for t in TASKS.values() if t.auto)))
