"""``analyze``: model + data -> capture -> scorers -> AnalysisResult, streaming batch by batch."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import HeadscopeError
from .types import Corpus, Sentence

log = logging.getLogger(__name__)

DEFAULT_TASKS = ("syntax", "positional")


def _as_corpora(data: Any, *, keep_subtypes: bool, on_error: str, max_sentences: int | None, fmt: str | None
                ) -> list[Corpus]:
    from .datasets import load_data, load_sample

    if data is None:
        return [load_sample(keep_subtypes=keep_subtypes, limit=max_sentences)]
    if isinstance(data, Corpus):
        return [data]
    if isinstance(data, (str, Path)):
        return [load_data(data, fmt=fmt, keep_subtypes=keep_subtypes, on_error=on_error, limit=max_sentences)]
    items = list(data)
    if items and all(isinstance(x, Sentence) for x in items):
        return [Corpus(name="sentences", sentences=tuple(items))]
    if items and all(isinstance(x, str) for x in items) and not any(Path(x).exists() for x in items):
        return [Corpus(name="sentences", sentences=tuple(Sentence(words=tuple(x.split()), sent_id=f"s{i}")
                                                          for i, x in enumerate(items) if x.split()))]
    out: list[Corpus] = []
    for x in items:
        out.extend(_as_corpora(x, keep_subtypes=keep_subtypes, on_error=on_error, max_sentences=max_sentences, fmt=fmt))
    if not out:
        raise HeadscopeError("no data given: pass a path, a Corpus, Sentences or strings")
    return out


def _unique_names(corpora: list[Corpus]) -> list[Corpus]:
    """Datasets are told apart by name in every table: repeated names get their folder, then a number."""
    import dataclasses

    names = [c.name for c in corpora]
    out, seen = [], set()
    for c in corpora:
        name = c.name
        if names.count(name) > 1 and c.path:
            name = f"{Path(c.path).parent.name}/{name}"
        base, k = name, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append(c if name == c.name else dataclasses.replace(c, name=name))
    return out


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("headscope", "torch", "transformers", "tokenizers", "numpy", "pandas", "conllu", "networkx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def analyze(model: Any = "minilm", data: Any = None, *, tasks: str | Sequence[str] = DEFAULT_TASKS,
            tokenizer: Any = None, batch_size: int = 32, device: str | None = None,
            max_sentences: int | None = None, keep_subtypes: bool = False, on_error: str = "fail",
            fmt: str | None = None, window: int = 3, seed: int = 0,
            progress: Callable[[int, int], None] | None = None, partial_on_interrupt: bool = False):
    """Score every attention head of ``model`` on ``data`` for the given tasks.

    ``model``: alias (``minilm``), Hugging Face id, local folder, ``nn.Module`` (with ``tokenizer``)
    or a ``LoadedModel``. ``data``: None (bundled sample), a path, a Corpus, Sentences, strings, or
    a list of paths. ``tasks``: any of ``syntax``, ``positional``, ``tree``.
    Returns an :class:`AnalysisResult`; ``result.scores`` is the tidy table.
    """
    import pandas as pd
    import torch

    from .alignment import encode_sentences
    from .analysis.base import LayerView, make_scorers, parse_tasks
    from .capture import capture
    from .models import load_model
    from .result import AnalysisResult
    from .schema import frame

    task_list = parse_tasks(tasks)
    if batch_size < 1:
        raise HeadscopeError(f"batch size must be at least 1, got {batch_size}")
    if max_sentences is not None and max_sentences < 1:
        raise HeadscopeError(f"max sentences must be at least 1, got {max_sentences}")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    corpora = _as_corpora(data, keep_subtypes=keep_subtypes, on_error=on_error, max_sentences=max_sentences, fmt=fmt)
    corpora = _unique_names(corpora)
    loaded = load_model(model, tokenizer=tokenizer, device=device)
    info = loaded.info
    tree_tasks = [t for t in task_list if t in ("syntax", "tree")]
    tables, datasets = [], []
    total = sum(min(len(c), max_sentences or len(c)) for c in corpora)
    done = 0
    complete = True
    for corpus in corpora:
        sentences = corpus.sentences[:max_sentences] if max_sentences else corpus.sentences
        if tree_tasks and not any(s.has_tree for s in sentences):
            raise HeadscopeError(f"{corpus.path or corpus.name}: tasks {', '.join(tree_tasks)} need dependency trees "
                                 f"(a .conllu file); this data has none. Run --tasks positional on it")
        encoded_all = encode_sentences(loaded.tokenizer, sentences)
        encoded = [e for e in encoded_all if len(e) <= info.max_length]
        too_long = len(encoded_all) - len(encoded)
        if not encoded:
            raise HeadscopeError(f"{corpus.path or corpus.name}: every sentence is longer than the model's "
                                 f"{info.max_length} tokens")
        if too_long:
            log.warning("%s: %d sentences longer than %d tokens were skipped", corpus.name, too_long, info.max_length)
        relations = sorted({r for s in sentences if s.has_tree for h, r in zip(s.heads, s.relations) if h >= 0})
        scorers = make_scorers(task_list, num_layers=info.num_layers, num_heads=info.num_heads, relations=relations,
                               causal=info.is_decoder, window=window)
        scored = {"n": 0}

        def on_batch_start(batch):
            for s in scorers:
                s.start_batch(batch)

        def on_layer(layer, weights, batch):
            view = LayerView(layer, weights, batch)
            for s in scorers:
                s.update(view)

        def on_batch_end(batch):
            nonlocal done
            for s in scorers:
                s.end_batch()
            scored["n"] += batch.size
            done += batch.size
            if progress is not None:
                progress(done, total)

        try:
            capture(loaded, sentences, encoded, on_layer, batch_size=batch_size, on_batch_start=on_batch_start,
                    on_batch_end=on_batch_end)
        except KeyboardInterrupt:
            if not partial_on_interrupt:
                raise
            complete = False
            # A batch interrupted half-way may have updated some layers: drop nothing, but say so.
            log.warning("interrupted after %d sentences; results are partial", scored["n"])
        for s in scorers:
            df = s.result()
            if len(df):
                tables.append(df.assign(dataset=corpus.name))
        datasets.append({
            "name": corpus.name, "path": corpus.path, "sha256": corpus.checksum, "sentences": len(sentences),
            "scored": scored["n"], "skipped_too_long": too_long, "skipped_bad_data": corpus.skipped,
            "skipped_examples": list(corpus.skipped_reasons[:10]),
            "words_replaced_by_unk": sum(e.replaced_words for e in encoded),
            "words": sum(len(s) for s in sentences), "relations": relations,
        })
        if not complete:
            break
    scores = pd.concat(tables, ignore_index=True) if tables else frame([])
    scores["model"] = pd.array([info.name] * len(scores), dtype="string")
    scores["dataset"] = scores["dataset"].astype("string")
    scores["kv_head"] = (scores["head"] // info.kv_group_size).astype("Int64")
    meta = {
        "complete": complete,
        "tasks": task_list,
        "config": {"batch_size": batch_size, "device": str(loaded.device), "max_sentences": max_sentences,
                   "keep_subtypes": keep_subtypes, "on_error": on_error, "window": window, "seed": seed,
                   "max_length": info.max_length},
        "model": asdict(info),
        "datasets": datasets,
        "versions": _versions(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return AnalysisResult(scores=scores, model=info, meta=meta)
