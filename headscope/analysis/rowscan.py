"""One pass over a block of attention rows on the CPU (a numba kernel): the positional scorer's per-row masses,
distance and argmax offset.

``positional._linear`` gets the same numbers from torch: one product of the rows with a few key columns (a
narrow product that a CPU BLAS runs several times slower than a pass over the block), then one more pass per
band, triangle and maximum. The kernel reads each row once. Its keys are cut at the row's edges (its window,
each long-range threshold, its own sentence, the diagonal) so that every stretch of keys is wholly inside or
outside each of them; a stretch adds its mass, its position-weighted mass and its masses on [SEP]/EOS,
punctuation and content keys in one vectorised loop. Where the block is not a float32 CPU tensor (a GPU),
``positional`` uses its torch operations. Both are tested against the same slow reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..capture import scan
from ..capture.scan import prange

# The kernel's output columns, in this order; ``beyond`` is one column per long-range threshold it is given.
COLUMNS = ("self", "prev", "next", "first", "last", "sep", "punct", "local", "distance", "beyond", "other_sentences",
           "content", "mass")


def usable(a: Any) -> bool:
    """Whether the kernel can read the block ``a``: numba is there and ``a`` is a float32 C-order CPU tensor."""
    import torch

    return (FAST and scan.available() and a.device.type == "cpu" and a.dtype == torch.float32 and a.is_contiguous()
            and not a.requires_grad)


FAST = True   # tests turn it off to check positional's torch path


class Keys:
    """What the kernel needs of a batch besides the rows, made once per batch: each token's class (``sep``,
    ``punct``, ``content``: ``[b, t]`` float32), each input's last word's final piece ``last`` ``[b]``, and each
    token's own sentence as ``[own_lo, own_hi)`` (``[b, t]``; an empty range where the input has one sentence).
    ``has`` ``[b]``: 1 where the input has several sentences (else other_sentences is 0)."""

    def __init__(self, keys: Any, last: Any, segments: Any) -> None:
        k = keys.float().cpu().numpy()
        self.sep, self.punct, self.content = (np.ascontiguousarray(k[..., i]) for i in range(3))
        self.last = last.cpu().numpy().astype(np.int64)
        b, t = self.sep.shape
        self.own_lo = np.zeros((b, t), dtype=np.int64)
        self.own_hi = np.zeros((b, t), dtype=np.int64)
        self.has = np.zeros(b, dtype=np.float32)
        for i, segs in enumerate(segments or ()):
            self.has[i] = float(bool(segs))
            for s0, s1 in segs:
                self.own_lo[i, s0:s1], self.own_hi[i, s0:s1] = s0, s1


def read(a: Any, g0: int, keys: Keys, confidence: Any, causal: bool, window: int, max_offset: int,
         far: tuple) -> tuple[Any, Any]:
    """``(stats [b, h, n, len(COLUMNS) - 1 + len(far)], bucket [b, h, n])`` torch tensors for the rows
    ``g0..g0+n-1`` of the block ``a`` ``[b, h, n, w]`` (keys ``0..w-1``; later keys get none): the masses of
    ``COLUMNS`` (``mass``: the row's total; ``last``: 0 where the last word's piece lies beyond the block's
    keys), and each row's
    argmax-offset bucket (``offset + max_offset`` of the first key holding ``confidence``, the row's largest
    weight, or ``2 * max_offset + 1`` when that key is further away or the row is all zero)."""
    import torch

    b, h, n, _ = a.shape
    stats = np.zeros((b, h, n, len(COLUMNS) - 1 + len(far)), dtype=np.float32)
    bucket = np.zeros((b, h, n), dtype=np.int64)
    conf = confidence.float().contiguous().cpu().numpy()
    rel = np.arange(-g0, a.shape[3] - g0, dtype=np.float32)
    _kernel()(a.numpy(), g0, causal, window, max_offset, np.asarray(far, dtype=np.int64), rel, keys.sep, keys.punct,
              keys.content, keys.last, keys.own_lo, keys.own_hi, keys.has, conf, stats, bucket)
    return torch.from_numpy(stats), torch.from_numpy(bucket)


def _kernel() -> Any:
    """The compiled ``_block`` (compiled at first use, cached on disk by numba)."""
    global _COMPILED, _stretch, _sort, _first_max, _reaches
    if _COMPILED is None:
        _stretch = scan.njit(cache=True, nogil=True, fastmath=True)(_stretch_sums)
        _reaches = scan.njit(cache=True, nogil=True, fastmath=True)(_count_reaching)
        _sort = scan.njit(cache=True, nogil=True)(_insertion_sort)
        _first_max = scan.njit(cache=True, nogil=True)(_bucket)
        _COMPILED = scan.njit(parallel=True, cache=True, nogil=True, fastmath=True)(_block)
    return _COMPILED


_COMPILED = _stretch = _sort = _first_max = _reaches = None


def _stretch_sums(row, rel, sep, punct, content, lo, hi):  # pragma: no cover - compiled by numba
    """Keys ``lo..hi-1`` of a row: their mass, their mass times ``rel`` (position), and their masses on the three
    key classes. The loop runs over slices from 0, which LLVM vectorises (a loop from ``lo`` it did not)."""
    x, r, s, p, c = row[lo:hi], rel[lo:hi], sep[lo:hi], punct[lo:hi], content[lo:hi]
    sa = sj = ss = sp = sc = np.float32(0.0)
    for j in range(hi - lo):
        v = x[j]
        sa += v
        sj += v * r[j]
        ss += v * s[j]
        sp += v * p[j]
        sc += v * c[j]
    return sa, sj, ss, sp, sc


def _count_reaching(row, top, hi):  # pragma: no cover - compiled by numba
    """How many of keys ``0..hi-1`` hold at least ``top`` (a vectorised loop: no early exit)."""
    x = row[:hi]
    n = 0
    for j in range(hi):
        n += x[j] >= top
    return n


def _bucket(row, top, i, max_offset, width):  # pragma: no cover - compiled by numba
    """The argmax-offset bucket of row ``i``: ``offset + max_offset`` of the first key holding ``top`` (the
    row's largest weight) when it lies within ``max_offset`` of ``i``, else ``2 * max_offset + 1`` (also for
    a row of zeros). The band is searched first; the keys left of it only when the band holds the maximum."""
    far = 2 * max_offset + 1
    if top <= 0:
        return far
    edge = min(max(i - max_offset, 0), width)
    for j in range(edge, min(i + max_offset + 1, width)):
        if row[j] == top:
            return far if edge > 0 and _reaches(row, top, edge) > 0 else j - i + max_offset
    return far


def _insertion_sort(cuts):  # pragma: no cover - compiled by numba
    """Sort a short, nearly sorted array in place (numba's general sort costs more than a row's whole pass)."""
    for k in range(1, len(cuts)):
        v = cuts[k]
        m = k - 1
        while m >= 0 and cuts[m] > v:
            cuts[m + 1] = cuts[m]
            m -= 1
        cuts[m + 1] = v


def _block(a, g0, causal, window, max_offset, far, rel, sep, punct, content, last, own_lo, own_hi, has, conf, stats,
           bucket):  # pragma: no cover - compiled by numba
    """``read``'s pass: one task per (input, head) row set. ``rel``: each key's position minus ``g0``."""
    batch, heads, rows, width = a.shape
    nf = len(far)
    for task in prange(batch * heads):
        b, h = task // heads, task % heads
        cuts = np.empty(6 + 2 * nf, dtype=np.int64)
        beyond = np.zeros(nf)
        sep_b, punct_b, content_b = sep[b], punct[b], content[b]
        for r in range(rows):
            i = g0 + r
            row = a[b, h, r]
            out = stats[b, h, r]
            beyond[:] = 0.0
            s0, s1 = own_lo[b, i], own_hi[b, i]
            # every edge a measure has, clipped to the keys and sorted: each stretch between two is wholly
            # inside or outside each measure's keys (the thresholds first, nearly in order)
            for f in range(nf):
                cuts[f], cuts[2 * nf - 1 - f] = i - far[nf - 1 - f], i + far[f] + 1
            cuts[2 * nf], cuts[2 * nf + 1], cuts[2 * nf + 2] = i - window, i + 1, i + window + 1
            cuts[2 * nf + 3], cuts[2 * nf + 4], cuts[2 * nf + 5] = s0, s1, width
            _sort(cuts)
            mass = dist = local = own = 0.0
            on_sep = on_punct = on_content = 0.0
            lo = 0
            for c in range(len(cuts)):
                hi = min(max(cuts[c], 0), width)
                if hi <= lo:
                    continue
                sa, sj, ss, sp, sc = _stretch(row, rel, sep_b, punct_b, content_b, lo, hi)
                mass += sa
                on_sep += ss
                on_punct += sp
                on_content += sc
                # x * |i - j| summed over the stretch, with positions relative to g0 (i - g0 = r)
                dist += (r * np.float64(sa) - sj) if hi <= i + 1 else (sj - r * np.float64(sa))
                if lo >= i - window and hi <= i + window + 1:
                    local += sa
                if lo >= s0 and hi <= s1:
                    own += sa
                for f in range(nf):
                    if hi <= i - far[f] or lo >= i + far[f] + 1:
                        beyond[f] += sa
                lo = hi
            out[0] = row[i] if i < width else 0.0
            out[1] = row[i - 1] if 0 <= i - 1 < width else 0.0
            out[2] = row[i + 1] if i + 1 < width else 0.0
            out[3] = row[0]
            out[4] = row[last[b]] if last[b] < width else 0.0
            out[5] = on_sep
            out[6] = on_punct
            out[7] = local
            out[8] = dist
            for f in range(nf):
                out[9 + f] = beyond[f]
            out[9 + nf] = (mass - own) * has[b]
            out[10 + nf] = on_content
            out[11 + nf] = mass
            bucket[b, h, r] = _first_max(row, conf[b, h, r], i, max_offset, width)
