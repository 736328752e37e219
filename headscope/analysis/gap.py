"""GAP per head: which name the pronoun attends to more, accuracy by pronoun gender and bias ratio (METRICS §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..capture.alignment import Batch
from ..schema import frame
from ..types import GapExample
from .base import LayerView, Scorer, check_same_inputs
from .units import UnitStore

GROUPS = ("all", "masculine", "feminine")
DIRECTION = "pronoun_to_name"


# Why a row is not counted in GAP accuracy (it has no single referent), in run.json's and the report's words.
UNUSABLE = ("neither name is the referent", "both names are marked as the referent")


def scoreable(ex: GapExample) -> bool:
    """GAP accuracy counts rows where exactly one name is the referent."""
    return ex.a_coref != ex.b_coref


def unusable_reason(ex: GapExample) -> int | None:
    """The index in ``UNUSABLE`` of why a row is not counted, or None for a row that is."""
    return None if scoreable(ex) else (1 if ex.a_coref else 0)


def ratio_of_ratios_intervals(num_a: Any, den_a: Any, num_b: Any, den_b: Any, *, weights: Any,
                              level: float = 0.95) -> tuple[Any, Any, Any]:
    """Estimate and percentile bootstrap interval of ``(sum(num_a)/sum(den_a)) / (sum(num_b)/sum(den_b))``
    per column (e.g. feminine accuracy / masculine accuracy), resampling units with ``weights``.

    ``num_*``: ``[units, K]``; ``den_*``: ``[units]``. Replicates with no unit in a denominator are
    left out; one with a zero accuracy B gives an infinite ratio, which stays in (it is a real
    outcome, and dropping it would pull the interval down).
    """
    import numpy as np

    from .stats import MIN_UNITS

    na, nb = np.asarray(num_a, dtype=np.float32), np.asarray(num_b, dtype=np.float32)
    da, db = np.asarray(den_a, dtype=np.float32), np.asarray(den_b, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = (na.sum(0, dtype=np.float64) / da.sum(dtype=np.float64)) / (
            nb.sum(0, dtype=np.float64) / db.sum(dtype=np.float64))
        acc_a = (weights @ na) / (weights @ da)[:, None]
        acc_b = (weights @ nb) / (weights @ db)[:, None]
        boot = acc_a / acc_b                                               # [B, K]; NaN where undefined
    tail = (1.0 - level) / 2.0
    lo, hi = np.full(na.shape[1], np.nan), np.full(na.shape[1], np.nan)
    has = (~np.isnan(boot)).any(0) & np.isfinite(estimate)
    if has.any():
        with np.errstate(invalid="ignore"):
            q = np.nanquantile(boot[:, has].astype(np.float64), [tail, 1.0 - tail], axis=0)
        # Ratios are >= 0, so a NaN quantile here is inf - inf from interpolating between infinite replicates.
        lo[has], hi[has] = np.where(np.isnan(q), np.inf, q)
    if len(na) < MIN_UNITS:
        lo[:], hi[:] = np.nan, np.nan
    return estimate, lo, hi


@dataclass
class GapScorer(Scorer):
    """A head picks the name (A or B) whose words receive more attention from the pronoun (the sum
    over the name's words; a tie picks neither). Accuracy over rows with exactly one referent,
    overall and by pronoun gender, and the bias ratio feminine / masculine. Baseline: the name
    nearer the pronoun (in words)."""

    ACCUMULATORS = ("correct", "total", "nearest", "unusable")

    num_layers: int
    num_heads: int
    examples: Sequence[GapExample]
    task: str = "gap"
    correct: Any = field(default=None, repr=False)   # [layer, head, group]
    total: Any = field(default=None, repr=False)     # [group]
    nearest: Any = field(default=None, repr=False)   # [group]
    unusable: Any = field(default=None, repr=False)  # [reason]: rows read but not counted (UNUSABLE)
    keep_units: bool = True      # per-row hits, for bootstrap intervals over GAP rows
    _units: Any = field(default=None, repr=False)   # UnitStore: per-row hit [L, H], group one-hot, nearest
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if self._units is None:
            self._units = UnitStore()
        if self.correct is None:
            self.correct = np.zeros((self.num_layers, self.num_heads, len(GROUPS)))
            self.total = np.zeros(len(GROUPS))
            self.nearest = np.zeros(len(GROUPS))
        if self.unusable is None:
            self.unusable = np.zeros(len(UNUSABLE))

    def start_batch(self, batch: Batch) -> None:
        import numpy as np
        import torch

        rows, pron, a_mask, b_mask, answer, groups, index, near = [], [], [], [], [], [], [], []
        w = batch.max_words
        total, nearest, unusable = np.zeros(len(GROUPS)), np.zeros(len(GROUPS)), np.zeros(len(UNUSABLE))
        for i, enc in enumerate(batch.encoded):
            ex = self.examples[enc.index]
            if not scoreable(ex):
                unusable[unusable_reason(ex)] += 1
                continue
            g = GROUPS.index(ex.gender)
            p = ex.pronoun[0]
            dist_a = min(abs(p - ex.a[0]), abs(p - ex.a[1]))
            dist_b = min(abs(p - ex.b[0]), abs(p - ex.b[1]))
            near_a = dist_a < dist_b
            near_right = (near_a == ex.a_coref) and dist_a != dist_b
            for k in (0, g):
                total[k] += 1
                nearest[k] += near_right
            rows.append(i)
            index.append(enc.index)
            near.append(near_right)
            pron.append(p)
            for spans, (lo, hi) in ((a_mask, ex.a), (b_mask, ex.b)):
                m = np.zeros(w, dtype=np.float32)
                m[lo:hi + 1] = 1.0
                spans.append(m)
            answer.append(ex.a_coref)
            groups.append(g)
        self._batch = {"pending": (total, nearest, unusable)}
        if not rows:
            return
        dev = batch.word_mask.device
        onehot = np.zeros((len(rows), len(GROUPS)), dtype=np.float32)
        onehot[:, 0] = 1.0
        onehot[np.arange(len(rows)), groups] = 1.0
        if self.keep_units:
            self._batch["unit"] = (index, onehot.astype(np.uint8), np.array(near, dtype=np.uint8))
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
        total, nearest, unusable = g.pop("pending")
        self.total += total
        self.nearest += nearest
        self.unusable += unusable
        if not g.get("mass"):
            return
        mass = torch.stack(g.pop("mass"))                               # [layer, m, head, 2]
        a_ref = g["a_is_referent"].view(1, -1, 1)
        hit = torch.where(a_ref, mass[..., 0] > mass[..., 1], mass[..., 1] > mass[..., 0])
        self.correct[g["layers"]] += torch.einsum("lmh,mg->lhg", hit.float(), g["onehot"]).double().cpu().numpy()
        unit = g.pop("unit", None)
        if unit is not None and sorted(g["layers"]) == list(range(self.num_layers)):
            import numpy as np

            index, onehot, near = unit
            order = torch.as_tensor(np.argsort(g["layers"]), device=hit.device)
            per = hit[order].transpose(0, 1).to(torch.uint8).cpu().numpy()      # [m, layer, head]
            self._units.put(index, hit=per, group=onehot, nearest=near)
            self._ci = None

    def merge(self, other: "GapScorer") -> "GapScorer":
        check_same_inputs(self.examples, other.examples, "GAP rows")
        out = GapScorer(self.num_layers, self.num_heads, self.examples, keep_units=self.keep_units and other.keep_units)
        out.correct = self.correct + other.correct
        out.total = self.total + other.total
        out.nearest = self.nearest + other.nearest
        out.unusable = self.unusable + other.unusable
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over GAP rows for every accuracy and bias ratio of heads and the baseline
        (kept for ``result``), and each head's paired p-value (overall accuracy) against the baseline."""
        import numpy as np

        from .stats import bootstrap_weights, paired_pvalue, ratio_intervals

        if not self.keep_units or not len(self._units):
            return
        hit = self._units.get("hit")                                  # [U, layer, head]
        group = self._units.get("group")                              # [U, group]: all, masculine, feminine
        near = self._units.get("nearest")                             # [U]
        U, L, H = hit.shape
        G = group.shape[1]
        w = bootstrap_weights(U, n_boot, seed)
        # Heads and the baseline side by side: column L*H is the nearest-name baseline.
        both = np.concatenate([hit.reshape(U, -1), near[:, None]], 1)  # [U, L*H + 1]
        num = both[:, :, None] * group[:, None, :]                    # [U, L*H + 1, group]
        K = both.shape[1]
        _, lo, hi = ratio_intervals(num.reshape(U, -1), group, den_index=np.tile(np.arange(G), K), weights=w,
                                    level=level)
        _, blo, bhi = ratio_of_ratios_intervals(num[:, :, 2], group[:, 2], num[:, :, 1], group[:, 1], weights=w,
                                                level=level)
        heads = hit.reshape(U, -1)
        p = paired_pvalue(heads, np.broadcast_to(near[:, None], heads.shape), group[:, 0], weights=w)
        lo, hi = lo.reshape(K, G), hi.reshape(K, G)
        self._ci = {"heads": (lo[:-1].reshape(L, H, G), hi[:-1].reshape(L, H, G)), "p": p.reshape(L, H),
                    "nearest": (lo[-1], hi[-1]), "bias": (blo[:-1].reshape(L, H), bhi[:-1].reshape(L, H)),
                    "nearest_bias": (blo[-1], bhi[-1])}

    def summary(self) -> dict:
        """run.json's account of the rows: how many count in the accuracy, and how many do not, by reason."""
        return {"rows_with_one_referent": int(self.total[0]), "unusable_rows": int(self.unusable.sum()),
                "unusable_reasons": {r: int(n) for r, n in zip(UNUSABLE, self.unusable) if n}}

    def result(self):
        import numpy as np

        rows = []
        if self.total[0] == 0:
            return frame(rows)
        base = {"task": self.task, "direction": DIRECTION}
        ci = self._ci
        nan = float("nan")

        def emit(extra: dict, correct: np.ndarray, acc_ci: Any, bias_ci: Any, p: float) -> None:
            acc = np.divide(correct, self.total, out=np.full(len(GROUPS), np.nan), where=self.total > 0)
            for k, group in enumerate(GROUPS):
                if self.total[k] > 0:
                    rows.append({**base, **extra, "relation": group, "metric": "accuracy", "score": acc[k],
                                 "n": int(self.total[k]), "ci_low": acc_ci[0][k] if ci else nan,
                                 "ci_high": acc_ci[1][k] if ci else nan, "p_value": p if k == 0 else nan})
            if self.total[1] > 0 and self.total[2] > 0 and acc[1] > 0:
                rows.append({**base, **extra, "relation": "bias", "metric": "feminine/masculine",
                             "score": acc[2] / acc[1], "n": int(self.total[0]),
                             "ci_low": bias_ci[0] if ci else nan, "ci_high": bias_ci[1] if ci else nan})

        emit({"baseline": "nearest"}, self.nearest, ci and ci["nearest"], ci and ci["nearest_bias"], nan)
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                at = (layer, head)
                emit({"layer": layer, "head": head}, self.correct[layer, head],
                     ci and (ci["heads"][0][at], ci["heads"][1][at]), ci and (ci["bias"][0][at], ci["bias"][1][at]),
                     ci["p"][at] if ci else nan)
        return frame(rows)
