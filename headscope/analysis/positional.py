"""Per-head positional and surface patterns on tokens: masses, distance, entropy, confidence (METRICS §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..alignment import Batch
from ..schema import frame
from .base import LayerView

# (relation name, metric unit, description)
METRICS = (
    ("self", "mass", "attention to the query token itself"),
    ("prev", "mass", "attention to the previous token (rows that have one)"),
    ("next", "mass", "attention to the next token (rows that have one)"),
    ("first", "mass", "attention to the first token ([CLS]/BOS)"),
    ("last", "mass", "attention to the last real token ([SEP]/EOS or final word)"),
    ("sep", "mass", "attention to [SEP]/EOS special tokens"),
    ("punct", "mass", "attention to pieces of punctuation words"),
    ("local", "mass", "attention within the local window |i-j| <= w"),
    ("distance", "tokens", "mean attention distance sum_j A[i,j] |i-j|"),
    ("entropy", "nats", "row entropy"),
    ("entropy_norm", "ratio", "row entropy / log(number of visible keys), rows with >= 2 visible keys"),
    ("confidence", "max_weight", "Voita confidence: max_j A[i,j]"),
)
NAMES = [m[0] for m in METRICS]
POSITIONAL_SHARE = 0.9  # Voita et al.: argmax at one fixed offset in >= 90% of rows


@dataclass
class PositionalScorer:
    """Row-averaged attention statistics per layer × head over real (non-padding) query tokens.

    Keys are the visible real tokens: all of them in an encoder, those up to the query in a decoder.
    Also histograms each row's argmax offset (j - i) in [-max_offset, max_offset] for the
    positional-head flag: a head is positional when one offset holds >= 90% of rows.
    """

    num_layers: int
    num_heads: int
    window: int = 3
    causal: bool = False
    max_offset: int = 8
    task: str = "positional"
    sums: Any = field(default=None, repr=False)    # [layer, head, metric]
    counts: Any = field(default=None, repr=False)  # [metric] rows counted (same for every head)
    offsets: Any = field(default=None, repr=False)  # [layer, head, 2*max_offset+2]; last bucket = further away
    _batch: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        if self.sums is None:
            self.sums = torch.zeros((self.num_layers, self.num_heads, len(NAMES)), dtype=torch.float64)
            self.counts = torch.zeros(len(NAMES), dtype=torch.float64)
            self.offsets = torch.zeros((self.num_layers, self.num_heads, 2 * self.max_offset + 2), dtype=torch.float64)

    def _grids(self, t: int, device: Any) -> tuple[Any, Any]:
        import torch

        key = (t, str(device))
        if key not in self._cache:
            pos = torch.arange(t, device=device)
            dist = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs().float()   # [t, t]
            self._cache = {key: (dist, (dist <= self.window).float())}
        return self._cache[key]

    def start_batch(self, batch: Batch) -> None:
        import torch

        tm = batch.token_mask                                        # [b, t]
        dev = tm.device
        for name in ("sums", "counts", "offsets"):
            setattr(self, name, getattr(self, name).to(dev))
        t = tm.shape[1]
        pos = torch.arange(t, device=dev).unsqueeze(0)              # [1, t]
        lengths = batch.lengths.unsqueeze(1)                         # [b, 1]
        visible = (pos + 1).expand_as(tm) if self.causal else lengths.expand_as(tm)
        real = tm.float()
        masks = [real] * len(NAMES)
        masks[NAMES.index("prev")] = real * (pos >= 1)
        masks[NAMES.index("next")] = real * (pos < lengths - 1)
        masks[NAMES.index("entropy_norm")] = real * (visible >= 2)
        row_masks = torch.stack(masks, -1)                           # [b, t, metric]
        self.counts += row_masks.sum((0, 1)).double()
        self._batch = {
            "row_masks": row_masks,
            "real": real,
            "log_visible": torch.log(visible.clamp_min(2).float()),
            "last": (lengths - 1).clamp_min(0),
            "key_masks": torch.stack([batch.sep_mask.float(), batch.punct_mask.float()], -1),  # [b, t, 2]
            "pos": pos,
        }

    def update(self, view: LayerView) -> None:
        import torch
        import torch.nn.functional as F

        g = self._batch
        a = view.tokens.float()                                      # [b, h, t, t]
        b, h, t, _ = a.shape
        dist, band = self._grids(t, a.device)
        last_idx = g["last"].view(b, 1, 1, 1).expand(b, h, t, 1)
        sep_punct = torch.matmul(a, g["key_masks"].unsqueeze(1))     # [b, h, t, 2]
        entropy = -torch.special.xlogy(a, a).sum(-1)
        conf, argmax = a.max(-1)
        values = torch.stack([
            a.diagonal(0, -2, -1),
            F.pad(a.diagonal(-1, -2, -1), (1, 0)),
            F.pad(a.diagonal(1, -2, -1), (0, 1)),
            a[..., 0],
            a.gather(-1, last_idx).squeeze(-1),
            sep_punct[..., 0],
            sep_punct[..., 1],
            (a * band).sum(-1),
            (a * dist).sum(-1),
            entropy,
            entropy / g["log_visible"].unsqueeze(1),
            conf,
        ], -1)                                                       # [b, h, t, metric]
        self.sums[view.layer] += torch.einsum("bhtm,btm->hm", values, g["row_masks"]).double()
        m = self.max_offset
        off = argmax - g["pos"].unsqueeze(1)                         # [b, h, t]
        bucket = torch.where(off.abs() <= m, off + m, torch.full_like(off, 2 * m + 1))
        hist = torch.zeros((h, 2 * m + 2), device=a.device)
        weights = g["real"].unsqueeze(1).expand(b, h, t)
        hist.scatter_add_(1, bucket.permute(1, 0, 2).reshape(h, -1), weights.permute(1, 0, 2).reshape(h, -1))
        self.offsets[view.layer] += hist.double()

    def merge(self, other: "PositionalScorer") -> "PositionalScorer":
        out = PositionalScorer(self.num_layers, self.num_heads, self.window, self.causal, self.max_offset)
        out.sums = self.sums.cpu() + other.sums.cpu()
        out.counts = self.counts.cpu() + other.counts.cpu()
        out.offsets = self.offsets.cpu() + other.offsets.cpu()
        return out

    def result(self):
        sums = self.sums.cpu().numpy()
        counts = self.counts.cpu().numpy()
        offsets = self.offsets.cpu().numpy()
        m = self.max_offset
        rows = []
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                base = {"task": self.task, "layer": layer, "head": head}
                for k, (name, unit, _) in enumerate(METRICS):
                    if counts[k] > 0:
                        rows.append({**base, "relation": name, "metric": unit, "score": sums[layer, head, k] / counts[k],
                                     "n": int(counts[k])})
                hist = offsets[layer, head]
                total = hist.sum()
                if total > 0:
                    best = int(hist[:-1].argmax())
                    rows.append({**base, "relation": "argmax_offset", "metric": "share",
                                 "score": hist[best] / total, "n": int(total)})
                    rows.append({**base, "relation": "argmax_offset", "metric": "offset",
                                 "score": float(best - m), "n": int(total)})
        return frame(rows)
