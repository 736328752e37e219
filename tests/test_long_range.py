"""Long-range measures (mass beyond 64/256/1024 tokens, on other sentences, on the same word, on content
words): synthetic heads with known answers, row blocks against whole maps, and the slow reference on real
tiny models reading a document of joined sentences."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402
from conftest import long_models  # noqa: E402
from reference import reference_positional  # noqa: E402

from headscope.analysis.base import LayerView  # noqa: E402
from headscope.analysis.positional import PositionalScorer  # noqa: E402
from headscope.datasets import documents, join_sentences  # noqa: E402
from headscope.types import Sentence  # noqa: E402


def _document(n: int = 150) -> Sentence:
    """Three sentences of 50 words; word i is x{i % 50}, so word i repeats word i - 50; even words are
    nouns, odd ones determiners."""
    parts = [Sentence(words=tuple(f"x{i % 50}" for i in range(k, k + 50)),
                      upos=tuple("NOUN" if i % 2 == 0 else "DET" for i in range(k, k + 50)), sent_id=str(k))
             for k in range(0, n, 50)]
    return join_sentences(parts)


def _far_head(t: int) -> torch.Tensor:
    """Row i looks at key i - 100 when there is one, else at itself."""
    a = torch.zeros(1, 1, t, t)
    for i in range(t):
        a[0, 0, i, i - 100 if i >= 100 else i] = 1.0
    return a


def _value(df, relation):
    row = df[(df["relation"] == relation) & (df["metric"] != "offset")]
    assert len(row) == 1, relation
    return float(row["score"].iloc[0]), int(row["n"].iloc[0])


def _blocks(scorer, b, maps, rows: int, causal: bool):
    """Feed ``maps`` in blocks of ``rows`` query rows, a decoder's keys ending at each block's last row."""
    t = maps.shape[-1]
    scorer.start_batch(b)
    for r0 in range(0, t, rows):
        r1 = min(t, r0 + rows)
        b.row_start = r0
        scorer.update(LayerView(0, maps[:, :, r0:r1, : r1 if causal else t], b))
    b.row_start = 0
    scorer.end_batch()
    return scorer.result()


@pytest.mark.parametrize("rows", [None, 7, 64])
def test_known_answers_for_a_head_that_looks_100_tokens_back(rows):
    doc = _document()
    b = syn.batch([doc], specials=False, causal=True)
    maps = _far_head(150)
    scorer = PositionalScorer(1, 1, causal=True)
    df = syn.run(scorer, b, maps) if rows is None else _blocks(scorer, b, maps, rows, causal=True)
    # rows 65..149 can see a key more than 64 back; rows 100..149 (50 of 85) put all their mass there
    assert _value(df, "beyond_64") == (pytest.approx(50 / 85), 85)
    # no row is more than 256 tokens from any key
    assert "beyond_256" not in set(df["relation"])
    # rows of the 2nd and 3rd sentences can see another sentence; rows 100..149 look at one
    assert _value(df, "other_sentences") == (pytest.approx(50 / 100), 100)
    # words 50..149 repeat an earlier word; rows 100..149 look at an earlier occurrence
    assert _value(df, "same_word") == (pytest.approx(50 / 100), 100)
    # a row looks at an even word (a noun) exactly when it is even itself
    assert _value(df, "content") == (pytest.approx(0.5), 150)
    assert _value(df, "distance")[0] == pytest.approx(50 * 100 / 150)
    # token ids are 1..150, all different: no row has an earlier occurrence of its token
    assert "induction_text" not in set(df["relation"])


def test_induction_on_the_text_itself():
    """Tokens "a b c a b c ...": row i (from the second "a" on, row 3) finds the token after the previous copy at
    i - 2; a head that looks there scores 1, a previous-token head 0."""
    words = [f"w{i}" for i in range(30)]
    b = syn.batch([Sentence(words=tuple(words), sent_id="abc")], specials=False, causal=True)
    b.input_ids[0] = torch.arange(30) % 3 + 1
    t = 30
    ind, prev = torch.zeros(1, 1, t, t), torch.zeros(1, 1, t, t)
    for i in range(t):
        ind[0, 0, i, i - 2 if i >= 3 else i] = 1.0
        prev[0, 0, i, max(i - 1, 0)] = 1.0
    enc = b.encoded[0]
    b.encoded[0] = type(enc)(enc.index, tuple(int(x) for x in b.input_ids[0]), enc.word_ids, enc.sep_tokens,
                             enc.n_words)
    df = syn.run(PositionalScorer(1, 2, causal=True), b, torch.cat([ind, prev], 1))
    got = df[(df["relation"] == "induction_text")].set_index("head")
    assert got.loc[0, "score"] == pytest.approx(1.0) and got.loc[1, "score"] == pytest.approx(0.0)
    assert int(got.loc[0, "n"]) == 27   # rows 3..29: an earlier copy with a token after it, before the row


def test_an_encoder_sees_beyond_on_both_sides():
    doc = _document()
    b = syn.batch([doc], specials=False, causal=False)
    t = 150
    a = torch.zeros(1, 1, t, t)
    for i in range(t):   # the mirror image: row i looks 100 ahead when it can, else 100 back, else itself
        a[0, 0, i, i + 100 if i + 100 < t else i - 100 if i >= 100 else i] = 1.0
    whole = syn.run(PositionalScorer(1, 1), b, a)
    blocked = _blocks(PositionalScorer(1, 1), b, a, 16, causal=False)
    # every row has a key more than 64 away on one side or the other; rows 0..49 and 100..149 look 100 away
    assert _value(whole, "beyond_64") == (pytest.approx(100 / 150), 150)
    assert _value(whole, "same_word") == (pytest.approx(100 / 150), 150)
    assert _value(whole, "other_sentences") == (pytest.approx(100 / 150), 150)
    m = whole.merge(blocked, on=["relation", "metric"], suffixes=("", "_b"))
    assert len(m) == len(whole) == len(blocked)
    assert (m["score"] - m["score_b"]).abs().max() < 1e-6 and (m["n"] == m["n_b"]).all()


def test_documents_join_consecutive_sentences_and_keep_their_trees(sample):
    docs = documents(sample, words=120)
    assert sum(len(d) for d in docs.sentences) == sum(len(s) for s in sample.sentences)
    assert all(len(d) <= 120 for d in docs.sentences if len(d.sentence_starts) > 1)
    first = docs.sentences[0]
    k = len(first.sentence_starts)
    originals = sample.sentences[:k]
    for start, s in zip(first.sentence_starts, originals):
        assert first.words[start:start + len(s)] == s.words
        assert all((h - start if h >= 0 else -1) == g for h, g in zip(first.heads[start:start + len(s)], s.heads))
    with pytest.raises(ValueError, match="sentence_starts"):
        Sentence(words=("a", "b"), sentence_starts=(1,))


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_documents_in_row_blocks_match_the_reference(family, sample, monkeypatch):
    """A ~300-word document of the sample's sentences, scored from whole maps and from 16-row blocks; both
    equal the one-row-at-a-time reference, the long-range measures included (also when only some blocks'
    geometry is kept for the next layers)."""
    import headscope
    from headscope.models.loading import load_model

    model, tok = long_models()[family]
    loaded = load_model(model, tokenizer=tok)
    docs = [d for d in documents(sample, words=300).sentences if len(d.sentence_starts) > 1][:2]
    whole = headscope.analyze(loaded, docs, tasks="positional", n_examples=0, bootstrap=0).scores
    from headscope.capture.alignment import encode_sentences

    t = max(len(e) for e in encode_sentences(tok, docs))
    assert t > 257  # the 256-token measure has rows
    mib = 16 * len(docs) * loaded.info.num_heads * t * 16 / 2 ** 20
    blocked = headscope.analyze(loaded, docs, tasks="positional", n_examples=0, bootstrap=0,
                                attention_memory=mib).scores
    # one document per batch: no padding, so transformers skips the mask and each block makes its own rows
    alone = headscope.analyze(loaded, docs, tasks="positional", n_examples=0, bootstrap=0, batch_size=1,
                              attention_memory=mib).scores
    from headscope.analysis.positional import PositionalScorer

    monkeypatch.setattr(PositionalScorer, "GEOMETRY_BYTES", 64 * 2 ** 10)
    forgetful = headscope.analyze(loaded, docs, tasks="positional", n_examples=0, bootstrap=0, batch_size=1,
                                  attention_memory=mib).scores
    ref, _ = reference_positional(loaded.model, tok, docs, causal=loaded.info.is_decoder)
    written = ["first_written", "sep_written"]        # checked against their own reference in test_positional
    key = ["relation", "layer", "head"]
    same = [whole[whole["relation"].isin(written)].merge(df[df["relation"].isin(written)], on=key)
            for df in (blocked, alone, forgetful)]
    assert all(len(m) == 2 * loaded.info.num_layers * loaded.info.num_heads for m in same)
    assert max((m["score_x"] - m["score_y"]).abs().max() for m in same) < 1e-5      # blocks change nothing
    for df in (whole, blocked, alone, forgetful):
        got = df[(df["relation"] != "argmax_offset") & ~df["relation"].isin(written)]
        assert {r for r in got["relation"]} >= {"beyond_64", "beyond_256", "other_sentences", "same_word", "content",
                                                "induction_text"}
        assert len(got) == len(ref)
        for r in got.itertuples():
            # float32 sums: distances of ~100 tokens hold 7 significant digits
            assert r.score == pytest.approx(ref[(r.layer, r.head, r.relation)], abs=2e-5, rel=1e-6), (family, r.relation)


def test_same_word_reads_lemmas_where_the_data_has_them():
    """ "was" and "is" share the lemma "be": a head that looks from "is" back to "was" puts its mass on the same
    lemma; without lemmas the words differ and no row has a match."""
    words = ("it", "was", "so", "it", "is")
    lemmas = ("it", "be", "so", "it", "be")
    t = len(words)
    a = torch.zeros(1, 1, t, t)
    for i in range(t):
        a[0, 0, i, 1 if i == 4 else i] = 1.0
    got = {}
    for name, s in (("lemmas", Sentence(words=words, lemmas=lemmas, sent_id="l")),
                    ("words", Sentence(words=words, sent_id="w"))):
        df = syn.run(PositionalScorer(1, 1, causal=True), syn.batch([s], specials=False, causal=True), a)
        got[name] = df[df["relation"] == "same_word"]
    # rows with an earlier same lemma: "it" (3) and "is" (4); "is" looks at "was"
    assert float(got["lemmas"]["score"].iloc[0]) == pytest.approx(0.5) and int(got["lemmas"]["n"].iloc[0]) == 2
    # by words only "it" repeats, and it looks at itself
    assert float(got["words"]["score"].iloc[0]) == pytest.approx(0.0) and int(got["words"]["n"].iloc[0]) == 1


def test_documents_keep_lemmas():
    parts = [Sentence(words=("a", "b"), lemmas=("A", "_"), sent_id="1"), Sentence(words=("c",), lemmas=("c",), sent_id="2")]
    assert join_sentences(parts).lemmas == ("A", "_", "c")
    assert join_sentences([parts[0], Sentence(words=("d",), sent_id="3")]).lemmas is None
