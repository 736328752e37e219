"""Documents made of consecutive sentences: long inputs that keep each sentence's tree and boundaries."""

from __future__ import annotations

from typing import Iterable

from ..types import Corpus, Sentence


def join_sentences(sentences: Iterable[Sentence]) -> Sentence:
    """One Sentence of the given sentences in order: words, trees (heads re-indexed into the document),
    UPOS, lemmas and spacing carried over, ``sentence_starts`` marking where each began."""
    sentences = list(sentences)
    if not sentences:
        raise ValueError("join_sentences needs at least one sentence")
    words: list[str] = []
    heads: list[int] = []
    relations: list[str] = []
    upos: list[str] = []
    lemmas: list[str] = []
    spaces: list[bool] = []
    starts: list[int] = []
    trees = all(s.has_tree for s in sentences)
    tagged = all(s.upos is not None for s in sentences)
    lemmatised = all(s.lemmas is not None for s in sentences)
    for s in sentences:
        offset = len(words)
        starts.append(offset)
        words.extend(s.words)
        if trees:
            heads.extend(h + offset if h >= 0 else -1 for h in s.heads)
            relations.extend(s.relations)
        if tagged:
            upos.extend(s.upos)
        if lemmatised:
            lemmas.extend(s.lemmas)
        spaces.extend(s.space_after if s.space_after is not None else (True,) * len(s))
    first, last = sentences[0], sentences[-1]
    sent_id = first.sent_id if len(sentences) == 1 else f"{first.sent_id}..{last.sent_id}"
    return Sentence(words=tuple(words), heads=tuple(heads) if trees else None,
                    relations=tuple(relations) if trees else None, upos=tuple(upos) if tagged else None,
                    sent_id=sent_id, source=first.source, space_after=tuple(spaces), sentence_starts=tuple(starts),
                    lemmas=tuple(lemmas) if lemmatised else None)


def documents(corpus: Corpus, words: int) -> Corpus:
    """Consecutive sentences of ``corpus`` joined into documents of at most ``words`` words each (a longer
    sentence stays alone), in order; the corpus keeps its name, checksum and provenance."""
    if words < 1:
        raise ValueError(f"documents need at least 1 word each, got {words}")
    out: list[Sentence] = []
    group: list[Sentence] = []
    size = 0
    for s in corpus.sentences:
        if group and size + len(s) > words:
            out.append(join_sentences(group))
            group, size = [], 0
        group.append(s)
        size += len(s)
    if group:
        out.append(join_sentences(group))
    return Corpus(name=corpus.name, sentences=tuple(out), checksum=corpus.checksum, path=corpus.path,
                  skipped=corpus.skipped, skipped_reasons=corpus.skipped_reasons)
