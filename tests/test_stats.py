"""Bootstrap intervals, paired p-values and Benjamini–Hochberg on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from headscope.analysis.stats import bh_adjust, bootstrap_weights, normal_sf, paired_pvalue, ratio_intervals


def test_weights_resample_every_unit_count():
    w = bootstrap_weights(50, 200, seed=1)
    assert w.shape == (200, 50) and (w.sum(1) == 50).all()
    np.testing.assert_array_equal(w, bootstrap_weights(50, 200, seed=1))
    with pytest.raises(ValueError):
        bootstrap_weights(0, 10)


def test_estimate_is_the_ratio_of_sums_and_lies_in_its_interval():
    rng = np.random.default_rng(0)
    den = rng.integers(1, 30, size=400)
    num = rng.binomial(den, 0.4)
    est, lo, hi = ratio_intervals(num, den, n_boot=500)
    assert est[0] == pytest.approx(num.sum() / den.sum())
    assert lo[0] < est[0] < hi[0]


def test_interval_width_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    hits = rng.binomial(1, 0.3, size=4000)                  # one word per sentence: a plain proportion
    _, lo, hi = ratio_intervals(hits, np.ones(4000), n_boot=2000)
    expected = 2 * 1.96 * np.sqrt(0.3 * 0.7 / 4000)
    assert (hi[0] - lo[0]) == pytest.approx(expected, rel=0.12)


def test_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    trials = 300
    for t in range(trials):
        den = rng.integers(5, 25, size=150)
        num = rng.binomial(den, 0.6)
        _, lo, hi = ratio_intervals(num, den, n_boot=400, seed=t)
        covered += lo[0] <= 0.6 <= hi[0]
    assert 0.90 <= covered / trials <= 0.985


def test_columns_are_independent_and_empty_columns_are_nan():
    num = np.array([[1, 0, 0], [1, 2, 0], [0, 1, 0]])
    den = np.array([[1, 2, 0], [1, 2, 0], [1, 2, 0]])
    est, lo, hi = ratio_intervals(num, den, n_boot=200)
    np.testing.assert_allclose(est[:2], [2 / 3, 0.5])
    assert np.isnan(est[2]) and np.isnan(lo[2]) and np.isnan(hi[2])


def test_paired_pvalue_small_when_a_is_clearly_better_and_large_otherwise():
    rng = np.random.default_rng(3)
    den = rng.integers(5, 20, size=300)
    a = rng.binomial(den, 0.7)
    b = rng.binomial(den, 0.5)
    p = paired_pvalue(np.stack([a, b], 1), np.stack([b, a], 1), np.stack([den, den], 1), n_boot=500)
    assert p[0] < 0.01 and p[1] > 0.99
    same = paired_pvalue(a, a, den, n_boot=100)
    assert same[0] == 1.0                                    # ties never count as A above B


def test_bh_adjust_on_a_worked_example():
    # Sorted p: .005 .01 .03 .04 (m = 4) -> .005*4/1 = .02, .01*4/2 = .02, .03*4/3 = .04, .04*4/4 = .04.
    np.testing.assert_allclose(bh_adjust([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    # Monotone step-up: a later, smaller ratio pulls earlier ones down.
    np.testing.assert_allclose(bh_adjust([0.02, 0.021]), [0.021, 0.021])
    out = bh_adjust([0.01, np.nan])
    assert out[0] == pytest.approx(0.01) and np.isnan(out[1])


def test_syntax_intervals_equal_a_bootstrap_of_reference_per_sentence_counts(tiny_bert_loaded, sample):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference import reference_syntax

    import headscope
    from headscope.analysis.stats import bootstrap_weights

    loaded = tiny_bert_loaded
    sents = list(sample.sentences[:25])
    result = headscope.analyze(loaded, sents, tasks="syntax", bootstrap=300, seed=4, batch_size=8)
    per = [reference_syntax(loaded.model, loaded.tokenizer, [s]) for s in sents]     # one sentence at a time
    w = bootstrap_weights(len(sents), 300, seed=4)
    heads = result.scores[result.scores["baseline"].isna()]
    checked = 0
    for row in heads.itertuples():
        key = (row.layer, row.head, row.relation, row.direction)
        num = np.array([c.get(key, 0) for c, _ in per], dtype=float)
        den = np.array([t.get(row.relation, 0) for _, t in per], dtype=float)
        est, lo, hi = ratio_intervals(num, den, weights=w)
        assert row.score == pytest.approx(est[0])
        assert (row.ci_low, row.ci_high) == (pytest.approx(lo[0], abs=1e-6), pytest.approx(hi[0], abs=1e-6)), key
        checked += 1
    assert checked == len(heads) > 0


def test_bootstrap_zero_leaves_intervals_empty(tiny_bert_loaded, sample):
    import headscope

    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:5]), tasks="syntax", bootstrap=0)
    assert r.scores["ci_low"].isna().all() and r.scores["ci_high"].isna().all()


def test_positional_intervals_equal_a_bootstrap_of_reference_per_sentence_sums(tiny, sample):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference import reference_positional

    import headscope

    name, loaded = tiny
    sents = list(sample.sentences[:12])
    result = headscope.analyze(loaded, sents, tasks="positional", bootstrap=200, seed=2, batch_size=5)
    per = [reference_positional(loaded.model, loaded.tokenizer, [s], causal=loaded.info.is_decoder, raw=True)
           for s in sents]
    w = bootstrap_weights(len(sents), 200, seed=2)
    # (first_written and sep_written read the values too: tested against their own reference in test_positional)
    rows = result.scores[result.scores["ci_low"].notna() & (result.scores["relation"] != "argmax_offset")
                         & ~result.scores["relation"].isin(["first_written", "sep_written"])]
    assert set(rows["relation"]) >= {"self", "prev", "first", "local", "entropy", "confidence"}
    for row in rows.itertuples():
        key = (row.layer, row.head, row.relation)
        num = np.array([s.get(key, 0.0) for s, _ in per])
        den = np.array([c.get(key, 0) for _, c in per], dtype=float)
        est, lo, hi = ratio_intervals(num, den, weights=w)
        assert row.score == pytest.approx(est[0], abs=1e-5)
        assert row.ci_low == pytest.approx(lo[0], abs=1e-4) and row.ci_high == pytest.approx(hi[0], abs=1e-4), key


def test_induction_intervals_equal_a_bootstrap_of_reference_per_sequence_scores(tiny):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference import reference_induction

    import headscope
    from headscope.analysis.induction import make_sequences

    _, loaded = tiny
    r = headscope.analyze(loaded, None, tasks="induction", induction_count=10, induction_length=6, bootstrap=200,
                          seed=1, batch_size=3)
    seqs = make_sequences(loaded.tokenizer, count=10, length=6, seed=1, bos=loaded.info.is_decoder,
                          vocab_size=loaded.model.get_input_embeddings().num_embeddings)
    per = [reference_induction(loaded.model, [s]) for s in seqs]        # per-sequence means
    o, t = seqs[0].bos, seqs[0].length
    n_rows = {"induction": t, "duplicate": t, "previous": o + 2 * t - 1}
    w = bootstrap_weights(len(seqs), 200, seed=1)
    assert r.scores["ci_low"].notna().all()
    for row in r.scores.itertuples():
        key = (row.layer, row.head, row.relation)
        num = np.array([p[key] * n_rows[row.relation] for p in per])
        den = np.full(len(seqs), float(n_rows[row.relation]))
        est, lo, hi = ratio_intervals(num, den, weights=w)
        assert row.score == pytest.approx(est[0], abs=1e-6)
        assert row.ci_low == pytest.approx(lo[0], abs=1e-5) and row.ci_high == pytest.approx(hi[0], abs=1e-5), key


def test_normal_pvalues_are_calibrated_under_the_null_and_resolve_tiny_values():
    rng = np.random.default_rng(11)
    rejections, trials = 0, 200
    for t in range(trials):
        den = rng.integers(5, 20, size=120)
        a, b = rng.binomial(den, 0.5), rng.binomial(den, 0.5)          # no true difference
        rejections += paired_pvalue(a, b, den, n_boot=300, seed=t)[0] < 0.05
    assert 0.01 <= rejections / trials <= 0.10                          # about 5%
    den = rng.integers(5, 20, size=400)
    strong = paired_pvalue(rng.binomial(den, 0.8), rng.binomial(den, 0.4), den, n_boot=300)
    assert strong[0] < 1e-10                                            # far below 1 / replicates
    percentile = paired_pvalue(rng.binomial(den, 0.8), rng.binomial(den, 0.4), den, n_boot=300,
                               method="percentile")
    assert percentile[0] == pytest.approx(1 / 301)
    with pytest.raises(ValueError):
        paired_pvalue(den, den, den, method="exact")


def test_paired_pvalue_with_a_narrow_denominator_table():
    rng = np.random.default_rng(12)
    den = rng.integers(5, 20, size=(200, 2))
    a = np.stack([rng.binomial(den[:, 0], 0.7), rng.binomial(den[:, 1], 0.7), rng.binomial(den[:, 0], 0.3)], 1)
    b = np.stack([rng.binomial(den[:, 0], 0.5), rng.binomial(den[:, 1], 0.5), rng.binomial(den[:, 0], 0.5)], 1)
    w = bootstrap_weights(200, 300, seed=3)
    narrow = paired_pvalue(a, b, den, den_index=[0, 1, 0], weights=w)
    wide = paired_pvalue(a, b, den[:, [0, 1, 0]], weights=w)
    np.testing.assert_allclose(narrow, wide)
    assert narrow[0] < 0.01 and narrow[1] < 0.01 and narrow[2] > 0.99


def test_fewer_than_min_units_give_nan_intervals_and_pvalues():
    from headscope.analysis.stats import MIN_UNITS

    num, den = np.arange(MIN_UNITS - 1) % 2, np.ones(MIN_UNITS - 1)
    est, lo, hi = ratio_intervals(num, den, n_boot=100)
    assert est[0] == pytest.approx(num.mean()) and np.isnan(lo[0]) and np.isnan(hi[0])
    assert np.isnan(paired_pvalue(num, 1 - num, den, n_boot=100)[0])
    num, den = np.arange(MIN_UNITS) % 2, np.ones(MIN_UNITS)
    assert np.isfinite(ratio_intervals(num, den, n_boot=100)[1][0])


def test_nan_quantiles_equal_numpys_nanquantile():
    import numpy as np

    from headscope.analysis.stats import nan_quantiles

    rng = np.random.default_rng(0)
    values = rng.random((500, 40)).astype(np.float32)
    values[rng.random((500, 40)) < 0.002] = np.nan
    values[:, 3] = np.nan                                  # a column with nothing
    values[:, 5] = np.inf                                  # infinities are values, as in numpy
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanquantile(values, [0.025, 0.975], axis=0)
    got = nan_quantiles(values, (0.025, 0.975))
    assert np.isnan(values).any(0).sum() > 5 and (~np.isnan(values).any(0)).sum() > 5
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_bh_adjust_and_normal_sf_equal_scipy():
    from scipy.stats import false_discovery_control, norm

    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 300):
        p = rng.uniform(size=size) ** 3
        p[rng.uniform(size=size) < 0.2] = p[0]                       # ties
        np.testing.assert_allclose(bh_adjust(p), false_discovery_control(p, method="bh"), rtol=1e-12)
    z = np.concatenate([rng.normal(scale=3, size=500), [-40.0, 0.0, 8.0, 37.0, np.inf, -np.inf]])
    np.testing.assert_allclose(normal_sf(z), norm.sf(z), rtol=1e-12, atol=0)
