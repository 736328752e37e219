"""Links read block by block (capture.links), by the CPU kernels (capture.scan) and by torch operations in segments
(what a GPU runs): each row's strongest word links, its masses, the kept rows and the distance profile equal plain
loops over eager maps, with multi-piece words, words cut between row blocks (one word over three blocks), and, in
segments, rows read whole again where the segments cannot tell."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from headscope.capture import links, scan
from headscope.capture.links import read_links
from headscope.models.loading import load_model
from headscope.types import Sentence

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_bert, tiny_llama  # noqa: E402
from reference import full_attentions, word_attention  # noqa: E402

# Rare words give several pieces each: the tiny tokenizers split them.
TEXT = ("The xylophonist didn't cross the antidisestablishmentarian street because it was too tired ; "
        "the quizzical zookeepers photographed Kazakhstan's unbelievably overcomplicated juxtapositions , and "
        "it rained .").split()


@pytest.fixture(scope="module", params=["bert", "llama"])
def loaded(request):
    model, tok = (tiny_bert if request.param == "bert" else tiny_llama)()
    return load_model(model, tokenizer=tok, name=f"tiny-{request.param}")


def plain_links(att: np.ndarray, word_ids: list, k: int, causal: bool):
    """Per head and word row: the ``k`` strongest links to other words (column, weight), the mass on special
    tokens and on itself, and the whole row (words, then special tokens), from one layer's ``[head, tok, tok]``."""
    n = max(w for w in word_ids if w is not None) + 1
    specials = [t for t, w in enumerate(word_ids) if w is None]
    pieces = [[t for t, w in enumerate(word_ids) if w == i] for i in range(n)]
    out = []
    for a in att:
        words = word_attention(a, word_ids)
        spec = np.stack([a[p][:, specials].mean(0) for p in pieces])               # [word, special]
        rows = []
        for i in range(n):
            cand = sorted(((words[i, j], j) for j in range(n) if j != i and (not causal or j < i)),
                          key=lambda x: -x[0])[:k]
            rows.append(([j for w, j in cand if w > 0], [w for w, j in cand if w > 0], spec[i].sum(), words[i, i],
                         np.concatenate([words[i], spec[i]])))
        out.append(rows)
    return out


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    """Which reader runs: the CPU kernels, or torch's operations as on a GPU."""
    if request.param == "torch":
        monkeypatch.setattr(scan, "available", lambda: False)
    return request.param


@pytest.mark.parametrize("segment", [2, 4])
@pytest.mark.parametrize("memory", [512, 0.003, 0.0004])
def test_links_equal_plain_loops(loaded, monkeypatch, path, segment, memory):
    monkeypatch.setattr(links, "SEGMENT", segment)
    reread = []
    real = links._reread
    monkeypatch.setattr(links, "_reread", lambda *a: (reread.append(len(a[2])), real(*a))[1])
    sent = Sentence(words=tuple(TEXT))
    (item,) = read_links(loaded, [sent], k=5, keep_rows="all", levels=("word",), attention_memory=memory)
    maps, word_ids = full_attentions(loaded.model, loaded.tokenizer, sent)
    n = len(TEXT)
    assert len(word_ids) > n + 8                                         # several words of several pieces
    got = item["links"]["word"]
    for layer, att in enumerate(maps):
        for h, rows in enumerate(plain_links(att, word_ids, 5, loaded.info.is_decoder)):
            for i, (cols, weights, special, own, whole) in enumerate(rows):
                top = got.top(layer, h, i)
                assert [c for c, _ in top] == cols, (layer, h, i)
                np.testing.assert_allclose([w for _, w in top], weights, atol=1e-5)
                assert got.special_mass[layer, h, i] == pytest.approx(special, abs=1e-5)
                assert got.self_mass[layer, h, i] == pytest.approx(own, abs=1e-5)
                np.testing.assert_allclose(item["rows"][i][layer, h], whole, atol=1e-5)
    if path == "torch" and memory == 0.003:
        assert sum(reread) > 0                  # some rows were read whole again (segments of a few keys)


@pytest.mark.parametrize("segment", [2, 4])
def test_the_distance_profile(loaded, monkeypatch, path, segment):
    monkeypatch.setattr(links, "SEGMENT", segment)
    sent = Sentence(words=tuple(TEXT))
    (item,) = read_links(loaded, [sent], attention_memory=0.003)
    maps, word_ids = full_attentions(loaded.model, loaded.tokenizer, sent)
    edges = item["distance"]["edges"]
    units = [i for i, w in enumerate(word_ids) if w is not None]
    for layer, att in enumerate(maps):
        ref = np.zeros((att.shape[0], len(edges) - 1))
        for i in units:
            for j in units:
                ref[:, max(b for b in range(len(edges) - 1) if edges[b] <= abs(i - j))] += att[:, i, j]
        np.testing.assert_allclose(item["distance"]["mass"][layer], ref / len(units), atol=1e-6)


def test_a_word_whose_pieces_are_apart_is_refused():
    with pytest.raises(Exception, match="not consecutive"):
        links._Pieces([-1, 0, 1, 0, -1])
