"""Per-head whole-tree UAS: each head's word map decoded as a maximum spanning arborescence (METRICS §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..alignment import Batch
from ..schema import frame
from .base import LayerView

DIRECTIONS = ("dep_to_head", "head_to_dep")
BASELINES = ("right_branching", "left_branching")


def decode_tree(scores: np.ndarray, root: int) -> list[int]:
    """Heads of the maximum spanning arborescence rooted at ``root``.

    ``scores[d, h]`` is the weight of the edge h -> d (h heads d). Returns 0-based heads, -1 for root.
    Uses networkx's Edmonds implementation.
    """
    import networkx as nx

    n = scores.shape[0]
    if n == 1:
        return [-1]
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for d in range(n):
        if d == root:
            continue  # nothing may head the root, so the arborescence must start there
        for h in range(n):
            if h != d:
                g.add_edge(h, d, weight=float(scores[d, h]))
    tree = nx.maximum_spanning_arborescence(g, attr="weight", preserve_attrs=False)
    heads = [-1] * n
    for h, d in tree.edges():
        heads[d] = h
    return heads


@dataclass
class TreeScorer:
    """UAS of every head's decoded tree against the gold tree, over non-root words.

    ``dep_to_head`` weighs edge h -> d by A[d, h]; ``head_to_dep`` by A[h, d]. Baselines:
    right-branching (each word headed by the previous word) and left-branching (by the next word).
    Runs networkx per sentence and head on the CPU, so it costs far more than the other tasks.
    """

    num_layers: int
    num_heads: int
    task: str = "tree"
    correct: Any = field(default=None, repr=False)   # [layer, dir, head]
    total: float = 0.0
    baseline_correct: Any = field(default=None, repr=False)  # [baseline]

    def __post_init__(self) -> None:
        if self.correct is None:
            self.correct = np.zeros((self.num_layers, 2, self.num_heads))
            self.baseline_correct = np.zeros(len(BASELINES))

    def start_batch(self, batch: Batch) -> None:
        for s in batch.sentences:
            if not s.has_tree:
                continue
            heads = np.asarray(s.heads)
            pos = np.arange(len(heads))
            scored = heads >= 0
            self.total += scored.sum()
            self.baseline_correct[0] += (heads[scored] == pos[scored] - 1).sum()
            self.baseline_correct[1] += (heads[scored] == pos[scored] + 1).sum()

    def update(self, view: LayerView) -> None:
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
                    pred = np.asarray(decode_tree(scores, root))
                    self.correct[view.layer, k, head] += (pred[scored] == gold[scored]).sum()

    def end_batch(self) -> None:
        pass

    def merge(self, other: "TreeScorer") -> "TreeScorer":
        out = TreeScorer(self.num_layers, self.num_heads)
        out.correct = self.correct + other.correct
        out.total = self.total + other.total
        out.baseline_correct = self.baseline_correct + other.baseline_correct
        return out

    def result(self):
        if self.total == 0:
            return frame([])
        n = int(self.total)
        rows = []
        for k, name in enumerate(BASELINES):
            for direction in DIRECTIONS:
                rows.append({"task": self.task, "relation": "all", "direction": direction, "metric": "uas",
                             "baseline": name, "score": self.baseline_correct[k] / n, "n": n})
        for layer in range(self.num_layers):
            for k, direction in enumerate(DIRECTIONS):
                for head in range(self.num_heads):
                    rows.append({"task": self.task, "relation": "all", "direction": direction, "metric": "uas",
                                 "layer": layer, "head": head, "score": self.correct[layer, k, head] / n, "n": n})
        return frame(rows)
