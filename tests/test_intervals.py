"""Bootstrap intervals and paired p-values of the tree, coref, GAP, pairs and positional-offset scores.

Each scorer's intervals must equal a bootstrap, with the same ``bootstrap_weights(U, n_boot, seed)``,
of per-unit counts computed here one unit at a time from full attention maps (tests/reference.py),
and a planted strong head must get a small p-value where a head at baseline level does not.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402
from reference import full_attentions, reference_coref, reference_positional, word_attention  # noqa: E402

import headscope  # noqa: E402
from headscope.analysis.coref import BASELINES as COREF_BASELINES  # noqa: E402
from headscope.analysis.coref import CorefScorer, make_windows  # noqa: E402
from headscope.analysis.gap import GapScorer, ratio_of_ratios_intervals  # noqa: E402
from headscope.analysis.mentions import mention_infos  # noqa: E402
from headscope.analysis.pairs import PairScorer, pair_sentences  # noqa: E402
from headscope.analysis.stats import bootstrap_weights, paired_pvalue, ratio_intervals  # noqa: E402
from headscope.analysis.tree import TreeScorer, decode_tree  # noqa: E402
from headscope.datasets.pairs import load_bundled_pairs  # noqa: E402
from headscope.types import (Document, DocumentCorpus, GapCorpus, GapExample, Mention, PairCorpus,  # noqa: E402
                             Sentence)

NAN = float("nan")


def assert_interval(row, num, den, w, key):
    est, lo, hi = ratio_intervals(np.asarray(num, dtype=float), np.asarray(den, dtype=float), weights=w)
    assert row.score == pytest.approx(est[0], abs=1e-9), key
    assert row.ci_low == pytest.approx(lo[0], abs=1e-6) and row.ci_high == pytest.approx(hi[0], abs=1e-6), key


def assert_pvalue(row, num, base, den, w, key):
    p = paired_pvalue(np.asarray(num, dtype=float), np.asarray(base, dtype=float), np.asarray(den, dtype=float),
                      weights=w)
    assert row.p_value == pytest.approx(p[0], rel=1e-3, abs=1e-9), key


def scored(scorer, b, maps):
    """Run a scorer on planted maps, add its intervals, and return its table."""
    syn.run(scorer, b, syn.normalise(maps, b))
    scorer.intervals(n_boot=500, seed=0)
    return scorer.result()


# ---------------------------------------------------------------- synthetic data

NAMES = [("John", "he", "him", "masculine"), ("Mary", "she", "her", "feminine"), ("Peter", "he", "him", "masculine"),
         ("Anna", "she", "her", "feminine"), ("Tom", "he", "him", "masculine"), ("Kate", "she", "her", "feminine")]
STORY_LINES = ["{A} saw {B} .", "{a} waved at {b_} .", "{B} smiled at {A} .", "The dog barked at {b_} .",
               "{a} liked {B} .", "{b} thanked {a_} .", "Then {A} left .", "{b} stayed home ."]


def stories(count: int, rng) -> list[Document]:
    """Short documents about two people: names and pronouns in two clusters, one-word mentions."""
    docs = []
    for k in range(count):
        i, j = rng.choice(len(NAMES), 2, replace=False)
        fill = {}
        for tag, (name, subj, obj, _) in (("a", NAMES[i]), ("b", NAMES[j])):
            fill.update({f"{{{tag.upper()}}}": (name, tag), f"{{{tag}}}": (subj, tag), f"{{{tag}_}}": (obj, tag)})
        lines = [STORY_LINES[0]] + [STORY_LINES[x] for x in rng.integers(1, len(STORY_LINES), size=7)]
        sentences, mentions, offset = [], [], 0
        for line in lines:
            words = []
            for p, tok in enumerate(line.split()):
                if tok in fill:
                    word, cluster = fill[tok]
                    mentions.append(Mention(offset + p, offset + p, cluster))
                    tok = word[:1].upper() + word[1:] if p == 0 else word
                words.append(tok)
            sentences.append(Sentence(words=tuple(words)))
            offset += len(words)
        docs.append(Document(f"doc{k}", tuple(sentences), tuple(mentions)))
    return docs


GAP_LINES = ["{A} met {B} and {p} smiled .", "{A} thanked {B} because {p} was kind .",
             "{B} knew that {A} thought {p} was right .", "When {A} called {B} , {p} was at home ."]


def gap_rows(count: int, rng) -> list[GapExample]:
    """GAP-like rows with one referent (and a few with none, which are not scored)."""
    rows = []
    for k in range(count):
        i, j = rng.choice(len(NAMES), 2, replace=False)
        a_coref = bool(rng.random() < 0.5)
        referent = NAMES[i] if a_coref else NAMES[j]
        fill = {"{A}": NAMES[i][0], "{B}": NAMES[j][0] + (" Lee" if k % 3 == 0 else ""), "{p}": referent[1]}
        words, spans = [], {}
        for tok in GAP_LINES[k % len(GAP_LINES)].split():
            if tok in fill:
                part = fill[tok].split()
                spans[tok] = (len(words), len(words) + len(part) - 1)
                words += part
            else:
                words.append(tok)
        b_coref = not a_coref if k % 10 != 9 else False       # every tenth row: neither name (not scored)
        a_coref = a_coref if k % 10 != 9 else False
        rows.append(GapExample(f"g{k}", tuple(words), spans["{p}"], spans["{A}"], spans["{B}"], a_coref, b_coref,
                               referent[3]))
    return rows


def gap_nearest_right(ex: GapExample) -> bool:
    p = ex.pronoun[0]
    da, db = (min(abs(p - s[0]), abs(p - s[1])) for s in (ex.a, ex.b))
    return da != db and (da < db) == ex.a_coref


def with_max_length(loaded, n: int):
    return dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, max_length=n))


# ---------------------------------------------------------------- equal to a bootstrap of reference counts

def test_tree_intervals_and_pvalues_equal_a_bootstrap_of_reference_per_sentence_counts(tiny_bert_loaded, sample):
    loaded = tiny_bert_loaded
    sents = list(sample.sentences[:12])
    r = headscope.analyze(loaded, sents, tasks="tree", bootstrap=200, seed=3, batch_size=5)
    L, H = loaded.info.num_layers, loaded.info.num_heads
    correct = np.zeros((len(sents), L, 2, H))
    total = np.zeros(len(sents))
    base = np.zeros((len(sents), 2))                       # right-, left-branching
    for u, s in enumerate(sents):                          # one sentence at a time, networkx decoding
        atts, word_ids = full_attentions(loaded.model, loaded.tokenizer, s)
        gold = np.asarray(s.heads)
        root, scored, pos = int(np.flatnonzero(gold < 0)[0]), gold >= 0, np.arange(len(gold))
        total[u] = scored.sum()
        base[u] = (gold[scored] == pos[scored] - 1).sum(), (gold[scored] == pos[scored] + 1).sum()
        for layer, att in enumerate(atts):
            for head in range(H):
                w = word_attention(att[head], word_ids)
                for k, scores in enumerate((w, w.T)):
                    pred = np.asarray(decode_tree(scores, root, "networkx"))
                    correct[u, layer, k, head] = (pred[scored] == gold[scored]).sum()
    w = bootstrap_weights(len(sents), 200, seed=3)
    best = base.sum(0).argmax()
    df = r.scores
    assert df["ci_low"].notna().all()
    for row in df.itertuples():
        k = 0 if row.direction == "dep_to_head" else 1
        if pd_isna(row.layer):
            assert_interval(row, base[:, ["right_branching", "left_branching"].index(row.baseline)], total, w, row)
            assert np.isnan(row.p_value)
            continue
        num = correct[:, row.layer, k, row.head]
        assert_interval(row, num, total, w, row)
        assert_pvalue(row, num, base[:, best], total, w, row)


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


def test_coref_intervals_are_over_documents_and_equal_a_bootstrap_of_reference_counts(tiny_bert_loaded):
    from headscope.capture.alignment import encode_sentences

    loaded = with_max_length(tiny_bert_loaded, 32)          # short windows: every document spans several
    docs = stories(10, np.random.default_rng(5))
    r = headscope.analyze(loaded, DocumentCorpus("toy", tuple(docs)), tasks="coref", bootstrap=300, seed=2,
                          batch_size=4)
    enc = encode_sentences(loaded.tokenizer, [s for d in docs for s in d.sentences])
    specials = sum(1 for w in enc[0].word_ids if w < 0)
    lengths, k = [], 0
    for d in docs:
        lengths.append([len(e) - specials for e in enc[k:k + len(d.sentences)]])
        k += len(d.sentences)
    sents, wins, stats = make_windows(docs, lengths, 32, specials)
    assert len(wins) >= 2 * len(docs) and stats.scored > 30
    # Reference counts one window at a time, summed per document; units = documents with a scored mention.
    L, H, groups = loaded.info.num_layers, loaded.info.num_heads, ("all", "pronoun", "proper", "nominal")
    per_doc = {}
    for s, win in zip(sents, wins):
        if not win.queries:
            continue
        c, t = reference_coref(loaded.model, loaded.tokenizer, [s], [win])
        acc = per_doc.setdefault(win.doc_id, {"correct": np.zeros((L, H, 4)), "total": np.zeros(4),
                                              "base": np.zeros((3, 4))})
        for (layer, head, g), v in c.items():
            acc["correct"][layer, head, groups.index(g)] += v
        for g, v in t.items():
            acc["total"][groups.index(g)] += v
        for q in win.queries:
            for g in ("all", q.type):
                acc["base"][:, groups.index(g)] += q.baselines
    units = [per_doc[d.doc_id] for d in docs if d.doc_id in per_doc]
    assert len(units) == len(docs)
    correct = np.stack([u["correct"] for u in units])
    total = np.stack([u["total"] for u in units])
    base = np.stack([u["base"] for u in units])
    w = bootstrap_weights(len(units), 300, seed=2)
    df = r.scores
    assert df["ci_low"].notna().all() and set(df["relation"]) == {"all", "pronoun", "proper"}
    best = base.sum(0).argmax(0)
    for row in df.itertuples():
        g = groups.index(row.relation)
        if pd_isna(row.layer):
            assert_interval(row, base[:, COREF_BASELINES.index(row.baseline), g], total[:, g], w, row)
            continue
        num = correct[:, row.layer, row.head, g]
        assert_interval(row, num, total[:, g], w, row)
        assert_pvalue(row, num, base[:, best[g], g], total[:, g], w, row)
    # Windows as units would give other (narrower) intervals: the document grouping matters.
    row = df[df["layer"].isna() & (df["relation"] == "all") & (df["baseline"] == "rules")].iloc[0]
    wins_q = [win for win in wins if win.queries]
    per_win = np.array([sum(q.baselines[2] for q in win.queries) for win in wins_q], dtype=float)
    n_win = np.array([len(win.queries) for win in wins_q], dtype=float)
    _, lo, hi = ratio_intervals(per_win, n_win, weights=bootstrap_weights(len(wins_q), 300, seed=2))
    assert (row.ci_low, row.ci_high) != (pytest.approx(lo[0]), pytest.approx(hi[0]))


def test_gap_intervals_bias_and_pvalues_equal_a_bootstrap_of_reference_per_row_hits(tiny_bert_loaded):
    loaded = tiny_bert_loaded
    rows = gap_rows(40, np.random.default_rng(1))
    r = headscope.analyze(loaded, GapCorpus("toy-gap", tuple(rows)), tasks="gap", bootstrap=300, seed=7,
                          batch_size=8)
    L, H = loaded.info.num_layers, loaded.info.num_heads
    units = [ex for ex in rows if ex.a_coref != ex.b_coref]
    assert 0 < len(units) < len(rows)
    hit = np.zeros((len(units), L, H))
    for u, ex in enumerate(units):
        atts, word_ids = full_attentions(loaded.model, loaded.tokenizer, Sentence(words=ex.words))
        p = ex.pronoun[0]
        for layer, att in enumerate(atts):
            for head in range(H):
                w = word_attention(att[head], word_ids)
                ma, mb = w[p, ex.a[0]:ex.a[1] + 1].sum(), w[p, ex.b[0]:ex.b[1] + 1].sum()
                hit[u, layer, head] = ma > mb if ex.a_coref else mb > ma
    near = np.array([gap_nearest_right(ex) for ex in units], dtype=float)
    masc = np.array([ex.gender == "masculine" for ex in units], dtype=float)
    fem = 1.0 - masc
    den = {"all": np.ones(len(units)), "masculine": masc, "feminine": fem}
    w = bootstrap_weights(len(units), 300, seed=7)
    df = r.scores
    assert df["ci_low"].notna().all() and set(df["relation"]) == {"all", "masculine", "feminine", "bias"}
    for row in df.itertuples():
        per = near if pd_isna(row.layer) else hit[:, row.layer, row.head]
        if row.relation == "bias":
            est, lo, hi = ratio_of_ratios_intervals((per * fem)[:, None], fem, (per * masc)[:, None], masc,
                                                    weights=w)
            assert row.score == pytest.approx(est[0])
            assert (row.ci_low, row.ci_high) == (pytest.approx(lo[0], abs=1e-6), pytest.approx(hi[0], abs=1e-6))
            assert np.isnan(row.p_value)
            continue
        assert_interval(row, per * den[row.relation], den[row.relation], w, row)
        if pd_isna(row.layer) or row.relation != "all":
            assert np.isnan(row.p_value)
        else:
            assert_pvalue(row, per, near, den["all"], w, row)


def test_bias_interval_equals_a_replicate_by_replicate_ratio_of_accuracies():
    rng = np.random.default_rng(0)
    U = 60
    fem = (rng.random(U) < 0.5).astype(float)
    hits = rng.random((U, 3)) < [0.8, 0.5, 0.3]
    w = bootstrap_weights(U, 400, seed=1)
    est, lo, hi = ratio_of_ratios_intervals(hits * fem[:, None], fem, hits * (1 - fem)[:, None], 1 - fem, weights=w)
    for k in range(3):
        boot = []
        for b in range(len(w)):
            drawn = np.repeat(np.arange(U), w[b].astype(int))
            f, m = fem[drawn], 1 - fem[drawn]
            boot.append((hits[drawn, k] * f).sum() / f.sum() / ((hits[drawn, k] * m).sum() / m.sum()))
        assert est[k] == pytest.approx((hits[:, k] * fem).sum() / fem.sum() / ((hits[:, k] * (1 - fem)).sum()
                                                                             / (1 - fem).sum()))
        assert (lo[k], hi[k]) == (pytest.approx(np.quantile(boot, 0.025), rel=1e-5),
                                  pytest.approx(np.quantile(boot, 0.975), rel=1e-5))


def test_pairs_intervals_and_pvalues_equal_a_bootstrap_of_reference_per_pair_hits(tiny_bert_loaded):
    loaded = tiny_bert_loaded
    pairs = list(load_bundled_pairs().pairs[:24])
    r = headscope.analyze(loaded, PairCorpus("toy-pairs", tuple(pairs)), tasks="pairs", bootstrap=300, seed=4,
                          batch_size=8)
    L, H = loaded.info.num_layers, loaded.info.num_heads
    right = np.zeros((len(pairs), 2, L, H), dtype=bool)
    for u, p in enumerate(pairs):
        for j in (0, 1):
            atts, word_ids = full_attentions(loaded.model, loaded.tokenizer, Sentence(words=p.words[j]))
            good, bad = p.candidates[p.answers[j]], p.candidates[1 - p.answers[j]]
            for layer, att in enumerate(atts):
                for head in range(H):
                    w = word_attention(att[head], word_ids)
                    right[u, j, layer, head] = w[p.pronoun, good] > w[p.pronoun, bad]
    answers = np.array([p.answers for p in pairs])
    per = {"pair": lambda x: x.all(1), "sentence": lambda x: x.sum(1)}
    den = {"pair": np.ones(len(pairs)), "sentence": np.full(len(pairs), 2.0)}
    baselines = {name: {rel: per[rel](answers == pick).astype(float) for rel in per}
                 for name, pick in (("first_candidate", 0), ("nearest_candidate", 1))}
    w = bootstrap_weights(len(pairs), 300, seed=4)
    df = r.scores
    assert df["ci_low"].notna().all()
    chance = {"pair": 0.25, "sentence": 0.5}
    for row in df.itertuples():
        if pd_isna(row.layer):
            if row.baseline == "chance":            # a constant: its interval is the point
                assert row.score == row.ci_low == row.ci_high == chance[row.relation]
            else:
                assert_interval(row, baselines[row.baseline][row.relation], den[row.relation], w, row)
            assert np.isnan(row.p_value)
            continue
        num = per[row.relation](right[:, :, row.layer, row.head]).astype(float)
        assert_interval(row, num, den[row.relation], w, row)
        # the structural baselines never beat chance, so heads are tested against chance
        assert all(baselines[b][row.relation].mean() / den[row.relation].mean() <= chance[row.relation]
                   for b in baselines)
        assert_pvalue(row, num, chance[row.relation] * den[row.relation], den[row.relation], w, row)


@pytest.mark.parametrize("tiny", ["bert", "gpt2"], indirect=True)
def test_positional_offset_share_interval_equals_a_bootstrap_of_reference_counts(tiny, sample):
    _, loaded = tiny
    sents = list(sample.sentences[:10])
    r = headscope.analyze(loaded, sents, tasks="positional", bootstrap=200, seed=6, batch_size=4)
    per = [reference_positional(loaded.model, loaded.tokenizer, [s], causal=loaded.info.is_decoder)[1]
           for s in sents]                                   # per-sentence {(layer, head): {offset: rows}}
    w = bootstrap_weights(len(sents), 200, seed=6)
    df = r.scores[r.scores["relation"] == "argmax_offset"]
    modal = {(x.layer, x.head): int(x.score) for x in df[df["metric"] == "offset"].itertuples()}
    shares = df[df["metric"] == "share"]
    assert len(shares) == loaded.info.num_layers * loaded.info.num_heads and shares["ci_low"].notna().all()
    assert df.loc[df["metric"] == "offset", "ci_low"].isna().all()
    for row in shares.itertuples():
        key = (row.layer, row.head)
        num = [p[key].get(modal[key], 0) for p in per]
        den = [sum(p[key].values()) for p in per]
        assert_interval(row, num, den, w, key)


# ---------------------------------------------------------------- planted heads: p-values

def test_tree_planted_head_beats_branching_and_a_branching_head_does_not():
    rng = np.random.default_rng(0)
    sents = []
    for _ in range(30):                     # mostly right-branching trees rooted at word 0
        n = int(rng.integers(5, 12))
        sents.append(syn.sentence([-1] + [d - 1 if rng.random() < 0.6 else int(rng.integers(0, d))
                                          for d in range(1, n)]))
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(len(sents), 2, t, t)
    for i, s in enumerate(sents):
        for d, h in enumerate(s.heads):
            if h >= 0:
                maps[i, 0, 1 + d, 1 + h] = 1.0          # head 0: the gold tree
                maps[i, 1, 1 + d, d] = 1.0              # head 1: the previous word (right-branching)
    scorer = TreeScorer(1, 2)
    df = scored(scorer, b, maps)
    heads = df[df["layer"].notna() & (df["direction"] == "dep_to_head")].set_index("head")
    right = df[(df["baseline"] == "right_branching") & (df["direction"] == "dep_to_head")].iloc[0]
    assert heads.loc[0, "score"] == 1.0 and heads.loc[0, "p_value"] < 1e-6
    assert heads.loc[1, "score"] == pytest.approx(right["score"]) and heads.loc[1, "p_value"] > 0.4
    assert right["ci_low"] < right["score"] < right["ci_high"]


def test_coref_planted_head_beats_the_baselines_and_a_nearest_mention_head_does_not():
    docs = stories(12, np.random.default_rng(3))
    lengths = [[len(s.words) for s in d.sentences] for d in docs]
    sents, wins, stats = make_windows(docs, lengths, 200, specials=2)        # one window per document
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(len(sents), 2, t, t)
    for i, (d, win) in enumerate(zip(docs, wins)):
        infos = mention_infos(d)
        for q in win.queries:
            maps[i, 0, 1 + q.head, 1 + q.antecedent_heads[-1]] = 1.0        # head 0: an antecedent
            nearest = max((a for a in infos if a.end < q.start), key=lambda a: (a.start, a.end))
            maps[i, 1, 1 + q.head, 1 + nearest.head] = 1.0                  # head 1: the nearest mention
    scorer = CorefScorer(1, 2, wins, stats)
    df = scored(scorer, b, maps)
    all_ = df[df["relation"] == "all"]
    heads = all_[all_["layer"].notna()].set_index("head")
    bases = all_[all_["layer"].isna()].set_index("baseline")
    assert heads.loc[0, "score"] == 1.0 and heads.loc[0, "p_value"] < 1e-3
    assert heads.loc[1, "score"] == pytest.approx(bases.loc["nearest", "score"])
    assert heads.loc[1, "p_value"] > 0.3
    assert bases["ci_low"].notna().all() and (bases["ci_low"] <= bases["score"]).all()


def test_gap_planted_head_beats_nearest_name_and_a_nearest_name_head_does_not():
    rows = gap_rows(60, np.random.default_rng(2))
    b = syn.batch([Sentence(words=ex.words) for ex in rows])
    t = b.input_ids.shape[1]
    maps = torch.zeros(len(rows), 2, t, t)
    for i, ex in enumerate(rows):
        p = 1 + ex.pronoun[0]
        ref = ex.a if ex.a_coref else ex.b
        maps[i, 0, p, 1 + ref[0]] = 1.0                                       # head 0: the referent
        da, db = (min(abs(ex.pronoun[0] - s[0]), abs(ex.pronoun[0] - s[1])) for s in (ex.a, ex.b))
        maps[i, 1, p, 1 + (ex.a if da < db else ex.b)[0]] = 1.0               # head 1: the nearer name
    scorer = GapScorer(1, 2, rows)
    df = scored(scorer, b, maps)
    heads = df[df["layer"].notna() & (df["relation"] == "all")].set_index("head")
    near = df[(df["baseline"] == "nearest") & (df["relation"] == "all")].iloc[0]
    assert heads.loc[0, "score"] == 1.0 and heads.loc[0, "p_value"] < 1e-3
    assert heads.loc[1, "score"] == pytest.approx(near["score"]) and heads.loc[1, "p_value"] > 0.3
    assert df.loc[df["relation"] != "all", "p_value"].isna().all()
    bias = df[(df["relation"] == "bias") & (df["head"] == 0)].iloc[0]
    assert (bias["score"], bias["ci_low"], bias["ci_high"]) == (1.0, 1.0, 1.0)   # right on every row


def test_pairs_planted_head_beats_the_baselines_and_a_nearest_candidate_head_does_not():
    pairs = list(load_bundled_pairs().pairs[:30])
    sents = pair_sentences(pairs)
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(len(sents), 2, t, t)
    for i in range(len(sents)):
        p = pairs[i // 2]
        maps[i, 0, 1 + p.pronoun, 1 + p.candidates[p.answers[i % 2]]] = 1.0   # head 0: always right
        maps[i, 1, 1 + p.pronoun, 1 + p.candidates[1]] = 1.0                 # head 1: always the nearer noun
    scorer = PairScorer(1, 2, pairs)
    df = scored(scorer, b, maps)
    heads = df[df["layer"].notna() & (df["relation"] == "pair")].set_index("head")
    assert heads.loc[0, "score"] == 1.0 and heads.loc[0, "p_value"] < 1e-6
    assert heads.loc[1, "score"] == 0.0 and heads.loc[1, "p_value"] == 1.0


# ---------------------------------------------------------------- switched off

def test_no_bootstrap_leaves_intervals_empty_and_a_merge_keeps_them(tiny_bert_loaded):
    pairs = list(load_bundled_pairs().pairs[:12])           # at least MIN_UNITS pairs
    rows = gap_rows(10, np.random.default_rng(0))
    for data, task in ((PairCorpus("p", tuple(pairs)), "pairs"), (GapCorpus("g", tuple(rows)), "gap")):
        df = headscope.analyze(tiny_bert_loaded, data, tasks=task, bootstrap=0).scores
        assert len(df) and df[["ci_low", "ci_high", "p_value", "q_value"]].isna().all().all(), task
    b = syn.batch(pair_sentences(pairs))
    t = b.input_ids.shape[1]
    maps = syn.normalise(torch.rand(len(pairs) * 2, 1, t, t), b)
    one, two = PairScorer(1, 1, pairs), PairScorer(1, 1, pairs, keep_units=False)
    for s in (one, two):
        syn.run(s, b, maps)
        s.intervals(n_boot=50)
    assert one.result()["ci_low"].notna().all() and two.result()["ci_low"].isna().all()
    merged = one.merge(PairScorer(1, 1, pairs))           # with a shard that scored nothing: the same intervals
    merged.intervals(n_boot=50)
    assert merged.keep_units and merged.result()["ci_low"].tolist() == one.result()["ci_low"].tolist()
    assert not one.merge(two).keep_units                   # a shard without units gives a merge without them


def test_unit_store_adds_repeated_units_and_widens_a_field_that_needs_it():
    from headscope.analysis.units import UnitStore

    store = UnitStore()
    store.add([3, 0, 3], n=np.array([[1, 2], [5, 5], [10, 20]], dtype=np.int32))   # unit 3 twice in one call
    store.add([3], n=np.array([[1, 1]], dtype=np.int32))
    np.testing.assert_array_equal(store.get("n"), [[5, 5], [12, 23]])
    store.put([0, 1], c=np.array([200, 3], dtype=np.uint8))
    store.put([100], c=np.array([1000], dtype=np.int16))                             # grows and widens
    assert store.arrays["c"].dtype == np.int16 and len(store) == 4
    np.testing.assert_array_equal(store.get("c"), [200, 3, 0, 1000])
