"""Word alignment and pooling (METRICS §1) for WordPiece, byte-level BPE and SentencePiece."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import bpe_tokenizer, sentencepiece_tokenizer, wordpiece_tokenizer  # noqa: E402

from headscope.capture.alignment import collate, encode_sentences, pool_words  # noqa: E402
from headscope.types import Sentence  # noqa: E402

TOKENIZERS = {"wordpiece": wordpiece_tokenizer, "bpe": bpe_tokenizer, "sentencepiece": sentencepiece_tokenizer}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


def test_every_word_gets_contiguous_pieces(tokenizer, sample):
    sents = list(sample.sentences)
    encoded = encode_sentences(tokenizer, sents)
    for s, e in zip(sents, encoded):
        words = [w for w in e.word_ids if w >= 0]
        assert sorted(set(words)) == list(range(len(s.words)))
        assert words == sorted(words)                       # pieces of a word are contiguous, in order


def test_wordpiece_matches_the_wrapper(sample):
    # WordPiece ignores spaces: words go in as they are, exactly as the transformers wrapper splits them.
    tokenizer = wordpiece_tokenizer()
    for s, e in zip(sample.sentences, encode_sentences(tokenizer, list(sample.sentences))):
        ref = tokenizer([list(s.words)], is_split_into_words=True)
        assert list(e.input_ids) == list(ref["input_ids"][0])
        assert list(e.word_ids) == [-1 if w is None else w for w in ref.word_ids(0)]


def test_word_without_pieces_is_read_as_unknown_and_counted():
    tok = wordpiece_tokenizer()
    s = Sentence(words=("a", "\u200b", "b"))               # zero-width space: BERT gives no piece
    (e,) = encode_sentences(tok, [s])
    assert e.replaced_words == 1
    assert sorted(set(w for w in e.word_ids if w >= 0)) == [0, 1, 2]


def test_pooling_sums_key_pieces_and_averages_query_pieces():
    tok = wordpiece_tokenizer()
    s = Sentence(words=("unbelievably", "good", "!"), upos=("ADV", "ADJ", "PUNCT"))
    (e,) = encode_sentences(tok, [s])
    assert sum(w == 0 for w in e.word_ids) > 1              # the first word has several pieces
    b = collate([s], [e], pad_id=0, device="cpu", causal=False)
    t = len(e)
    torch.manual_seed(0)
    a = torch.rand(1, 3, t, t).softmax(-1)
    words = pool_words(a, b)
    assert words.shape == (1, 3, 3 + 2, 3 + 2)
    assert torch.allclose(words.sum(-1), torch.ones(1, 3, 5), atol=1e-6)   # rows stay stochastic
    col = {}                                                  # column of each word / special token
    specials = [i for i, w in enumerate(e.word_ids) if w < 0]
    for i, w in enumerate(e.word_ids):
        col.setdefault(w if w >= 0 else 3 + specials.index(i), []).append(i)
    for qi, qp in col.items():
        for ki, kp in col.items():
            expected = a[0, :, qp][:, :, kp].sum(-1).mean(-1)
            assert torch.allclose(words[0, :, qi, ki], expected, atol=1e-6)
    assert b.punct_mask[0].tolist() == [w == 2 for w in e.word_ids]


def test_padding_does_not_change_pooled_words():
    tok = wordpiece_tokenizer()
    short, long = Sentence(words=("a", "cat")), Sentence(words=("the", "unbelievably", "tired", "dog", "."))
    enc = encode_sentences(tok, [short, long])
    b = collate([short, long], enc, pad_id=0, device="cpu", causal=False)
    one = collate([short], enc[:1], pad_id=0, device="cpu", causal=False)
    t = b.input_ids.shape[1]
    torch.manual_seed(0)
    a = torch.rand(2, 2, t, t) * b.token_mask[:, None, None, :]
    a = a / a.sum(-1, keepdim=True)
    n = len(enc[0])
    a_one = a[:1, :, :n, :n] / a[:1, :, :n, :n].sum(-1, keepdim=True)
    w_batch = pool_words(a, b)[0, :, :2, :2]
    w_one = pool_words(a_one, one)[0, :, :2, :2]
    assert torch.allclose(w_batch, w_one, atol=1e-6)
