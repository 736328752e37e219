"""Per-head whole-tree UAS: each head's word map decoded as a maximum spanning arborescence (METRICS §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..capture.alignment import Batch
from ..schema import frame
from .base import LayerView, Scorer
from .units import UnitStore

DIRECTIONS = ("dep_to_head", "head_to_dep")
BASELINES = ("right_branching", "left_branching")


def decode_tree(scores: np.ndarray, root: int, method: str = "edmonds") -> list[int]:
    """Heads of the maximum spanning arborescence rooted at ``root``.

    ``scores[d, h]`` is the weight of the edge h -> d (h heads d). Returns 0-based heads, -1 for
    the root. ``method="edmonds"`` is the Chu-Liu/Edmonds algorithm below (about 50x faster);
    ``method="networkx"`` calls networkx's implementation, which the tests use as the reference.
    """
    n = scores.shape[0]
    if n == 1:
        return [-1]
    if method == "networkx":
        return _networkx_tree(scores, root)
    if method != "edmonds":
        raise ValueError(f"method must be 'edmonds' or 'networkx', got {method!r}")
    s = np.array(scores, dtype=np.float64)
    np.fill_diagonal(s, -np.inf)
    s[root, :] = -np.inf               # nothing may head the root
    return [int(h) for h in _chu_liu_edmonds(s, root)]


def _networkx_tree(scores: np.ndarray, root: int) -> list[int]:
    import networkx as nx

    n = scores.shape[0]
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from((h, d, float(scores[d, h])) for d in range(n) if d != root
                              for h in range(n) if h != d)
    tree = nx.maximum_spanning_arborescence(g, attr="weight", preserve_attrs=False)
    heads = [-1] * n
    for h, d in tree.edges():
        heads[d] = h
    return heads


def _find_cycle(heads: np.ndarray, root: int) -> list[int] | None:
    state = np.zeros(len(heads), dtype=np.int8)   # 0 unseen, 1 on the current path, 2 done
    for start in range(len(heads)):
        path, node = [], start
        while node != -1 and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = heads[node]
        if node != -1 and state[node] == 1:
            return path[path.index(node):]
        for p in path:
            state[p] = 2
    return None


def _chu_liu_edmonds(s: np.ndarray, root: int) -> np.ndarray:
    """Recursive Chu-Liu/Edmonds on a dense score matrix (``s[d, h]``, -inf where no edge)."""
    heads = s.argmax(1)
    heads[root] = -1
    cycle = _find_cycle(heads, root)
    if cycle is None:
        return heads
    cyc = np.array(cycle)
    in_cycle = np.zeros(len(heads), dtype=bool)
    in_cycle[cyc] = True
    others = np.flatnonzero(~in_cycle)
    m = len(others)
    inner = s[cyc, heads[cyc]]                          # weight of each cycle node's chosen edge
    sub = np.full((m + 1, m + 1), -np.inf)
    sub[:m, :m] = s[np.ix_(others, others)]
    leave = s[np.ix_(others, cyc)]                      # cycle node -> outside node
    sub[:m, m] = leave.max(1)
    leave_from = cyc[leave.argmax(1)]
    enter = s[np.ix_(cyc, others)] - inner[:, None]     # outside node -> cycle node, net of the dropped edge
    sub[m, :m] = enter.max(0)
    enter_at = cyc[enter.argmax(0)]
    inner_heads = _chu_liu_edmonds(sub, int(np.flatnonzero(others == root)[0]))
    out = heads.copy()                                  # the cycle keeps its edges but one
    for i, node in enumerate(others):
        h = inner_heads[i]
        out[node] = -1 if h < 0 else (leave_from[i] if h == m else others[h])
    entry = inner_heads[m]
    out[enter_at[entry]] = others[entry]
    return out


@dataclass
class TreeScorer(Scorer):
    """UAS of every head's decoded tree against the gold tree, over non-root words.

    ``dep_to_head`` weighs edge h -> d by A[d, h]; ``head_to_dep`` by A[h, d]. Baselines:
    right-branching (each word headed by the previous word) and left-branching (by the next word).
    Decodes every sentence and head on the CPU, so it costs more than the other tasks.
    """

    ACCUMULATORS = ("correct", "total", "baseline_correct")

    num_layers: int
    num_heads: int
    method: str = "edmonds"
    task: str = "tree"
    correct: Any = field(default=None, repr=False)   # [layer, dir, head]
    total: float = 0.0
    baseline_correct: Any = field(default=None, repr=False)  # [baseline]
    keep_units: bool = True      # per-sentence counts, for bootstrap intervals over sentences
    _units: Any = field(default=None, repr=False)   # UnitStore: per-sentence correct [L, D, H], total, baselines
    _ci: Any = field(default=None, repr=False)
    _pending: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._units is None:
            self._units = UnitStore()
        if self.correct is None:
            self.correct = np.zeros((self.num_layers, 2, self.num_heads))
            self.baseline_correct = np.zeros(len(BASELINES))

    def start_batch(self, batch: Batch) -> None:
        # Batch counts are committed in end_batch, so a batch cut short leaves the totals consistent.
        # Counts are kept per sentence of the batch ([b, ...]) and summed there.
        b = len(batch.sentences)
        total = np.zeros(b, dtype=np.int64)
        base = np.zeros((b, len(BASELINES)), dtype=np.int64)
        for i, s in enumerate(batch.sentences):
            if not s.has_tree:
                continue
            heads = np.asarray(s.heads)
            pos = np.arange(len(heads))
            scored = heads >= 0
            total[i] = scored.sum()
            base[i] = (heads[scored] == pos[scored] - 1).sum(), (heads[scored] == pos[scored] + 1).sum()
        self._pending = {"total": total, "baselines": base, "correct": np.zeros((b,) + self.correct.shape, np.int64),
                         "layers": [], "index": [e.index for e in batch.encoded]}

    def update(self, view: LayerView) -> None:
        correct = self._pending["correct"]                           # [b, layer, dir, head]
        self._pending["layers"].append(view.layer)
        words = view.words.double().cpu().numpy()                    # [b, h, col, col]
        for i, s in enumerate(view.batch.sentences):
            if not s.has_tree:
                continue
            n = len(s.words)
            gold = np.asarray(s.heads)
            root = int(np.flatnonzero(gold < 0)[0])
            scored = gold >= 0
            for head in range(words.shape[1]):
                block = words[i, head, :n, :n]
                for k, scores in enumerate((block, block.T)):
                    pred = np.asarray(decode_tree(scores, root, self.method))
                    correct[i, view.layer, k, head] += (pred[scored] == gold[scored]).sum()

    def end_batch(self) -> None:
        if self._pending is None:
            return
        g, self._pending = self._pending, None
        self.total += float(g["total"].sum())
        self.baseline_correct += g["baselines"].sum(0)
        self.correct += g["correct"].sum(0)
        if self.keep_units and sorted(g["layers"]) == list(range(self.num_layers)):
            # int32: a sentence has far fewer than 2**31 words; int16 would cap it at 32767.
            self._units.put(g["index"], correct=g["correct"].astype(np.int32), total=g["total"].astype(np.int32),
                            baselines=g["baselines"].astype(np.int32))
            self._ci = None

    def merge(self, other: "TreeScorer") -> "TreeScorer":
        out = TreeScorer(self.num_layers, self.num_heads, self.method)
        out.correct = self.correct + other.correct
        out.total = self.total + other.total
        out.baseline_correct = self.baseline_correct + other.baseline_correct
        out.keep_units = self.keep_units and other.keep_units   # shards of one job: units are disjoint
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sentences for every head and branching baseline (kept for ``result``),
        and each head's paired p-value against the better branching baseline."""
        from .stats import bootstrap_weights, paired_pvalue, ratio_intervals

        if not self.keep_units or not len(self._units):
            return
        correct = self._units.get("correct")                          # [U, layer, dir, head]
        total = self._units.get("total")                              # [U]
        base = self._units.get("baselines")                           # [U, baseline]
        U = len(correct)
        w = bootstrap_weights(U, n_boot, seed)
        _, lo, hi = ratio_intervals(correct.reshape(U, -1), total, weights=w, level=level)
        _, blo, bhi = ratio_intervals(base, total, weights=w, level=level)
        # Both directions score the same gold arcs, so the better baseline is the same for both.
        best = int(base.sum(0).argmax())
        num = correct.reshape(U, -1)
        p = paired_pvalue(num, np.broadcast_to(base[:, best:best + 1], num.shape), total, weights=w)
        shape = correct.shape[1:]
        self._ci = {"heads": (lo.reshape(shape), hi.reshape(shape)), "p": p.reshape(shape),
                    "baselines": (blo, bhi)}

    def result(self):
        if self.total == 0:
            return frame([])
        n = int(self.total)
        ci = self._ci
        nan = float("nan")
        rows = []
        for k, name in enumerate(BASELINES):
            for direction in DIRECTIONS:
                rows.append({"task": self.task, "relation": "all", "direction": direction, "metric": "uas",
                             "baseline": name, "score": self.baseline_correct[k] / n, "n": n,
                             "ci_low": ci["baselines"][0][k] if ci else nan,
                             "ci_high": ci["baselines"][1][k] if ci else nan})
        for layer in range(self.num_layers):
            for k, direction in enumerate(DIRECTIONS):
                for head in range(self.num_heads):
                    at = (layer, k, head)
                    rows.append({"task": self.task, "relation": "all", "direction": direction, "metric": "uas",
                                 "layer": layer, "head": head, "score": self.correct[at] / n, "n": n,
                                 "ci_low": ci["heads"][0][at] if ci else nan,
                                 "ci_high": ci["heads"][1][at] if ci else nan,
                                 "p_value": ci["p"][at] if ci else nan})
        return frame(rows)
