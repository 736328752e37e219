"""A run's jobs: the data given turned into sources, planned against the tasks, and each dataset's inputs prepared
for its kind of data, with the registered scorers of its tasks built on them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError
from ..tasks import DATA_KINDS, SENTENCE_KINDS, TASKS, Build, build_scorers
from ..types import Corpus, DocumentCorpus, Sentence
from .kinds import KINDS, Fallback, Preparation, kind_of, kind_or_fail


def source_kinds(source: Any) -> set[str]:
    """The task data (``tasks.DATA_KINDS``) that a dataset supports."""
    return kind_or_fail(source).tasks_data(source)


def as_sources(data: Any, *, keep_subtypes: bool, on_error: str, max_sentences: int | None, fmt: str | None
                ) -> list[Any]:
    from ..datasets import load_data

    if data is None:
        return []
    if kind_of(data) is not None:
        return [data]
    if isinstance(data, (str, Path)):
        return [load_data(data, fmt=fmt, keep_subtypes=keep_subtypes, on_error=on_error, limit=max_sentences)]
    items = list(data)
    if items and all(isinstance(x, Sentence) for x in items):
        return [Corpus(name="sentences", sentences=tuple(items))]
    def names_data(x: Any) -> bool:
        return isinstance(x, Path) or (isinstance(x, str) and x.strip() not in ("", ".")
                                       and (Path(x).is_file() or Path(x).is_dir()))

    # Strings are sentences unless every one of them names an existing file or folder.
    if items and all(isinstance(x, str) for x in items) and not all(names_data(x) for x in items):
        return [Corpus(name="sentences", sentences=tuple(Sentence(words=tuple(x.split()), sent_id=f"s{i}")
                                                          for i, x in enumerate(items) if x.split()))]
    out: list[Any] = []
    for x in items:
        out.extend(as_sources(x, keep_subtypes=keep_subtypes, on_error=on_error, max_sentences=max_sentences,
                               fmt=fmt))
    if not out:
        raise HeadscopeError("no data given: pass a path, a Corpus, Sentences or strings")
    return out


def jobs_of(source: Any, tasks: list[str]) -> list[tuple[Any, list[str]]]:
    """(dataset, tasks) pairs for one source: sentence tasks read a coreference corpus's sentences one by
    one, as the dataset ``<name> (sentences)`` (every table tells the two views apart by name), coreference
    reads its whole documents under the corpus's own name."""
    if not isinstance(source, DocumentCorpus):
        return [(source, tasks)]
    by_sentence = [t for t in tasks if TASKS[t].data in SENTENCE_KINDS]
    rest = [t for t in tasks if t not in by_sentence]
    view = dataclasses.replace(source.as_corpus(), name=f"{source.name} (sentences)")
    return ([(view, by_sentence)] if by_sentence else []) + [(source, rest)]


def plan_jobs(tasks: list[str], sources: list[Any], *, keep_subtypes: bool, max_sentences: int | None,
          repeats: Any = None) -> list[tuple[Any, list[str]]]:
    """Which tasks run on which dataset; bundled data fills in where it exists, otherwise a clear error."""
    jobs = [job for s in sources for job in jobs_of(s, [t for t in tasks if TASKS[t].data in source_kinds(s)])]
    covered = {t for _, ts in jobs for t in ts}
    missing = [t for t in tasks if t not in covered]
    how = Fallback(sources, keep_subtypes=keep_subtypes, max_sentences=max_sentences, repeats=repeats)
    for kind in KINDS.values():
        wanted = [t for t in missing if TASKS[t].data in kind.supplies]
        bundled = kind.bundled(how) if wanted else None
        if bundled is not None:
            jobs.append((bundled, wanted))
            missing = [t for t in missing if t not in wanted]
    covered = {t for _, ts in jobs for t in ts}
    for t in tasks:
        if t not in covered:
            given = ", ".join(getattr(s, "path", "") or s.name for s in sources) or "no data"
            hint = " (plain text supports tasks='positional')" if TASKS[t].data == "treebank" else ""
            raise HeadscopeError(f"task {t} needs {DATA_KINDS[TASKS[t].data]}; got {given}. Pass such a file with "
                                 f"data=, or drop {t} from tasks={hint}")
    return [(s, ts) for s, ts in jobs if ts]


def unique_names(sources: list[Any]) -> list[Any]:
    """Datasets are told apart by name in every table: repeated names get their folder, then a number."""
    names = [c.name for c in sources]
    out, seen = [], set()
    for c in sources:
        name = c.name
        if names.count(name) > 1 and getattr(c, "path", ""):
            name = f"{Path(c.path).parent.name}/{name}"
        base, k = name, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append(c if name == c.name else dataclasses.replace(c, name=name))
    return out


@dataclass
class Job:
    """One dataset's model inputs and the scorers that read them."""

    name: str
    source: Any
    sentences: list[Sentence]
    scorers: list[Any]
    meta: dict = field(default_factory=dict)
    encoded: list | None = None    # model inputs given as token ids (generated data); else tokenized
    weightings: list = field(default_factory=list)   # each scorer's weighting (``weight`` or ``norm``), in order


def bos_meta(loaded: Any, encoded: list) -> dict:
    tok = loaded.tokenizer
    first = encoded[0] if encoded else None
    lead = first.input_ids[0] if first is not None and first.word_ids and first.word_ids[0] == -1 else None
    return {"first_token": tok.convert_ids_to_tokens(int(lead)) if lead is not None else None,
            "bos_added": sum(e.bos_added for e in encoded)}


def make_job(source: Any, tasks: list[str], loaded: Any, *, max_sentences: int | None, window: int,
              bos_id: int | None = None, lead: bool = False, keep_units: bool = True,
              weighting: tuple[str, ...] = ("weight",)) -> Job:
    """The job of one dataset: its model inputs, prepared as its kind of data needs, and the registered
    scorers of ``tasks`` built on them, once for each ``weighting``."""
    info = loaded.info
    build = Build(info.num_layers, info.num_heads, causal=info.is_decoder, sinks=info.sinks, window=window,
                  keep_units=keep_units)
    meta = {"name": source.name, "path": getattr(source, "path", ""), "sha256": getattr(source, "checksum", ""),
            "tasks": tasks, "skipped_bad_data": getattr(source, "skipped", 0),
            "skipped_examples": list(getattr(source, "skipped_reasons", ())[:10])}
    kind = kind_or_fail(source)
    prepared = kind.prepared(source, Preparation(loaded, max_sentences=max_sentences, bos_id=bos_id, lead=lead))
    meta["kind"] = kind.name
    meta.update(prepared.meta)
    build = dataclasses.replace(build, **prepared.build)
    scorers, weightings = [], []
    for w in weighting:
        built = build_scorers(tasks, build)
        scorers += built
        weightings += [w] * len(built)
    return Job(source.name, source, prepared.sentences, scorers, meta, prepared.encoded, weightings)
