"""GAP per head: which name the pronoun attends to more, accuracy by pronoun gender and bias ratio (METRICS §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..alignment import Batch
from ..schema import frame
from ..types import GapExample
from .base import LayerView

GROUPS = ("all", "masculine", "feminine")
DIRECTION = "pronoun_to_name"


def scoreable(ex: GapExample) -> bool:
    """GAP accuracy counts rows where exactly one name is the referent."""
    return ex.a_coref != ex.b_coref


@dataclass
class GapScorer:
    """A head picks the name (A or B) whose words receive more attention from the pronoun (the sum
    over the name's words; a tie picks neither). Accuracy over rows with exactly one referent,
    overall and by pronoun gender, and the bias ratio feminine / masculine. Baseline: the name
    nearer the pronoun (in words)."""

    num_layers: int
    num_heads: int
    examples: Sequence[GapExample]
    task: str = "gap"
    correct: Any = field(default=None, repr=False)   # [layer, head, group]
    total: Any = field(default=None, repr=False)     # [group]
    nearest: Any = field(default=None, repr=False)   # [group]
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if self.correct is None:
            self.correct = np.zeros((self.num_layers, self.num_heads, len(GROUPS)))
            self.total = np.zeros(len(GROUPS))
            self.nearest = np.zeros(len(GROUPS))

    def start_batch(self, batch: Batch) -> None:
        import numpy as np
        import torch

        rows, pron, a_mask, b_mask, answer, groups = [], [], [], [], [], []
        w = batch.max_words
        total, nearest = np.zeros(len(GROUPS)), np.zeros(len(GROUPS))
        for i, enc in enumerate(batch.encoded):
            ex = self.examples[enc.index]
            if not scoreable(ex):
                continue
            g = GROUPS.index(ex.gender)
            p = ex.pronoun[0]
            dist_a = min(abs(p - ex.a[0]), abs(p - ex.a[1]))
            dist_b = min(abs(p - ex.b[0]), abs(p - ex.b[1]))
            near_a = dist_a < dist_b
            for k in (0, g):
                total[k] += 1
                nearest[k] += (near_a == ex.a_coref) and dist_a != dist_b
            rows.append(i)
            pron.append(p)
            for spans, (lo, hi) in ((a_mask, ex.a), (b_mask, ex.b)):
                m = np.zeros(w, dtype=np.float32)
                m[lo:hi + 1] = 1.0
                spans.append(m)
            answer.append(ex.a_coref)
            groups.append(g)
        self._batch = {"pending": (total, nearest)}
        if not rows:
            return
        dev = batch.word_mask.device
        onehot = np.zeros((len(rows), len(GROUPS)), dtype=np.float32)
        onehot[:, 0] = 1.0
        onehot[np.arange(len(rows)), groups] = 1.0
        self._batch.update({
            "rows": torch.tensor(rows, device=dev), "pron": torch.tensor(pron, device=dev),
            "names": torch.from_numpy(np.stack([np.stack(a_mask), np.stack(b_mask)], -1)).to(dev),  # [m, w, 2]
            "a_is_referent": torch.tensor(answer, device=dev), "onehot": torch.from_numpy(onehot).to(dev),
            "layers": [], "mass": [],
        })

    def update(self, view: LayerView) -> None:
        import torch

        g = self._batch
        if "rows" not in g:
            return
        w = view.batch.max_words
        row = view.words[g["rows"], :, g["pron"], :w]                  # [m, head, w]
        g["layers"].append(view.layer)
        g["mass"].append(torch.bmm(row, g["names"]))                   # [m, head, 2]: mass on A, on B

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if "pending" not in g:
            return
        total, nearest = g.pop("pending")
        self.total += total
        self.nearest += nearest
        if not g.get("mass"):
            return
        mass = torch.stack(g.pop("mass"))                               # [layer, m, head, 2]
        a_ref = g["a_is_referent"].view(1, -1, 1)
        hit = torch.where(a_ref, mass[..., 0] > mass[..., 1], mass[..., 1] > mass[..., 0])
        self.correct[g["layers"]] += torch.einsum("lmh,mg->lhg", hit.float(), g["onehot"]).double().cpu().numpy()

    def merge(self, other: "GapScorer") -> "GapScorer":
        out = GapScorer(self.num_layers, self.num_heads, list(self.examples) + list(other.examples))
        out.correct = self.correct + other.correct
        out.total = self.total + other.total
        out.nearest = self.nearest + other.nearest
        return out

    def result(self):
        import numpy as np

        rows = []
        if self.total[0] == 0:
            return frame(rows)
        base = {"task": self.task, "direction": DIRECTION}

        def emit(extra: dict, correct: np.ndarray) -> None:
            acc = np.divide(correct, self.total, out=np.full(len(GROUPS), np.nan), where=self.total > 0)
            for k, group in enumerate(GROUPS):
                if self.total[k] > 0:
                    rows.append({**base, **extra, "relation": group, "metric": "accuracy", "score": acc[k],
                                 "n": int(self.total[k])})
            if self.total[1] > 0 and self.total[2] > 0 and acc[1] > 0:
                rows.append({**base, **extra, "relation": "bias", "metric": "feminine/masculine",
                             "score": acc[2] / acc[1], "n": int(self.total[0])})

        emit({"baseline": "nearest"}, self.nearest)
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                emit({"layer": layer, "head": head}, self.correct[layer, head])
        return frame(rows)
