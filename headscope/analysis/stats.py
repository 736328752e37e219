"""Statistics for head scores: bootstrap intervals of ratio-of-sums scores over units, paired tests, BH."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np


# Fewer units than this give no interval and no p-value: a bootstrap over a handful of sentences or
# documents has almost no spread, and its "95% interval" would be a point.
MIN_UNITS = 10


def bootstrap_weights(n_units: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_units]`` float32 resampling counts: row b says how often each unit is drawn in replicate b.

    Read-only. Up to ``CACHED_WEIGHTS`` bytes, drawn once per process for each (units, replicates, seed): the
    tasks of one dataset resample the same units (larger tables are drawn each time, not kept)."""
    if n_units < 1 or n_boot < 1:
        raise ValueError(f"need at least one unit and one replicate, got {n_units} units, {n_boot} replicates")
    if n_units * n_boot * 4 > CACHED_WEIGHTS:
        return _weights.__wrapped__(int(n_units), int(n_boot), int(seed))
    return _weights(int(n_units), int(n_boot), int(seed))


CACHED_WEIGHTS = 64 * 2 ** 20


@functools.lru_cache(maxsize=4)
def _weights(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float32)
    w.flags.writeable = False
    return w


def ratio_intervals(num: Any, den: Any, *, den_index: Any = None, weights: np.ndarray | None = None,
                    n_boot: int = 1000, level: float = 0.95, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate and percentile bootstrap interval of ``sum(num) / sum(den)`` for every column.

    ``num``: ``[units, K]`` per-unit numerators (e.g. correct predictions per sentence);
    ``den``: ``[units, K]``, ``[units]``, or ``[units, R]`` with ``den_index`` (``[K]``, the
    denominator column of each numerator column: e.g. the relation of each head x relation score),
    which keeps one small denominator table instead of a full-width copy. Units (sentences,
    documents) are resampled with replacement, so the interval reflects the variation between
    units that a per-word interval would hide. Columns with no denominator get NaN, and so does
    every interval when there are fewer than ``MIN_UNITS`` units.
    """
    num = np.asarray(num)
    if num.ndim == 1:
        num = num[:, None]
    den = np.asarray(den)
    if den.ndim == 1:
        den = den[:, None]
    if den_index is None:
        den_index = np.arange(num.shape[1]) if den.shape[1] == num.shape[1] else np.zeros(num.shape[1], dtype=int)
    den_index = np.asarray(den_index)
    if len(num) != len(den):
        raise ValueError(f"num has {len(num)} units but den has {len(den)}")
    w = bootstrap_weights(len(num), n_boot, seed) if weights is None else weights
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = num.sum(0, dtype=np.float64) / den.sum(0, dtype=np.float64)[den_index]
        boot = w @ np.asarray(num, dtype=np.float32)                          # [B, K]
        boot /= (w @ np.asarray(den, dtype=np.float32))[:, den_index]
    tail = (1.0 - level) / 2.0
    lo, hi = np.full(num.shape[1], np.nan), np.full(num.shape[1], np.nan)
    has = np.isfinite(boot).any(0)
    if has.any():
        lo[has], hi[has] = nan_quantiles(boot[:, has], (tail, 1.0 - tail))
    bad = ~np.isfinite(estimate) | (len(num) < MIN_UNITS)
    lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    return estimate, lo, hi


def nan_quantiles(values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """``np.nanquantile(values, qs, axis=0)`` (its default, linear method), fast: ``nanquantile`` handles each
    column with a NaN on its own, slowly. Columns without NaN take one vectorised ``quantile``; the others
    are sorted together (NaN last) and each reads its quantiles among its own values."""
    out = np.empty((len(qs), values.shape[1]))
    gaps = np.isnan(values).any(0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # inf - inf between two infs
        if (~gaps).any():
            out[:, ~gaps] = np.quantile(values[:, ~gaps], qs, axis=0)
        if gaps.any():
            x = np.sort(values[:, gaps], axis=0)                       # NaN sort last
            n = (~np.isnan(x)).sum(0)
            cols = np.arange(x.shape[1])
            for k, q in enumerate(qs):
                h = (np.maximum(n, 1) - 1) * q                        # the linear method's virtual index
                lo = np.floor(h).astype(np.int64)
                a, b = x[lo, cols], x[np.minimum(lo + 1, np.maximum(n, 1) - 1), cols]
                t = h - lo
                # numpy's interpolation: from below under t = 0.5, from above from there
                got = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
                out[k, gaps] = np.where(n > 0, got, np.nan)           # all-NaN columns stay NaN
    return out


def paired_pvalue(num_a: Any, num_b: Any, den: Any, *, den_index: Any = None, weights: np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 0, method: str = "normal") -> np.ndarray:
    """One-sided bootstrap p-value that score A (``sum(num_a)/sum(den)``) is not above score B, per column.

    A and B are measured on the same units, so the units are resampled together (paired), and the
    statistic is the difference ``(sum(num_a) - sum(num_b)) / sum(den)``; ``num_b=None`` means
    ``num_a`` already holds the per-unit differences. ``den`` may be narrow with
    ``den_index`` as in :func:`ratio_intervals`.

    ``method="normal"`` (default): ``P(Z > d / se)`` with ``se`` the bootstrap standard deviation of
    the difference. It resolves p-values far below ``1 / replicates``, which a Benjamini–Hochberg
    correction over thousands of heads needs. ``method="percentile"``: the share of replicates with
    a difference <= 0, ``(1 + #) / (1 + replicates)``. A difference with no spread gets 0 when A is
    above B on every unit and 1 otherwise; columns without a denominator get NaN, and so does every
    column when there are fewer than ``MIN_UNITS`` units.
    """
    if method not in ("normal", "percentile"):
        raise ValueError(f"method must be 'normal' or 'percentile', got {method!r}")
    # One float32 difference table, never float64 copies of A and B: with hundreds of heads x
    # relations x thousands of sentences those would be the largest arrays of a run.
    if num_b is None:
        delta = np.asarray(num_a, dtype=np.float32)
    else:
        delta = np.subtract(np.asarray(num_a), np.asarray(num_b), dtype=np.float32)
    d = np.asarray(den, dtype=np.float64)
    if delta.ndim == 1:
        delta = delta[:, None]
    if d.ndim == 1:
        d = d[:, None]
    a = delta
    if den_index is None:
        den_index = np.arange(a.shape[1]) if d.shape[1] == a.shape[1] else np.zeros(a.shape[1], dtype=int)
    den_index = np.asarray(den_index)
    if len(a) < MIN_UNITS:
        return np.full(a.shape[1], np.nan)
    w = bootstrap_weights(len(a), n_boot, seed) if weights is None else weights
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (w @ delta) / (w @ d.astype(np.float32))[:, den_index]                  # [B, K]
        estimate = delta.sum(0, dtype=np.float64) / d.sum(0)[den_index]
        if method == "percentile":
            p = (1.0 + np.sum(~(diff > 0), axis=0)) / (1.0 + len(w))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN columns (no denominator)
                se = np.nanstd(diff, axis=0)
            p = np.where(se > 0, normal_sf(estimate / np.where(se > 0, se, 1.0)), np.where(estimate > 0, 0.0, 1.0))
    return np.where(np.isfinite(estimate), p, np.nan)


def normal_sf(z: Any) -> np.ndarray:
    """The standard normal upper tail ``P(Z > z)``, elementwise, as ``erfc(z / sqrt 2) / 2``: exact in the far
    tail (no ``1 - cdf`` cancellation), and without importing scipy.stats (a second of a short run)."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * _ERFC(z / math.sqrt(2.0)).astype(np.float64)


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def bh_adjust(pvalues: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values, as scipy's ``false_discovery_control(p, method="bh")``: sorted
    ascending, ``p_(i) * m / i``, made monotone from the largest down and capped at 1. NaN stays NaN and does
    not count in ``m``."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        finite = p[ok]
        order = np.argsort(finite, kind="stable")
        m = len(finite)
        scaled = finite[order] * m / np.arange(1, m + 1)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        out[ok] = adjusted
    return out
