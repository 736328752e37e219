"""Positional scorer: synthetic heads with known masses, entropies and offsets; the reference."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402
from reference import reference_positional  # noqa: E402

from headscope.analysis import rowscan  # noqa: E402
from headscope.analysis.positional import PositionalScorer  # noqa: E402


def value(df, head, relation, metric=None):
    row = df[(df["head"] == head) & (df["relation"] == relation)]
    if metric is not None:
        row = row[row["metric"] == metric]
    assert len(row) == 1, (relation, metric)
    return float(row["score"].iloc[0])


def test_previous_token_and_uniform_heads():
    sents = [syn.sentence([-1] + [0] * 19), syn.sentence([-1] + [0] * 9)]   # 21- and 11-token batches
    b = syn.batch(sents, specials=False)
    t = b.input_ids.shape[1]
    prev = torch.zeros(2, 1, t, t)
    for i in range(t):
        prev[:, 0, i, max(i - 1, 0)] = 1.0
    uniform = torch.ones(2, 1, t, t)
    maps = syn.normalise(torch.cat([prev, uniform], 1), b)
    df = syn.run(PositionalScorer(1, 2, window=1), b, maps)
    # head 0: a perfect previous-token head
    assert value(df, 0, "prev") == pytest.approx(1.0)
    assert value(df, 0, "next") == pytest.approx(0.0)
    assert value(df, 0, "argmax_offset", "offset") == -1
    assert value(df, 0, "argmax_offset", "share") == pytest.approx(28 / 30)   # the first token of each row set
    assert value(df, 0, "confidence") == pytest.approx(1.0)
    assert value(df, 0, "entropy") == pytest.approx(0.0, abs=1e-6)
    assert value(df, 0, "distance") == pytest.approx(28 / 30)
    # head 1: uniform over the sentence
    assert value(df, 1, "entropy_norm") == pytest.approx(1.0, abs=1e-6)
    expected_entropy = (20 * math.log(20) + 10 * math.log(10)) / 30
    assert value(df, 1, "entropy") == pytest.approx(expected_entropy, rel=1e-5)
    assert value(df, 1, "confidence") == pytest.approx((20 / 20 + 10 / 10) / 30)
    # local window |i-j| <= 1 of a uniform row of length n: (3n - 2) / n^2 summed over rows
    local = ((3 * 20 - 2) / 20 + (3 * 10 - 2) / 10) / 30
    assert value(df, 1, "local") == pytest.approx(local, rel=1e-5)
    assert value(df, 1, "first") == pytest.approx((20 / 20 + 10 / 10) / 30)
    n = df[(df["head"] == 0) & (df["relation"] == "prev")]["n"].iloc[0]
    assert int(n) == 28  # rows that have a previous token


def test_specials_separators_and_punctuation():
    s = syn.sentence([1, -1, 1], words=["a", "b", "."])
    b = syn.batch([s])                                         # [CLS] a b . [SEP]
    t = b.input_ids.shape[1]
    maps = torch.zeros(1, 2, t, t)
    maps[0, 0, :, 4] = 1.0                                     # everything to [SEP]
    maps[0, 1, :, 3] = 1.0                                     # everything to "."
    df = syn.run(PositionalScorer(1, 2), b, syn.normalise(maps, b))
    assert value(df, 0, "sep") == pytest.approx(1.0)
    assert value(df, 0, "last") == pytest.approx(0.0)         # last: the last word, for encoders too
    assert value(df, 1, "last") == pytest.approx(1.0)
    assert value(df, 0, "punct") == pytest.approx(0.0)
    assert value(df, 1, "punct") == pytest.approx(1.0)
    assert value(df, 1, "sep") == pytest.approx(0.0)
    assert value(df, 0, "argmax_offset", "share") == pytest.approx(1 / 5)  # offsets 4,3,2,1,0 differ


def test_causal_uniform_head_has_normalised_entropy_one():
    s = syn.sentence([-1] + [0] * 7)
    b = syn.batch([s], specials=False, causal=True)
    t = b.input_ids.shape[1]
    maps = torch.tril(torch.ones(1, 1, t, t))
    df = syn.run(PositionalScorer(1, 1, causal=True), b, syn.normalise(maps, b))
    assert value(df, 0, "entropy_norm") == pytest.approx(1.0, abs=1e-6)
    n = df[(df["relation"] == "entropy_norm")]["n"].iloc[0]
    assert int(n) == t - 1  # the first row sees one key: its normalised entropy is undefined


def test_merge_equals_one_pass():
    sents = [syn.sentence([-1, 0, 1]), syn.sentence([1, -1, 1, 2, 3])]
    torch.manual_seed(0)
    parts = []
    for group in ([sents[0]], [sents[1]]):
        b = syn.batch(group)
        t = b.input_ids.shape[1]
        parts.append((b, syn.normalise(torch.rand(len(group), 2, t, t), b)))
    a, c = PositionalScorer(1, 2), PositionalScorer(1, 2)
    syn.run(a, *parts[0])
    syn.run(c, *parts[1])
    whole = PositionalScorer(1, 2)
    for b, maps in parts:
        whole.start_batch(b)
        from headscope.analysis.base import LayerView
        whole.update(LayerView(0, maps, b))
        whole.end_batch()
    m = whole.result().merge(a.merge(c).result(), on=["relation", "metric", "layer", "head"])
    assert (m["score_x"] - m["score_y"]).abs().max() < 1e-9


def test_matches_reference_on_tiny_models(tiny, sample):
    import headscope

    name, loaded = tiny
    sents = sample.sentences[:12]
    result = headscope.analyze(loaded, list(sents), tasks="positional", batch_size=5, window=2)
    ref, ref_offsets = reference_positional(loaded.model, loaded.tokenizer, sents, window=2,
                                            causal=loaded.info.is_decoder)
    df = result.scores
    checked = 0
    written = df["relation"].isin(["first_written", "sep_written"])
    _check_written(loaded, sents, df[written])
    for r in df[(df["relation"] != "argmax_offset") & ~written].itertuples():
        assert r.score == pytest.approx(ref[(r.layer, r.head, r.relation)], abs=2e-5), (name, r.relation)
        checked += 1
    assert checked == loaded.info.num_layers * loaded.info.num_heads * len({k[2] for k in ref})
    for r in df[(df["relation"] == "argmax_offset") & (df["metric"] == "share")].itertuples():
        counts = ref_offsets[(r.layer, r.head)]
        assert r.score == pytest.approx(max(c for o, c in counts.items() if abs(o) <= 8) / sum(counts.values()))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ties", [True, False])
def test_one_product_per_whole_map_equals_the_band_path(causal, ties, monkeypatch):
    """Whole maps are scored by one product with batch weights and a first-maximum search; long inputs read
    the band near the diagonal (by a kernel on the CPU, by torch elsewhere). All give the same table, argmax
    offsets exactly, on maps full of ties (weights in eighths) or of near-ties, joined sentences, repeated words and tokens, and padding."""
    from headscope.datasets import join_sentences
    from headscope.types import Sentence

    doc = join_sentences([Sentence(words=tuple(f"x{i % 7}" for i in range(k, k + 12)), sent_id=str(k),
                                   upos=tuple("NOUN" if i % 3 else "DET" for i in range(12))) for k in (0, 12, 24)])
    short = Sentence(words=("a", "b", "a", ",", "b"), sent_id="s", upos=("DET", "NOUN", "DET", "PUNCT", "NOUN"))
    b = syn.batch([doc, short], causal=causal)
    b.input_ids[:, 1:] = b.input_ids[:, 1:] % 9 + 1          # repeated tokens: induction pairs on the text
    b.encoded = [type(e)(e.index, tuple(int(x) for x in b.input_ids[i, :len(e)]), e.word_ids, e.sep_tokens,
                         e.n_words) for i, e in enumerate(b.encoded)]
    t = b.input_ids.shape[1]
    torch.manual_seed(1)
    maps = torch.randint(0, 4, (2, 3, t, t)).float()
    if causal:
        maps = maps * torch.ones(t, t).tril()
    maps = syn.normalise(maps, b)
    if ties:
        maps = (maps * 8).round() / 8                         # many rows with several equal largest weights
    else:
        maps = maps * (1 + 0.005 * torch.rand(maps.shape))   # near-ties: equal weights made up to 0.5% apart
    maps = syn.normalise(maps, b)
    tables = []
    # the whole map's product; row blocks by the CPU kernel (analysis/rowscan.py); row blocks by torch (a GPU)
    for whole_bytes, fast in ((PositionalScorer.WHOLE_BYTES, True), (0, True), (0, False)):
        monkeypatch.setattr(rowscan, "FAST", fast)
        scanned = []
        monkeypatch.setattr(rowscan, "_kernel", lambda kernel=rowscan._kernel: scanned.append(1) or kernel())
        scorer = PositionalScorer(2, 3, causal=causal)
        scorer.WHOLE_BYTES = whole_bytes
        scorer.start_batch(b)
        for layer in range(2):
            scorer.update(syn.LayerView(layer, maps.roll(layer, 1), b))
        assert (scorer._batch["whole"] is None) == (whole_bytes == 0)
        assert bool(scanned) == (fast and whole_bytes == 0)
        scorer.end_batch()
        tables.append(scorer.result())
    for other in tables[1:]:
        m = tables[0].merge(other, on=["layer", "head", "relation", "metric"])
        assert len(m) == len(tables[0]) == len(other)
        assert {"other_sentences", "same_word", "induction_text", "content", "distance"} <= set(m["relation"])
        # float32 sums in another order: 1e-5 of the score (an entropy of 2.8 nats differs by 1.2e-5)
        assert ((m["score_x"] - m["score_y"]).abs() <= 1e-5 * m["score_x"].abs().clip(lower=1)).all()
        assert (m["n_x"] == m["n_y"]).all()
        offsets = m[m["relation"] == "argmax_offset"]
        assert (offsets["score_x"] == offsets["score_y"]).all()


def _check_written(loaded, sents, rows):
    """first_written / sep_written against eager attention, values from a hook and W_O from the weights
    (``reference_norm``), sentence by sentence: the share of sum_j alpha_ij ||v_j W_O^h|| from the first
    token and from [SEP]/EOS, averaged over every real query row."""
    import numpy as np

    from headscope.capture.alignment import encode_sentences
    from reference_norm import norm_maps

    assert len(rows) == 2 * loaded.info.num_layers * loaded.info.num_heads, "the sinks' written shares are missing"
    tok = loaded.tokenizer
    closing = {t for t in (tok.sep_token_id, tok.eos_token_id) if t is not None}
    num, rows_seen = 0.0, 0
    for s in sents:
        (enc,) = encode_sentences(tok, [s])
        ids = torch.tensor([enc.input_ids])
        _, norms = norm_maps(loaded.model, ids, torch.ones_like(ids))
        sep = np.array([w < 0 and i in closing for i, w in zip(enc.input_ids, enc.word_ids)])
        per = []
        for m in norms:                                         # [1, H, q, k]
            total = m.sum(-1)
            per.append(np.stack([m[..., 0] / total, (m * sep).sum(-1) / total], -1).sum(2)[0])   # [H, 2]
        num = num + np.stack(per)                               # [layer, H, 2]
        rows_seen += len(enc.input_ids)
    expected = num / rows_seen
    for r in rows.itertuples():
        k = 0 if r.relation == "first_written" else 1
        assert r.score == pytest.approx(expected[r.layer, r.head, k], abs=2e-5), (r.relation, r.layer, r.head)
