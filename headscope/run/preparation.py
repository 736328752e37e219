"""How each built-in kind of data becomes model inputs (``kinds.KINDS``): sentences, coreference documents in
windows, GAP rows, minimal pairs and generated repeated tokens; and the bundled data that fills in for them."""

from __future__ import annotations

from typing import Any

from ..types import Sentence
from .kinds import Fallback, Prepared, Preparation


def _capped(items: Any, limit: int | None) -> list:
    return list(items[:limit] if limit else items)


def corpus_supports(corpus: Any) -> set[str]:
    return {"sentences"} | ({"treebank"} if any(s.has_tree for s in corpus.sentences) else set())


def documents_support(corpus: Any) -> set[str]:
    # coreference documents are sentences too, and a CorefUD file's sentences have trees
    trees = any(s.has_tree for d in corpus.documents for s in d.sentences)
    return {"documents", "sentences"} | ({"treebank"} if trees else set())


def sentences(corpus: Any, how: Preparation) -> Prepared:
    """A treebank's or a text's sentences, each one input; the relations its trees hold."""
    chosen = _capped(corpus.sentences, how.max_sentences)
    relations = sorted({r for s in chosen if s.has_tree for h, r in zip(s.heads, s.relations) if h >= 0})
    return Prepared(chosen, {"words": sum(len(s) for s in chosen), "relations": relations},
                    {"relations": tuple(relations)})


def first_sentences(documents: Any, limit: int | None) -> list:
    """The documents in order up to ``limit`` sentences in all (``-n``), the last one cut after the sentence
    that reaches it, with the mentions that end before the cut: the sentences the corpus's sentence view reads."""
    import dataclasses

    out: list = []
    left = limit
    for d in documents:
        if left is not None and left <= 0:
            break
        if left is None or len(d.sentences) <= left:
            out.append(d)
        else:
            kept = d.sentences[:left]
            words = sum(len(s.words) for s in kept)
            out.append(dataclasses.replace(d, sentences=kept, mentions=tuple(m for m in d.mentions if m.end < words)))
        left = None if left is None else left - len(d.sentences)
    return out


def documents(corpus: Any, how: Preparation) -> Prepared:
    """Coreference documents cut into windows that the model can read whole (METRICS §3); ``-n N`` reads the
    first N sentences' documents (``first_sentences``)."""
    from ..analysis.coref import make_windows
    from ..capture.alignment import encode_sentences

    loaded = how.loaded
    docs = first_sentences(corpus.documents, how.max_sentences)
    flat = [s for d in docs for s in d.sentences]
    enc = encode_sentences(loaded.tokenizer, flat, bos_id=how.bos_id)
    specials = sum(1 for w in enc[0].word_ids if w < 0) if enc else 0
    lengths, k = [], 0
    for d in docs:
        lengths.append([len(e) - specials for e in enc[k:k + len(d.sentences)]])
        k += len(d.sentences)
    inputs, windows, stats = make_windows(docs, lengths, loaded.info.max_length, specials)
    return Prepared(inputs, {"format": corpus.format, "documents": len(docs),
                             "document_sentences": sum(len(d.sentences) for d in docs)},
                    {"inputs": (windows, stats)})


def gap_rows(corpus: Any, how: Preparation) -> Prepared:
    """Each GAP row's text, one input."""
    examples = _capped(corpus.examples, how.max_sentences)
    rows = [Sentence(words=ex.words, sent_id=ex.example_id, source=ex.source, space_after=ex.space_after)
            for ex in examples]
    return Prepared(rows, {"rows": len(examples)}, {"inputs": examples})


def pairs(corpus: Any, how: Preparation) -> Prepared:
    """Both sentences of each minimal pair, one input each."""
    from ..analysis.pairs import pair_sentences

    chosen = _capped(corpus.pairs, how.max_sentences)
    return Prepared(pair_sentences(chosen), {"pairs": len(chosen)}, {"inputs": chosen})


def generated(source: Any, how: Preparation) -> Prepared:
    """Repeated random tokens, given to the model as token ids. Decoders read [BOS] r r; encoders the same
    tokens without BOS (METRICS §5)."""
    from ..analysis.induction import encode_sequences, make_sequences

    loaded = how.loaded
    embeddings = loaded.model.get_input_embeddings() if hasattr(loaded.model, "get_input_embeddings") else None
    decoder_part = loaded.info.part == "decoder"   # the decoder reads its start token first
    seqs = make_sequences(loaded.tokenizer, count=source.count, length=source.length, seed=source.seed,
                          bos=how.lead or decoder_part, first=how.bos_id if decoder_part else None,
                          vocab_size=getattr(embeddings, "num_embeddings", None))
    rows, encoded = encode_sequences(seqs)
    return Prepared(rows, {"sequences": len(seqs), "length": source.length, "seed": source.seed,
                           "bos": bool(seqs[0].bos)}, {"inputs": seqs}, encoded)


def bundled_sample(how: Fallback) -> Any:
    """The bundled sample treebank, for sentence tasks of a run given no data at all."""
    from ..datasets import load_sample

    return None if how.sources else load_sample(keep_subtypes=how.keep_subtypes, limit=how.max_sentences)


def bundled_pairs(how: Fallback) -> Any:
    from ..datasets.pairs import load_bundled_pairs

    return load_bundled_pairs(limit=how.max_sentences)


def repeated_tokens(how: Fallback) -> Any:
    return how.repeats
