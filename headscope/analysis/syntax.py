"""Per-head dependency-relation accuracy in both directions, with fixed-offset baselines (METRICS §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..alignment import Batch
from ..schema import frame
from .base import LayerView

DIRECTIONS = ("dep_to_head", "head_to_dep")
OFFSETS = (-3, -2, -1, 1, 2, 3)
ALL = "all"


def gold_tensors(batch: Batch, relations: dict[str, int]) -> tuple[Any, Any]:
    """Gold heads ``[batch, word]`` (-1 for root and padding) and relation ids (-1 when not scored)."""
    import torch

    b, w = batch.size, batch.max_words
    heads = torch.full((b, w), -1, dtype=torch.long)
    rels = torch.full((b, w), -1, dtype=torch.long)
    for i, s in enumerate(batch.sentences):
        if not s.has_tree:
            continue
        n = len(s.words)
        heads[i, :n] = torch.tensor(s.heads, dtype=torch.long)
        rels[i, :n] = torch.tensor([relations.get(r, -1) if h >= 0 else -1
                                    for h, r in zip(s.heads, s.relations)], dtype=torch.long)
    dev = batch.word_mask.device
    return heads.to(dev), rels.to(dev)


@dataclass
class SyntaxScorer:
    """Counts, per layer × head × direction × relation, how often the most-attended word is the gold head.

    ``dep_to_head``: pred(d) = argmax_{j≠d} A[d, j]; ``head_to_dep``: pred(d) = argmax_{j≠d} A[j, d].
    Only word columns compete (special tokens are cropped, not renormalised). In a decoder only
    visible positions compete and an instance counts as reachable only if its head is visible.
    """

    num_layers: int
    num_heads: int
    relations: list[str]
    causal: bool = False
    task: str = "syntax"
    correct: Any = field(default=None, repr=False)    # [layer, dir, head, rel+all]
    total: Any = field(default=None, repr=False)      # [rel+all]
    reachable: Any = field(default=None, repr=False)  # [dir, rel+all]
    offset_correct: Any = field(default=None, repr=False)  # [dir, offset, rel+all]
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        self.relations = list(self.relations)
        self._index = {r: i for i, r in enumerate(self.relations)}
        r = len(self.relations) + 1
        if self.correct is None:
            self.correct = torch.zeros((self.num_layers, 2, self.num_heads, r), dtype=torch.float64)
            self.total = torch.zeros(r, dtype=torch.float64)
            self.reachable = torch.zeros((2, r), dtype=torch.float64)
            self.offset_correct = torch.zeros((2, len(OFFSETS), r), dtype=torch.float64)

    def start_batch(self, batch: Batch) -> None:
        import torch

        dev = batch.word_mask.device
        for name in ("correct", "total", "reachable", "offset_correct"):
            setattr(self, name, getattr(self, name).to(dev))
        heads, rels = gold_tensors(batch, self._index)
        w = batch.max_words
        valid = rels >= 0                                             # [b, w] scored dependents
        n_rel = len(self.relations)
        onehot = torch.zeros((batch.size, w, n_rel + 1), device=dev)
        onehot.scatter_(2, rels.clamp_min(0).unsqueeze(-1), 1.0)
        onehot *= valid.unsqueeze(-1)
        onehot[..., n_rel] = valid.float()                            # the "all" column
        pos = torch.arange(w, device=dev)
        eye = torch.eye(w, dtype=torch.bool, device=dev)
        key_ok = batch.word_mask.unsqueeze(1)                         # [b, 1, w]
        later = pos.unsqueeze(0) > pos.unsqueeze(1)                   # [w, w]: key j after query d
        # d2h ranks keys j for dependent d; h2d ranks queries j that attend to d.
        mask_d2h = ~key_ok | eye
        mask_h2d = ~key_ok | eye
        reach_d2h = valid.clone()
        reach_h2d = valid.clone()
        if self.causal:
            mask_d2h = mask_d2h | later             # A[d, j] with j > d is invisible
            mask_h2d = mask_h2d | later.T           # A[j, d] with j < d is invisible
            reach_d2h &= heads < pos
            reach_h2d &= heads > pos
        self._batch = {
            "heads": heads, "onehot": onehot, "masks": (mask_d2h.unsqueeze(1), mask_h2d.unsqueeze(1)),
            "reach": (reach_d2h, reach_h2d),
        }
        self.total += onehot.sum((0, 1)).double()
        for k, reach in enumerate((reach_d2h, reach_h2d)):
            self.reachable[k] += torch.einsum("bw,bwr->r", reach.float(), onehot).double()
            for j, off in enumerate(OFFSETS):
                allowed = not self.causal or (off < 0 if k == 0 else off > 0)
                if not allowed:
                    continue
                hit = (heads == pos + off) & valid
                self.offset_correct[k, j] += torch.einsum("bw,bwr->r", hit.float(), onehot).double()

    def update(self, view: LayerView) -> None:
        import torch

        g = self._batch
        w = view.batch.max_words
        words = view.words[:, :, :w, :w]                              # [b, h, w, w]
        for k, (scores, mask) in enumerate(((words, g["masks"][0]), (words.transpose(-1, -2), g["masks"][1]))):
            pred = scores.masked_fill(mask, float("-inf")).argmax(-1)  # [b, h, w]
            hit = (pred == g["heads"].unsqueeze(1)) & g["reach"][k].unsqueeze(1)
            self.correct[view.layer, k] += torch.einsum("bhw,bwr->hr", hit.float(), g["onehot"]).double()

    def merge(self, other: "SyntaxScorer") -> "SyntaxScorer":
        names = list(dict.fromkeys(self.relations + other.relations))
        out = SyntaxScorer(self.num_layers, self.num_heads, names, causal=self.causal)
        for src in (self, other):
            idx = [names.index(r) for r in src.relations] + [len(names)]
            out.correct[..., idx] += src.correct.cpu()
            out.total[idx] += src.total.cpu()
            out.reachable[:, idx] += src.reachable.cpu()
            out.offset_correct[..., idx] += src.offset_correct.cpu()
        return out

    def result(self):
        correct = self.correct.cpu().numpy()
        total = self.total.cpu().numpy()
        reach = self.reachable.cpu().numpy()
        offs = self.offset_correct.cpu().numpy()
        names = self.relations + [ALL]
        rows = []
        for r, rel in enumerate(names):
            n = int(total[r])
            if n == 0:
                continue
            for k, direction in enumerate(DIRECTIONS):
                base = {"task": self.task, "relation": rel, "direction": direction, "metric": "accuracy",
                        "n": n, "n_reachable": int(reach[k, r])}
                for j, off in enumerate(OFFSETS):
                    if self.causal and not (off < 0 if k == 0 else off > 0):
                        continue
                    rows.append({**base, "baseline": f"offset:{off:+d}", "score": offs[k, j, r] / n})
                for layer in range(self.num_layers):
                    for head in range(self.num_heads):
                        rows.append({**base, "layer": layer, "head": head, "score": correct[layer, k, head, r] / n})
        return frame(rows)
