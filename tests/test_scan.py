"""The CPU kernel that reads a block of attention rows in one pass (capture.scan) equals plain numpy loops on
synthetic blocks long enough that whole chunks of keys are passed over: sharp rows, diffuse rows, ties of zeros,
multi-piece words across chunk borders, a word longer than a chunk, special tokens inside the input, a word
begun in an earlier block (its rows so far given), and causal and bidirectional rows."""

from __future__ import annotations

import numpy as np
import pytest

from headscope.capture import scan
from headscope.capture.links import distance_edges

pytestmark = pytest.mark.skipif(not scan.available(), reason="numba is not installed")


def word_ids(rng: np.random.Generator, tokens: int) -> np.ndarray:
    """Special token first and one in the middle; words of 1 to 4 pieces, one of 40."""
    out, word, t = [-1], 0, 1
    while t < tokens:
        if t == tokens // 2:
            out.append(-1)
            t += 1
            continue
        n = 40 if word == 7 else int(rng.choice([1, 1, 1, 2, 3, 4]))
        n = min(n, tokens - t)
        out += [word] * n
        word, t = word + 1, t + n
    return np.asarray(out[:tokens])


def block(rng: np.random.Generator, heads: int, rows: int, width: int, causal: bool, r0: int) -> np.ndarray:
    """Rows of a softmax: head 0 sharp, head 1 diffuse, head 2 with most keys exactly 0."""
    logits = rng.normal(size=(heads, rows, width)) * np.array([8.0, 0.3, 3.0])[:, None, None]
    logits[2, :, rng.random(width) < 0.7] = -np.inf
    logits[2, :, 0] = 0.0
    if causal:
        later = np.arange(width)[None, :] > (r0 + np.arange(rows))[:, None]
        logits[:, later] = -np.inf
    x = np.exp(logits - logits.max(-1, keepdims=True))
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def reference(x, r0, wid, words, done, pending, pending_word, causal, k, edges):
    heads, rows, width = x.shape
    n_words = wid.max() + 1
    out = {"index": np.full((heads, len(words), k), -1), "weight": np.zeros((heads, len(words), k)),
           "special": np.zeros((heads, len(words))), "own": np.zeros((heads, len(words))),
           "distance": np.zeros((heads, len(edges) - 1))}
    cols = np.zeros((width, n_words))
    cols[np.flatnonzero(wid[:width] >= 0), wid[:width][wid[:width] >= 0]] = 1
    for i, w in enumerate(words):
        mine = np.flatnonzero(wid[r0:r0 + rows] == w)
        for p in mine:
            for h in range(heads):
                for j in range(width):
                    if wid[j] >= 0 and (not causal or j <= r0 + p):
                        d = abs(r0 + p - j)
                        out["distance"][h, max(b for b in range(len(edges) - 1) if edges[b] <= d)] += x[h, p, j]
        if not done[i]:
            continue
        for h in range(heads):
            row = x[h, mine].sum(0).astype(np.float64)
            if w == pending_word:
                row[: pending.shape[1]] += pending[h]
            pooled = row @ cols
            out["special"][h, i] = row[wid[:width] < 0].sum()
            out["own"][h, i] = pooled[w]
            pooled[w] = -1
            order = [u for u in np.argsort(-pooled, kind="stable") if pooled[u] > 0][:k]
            out["index"][h, i, :len(order)] = order
            out["weight"][h, i, :len(order)] = pooled[order]
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("r0", [0, 150])
def test_the_kernel_equals_plain_loops(causal, r0):
    rng = np.random.default_rng(7 + r0 + causal)
    tokens, rows = 300, 40
    wid = word_ids(rng, tokens)
    width = r0 + rows if causal else tokens
    x = block(rng, 3, rows, width, causal, r0)
    edges = np.asarray(distance_edges(tokens))
    keys = scan.Keys(wid, edges)
    here = wid[r0:r0 + rows]
    words = np.unique(here[here >= 0])
    done = keys.last[words] < r0 + rows
    begun = words[keys.first[words] < r0]
    pending_word = int(begun[0]) if len(begun) else -1
    pending = (rng.random((3, r0)) / r0).astype(np.float32) if pending_word >= 0 else None
    got = scan.read_block(x, r0, keys, words, done, pending, pending_word, causal, 5)
    ref = reference(x, r0, wid, words, done, pending, pending_word, causal, 5, edges)
    np.testing.assert_array_equal(got["index"][:, done], ref["index"][:, done])
    for name in ("weight", "special", "own"):
        np.testing.assert_allclose(got[name][:, done], ref[name][:, done], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["distance"], ref["distance"], atol=1e-4)
    assert (keys.count[words] >= 40).any() or r0 == 150      # the long word is read in the first block


def test_keys_mark_words_and_chunks():
    wid = np.array([-1] + [0] * 40 + [1, 2, 2, -1] + [3] * 30 + [4] * 70)
    keys = scan.Keys(wid, distance_edges(len(wid)))
    assert keys.first.tolist() == [1, 41, 42, 45, 75] and keys.last.tolist() == [40, 41, 43, 74, 144]
    assert keys.end_word[[40, 41, 42, 43, 44]].tolist() == [0, 1, -1, 2, -1]
    assert keys.specials.tolist() == [0, 44]
    assert (keys.single[[41, 45]] == [1, 0]).all() and (keys.multi[[41, 45]] == [0, 1]).all()
    # whole chunks 0..3: the 40-piece word ends in chunk 1 (begun in 0), the 30-piece one in 2 (begun in 1);
    # the 70-piece word ends after the last whole chunk
    assert keys.reach.tolist() == [0, 1, 1, 0]
