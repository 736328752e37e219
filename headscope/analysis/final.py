"""Attention to the sentence's final word: per head, the mean attention mass a token puts on the pieces of its
sentence's last word (in English text most often the closing punctuation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..capture.alignment import Batch
from ..schema import frame
from .base import LayerView, Scorer
from .units import UnitStore


@dataclass
class FinalWordScorer(Scorer):
    """Row-averaged mass on the final word's tokens, per layer × head, over every real query token.

    Reads row blocks of any size (each statistic is one row's); keeps per-sentence sums for intervals."""

    ACCUMULATORS = ("mass", "rows")

    num_layers: int
    num_heads: int
    keep_units: bool = True
    task: str = "final"
    mass: Any = None                 # [layer, head] float64: summed over rows
    rows: float = 0.0
    _units: Any = field(default=None, repr=False)
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    row_blocks = True

    def __post_init__(self) -> None:
        import torch

        if self.mass is None:
            self.mass = torch.zeros((self.num_layers, self.num_heads), dtype=torch.float64)
        if self._units is None:
            self._units = UnitStore()

    def start_batch(self, batch: Batch) -> None:
        import numpy as np
        import torch

        b, t = batch.token_mask.shape
        final = np.zeros((b, t), dtype=np.float32)
        for i, (s, e) in enumerate(zip(batch.sentences, batch.encoded)):
            final[i, :len(e)] = np.asarray(e.word_ids) == len(s.words) - 1
        dev = batch.token_mask.device
        self._batch = {"final": torch.from_numpy(final).to(dev), "real": batch.token_mask.float(),
                       "index": [e.index for e in batch.encoded],
                       "unit": torch.zeros((b, self.num_layers, self.num_heads), dtype=torch.float64, device=dev)}

    def update(self, view: LayerView) -> None:
        import torch

        g = self._batch
        a = view.tokens.float()                                        # [b, h, rows, keys]
        r0, q, w = view.batch.row_start, a.shape[2], a.shape[3]
        on_final = torch.einsum("bhqk,bk->bhq", a, g["final"][:, :w])
        g["unit"][:, view.layer] += torch.einsum("bhq,bq->bh", on_final, g["real"][:, r0:r0 + q]).double()

    def end_batch(self) -> None:
        g = self._batch
        if not g:
            return
        self.mass = self.mass.to(g["unit"].device) + g["unit"].sum(0)
        counts = g["real"].sum(1).double()
        self.rows += float(counts.sum())
        if self.keep_units:
            self._units.put(g["index"], mass=g["unit"].cpu().numpy(), rows=counts.cpu().numpy())
        self._batch = {}

    def merge(self, other: "FinalWordScorer") -> "FinalWordScorer":
        out = FinalWordScorer(self.num_layers, self.num_heads, keep_units=self.keep_units and other.keep_units)
        out.mass = self.mass.cpu() + other.mass.cpu()
        out.rows = self.rows + other.rows
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sentences of every head's mean mass (kept for ``result``)."""
        self._ci = self.unit_intervals("mass", "rows", n_boot=n_boot, level=level, seed=seed)

    def result(self):
        if not self.rows:
            return frame([])
        score = (self.mass.cpu() / self.rows).numpy()
        nan = float("nan")
        return frame({"task": self.task, "relation": "final_word", "metric": "mass", "layer": layer, "head": head,
                      "score": float(score[layer, head]), "n": int(self.rows),
                      "ci_low": self._ci[0][layer, head] if self._ci else nan,
                      "ci_high": self._ci[1][layer, head] if self._ci else nan}
                     for layer in range(self.num_layers) for head in range(self.num_heads))
