"""Scorers that read attention in blocks of query rows give what they give on whole maps: synthetic
maps with words of several pieces cut at every block size, and real tiny models on long documents,
whole against blocked against the one-sentence-at-a-time reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402
from conftest import long_models  # noqa: E402
from reference import reference_own_prediction, reference_syntax  # noqa: E402

from headscope.capture.alignment import EncodedSentence, collate  # noqa: E402
from headscope.analysis.base import LayerView  # noqa: E402
from headscope.analysis.syntax import SyntaxScorer  # noqa: E402
from headscope.datasets import documents  # noqa: E402


def _pieces_batch(sentences, causal: bool):
    """[CLS] first, [SEP] last, and word k of sentence i in 1, 2 or 4 pieces ((k + i) % 3), so that the
    inputs of a batch are between words at different positions; powers of two keep means of equal
    weights exact, so that ties stay ties however the pieces are pooled."""
    encoded = []
    for i, s in enumerate(sentences):
        wids = [-1] + [k for k in range(len(s)) for _ in range((1, 2, 4)[(k + i) % 3])] + [-1]
        seps = [False] * (len(wids) - 1) + [True]
        encoded.append(EncodedSentence(i, tuple(range(1, len(wids) + 1)), tuple(wids), tuple(seps), len(s)))
    return collate(sentences, encoded, pad_id=0, device="cpu", causal=causal)


def _feed(scorer, b, maps, rows, causal):
    t = maps.shape[-1]
    scorer.start_batch(b)
    for layer in range(maps.shape[0]):
        for r0 in range(0, t, rows or t):
            r1 = min(t, r0 + (rows or t))
            b.row_start = r0
            scorer.update(LayerView(layer, maps[layer, :, :, r0:r1, : r1 if causal and rows else t], b))
    b.row_start = 0
    scorer.end_batch()
    return scorer.result()


@pytest.mark.parametrize("causal", [False, True])
def test_syntax_in_blocks_of_any_size_equals_whole_maps(causal):
    torch.manual_seed(0)
    sents = [syn.sentence([1, -1, 1, 2, 1, 4, 1, 6]), syn.sentence([-1, 0, 1, 0, 3]), syn.sentence([2, 2, -1])]
    rels = sorted({r for s in sents for r, h in zip(s.relations, s.heads) if h >= 0})
    b = _pieces_batch(sents, causal)
    t = b.input_ids.shape[1]
    maps = torch.rand(2, len(sents), 3, t, t) ** 4          # 2 layers, 3 heads, peaked rows
    # ties too: one head attends uniformly, so first-of-equals decides
    maps[:, :, 2] = 1.0
    if causal:
        maps = maps * torch.ones(t, t).tril()
    maps = torch.stack([syn.normalise(m, b) for m in maps])
    whole = _feed(SyntaxScorer(2, 3, rels, causal=causal), b, maps, None, causal)
    for rows in (1, 2, 3, 5, 8, t - 1):
        got = _feed(SyntaxScorer(2, 3, rels, causal=causal), b, maps, rows, causal)
        key = ["relation", "direction", "baseline", "layer", "head"]   # own predictions too
        m = whole.merge(got, on=key, suffixes=("", "_b"), how="outer")
        assert len(m) == len(whole) == len(got), rows
        assert (m["score"] - m["score_b"]).abs().max() == 0, rows
        assert (m["n"] == m["n_b"]).all() and (m["n_reachable"] == m["n_reachable_b"]).all()


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_syntax_on_documents_in_blocks_matches_the_reference(family, sample):
    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.models.loading import load_model

    model, tok = long_models()[family]
    loaded = load_model(model, tokenizer=tok)
    docs = list(documents(sample, words=250).sentences[:2])
    t = max(len(e) for e in encode_sentences(tok, docs))
    mib = 12 * len(docs) * loaded.info.num_heads * t * 16 / 2 ** 20      # blocks of 12 rows
    whole = headscope.analyze(loaded, docs, tasks="syntax,positional", n_examples=0, bootstrap=0).scores
    blocked = headscope.analyze(loaded, docs, tasks="syntax,positional", n_examples=0, bootstrap=0,
                                attention_memory=mib).scores
    key = ["task", "relation", "direction", "metric", "baseline", "layer", "head"]
    m = whole.merge(blocked, on=key, suffixes=("", "_b"))
    assert len(m) == len(whole) == len(blocked)
    syntax = m[m["task"] == "syntax"]
    assert (syntax["score"] == syntax["score_b"]).all()
    correct, total = reference_syntax(loaded.model, tok, docs, causal=loaded.info.is_decoder)
    heads = blocked[(blocked["task"] == "syntax") & blocked["baseline"].isna()]
    for r in heads.itertuples():
        assert r.score == pytest.approx(correct[(r.layer, r.head, r.relation, r.direction)] / total[r.relation],
                                        abs=1e-9)
    # each head's own positional prediction, on documents long enough to reach the far offset bins
    own = reference_own_prediction(loaded.model, tok, docs, causal=loaded.info.is_decoder)
    rows = blocked[(blocked["task"] == "syntax") & (blocked["baseline"] == "own-position")]
    assert len(rows) == len(own)
    for r in rows.itertuples():
        assert r.score == pytest.approx(own[(r.layer, r.head, r.relation, r.direction)], abs=1e-9)


def test_coref_in_blocks_equals_whole_maps_and_the_reference(tiny):
    """Mention heads' word rows gathered block by block: the same accuracies as whole maps, and as the
    one-window-at-a-time reference."""
    import headscope
    from test_coref import STORY, doc
    from reference import reference_coref

    from headscope.analysis.coref import make_windows
    from headscope.types import DocumentCorpus

    _, loaded = tiny
    docs = [STORY, doc(["The dog barked at the cat .", "The dog ran after it ."],
                       [(0, 1, "d"), (4, 5, "c"), (7, 8, "d"), (11, 11, "c")], "d2")]
    corpus = DocumentCorpus("toy", tuple(docs))
    whole = headscope.analyze(loaded, corpus, tasks="coref", bootstrap=0, n_examples=0).scores
    blocked = headscope.analyze(loaded, corpus, tasks="coref", bootstrap=0, n_examples=0,
                                attention_memory=1e-4).scores            # blocks of one or two rows
    key = ["relation", "baseline", "layer", "head"]
    m = whole.merge(blocked, on=key, suffixes=("", "_b"))
    assert len(m) == len(whole) == len(blocked) and (m["score"] == m["score_b"]).all()
    lengths = [[len(loaded.tokenizer(list(s.words), is_split_into_words=True, add_special_tokens=False)["input_ids"])
                for s in d.sentences] for d in docs]
    sents, wins, _ = make_windows(docs, lengths, loaded.info.max_length,
                                  len(loaded.tokenizer(["a"], is_split_into_words=True)["input_ids"]) - 1)
    correct, total = reference_coref(loaded.model, loaded.tokenizer, sents, wins)
    for r in blocked[blocked["baseline"].isna()].itertuples():
        assert r.score == pytest.approx(correct[(r.layer, r.head, r.relation)] / total[r.relation], abs=1e-6)


def test_induction_in_blocks_equals_whole_maps(tiny):
    import headscope

    _, loaded = tiny
    args = dict(tasks="induction", induction_count=12, induction_length=8, batch_size=4, bootstrap=200)
    whole = headscope.analyze(loaded, None, **args).scores
    blocked = headscope.analyze(loaded, None, attention_memory=1e-4, **args).scores   # one-row blocks
    m = whole.merge(blocked, on=["relation", "layer", "head"], suffixes=("", "_b"))
    assert len(m) == len(whole) == len(blocked) == 3 * loaded.info.num_layers * loaded.info.num_heads
    assert (m["score"] - m["score_b"]).abs().max() <= 1e-6
    assert m["ci_low"].notna().all() and (m["ci_low"] - m["ci_low_b"]).abs().max() <= 1e-6
