"""Tree scorer: Edmonds decoding recovers planted trees; UAS and branching baselines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402

from headscope.analysis.tree import TreeScorer, decode_tree  # noqa: E402


def test_decode_recovers_a_planted_tree_with_noise():
    rng = np.random.default_rng(0)
    gold = [2, 2, -1, 4, 2, 4, 2]
    n = len(gold)
    scores = rng.uniform(0, 0.3, (n, n))
    for d, h in enumerate(gold):
        if h >= 0:
            scores[d, h] = 1.0
    assert decode_tree(scores, root=2) == gold


def test_decode_never_heads_the_root_and_returns_a_tree():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 9):
        scores = rng.uniform(size=(n, n))
        heads = decode_tree(scores, root=0)
        assert heads[0] == -1
        for d in range(1, n):          # every word reaches the root without a cycle
            seen, j = set(), d
            while j != -1:
                assert j not in seen
                seen.add(j)
                j = heads[j]


def test_planted_head_gets_uas_one_and_baselines_are_branching_rates():
    sents = [syn.sentence([1, -1, 1, 4, 1]), syn.sentence([-1, 0, 1, 2])]   # the second is right-branching
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(2, 2, t, t)
    for i, s in enumerate(sents):
        for d, h in enumerate(s.heads):
            if h >= 0:
                maps[i, 0, 1 + d, 1 + h] = 1.0
        maps[i, 1] = 1.0
    df = syn.run(TreeScorer(1, 2), b, syn.normalise(maps, b))
    head0 = df[(df["head"] == 0) & (df["direction"] == "dep_to_head")]
    assert float(head0["score"].iloc[0]) == 1.0
    base = df[df["baseline"].notna() & (df["direction"] == "dep_to_head")]
    got = dict(zip(base["baseline"], base["score"]))
    # 7 non-root words. Head = previous word: word 2 of s1 and all 3 of s2; head = next word: words 0, 3 of s1.
    assert got["right_branching"] == pytest.approx((1 + 3) / 7)
    assert got["left_branching"] == pytest.approx(2 / 7)
    assert set(df["n"].astype(int)) == {7}


@pytest.mark.parametrize("temperature", [1.0, 20.0])
def test_fast_decoder_equals_networkx(temperature):
    rng = np.random.default_rng(int(temperature))
    for _ in range(300):
        n = int(rng.integers(2, 16))
        logits = rng.normal(size=(n, n)) * temperature
        scores = np.exp(logits - logits.max(1, keepdims=True))
        scores /= scores.sum(1, keepdims=True)          # attention-like rows, peaked at high temperature
        root = int(rng.integers(0, n))
        fast, ref = decode_tree(scores, root), decode_tree(scores, root, "networkx")
        weight = [sum(scores[d, h] for d, h in enumerate(t) if h >= 0) for t in (fast, ref)]
        assert weight[0] == pytest.approx(weight[1], rel=1e-12, abs=1e-300)
        if temperature == 1.0:                           # no exact ties: the optimum is unique
            assert fast == ref


def test_tree_scorer_same_with_networkx_on_a_real_model(tiny_bert_loaded, sample):
    from headscope.capture.alignment import encode_sentences
    from headscope.analysis.base import LayerView
    from headscope.capture.session import capture

    sents = list(sample.sentences[:10])
    fast, ref = TreeScorer(2, 4), TreeScorer(2, 4, method="networkx")

    def on_layer(layer, weights, b):
        for s in (fast, ref):
            s.update(LayerView(layer, weights, b))

    def start(b):
        fast.start_batch(b)
        ref.start_batch(b)

    def end(b):
        fast.end_batch()
        ref.end_batch()

    capture(tiny_bert_loaded, sents, encode_sentences(tiny_bert_loaded.tokenizer, sents), on_layer,
            on_batch_start=start, on_batch_end=end)
    got, expected = fast.result(), ref.result()
    assert len(got) == 2 * 2 * 4 + 4 and got["n"].iloc[0] == sum(h >= 0 for s in sents for h in s.heads)
    assert got["score"].tolist() == expected["score"].tolist()
