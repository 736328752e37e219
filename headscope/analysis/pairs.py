"""Winograd-style minimal pairs per head: prefers the right candidate in both sentences (chance 25%)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..capture.alignment import Batch
from ..schema import frame
from ..types import MinimalPair, Sentence
from .base import LayerView, Scorer, check_same_inputs

DIRECTION = "pronoun_to_candidate"
# Baselines that always prefer one candidate: the first (index 0) or the nearer one (index 1).
BASELINE_NAMES = ("first_candidate", "nearest_candidate")
BASELINE_PICKS = (0, 1)
CHANCE = (0.25, 0.5)      # a head that picks a candidate at random: both sentences of a pair, one sentence


def pair_sentences(pairs: Sequence[MinimalPair]) -> list[Sentence]:
    """Model inputs: sentence a then b of every pair (item 2k is pair k's a, 2k+1 its b)."""
    return [Sentence(words=p.words[j], sent_id=f"{p.pair_id}{'ab'[j]}", source=p.source)
            for p in pairs for j in (0, 1)]


@dataclass
class PairScorer(Scorer):
    """In each sentence a head prefers the candidate whose head noun the pronoun attends to more
    (a tie prefers neither). A pair counts only when both sentences are right, so a head that
    always prefers one position (e.g. the nearer noun) scores 0 and chance is 25%."""

    ACCUMULATORS = ("right", "seen")

    num_layers: int
    num_heads: int
    pairs: Sequence[MinimalPair]
    task: str = "pairs"
    right: Any = field(default=None, repr=False)    # [sentence item, layer, head] bool
    seen: Any = field(default=None, repr=False)     # [sentence item] bool
    keep_units: bool = True      # bootstrap intervals over pairs (``right`` already holds every pair's hits)
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if self.right is None:
            self.right = np.zeros((2 * len(self.pairs), self.num_layers, self.num_heads), dtype=bool)
            self.seen = np.zeros(2 * len(self.pairs), dtype=bool)

    def start_batch(self, batch: Batch) -> None:
        import torch

        dev = batch.word_mask.device
        items = [e.index for e in batch.encoded]
        pron, cand, answer = [], [], []
        for idx in items:
            p = self.pairs[idx // 2]
            pron.append(p.pronoun)
            cand.append(list(p.candidates))
            answer.append(p.answers[idx % 2])
        self._batch = {"items": items, "pron": torch.tensor(pron, device=dev),
                       "cand": torch.tensor(cand, device=dev), "answer": torch.tensor(answer, device=dev),
                       "layers": [], "mass": []}

    def update(self, view: LayerView) -> None:
        import torch

        g = self._batch
        b = torch.arange(len(g["items"]), device=g["pron"].device)
        row = view.words[b, :, g["pron"], :]                                   # [item, head, col]
        mass = torch.gather(row, 2, g["cand"].unsqueeze(1).expand(-1, row.shape[1], -1))  # [item, head, 2]
        g["layers"].append(view.layer)
        g["mass"].append(mass)

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if not g.get("mass"):
            return
        mass = torch.stack(g.pop("mass"), 1)                                   # [item, layer, head, 2]
        first = g["answer"].view(-1, 1, 1) == 0
        right = torch.where(first, mass[..., 0] > mass[..., 1], mass[..., 1] > mass[..., 0])
        import numpy as np

        items = g["items"]
        self.right[np.ix_(items, g["layers"], np.arange(self.num_heads))] = right.cpu().numpy()
        self.seen[items] = True
        self._ci = None

    def merge(self, other: "PairScorer") -> "PairScorer":
        check_same_inputs(self.pairs, other.pairs, "pairs")
        out = PairScorer(self.num_layers, self.num_heads, self.pairs, keep_units=self.keep_units and other.keep_units)
        out.right = self.right | other.right
        out.seen = self.seen | other.seen
        return out

    def _per_pair(self) -> tuple[Any, Any, Any]:
        """Complete pairs' hits: right ``[pair, 2, layer, head]``, answers ``[pair, 2]``, and the mask."""
        import numpy as np

        complete = self.seen.reshape(-1, 2).all(1)                             # [pair]
        right = self.right.reshape(len(self.pairs), 2, self.num_layers, self.num_heads)[complete]
        answers = np.array([p.answers for p in self.pairs]).reshape(-1, 2)[complete]
        return right, answers, complete

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over pairs for every head and baseline (kept for ``result``), and each
        head's paired p-value against the better baseline (by point estimate) of its relation."""
        import numpy as np

        from .stats import bootstrap_weights, paired_pvalue, ratio_intervals

        right, answers, _ = self._per_pair()
        U = len(right)
        if not self.keep_units or U == 0:
            return
        L, H = self.num_layers, self.num_heads
        heads = np.stack([right.all(1), right.sum(1)], 1).reshape(U, 2, L * H)     # [U, relation, L*H]
        picks = np.stack([np.stack([(answers == pick).all(1), (answers == pick).sum(1)], 1)
                          for pick in BASELINE_PICKS], -1)                          # [U, relation, baseline]
        den = np.broadcast_to(np.array([1, 2], dtype=np.int8), (U, 2))            # pair, sentence
        w = bootstrap_weights(U, n_boot, seed)
        rel_heads = np.repeat(np.arange(2), L * H)
        _, lo, hi = ratio_intervals(heads.reshape(U, -1), den, den_index=rel_heads, weights=w, level=level)
        _, blo, bhi = ratio_intervals(picks.reshape(U, -1), den, den_index=np.repeat(np.arange(2), len(BASELINE_PICKS)),
                                      weights=w, level=level)
        # The structural baselines are 0 (pair) and 1/2 (sentence) by construction, never above chance,
        # so heads are tested against chance: 1/4 of a pair, 1 of a pair's 2 sentences.
        ref = np.broadcast_to(np.array(CHANCE) * np.array([1, 2]), (U, 2)).astype(np.float32)    # [U, relation]
        p = paired_pvalue(heads.reshape(U, -1), np.repeat(ref, L * H, axis=1), den, den_index=rel_heads, weights=w)
        self._ci = {"heads": (lo.reshape(2, L, H), hi.reshape(2, L, H)), "p": p.reshape(2, L, H),
                    "baselines": (blo.reshape(2, -1), bhi.reshape(2, -1))}

    def result(self):
        right, answers, complete = self._per_pair()
        n = int(complete.sum())
        if n == 0:
            return frame([])
        both = right.all(1).mean(0)                                            # [layer, head]
        either = right.mean((0, 1))
        ci = self._ci
        nan = float("nan")

        def interval(kind: str, *at: int) -> dict:
            return {"ci_low": ci[kind][0][at] if ci else nan, "ci_high": ci[kind][1][at] if ci else nan}

        rows = []
        base = {"task": self.task, "direction": DIRECTION, "n": n}
        for rel, chance, count in (("pair", CHANCE[0], n), ("sentence", CHANCE[1], 2 * n)):
            rows.append({**base, "relation": rel, "metric": "accuracy", "baseline": "chance", "score": chance,
                         "n": count, "ci_low": chance if ci else nan, "ci_high": chance if ci else nan})
        for j, (name, pick) in enumerate(zip(BASELINE_NAMES, BASELINE_PICKS)):
            rows.append({**base, "relation": "pair", "metric": "accuracy", "baseline": name,
                         "score": float((answers == pick).all(1).mean()), **interval("baselines", 0, j)})
            rows.append({**base, "relation": "sentence", "metric": "accuracy", "baseline": name,
                         "score": float((answers == pick).mean()), "n": 2 * n, **interval("baselines", 1, j)})
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                rows.append({**base, "relation": "pair", "metric": "accuracy", "layer": layer, "head": head,
                             "score": float(both[layer, head]), **interval("heads", 0, layer, head),
                             "p_value": ci["p"][0, layer, head] if ci else nan})
                rows.append({**base, "relation": "sentence", "metric": "accuracy", "layer": layer, "head": head,
                             "score": float(either[layer, head]), "n": 2 * n, **interval("heads", 1, layer, head),
                             "p_value": ci["p"][1, layer, head] if ci else nan})
        return frame(rows)
