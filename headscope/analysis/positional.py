"""Per-head positional and surface patterns on tokens: masses, distance, entropy, confidence (METRICS §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..alignment import Batch
from ..schema import frame
from .base import LayerView, UnitStore

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
    keep_units: bool = True      # per-sentence sums, for bootstrap intervals over sentences
    _units: Any = field(default=None, repr=False)   # UnitStore: per-sentence sums [L, H, metric] and counts,
    #                                                 argmax-offset counts [L, H, 2*max_offset+1] and rows
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        if self._units is None:
            self._units = UnitStore()
        if self.sums is None:
            self.sums = torch.zeros((self.num_layers, self.num_heads, len(NAMES)), dtype=torch.float64)
            self.counts = torch.zeros(len(NAMES), dtype=torch.float64)
            self.offsets = torch.zeros((self.num_layers, self.num_heads, 2 * self.max_offset + 2), dtype=torch.float64)

    def start_batch(self, batch: Batch) -> None:
        import torch

        tm = batch.token_mask                                        # [b, t]
        dev = tm.device
        for name in ("sums", "counts", "offsets"):
            setattr(self, name, getattr(self, name).to(dev))
        b, t = tm.shape
        pos = torch.arange(t, device=dev)
        lengths = batch.lengths.unsqueeze(1)                         # [b, 1]
        visible = (pos + 1).unsqueeze(0).expand_as(tm) if self.causal else lengths.expand_as(tm)
        real = tm.float()
        masks = [real] * len(NAMES)
        masks[NAMES.index("prev")] = real * (pos >= 1)
        masks[NAMES.index("next")] = real * (pos.unsqueeze(0) < lengths - 1)
        masks[NAMES.index("entropy_norm")] = real * (visible >= 2)
        unit_counts = torch.stack(masks, -1).sum(1)                 # [b, metric]
        counts = unit_counts.sum(0).double()                         # committed in end_batch
        keys = torch.stack([batch.sep_mask.float(), batch.punct_mask.float()], -1)  # [b, t, 2]: key-side masks
        log_visible = torch.log(visible.clamp_min(2).float())
        ent_w = torch.stack([real, masks[NAMES.index("entropy_norm")] / log_visible], -1)  # [b, t, 2]
        self._batch = {
            "keys": keys.unsqueeze(1),                               # [b, 1, t, 2]
            "last": (lengths - 1).clamp_min(0),                      # [b, 1]: the last real token
            "entropy": ent_w,
            "real": real,
            "informative": masks[NAMES.index("entropy_norm")],
            "pos": pos,
            "counts": counts,
            "unit": ([e.index for e in batch.encoded], unit_counts) if self.keep_units else None,
        }

    # Query rows per chunk for the statistics that need a whole row at a time (distance, entropy):
    # temporaries stay [batch, head, ROWS, key] however long the input.
    ROWS = 256
    row_blocks = True  # reads query-row blocks (``batch.row_start``): every statistic here is per row

    def update(self, view: LayerView) -> None:
        import torch

        g = self._batch
        a = view.tokens                                              # [b, h, rows, t]: rows r0.. of the map
        b, h, q, t = a.shape
        r0 = view.batch.row_start
        pos = g["pos"]
        if r0 == 0:
            dev = a.device
            g["rows"] = {"stats": torch.zeros((b, h, t, 9), device=dev), "plogp": torch.zeros((b, h, t), device=dev),
                         "conf": torch.zeros((b, h, t), device=dev),
                         "argmax": torch.zeros((b, h, t), dtype=torch.long, device=dev),
                         "visible": None if view.batch.visible is None else torch.zeros((b, t), device=dev)}
        buf = g["rows"]

        # Row statistics, [b, h, rows] each; no [t, t] weight plane is ever built.
        def diagonal(k: int) -> Any:  # A[i, i + k] at map row i, 0 where i + k is outside the map
            o = r0 + k
            start = max(0, -o)
            if start >= q or o >= t:
                return a.new_zeros((b, h, q), dtype=torch.float32)
            d = a.diagonal(offset=o, dim1=-2, dim2=-1).float()
            return torch.nn.functional.pad(d, (start, q - start - d.shape[-1]))
        last = torch.gather(a, -1, g["last"].view(b, 1, 1, 1).expand(b, h, q, 1))[..., 0].float()
        masked = torch.matmul(a.float(), g["keys"])                  # [b, h, rows, 2]: sep, punct
        local = sum(diagonal(k) for k in range(-self.window, self.window + 1))
        distance, plogp, conf, argmax = [], [], [], []
        for c0 in range(0, q, self.ROWS):
            block = a[:, :, c0:c0 + self.ROWS].float()              # [b, h, chunk, t]
            gap = (pos[r0 + c0:r0 + c0 + block.shape[2], None] - pos[None, :]).abs().float()
            distance.append((block * gap).sum(-1))
            plogp.append(torch.log(block.clamp_min(1e-30)).mul_(block).sum(-1))
            c, m = block.max(-1)
            conf.append(c)
            argmax.append(m)
        rows = slice(r0, r0 + q)
        buf["stats"][:, :, rows] = torch.stack([diagonal(0), diagonal(-1), diagonal(1), a[..., 0].float(), last,
                                                masked[..., 0], masked[..., 1], local, torch.cat(distance, -1)], -1)
        buf["plogp"][:, :, rows] = torch.cat(plogp, -1)
        buf["conf"][:, :, rows] = torch.cat(conf, -1)
        buf["argmax"][:, :, rows] = torch.cat(argmax, -1)
        if buf["visible"] is not None:
            buf["visible"][:, rows] = view.batch.visible.to(buf["visible"].dtype)
        if r0 + q < t:
            return  # more blocks of this layer to come
        # Everything is kept per layer and added to the totals in end_batch: row-level values are
        # reduced for all layers at once, and a batch cut short leaves the totals consistent.
        g.setdefault("layers", []).append(view.layer)
        g.setdefault("entropy_w", []).append(self._entropy_weights(buf["visible"]))
        g.setdefault("linear_sums", []).append(torch.einsum("bhtk,bt->bhk", buf["stats"], g["real"]))  # [b, h, linear]
        g.setdefault("plogp", []).append(buf["plogp"])
        g.setdefault("conf", []).append(buf["conf"])
        g.setdefault("argmax", []).append(buf["argmax"])
        del g["rows"]

    def _entropy_weights(self, visible: Any) -> Any:
        """[b, t, 2] row weights for entropy and normalised entropy. ``visible``: this layer's visible keys
        per row from the model's mask (a sliding window sees fewer than the causal rule says), else the
        batch's rule (all real keys in an encoder, those up to the query in a decoder)."""
        import torch

        g = self._batch
        if visible is None:
            return g["entropy"]
        vis = visible.to(g["real"].device).float()
        # rows counted stay those of the batch's rule; only the log(number of visible keys) follows the mask
        return torch.stack([g["real"], g["informative"] / torch.log(vis.clamp_min(2))], -1)

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if not g.get("layers"):
            return
        layers = g.pop("layers")
        self.counts += g["counts"]
        linear = torch.stack(g.pop("linear_sums"), 1)               # [b, layer, h, linear]
        plogp = torch.stack(g.pop("plogp"), 1)                       # [b, layer, h, t]
        conf = torch.stack(g.pop("conf"), 1)
        argmax = torch.stack(g.pop("argmax"), 1)
        b, n_layers, h, t = argmax.shape
        entropy = -torch.einsum("blht,bltk->blhk", plogp, torch.stack(g.pop("entropy_w"), 1))  # [b, layer, h, 2]
        confidence = torch.einsum("blht,bt->blh", conf, g["real"])
        per = torch.cat([linear, entropy, confidence.unsqueeze(-1)], -1)   # [b, layer, h, metric]
        self.sums[layers] += per.sum(0).double()
        m = self.max_offset
        off = argmax - g["pos"]                                      # [b, layer, h, t]
        bucket = torch.where(off.abs() <= m, off + m, torch.full_like(off, 2 * m + 1))
        # One histogram per sentence, layer and head (the per-sentence counts serve the intervals).
        bucket = bucket + (2 * m + 2) * torch.arange(b * n_layers * h, device=off.device).view(b, n_layers, h, 1)
        # Rows with a single visible key (a decoder's first token) say nothing about position.
        weights = g["informative"].view(b, 1, 1, t).expand_as(bucket)
        hist = torch.zeros(b * n_layers * h * (2 * m + 2), device=off.device)
        hist.scatter_add_(0, bucket.reshape(-1), weights.reshape(-1))
        hist = hist.view(b, n_layers, h, 2 * m + 2)
        self.offsets[layers] += hist.sum(0).double()
        unit = g.get("unit")
        if unit is not None and layers == list(range(self.num_layers)):
            index, unit_counts = unit
            per_np, counts_np = per.float().cpu().numpy(), unit_counts.float().cpu().numpy()
            # Offset counts without the "further away" bucket, which is never a head's modal offset. A
            # sentence has at most t rows at one offset: the narrowest dtype that holds t (the store
            # widens the field if a later batch needs more).
            small = torch.uint8 if t < 2 ** 8 else torch.int16 if t < 2 ** 15 else torch.int32
            self._units.put(index, sums=per_np, counts=counts_np,
                            offsets=hist[..., :-1].round().to(small).cpu().numpy(),
                            offset_rows=g["informative"].sum(1).round().to(torch.int32).cpu().numpy())
            self._ci = None

    def merge(self, other: "PositionalScorer") -> "PositionalScorer":
        out = PositionalScorer(self.num_layers, self.num_heads, self.window, self.causal, self.max_offset)
        out.sums = self.sums.cpu() + other.sums.cpu()
        out.counts = self.counts.cpu() + other.counts.cpu()
        out.offsets = self.offsets.cpu() + other.offsets.cpu()
        out.keep_units = False
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sentences for every row-averaged metric (kept for ``result``)."""
        import numpy as np

        from .stats import bootstrap_weights, ratio_intervals

        if not len(self._units):
            return
        sums = self._units.get("sums")                                 # [U, layer, head, metric]
        counts = self._units.get("counts")                             # [U, metric]
        U = len(sums)
        metric_of = np.broadcast_to(np.arange(sums.shape[-1]), sums.shape[1:]).reshape(-1)
        w = bootstrap_weights(U, n_boot, seed)
        _, lo, hi = ratio_intervals(sums.reshape(U, -1), counts, den_index=metric_of, weights=w, level=level)
        # argmax_offset share: rows at the head's modal offset (known only now, from the totals).
        best = self.offsets.cpu().numpy()[..., :-1].argmax(-1)               # [layer, head]
        offs = self._units.get("offsets")                               # [U, layer, head, offset]
        at = np.take_along_axis(offs, np.broadcast_to(best[None, ..., None], (U,) + best.shape + (1,)), -1)[..., 0]
        _, slo, shi = ratio_intervals(at.reshape(U, -1), self._units.get("offset_rows"), weights=w, level=level)
        self._ci = (lo.reshape(sums.shape[1:]), hi.reshape(sums.shape[1:]),
                    slo.reshape(best.shape), shi.reshape(best.shape))

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
                        ci = ({"ci_low": self._ci[0][layer, head, k], "ci_high": self._ci[1][layer, head, k]}
                              if self._ci is not None else {})
                        rows.append({**base, "relation": name, "metric": unit, "score": sums[layer, head, k] / counts[k],
                                     "n": int(counts[k]), **ci})
                hist = offsets[layer, head]
                total = hist.sum()
                if total > 0:
                    best = int(hist[:-1].argmax())
                    ci = ({"ci_low": self._ci[2][layer, head], "ci_high": self._ci[3][layer, head]}
                          if self._ci is not None else {})
                    rows.append({**base, "relation": "argmax_offset", "metric": "share",
                                 "score": hist[best] / total, "n": int(total), **ci})
                    rows.append({**base, "relation": "argmax_offset", "metric": "offset",
                                 "score": float(best - m), "n": int(total)})
        return frame(rows)
