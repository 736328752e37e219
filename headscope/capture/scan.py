"""One pass over a block of attention rows on the CPU (numba kernels): each word row's strongest links to other
words, its mass on special tokens and on itself, and the rows' mass per token-offset bin.

``capture.links`` reads a long input's blocks with these where the block is on the CPU: torch would make one
pass over the block per operation (pool, mask, segment maxima, top-k, cumulative sums), which costs more than
the forward itself; a kernel reads each row once. Elsewhere (a GPU) ``links`` uses its torch operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from numba import njit, prange
except ImportError:          # pragma: no cover - numba is a dependency; links falls back to torch without it
    njit = prange = None

# Keys are read in chunks of this many: a chunk none of whose words can enter a row's top list (its largest
# single-piece key, its multi-piece keys' sum) is passed over after one vectorised look.
CHUNK = 32


def available() -> bool:
    return njit is not None


class Keys:
    """One input's keys as the kernel reads them (made once per input): each word's ``first`` and ``last`` piece
    and ``count``; ``end_word``, at a word's last piece the word, else -1 (special tokens, earlier pieces);
    ``specials``, the special tokens' positions; ``single`` and ``multi``, 1.0 at the pieces of single-piece and
    of multi-piece words; ``reach``, per whole chunk of keys how many chunks back a multi-piece word ending in
    it begins (its summed columns are at most the multi-piece keys' sum over those chunks); ``edges``, the
    distance profile's bins."""

    def __init__(self, word_ids: Any, edges: Any) -> None:
        wid = np.asarray(word_ids, dtype=np.int64)
        tokens = np.flatnonzero(wid >= 0)
        n = int(wid.max(initial=-1)) + 1
        self.count = np.bincount(wid[tokens], minlength=n).astype(np.int64)
        self.first = np.full(n, len(wid), dtype=np.int64)
        np.minimum.at(self.first, wid[tokens], tokens)
        self.last = self.first + self.count - 1
        self.end_word = np.full(len(wid), -1, dtype=np.int64)
        self.end_word[self.last[self.count > 0]] = np.flatnonzero(self.count > 0)
        self.specials = np.flatnonzero(wid < 0).astype(np.int64)
        g = len(wid) // CHUNK
        multi = (wid >= 0) & (self.count[np.maximum(wid, 0)] > 1)
        self.single = ((wid >= 0) & ~multi).astype(np.float32)
        self.multi = multi.astype(np.float32)
        ends = np.flatnonzero(self.count > 1)
        ends = ends[self.last[ends] < g * CHUNK]
        self.reach = np.zeros(g, dtype=np.int64)
        np.maximum.at(self.reach, self.last[ends] // CHUNK, self.last[ends] // CHUNK - self.first[ends] // CHUNK)
        self.edges = np.asarray(edges, dtype=np.int64)


def _kernel() -> Any:
    """The compiled kernel (compiled at first use, cached on disk by numba)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = njit(parallel=True, cache=True, nogil=True, fastmath=True)(_block)
    return _COMPILED


_COMPILED = None


def read_block(x: np.ndarray, r0: int, keys: Keys, words: np.ndarray, done: np.ndarray, pending: np.ndarray | None,
               pending_word: int, causal: bool, k: int) -> dict:
    """One pass over the block ``x [head, rows, keys]`` (float32, C order; rows from ``r0``) for the ``words`` that
    have rows in it (``done``: the word's last piece is here).

    Each row of a word's pieces adds its mass per token-offset bin (``keys.edges``; |offset| both ways unless
    ``causal``; special-token keys left out) to ``distance [head, bin]``. For a done word, its row is the sum of
    its pieces' rows (with ``pending [head, keys']``, the rows of ``pending_word`` in earlier blocks) with columns
    summed over a word's pieces: ``index`` and ``weight [head, word, k]`` hold its ``k`` strongest other words
    with weight above 0 (strongest first, -1 past the last), ``special`` and ``own [head, word]`` its mass on
    special tokens and on itself; sums over the word's rows, not yet averaged; rows of words not done are 0."""
    h, n = x.shape[0], len(words)
    width = x.shape[2]
    rows_in = np.minimum(keys.last[words], r0 + x.shape[1] - 1) - np.maximum(keys.first[words], r0) + 1
    pooled = done & ((rows_in > 1) | (words == pending_word))
    slot = np.full(n, -1, dtype=np.int64)
    slot[pooled] = np.arange(int(pooled.sum()))
    out = {"index": np.full((h, n, k), -1, dtype=np.int64), "weight": np.zeros((h, n, k), dtype=np.float32),
           "special": np.zeros((h, n)), "own": np.zeros((h, n)),
           "distance": np.zeros((h * n, len(keys.edges) - 1))}
    if pending is None:
        pending = np.zeros((h, 0), dtype=np.float32)
    if n:
        scratch = np.empty((h * max(1, int(pooled.sum())), width), dtype=np.float32)
        top = np.empty((h * n, 2 * max(1, width // CHUNK)), dtype=np.float32)
        _kernel()(x, r0, words, done, keys.first, keys.last, keys.end_word, keys.specials, keys.single, keys.multi,
                  keys.reach, keys.edges, causal, pending, pending_word, slot, scratch, top, out["index"],
                  out["weight"], out["special"], out["own"], out["distance"])
    out["distance"] = out["distance"].reshape(h, n, -1).sum(1) if n else np.zeros((h, len(keys.edges) - 1))
    return out


def _block(x, r0, words, done, first, last, end_word, specials, single, multi, reach, edges, causal, pending,
           pending_word, slot, scratch, top, index, weight, special, own, part):  # pragma: no cover - numba
    h_n, rows, width = x.shape
    n = len(words)
    for task in prange(h_n * n):
        h, i = task // n, task % n
        w = words[i]
        a, b = max(first[w], r0) - r0, min(last[w] - r0 + 1, rows)      # the word's rows in this block
        for p in range(a, b):                                            # the distance profile of its rows
            _offsets(x[h, p], r0 + p, edges, specials, causal, part[task])
        if not done[i]:
            continue
        limit = min(width, last[w] + 1) if causal else width
        if slot[i] < 0:
            row = x[h, a]
        else:                                                            # the sum of the word's rows
            row = scratch[h * (len(scratch) // h_n) + slot[i]]
            row[:limit] = 0.0
            for p in range(a, b):
                for j in range(limit):
                    row[j] += x[h, p, j]
            if w == pending_word:
                for j in range(pending.shape[1]):
                    row[j] += pending[h, j]
        _links(row, limit, w, first, end_word, single, multi, reach, top[task], weight[h, i], index[h, i])
        spec = 0.0
        for sp in specials:
            if sp < limit:
                spec += row[sp]
        mine = 0.0
        for j in range(first[w], min(last[w] + 1, limit)):
            mine += row[j]
        special[h, i] = spec
        own[h, i] = mine


def _links(row, limit, w, first, end_word, single, multi, reach, bound, top_w, top_i):  # pragma: no cover
    """The strongest words (other than ``w``) of a row whose keys end at ``limit``, into ``top_w``/``top_i``.

    Each whole chunk of keys gets a bound on the words ending in it (``bound``): its largest single-piece key, or
    the sum of the multi-piece keys of the chunks its multi-piece words span. The keys after the last whole
    chunk and the chunks with the largest bounds are read first, then only the chunks whose bound is above the
    list's floor."""
    g = limit // CHUNK
    spread = bound[g:]                             # scratch: each chunk's multi-piece sum
    for c in range(g):
        m = np.float32(0.0)
        t = np.float32(0.0)
        for j in range(c * CHUNK, c * CHUNK + CHUNK):
            m = max(m, row[j] * single[j])
            t += row[j] * multi[j]
        bound[c] = m
        spread[c] = t
    for c in range(g):
        t = spread[c]
        for d in range(1, reach[c] + 1):
            t += spread[c - d]
        bound[c] = max(bound[c], t)
    kth = _chunk(row, g * CHUNK, limit, w, first, end_word, np.float32(0.0), top_w, top_i)
    for _ in range(min(len(top_w), g)):            # the likeliest chunks first: the floor rises early
        best = 0
        for c in range(1, g):
            if bound[c] > bound[best]:
                best = c
        if bound[best] <= kth:
            break
        kth = _chunk(row, best * CHUNK, best * CHUNK + CHUNK, w, first, end_word, kth, top_w, top_i)
        bound[best] = -1.0
    for c in range(g):
        if bound[c] > kth:
            kth = _chunk(row, c * CHUNK, c * CHUNK + CHUNK, w, first, end_word, kth, top_w, top_i)


def _chunk(row, start, stop, w, first, end_word, kth, top_w, top_i):  # pragma: no cover - compiled by numba
    """The words that end in keys ``start:stop``, each its pieces' sum, into the top list; returns its floor."""
    for j in range(start, stop):
        u = end_word[j]
        if u < 0 or u == w:
            continue
        v = row[j]
        for p in range(first[u], j):
            v += row[p]
        if v > kth:
            kth = _insert(top_w, top_i, v, u)
    return kth


def _offsets(row, pos, edges, specials, causal, part):  # pragma: no cover - compiled by numba
    """Add one row's mass per offset bin (special keys left out) to ``part``."""
    width = len(row)
    bins = len(edges) - 1
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        s = np.float32(0.0)
        for j in range(max(pos - hi + 1, 0), min(pos - lo + 1, width)):         # keys left of the row (and it)
            s += row[j]
        if not causal:
            for j in range(pos + max(lo, 1), min(pos + hi, width)):            # keys right of it
                s += row[j]
        part[b] += s
    for sp in specials:
        if sp >= width or (causal and sp > pos):
            continue
        d = abs(pos - sp)
        b = 0
        while b + 1 < bins and edges[b + 1] <= d:
            b += 1
        part[b] -= row[sp]


def _insert(top_w, top_i, v, u):  # pragma: no cover - compiled by numba
    """Put ``(v, u)`` into the descending top list; returns its new smallest weight."""
    k = len(top_w)
    p = k - 1
    while p > 0 and top_w[p - 1] < v:
        top_w[p] = top_w[p - 1]
        top_i[p] = top_i[p - 1]
        p -= 1
    top_w[p] = v
    top_i[p] = u
    return top_w[k - 1]


if njit is not None:
    _insert, _chunk, _links, _offsets = (njit(inline="always", fastmath=True)(f) for f in (_insert, _chunk, _links,
                                                                                        _offsets))
