"""Winograd-style minimal pairs per head: prefers the right candidate in both sentences (chance 25%)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..alignment import Batch
from ..schema import frame
from ..types import MinimalPair, Sentence
from .base import LayerView

DIRECTION = "pronoun_to_candidate"


def pair_sentences(pairs: Sequence[MinimalPair]) -> list[Sentence]:
    """Model inputs: sentence a then b of every pair (item 2k is pair k's a, 2k+1 its b)."""
    return [Sentence(words=p.words[j], sent_id=f"{p.pair_id}{'ab'[j]}", source=p.source)
            for p in pairs for j in (0, 1)]


@dataclass
class PairScorer:
    """In each sentence a head prefers the candidate whose head noun the pronoun attends to more
    (a tie prefers neither). A pair counts only when both sentences are right, so a head that
    always prefers one position (e.g. the nearer noun) scores 0 and chance is 25%."""

    num_layers: int
    num_heads: int
    pairs: Sequence[MinimalPair]
    task: str = "pairs"
    right: Any = field(default=None, repr=False)    # [sentence item, layer, head] bool
    seen: Any = field(default=None, repr=False)     # [sentence item] bool
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

    def merge(self, other: "PairScorer") -> "PairScorer":
        out = PairScorer(self.num_layers, self.num_heads, self.pairs)
        out.right = self.right | other.right
        out.seen = self.seen | other.seen
        return out

    def result(self):
        import numpy as np

        complete = self.seen.reshape(-1, 2).all(1)                             # [pair]
        n = int(complete.sum())
        if n == 0:
            return frame([])
        right = self.right.reshape(len(self.pairs), 2, self.num_layers, self.num_heads)[complete]
        both = right.all(1).mean(0)                                            # [layer, head]
        either = right.mean((0, 1))
        answers = np.array([p.answers for p in self.pairs])[complete]          # [pair, 2]
        rows = []
        base = {"task": self.task, "direction": DIRECTION, "n": n}
        for name, pick in (("first_candidate", 0), ("nearest_candidate", 1)):
            rows.append({**base, "relation": "pair", "metric": "accuracy", "baseline": name,
                         "score": float((answers == pick).all(1).mean())})
            rows.append({**base, "relation": "sentence", "metric": "accuracy", "baseline": name,
                         "score": float((answers == pick).mean()), "n": 2 * n})
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                rows.append({**base, "relation": "pair", "metric": "accuracy", "layer": layer, "head": head,
                             "score": float(both[layer, head])})
                rows.append({**base, "relation": "sentence", "metric": "accuracy", "layer": layer, "head": head,
                             "score": float(either[layer, head]), "n": 2 * n})
        return frame(rows)
