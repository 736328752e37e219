"""``analyze``: model + data -> capture -> scorers -> AnalysisResult, streaming batch by batch."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import asdict
from typing import Any, Callable

from ..config import RunConfig
from ..errors import HeadscopeError
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
    for _, idx in scores[has].groupby(["model", "dataset", "task"], dropna=False).groups.items():
        scores.loc[idx, "q_value"] = bh_adjust(scores.loc[idx, "p_value"].to_numpy(dtype=float))


def _examples(loaded: Any, plan: list, count: int, *, bos_id: int | None) -> list[dict]:
    """Word-level attention maps of up to ``count`` short sentences of the first sentence dataset (for reports).

    Only sentences the model can read are drawn; anything that goes wrong here is a warning, never
    the loss of a finished run.
    """
    from ..capture.alignment import encode_sentences
    from .explain import word_maps

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


# Bytes of float32 probabilities per row block: small enough to stay in the CPU's cache between the
# passes over it (scores, softmax, the scorers, P V), large enough that the per-block work in Python is small;
# and at least MIN_BLOCK_ROWS rows (a 32k-token input would otherwise take thousands of tiny blocks).
BLOCK_BYTES = 16 * 2 ** 20
MIN_BLOCK_ROWS = 64


def block_rows(scorers: list, num_heads: int, attention_memory: float) -> Any:
    """Query rows per attention block for a batch, when every scorer reads row blocks: blocks of about
    BLOCK_BYTES, never more than ``attention_memory`` MiB per layer; None (whole maps) otherwise or when
    the whole map is that small."""
    if not scorers or not all(getattr(s, "row_blocks", False) for s in scorers):
        return None
    budget = attention_memory * 2 ** 20

    def rows(batch: Any) -> int | None:
        b, t = batch.input_ids.shape
        per_row = b * num_heads * t * 4
        # the block's scores and probabilities and the scorers' temporaries stay within the budget
        n = max(1, min(int(budget // (4 * per_row)), max(MIN_BLOCK_ROWS, int(BLOCK_BYTES // per_row))))
        if n >= t:
            return None
        return n - n % 32 if n > 64 else n   # whole tiles for the matrix products

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


def _score_jobs(loaded: Any, jobs: list[Job], *, bootstrap: int, seed: int, progress: Any, progress_state: dict,
                partial_on_interrupt: bool, bos_id: int | None, batch_size: int, attention_memory: float = 512,
                shard: tuple[int, int] | None = None, restored: dict | None = None, collect: dict | None = None,
                checkpoint: Any = None) -> tuple[list, list, dict, str | None]:
    """Run one model over every job's inputs; each job's scorers end in tables (and per-dataset provenance).

    The last item says where Ctrl-C stopped the run (None: it ran to the end); with
    ``partial_on_interrupt`` everything finished before that point is still returned. ``shard`` ``(i, n)``:
    only the inputs whose index is i modulo n are read, and each job's scorer states go into ``collect``
    (``{"k|name": [state, ...]}``, k the job's place). ``restored`` (``{"k|name": ([[state per shard] per
    scorer], inputs scored)}``):
    a job's scorers are rebuilt from its shards' states instead of read from the model. ``checkpoint`` (a
    ``shards.Checkpoint``): the states are saved every few batches, and a job it holds goes on from there.
    """
    import pandas as pd

    from ..capture.alignment import encode_sentences
    from ..analysis.base import LayerView
    from ..capture.session import capture

    from .interrupts import shielded

    info = loaded.info
    interrupted: str | None = None
    tables, datasets = [], []
    extra: dict = {}  # further tables (e.g. mentions) -> <name>.csv
    for k, job in enumerate(jobs):
        job_key = f"{k}|{job.name}"    # a dataset can feed two jobs (documents: coref, and positional)
        if not job.sentences:
            raise HeadscopeError(f"{job.meta['path'] or job.name}: no input to score (the data is empty)")
        encoded_all = job.encoded
        if encoded_all is None:
            encoded_all = encode_sentences(loaded.tokenizer, job.sentences, bos_id=bos_id, max_length=info.max_length)
        encoded = [e for e in encoded_all if len(e) <= info.max_length]
        too_long = len(job.sentences) - len(encoded)
        if not encoded:
            raise HeadscopeError(f"{job.meta['path'] or job.name}: every input is longer than the model's "
                                 f"{info.max_length} tokens")
        if shard is not None:          # this shard's inputs (it may have none when there are more shards)
            encoded = [e for e in encoded if e.index % shard[1] == shard[0]]
        kept = encoded
        done: list = []                # the inputs scored so far (a checkpoint records them)
        prior = checkpoint.prior(info.name, job_key) if checkpoint is not None else None
        if too_long:
            log.warning("%s: %d inputs longer than %d tokens were skipped", job.name, too_long, info.max_length)
        scorers = job.scorers
        scored = {"n": 0}

        def on_batch_start(batch):
            for s in scorers:
                s.start_batch(batch)

        def on_layer(layer, weights, batch):
            view = LayerView(layer, weights, batch)
            for s in scorers:
                s.update(view)

        def on_batch_end(batch):
            for s in scorers:
                s.end_batch()
            scored["n"] += batch.size
            if checkpoint is not None:
                done.extend(e.index for e in batch.encoded)
                checkpoint.batch_done(info.name, job_key, scorers, done, scored["n"])
            progress_state["done"] += batch.size
            if progress is not None:
                progress(progress_state["done"], progress_state["total"])

        try:
            if prior is not None:          # resumed: the sums so far, and only the inputs not yet scored
                scorers = job.scorers = _restore(scorers, [[st] for st in prior["states"]])
                done[:], scored["n"] = list(prior["done"]), prior["n"]
                finished = set(prior["done"])
                encoded = [e for e in encoded if e.index not in finished]
                progress_state["done"] += scored["n"]
            if restored is not None and job_key in restored:
                scorers = job.scorers = _restore(scorers, restored[job_key][0])
                scored["n"] = restored[job_key][1]
            elif encoded:
                capture(loaded, job.sentences, encoded, on_layer, batch_size=batch_size,
                        on_batch_start=on_batch_start, on_batch_end=on_batch_end,
                        block_rows=block_rows(scorers, info.num_heads, attention_memory),
                        row_stats=any(getattr(s, "wants_row_stats", False) for s in scorers))
        except KeyboardInterrupt:
            if not partial_on_interrupt:
                raise
            interrupted = f"while scoring: {progress_state['done']} of {progress_state['total']} inputs were scored"
            log.warning("interrupted after %d inputs; results are partial", progress_state["done"])
        if interrupted is None and job.meta.get("kind") == "generated":
            from ..analysis.induction import in_context_loss

            try:
                job.meta["in_context_loss"] = (
                    in_context_loss(loaded.model, job.scorers[0].sequences) if info.is_decoder
                    else {"skipped": "not a causal language model (next-token loss is undefined)"})
            except KeyboardInterrupt:
                if not partial_on_interrupt:
                    raise
                interrupted = "while checking the in-context loss (not recorded)"
        if collect is not None:
            collect[job_key] = [s.state() for s in scorers]
        if checkpoint is not None and interrupted is None:
            checkpoint.job_done(info.name, job_key, scorers, done, scored["n"])
        for s in scorers:
            if bootstrap and interrupted is None and callable(getattr(s, "intervals", None)):
                try:
                    s.intervals(n_boot=bootstrap, seed=seed)
                except KeyboardInterrupt:
                    if not partial_on_interrupt:
                        raise
                    interrupted = "while computing intervals: the scores have no intervals from that task on"
            with shielded() as noted:
                df = s.result()
                if len(df):
                    tables.append(df.assign(dataset=job.name))
                summary = getattr(s, "summary", None)
                if callable(summary):
                    job.meta.update(summary())
                for key, table in (s.tables() if hasattr(s, "tables") else {}).items():
                    extra[key] = pd.concat([extra[key], table.assign(dataset=job.name)], ignore_index=True) \
                        if key in extra else table.assign(dataset=job.name)
            if noted.hit and partial_on_interrupt and interrupted is None:
                interrupted = "while collecting the scores: the tasks after it were not collected"
        datasets.append({**job.meta, **bos_meta(loaded, kept),
                         "sentences": len(job.sentences), "scored": scored["n"],
                         "skipped_too_long": too_long,
                         "words_replaced_by_unk": sum(e.replaced_words for e in kept)})
        if interrupted is not None:
            break
    return tables, datasets, extra, interrupted


def analyze(model: Any = "minilm", data: Any = None, *, config: RunConfig | None = None, tokenizer: Any = None,
            select_on: Any = None, progress: Callable[[int, int], None] | None = None,
            partial_on_interrupt: bool = False, shard: tuple[int, int] | None = None, restored: dict | None = None,
            checkpoint: Any = None, **options: Any):
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
    sentences, documents, GAP rows or pairs per dataset. ``prepend_bos``: put the tokenizer's BOS
    first when it does not add one (default: for decoders). ``bootstrap``: replicates for the 95%
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
    teacher-forced on the input, instead of its encoder (see ``load_model``). ``shard=(i, n)``: read only
    the inputs whose index is i modulo n, and keep the scorers' states (``result.states``, no intervals);
    ``restored``: the shards' states (``headscope.run.shards.merge_shards``), which take the place of the
    forward passes. ``checkpoint`` (``headscope.run.shards.Checkpoint``): save the scorer states every few
    batches, and go on from the states it holds (a run resumed after a kill). Returns an :class:`AnalysisResult`.
    """
    import pandas as pd
    import torch

    from .interrupts import Noted, interruptible, shielded
    from ..models.loading import leading_token, load_model
    from .provenance import package_versions
    from .result import AnalysisResult
    from ..schema import frame

    if config is not None and options:
        raise HeadscopeError(f"give the settings as config= or as keywords, not both (got {', '.join(options)})")
    cfg = config if config is not None else RunConfig.of(options)
    tasks, batch_size, device, max_sentences = cfg.tasks, cfg.batch_size, cfg.device, cfg.max_sentences
    keep_subtypes, on_error, fmt, window, seed = cfg.keep_subtypes, cfg.on_error, cfg.fmt, cfg.window, cfg.seed
    induction_count, induction_length, prepend_bos = cfg.induction_count, cfg.induction_length, cfg.prepend_bos
    bootstrap, control, n_examples, trust_remote_code = cfg.bootstrap, cfg.control, cfg.n_examples, cfg.trust_remote_code
    attention_memory, documents, part = cfg.attention_memory, cfg.documents, cfg.part
    task_list = list(tasks) if tasks is not None else None
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    sources = as_sources(data, keep_subtypes=keep_subtypes, on_error=on_error, max_sentences=max_sentences, fmt=fmt)
    if task_list is None:
        kinds = set().union(*(source_kinds(s) for s in sources)) if sources else set()
        task_list = auto_tasks(kinds) if sources else default_tasks()
    from ..analysis.induction import RepeatedTokens

    repeats = RepeatedTokens(count=induction_count, length=induction_length, seed=seed)
    plan = plan_jobs(task_list, unique_names(sources), keep_subtypes=keep_subtypes, max_sentences=max_sentences,
                 repeats=repeats)
    if documents is not None:
        from ..datasets.documents import documents as join_documents

        plan = [(join_documents(s, documents) if isinstance(s, Corpus) else s, ts) for s, ts in plan]
    loaded = load_model(model, tokenizer=tokenizer, device=device, trust_remote_code=trust_remote_code, part=part,
                        dtype=cfg.dtype, device_map=cfg.device_map)
    info = loaded.info
    lead = info.is_decoder if prepend_bos is None else prepend_bos
    bos_id = leading_token(loaded, prepend_bos)
    models = [loaded]
    if control == "random-init":
        from ..models.loading import random_init

        models.append(random_init(loaded, seed=seed))
    selection = []
    if select_on is not None:
        picked = as_sources(select_on, keep_subtypes=keep_subtypes, on_error=on_error, max_sentences=max_sentences,
                             fmt=fmt)
        if len(picked) > 1:
            raise HeadscopeError(f"--select-on takes one dataset, got {len(picked)}; join them into one file")
        plan_names = {s.name for s, _ in plan}
        for src in picked:
            name = src.name if src.name not in plan_names else f"{src.name} (selection)"
            src = src if name == src.name else dataclasses.replace(src, name=name)
            ts = [t for t in task_list if TASKS[t].data in source_kinds(src)]
            if not ts:
                raise HeadscopeError(f"--select-on {getattr(src, 'path', '') or src.name}: none of the tasks "
                                     f"{', '.join(task_list)} can run on it")
            selection.extend(jobs_of(src, ts))
    plan = plan + selection
    progress_state = {"done": 0, "total": 0}
    all_tables, all_extra, interrupted = [], {}, None
    datasets: list = []
    control_datasets: list = []
    states: dict = {}           # a shard's scorer states: {model: {job: [state, ...]}}
    for m in models:
        jobs = [make_job(s, ts, m, max_sentences=max_sentences, window=window, bos_id=bos_id, lead=lead,
                          keep_units=bootstrap > 0) for s, ts in plan]
        if m is loaded:
            progress_state["total"] = sum(len(j.sentences) for j in jobs) * len(models)
        tables, model_datasets, extra, interrupted = _score_jobs(
            m, jobs, bootstrap=0 if shard else bootstrap, seed=seed, progress=progress, progress_state=progress_state,
            partial_on_interrupt=partial_on_interrupt, bos_id=bos_id, batch_size=batch_size,
            attention_memory=attention_memory, shard=shard,
            restored=(restored or {}).get(m.info.name) if restored is not None else None,
            collect=states.setdefault(m.info.name, {}) if shard else None, checkpoint=checkpoint)
        frame_ = pd.concat(tables, ignore_index=True) if tables else frame([])
        frame_["model"] = pd.array([m.info.name] * len(frame_), dtype="string")
        all_tables.append(frame_)
        for key, table in extra.items():
            table = table.assign(model=m.info.name)
            all_extra[key] = pd.concat([all_extra[key], table], ignore_index=True) if key in all_extra else table
        if m is loaded:
            datasets = model_datasets
        else:
            control_datasets = model_datasets
        if interrupted is not None:
            break
    # Past this point a Ctrl-C is noted, not raised (when partial results are wanted): the scores are done.
    with (shielded() if partial_on_interrupt else contextlib.nullcontext(Noted())) as noted:
        scores = pd.concat(all_tables, ignore_index=True) if all_tables else frame([])
        scores["dataset"] = scores["dataset"].astype("string")
        scores["model"] = scores["model"].astype("string")
        scores["kv_head"] = (scores["head"] // info.kv_group_size).astype("Int64")
        add_q_values(scores)
        examples = []
        if interrupted is None and n_examples and not noted.hit:
            try:
                with interruptible() if partial_on_interrupt else contextlib.nullcontext():
                    examples = _examples(loaded, plan, n_examples, bos_id=bos_id)
            except KeyboardInterrupt:
                if not partial_on_interrupt:
                    raise
                interrupted = "while making the example maps (the report has none)"
        if noted.hit and interrupted is None:
            interrupted = "after scoring, while collecting the results"
        meta = {
            "complete": interrupted is None,
            **({"interrupted": interrupted} if interrupted else {}),
            "tasks": task_list,
            "config": cfg.record(device=str(loaded.device), max_length=info.max_length, tasks=task_list,
                                 devices=sorted({str(p.device) for p in loaded.model.parameters()}),
                                 weights_dtype=str(next(loaded.model.parameters()).dtype).replace("torch.", "")),
            "model": asdict(info),
            "models": [m.info.name for m in models],
            "control": ({"kind": control, "model": models[1].info.name, "seed": seed,
                         "description": "the same architecture and tokenizer with freshly initialised weights "
                                        "(torch seed = --seed), scored on the same data in the same run",
                         "datasets": control_datasets}
                        if control else None),
            "selection": ({"select_on": [s.name for s, _ in selection],
                           "report_on": [s.name for s, _ in plan if s.name not in {x.name for x, _ in selection}]}
                          if selection else None),
            "datasets": datasets,
            "versions": package_versions(),
            "seconds": round(time.perf_counter() - t0, 3),
            **({"shard": {"index": shard[0], "count": shard[1]}} if shard else {}),
        }
    return AnalysisResult(scores=scores, model=info, meta=meta, tables=all_extra, examples=examples, states=states)


# the task lists of the docstring come from the registry
analyze.__doc__ = (analyze.__doc__.replace("TASK_NAMES", ", ".join(f"``{name}``" for name in TASKS))
                   .replace("DEFAULT_NAMES", ", ".join(f"``{name}``" for name in default_tasks()))
                   .replace("AUTO_NAMES", ", ".join(f"``{t.name}``" for t in TASKS.values() if t.auto)))
