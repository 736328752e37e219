"""Coreference scorers: rule baselines on hand-made documents, planted heads, GAP, pairs, the reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402
from reference import reference_coref  # noqa: E402

from headscope.analysis.coref import CorefScorer, make_windows  # noqa: E402
from headscope.analysis.gap import GapScorer  # noqa: E402
from headscope.analysis.mentions import mention_infos  # noqa: E402
from headscope.analysis.pairs import PairScorer, pair_sentences  # noqa: E402
from headscope.types import Document, GapExample, Mention, MinimalPair, Sentence  # noqa: E402


def doc(sentences: list[str], mentions: list[tuple[int, int, str]], doc_id="d") -> Document:
    return Document(doc_id, tuple(Sentence(words=tuple(s.split())) for s in sentences),
                    tuple(sorted((Mention(a, b, c) for a, b, c in mentions), key=lambda m: (m.start, m.end))))


# John saw Mary . | He waved at her . | She smiled .
#  0    1   2   3   4   5     6  7  8   9    10    11
STORY = doc(["John saw Mary .", "He waved at her .", "She smiled ."],
            [(0, 0, "j"), (2, 2, "m"), (4, 4, "j"), (7, 7, "m"), (9, 9, "m")])


def windows_of(docs, max_tokens=100):
    lengths = [[len(s.words) for s in d.sentences] for d in docs]
    return make_windows(docs, lengths, max_tokens, specials=2)


def baseline_scores(docs):
    sents, wins, stats = windows_of(docs)
    scorer = CorefScorer(1, 1, wins, stats)
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    syn.run(scorer, b, syn.normalise(torch.ones(len(sents), 1, t, t), b))
    df = scorer.result()
    return {(r.baseline, r.relation): r.score for r in df[df["baseline"].notna()].itertuples()}, stats


def test_mention_heads_and_types_without_trees():
    infos = mention_infos(doc(["The old king of France died .", "He was buried ."],
                              [(0, 4, "k"), (7, 7, "k")]))
    assert infos[0].head == 4 and infos[0].head_rule == "last"   # METRICS: last word without a tree
    assert infos[0].type == "proper"                                # "France": capitalised, not sentence-initial
    assert infos[1].type == "pronoun" and infos[1].gender == "masc"


def test_mention_heads_from_the_tree():
    s = Sentence(words=("The", "old", "king", "of", "France", "died", "."), heads=(2, 2, 5, 4, 2, -1, 5),
                 relations=("det", "amod", "nsubj", "case", "nmod", "root", "punct"),
                 upos=("DET", "ADJ", "NOUN", "ADP", "PROPN", "VERB", "PUNCT"))
    infos = mention_infos(Document("d", (s,), (Mention(0, 4, "k"),)))
    assert (infos[0].head, infos[0].head_rule, infos[0].type) == (2, "tree", "nominal")


def test_rule_baselines_on_a_hand_made_story():
    scores, stats = baseline_scores([STORY])
    assert stats.with_antecedent == 3 and stats.scored == 3
    # He -> nearest is Mary (wrong); her -> nearest He (wrong); She -> nearest her (right)
    assert scores[("nearest", "all")] == pytest.approx(1 / 3)
    # no earlier mention shares a head word with He, her or She
    assert scores[("head_match", "all")] == 0.0
    # rules: He agrees with Mary (unknown gender) -> wrong; her skips He (masc) -> Mary, right; She -> her, right
    assert scores[("rules", "all")] == pytest.approx(2 / 3)
    assert scores[("rules", "pronoun")] == pytest.approx(2 / 3)


def test_head_match_and_exact_string():
    d = doc(["The dog barked at the cat .", "The dog ran ."], [(0, 1, "d"), (4, 5, "c"), (7, 8, "d")])
    scores, _ = baseline_scores([d])
    assert scores[("nearest", "all")] == 0.0          # the cat is nearer
    assert scores[("head_match", "all")] == 1.0
    assert scores[("rules", "nominal")] == 1.0


def test_windows_drop_mentions_whose_antecedents_are_earlier():
    d = doc(["John slept .", "Then he woke ."], [(0, 0, "j"), (4, 4, "j")])
    lengths = [[len(s.words) for s in d.sentences]]
    _, wins, stats = make_windows([d], lengths, max_tokens=6, specials=2)   # one sentence per window
    assert len(wins) == 2 and stats.dropped_out_of_window == 1 and stats.scored == 0
    _, wins, stats = make_windows([d], lengths, max_tokens=20, specials=2)
    assert len(wins) == 1 and stats.scored == 1


def test_planted_head_resolves_every_mention():
    sents, wins, stats = windows_of([STORY])
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(1, 2, t, t)
    gold = {4: 0, 7: 2, 9: 7}                         # mention head -> an antecedent head (window coords)
    for q, a in gold.items():
        maps[0, 0, 1 + q, 1 + a] = 1.0
        maps[0, 1, 1 + q, 1 + q - 1] = 1.0             # head 1: previous word
    df = syn.run(CorefScorer(1, 2, wins, stats), b, syn.normalise(maps, b))
    heads = df[df["baseline"].isna() & (df["relation"] == "all")].set_index("head")["score"]
    assert heads[0] == 1.0
    assert heads[1] == 0.0                             # previous words are never antecedent heads here


def test_coref_matches_reference_on_tiny_models(tiny):
    import headscope
    from headscope.types import DocumentCorpus

    _, loaded = tiny
    docs = [STORY, doc(["The dog barked at the cat .", "The dog ran after it ."],
                       [(0, 1, "d"), (4, 5, "c"), (7, 8, "d"), (11, 11, "c")], "d2")]
    result = headscope.analyze(loaded, DocumentCorpus("toy", tuple(docs)), tasks="coref")
    lengths = [[len(loaded.tokenizer(list(s.words), is_split_into_words=True, add_special_tokens=False)["input_ids"])
                for s in d.sentences] for d in docs]
    sents, wins, _ = make_windows(docs, lengths, loaded.info.max_length,
                                  len(loaded.tokenizer(["a"], is_split_into_words=True)["input_ids"]) - 1)
    correct, total = reference_coref(loaded.model, loaded.tokenizer, sents, wins)
    heads = result.scores[result.scores["baseline"].isna()]
    assert len(heads) == loaded.info.num_layers * loaded.info.num_heads * len(total)
    for r in heads.itertuples():
        assert r.n == total[r.relation]
        assert r.score == pytest.approx(correct[(r.layer, r.head, r.relation)] / total[r.relation], abs=1e-6)


def test_gap_accuracy_by_gender_and_bias():
    # "Ann met Bob and she smiled ." (she = Ann, feminine); "Tom met Ann and he smiled ." (he = Tom, masculine)
    exs = [GapExample("g1", tuple("Ann met Bob and she smiled .".split()), (4, 4), (0, 0), (2, 2), True, False,
                      "feminine"),
           GapExample("g2", tuple("Tom met Ann and he smiled .".split()), (4, 4), (0, 0), (2, 2), True, False,
                      "masculine"),
           GapExample("g3", tuple("Tom met Ann and he smiled .".split()), (4, 4), (0, 0), (2, 2), False, False,
                      "masculine")]                    # neither: not scored
    sents = [Sentence(words=e.words) for e in exs]
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(3, 2, t, t)
    maps[:, 0, 5, 1] = 1.0                             # head 0: pronoun -> A (right in both)
    maps[0, 1, 5, 1] = 1.0                             # head 1: right for the feminine row only
    maps[1:, 1, 5, 3] = 1.0
    df = syn.run(GapScorer(1, 2, exs), b, syn.normalise(maps, b))
    heads = df[df["baseline"].isna()]
    val = {(r.head, r.relation): r.score for r in heads.itertuples()}
    assert val[(0, "all")] == 1.0 and val[(0, "bias")] == 1.0
    assert val[(1, "feminine")] == 1.0 and val[(1, "masculine")] == 0.0 and (1, "bias") not in val
    assert int(heads["n"].max()) == 2
    near = df[df["baseline"] == "nearest"].set_index("relation")["score"]
    assert near["all"] == 0.0                          # Bob / Ann (B) is nearer to the pronoun in both rows


def test_pairs_need_both_sentences_right():
    pairs = [MinimalPair("p1", (tuple("The cup fell on the plate and it broke".split()),
                                tuple("The cup fell on the plate and it shattered".split())), 7, (1, 5), (0, 1)),
             MinimalPair("p2", (tuple("Ann thanked Kim because she helped".split()),
                                tuple("Ann thanked Kim because she asked".split())), 4, (0, 2), (1, 0))]
    sents = pair_sentences(pairs)
    b = syn.batch(sents)
    t = b.input_ids.shape[1]
    maps = torch.zeros(4, 3, t, t)
    for i, s in enumerate(sents):
        p = pairs[i // 2]
        right = p.candidates[p.answers[i % 2]]
        maps[i, 0, 1 + p.pronoun, 1 + right] = 1.0     # head 0: always right
        maps[i, 1, 1 + p.pronoun, 1 + p.candidates[1]] = 1.0   # head 1: always the nearer candidate
        maps[i, 2, 1 + p.pronoun, 1 + right] = 1.0 if i != 1 else 0.0  # head 2: wrong once (pair 1, b)
    df = syn.run(PairScorer(1, 3, pairs), b, syn.normalise(maps, b))
    val = {(r.head, r.relation): r.score for r in df[df["baseline"].isna()].itertuples()}
    assert val[(0, "pair")] == 1.0
    assert val[(1, "pair")] == 0.0 and val[(1, "sentence")] == 0.5
    assert val[(2, "pair")] == 0.5
    base = df[df["baseline"].notna() & (df["relation"] == "pair")].set_index("baseline")["score"]
    assert base["nearest_candidate"] == 0.0 and base["first_candidate"] == 0.0
