"""The final-word task (the task added through the registry): synthetic heads with known masses, row blocks,
merging, and a real run that reports it everywhere the registry says."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402

import headscope  # noqa: E402
from headscope.analysis.base import LayerView  # noqa: E402
from headscope.analysis.final import FinalWordScorer  # noqa: E402


def _maps(b):
    """Head 0 puts all of every row on the sentence's last word token; head 1 is uniform over real tokens."""
    t = b.input_ids.shape[1]
    last = torch.zeros(len(b.encoded), 1, t, t)
    for i, (s, e) in enumerate(zip(b.sentences, b.encoded)):
        last[i, 0, :, e.word_ids.index(len(s.words) - 1)] = 1.0
    return syn.normalise(torch.cat([last, torch.ones_like(last)], 1), b)


def test_known_masses_on_the_final_word():
    sents = [syn.sentence([-1, 0, 0, 0], words=["a", "b", "c", "."]), syn.sentence([-1, 0], words=["x", "!"])]
    b = syn.batch(sents)                                  # [CLS] words [SEP]: 6 and 4 real tokens
    df = syn.run(FinalWordScorer(1, 2), b, _maps(b))
    got = {int(r.head): r.score for r in df.itertuples()}
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx((6 * 1 / 6 + 4 * 1 / 4) / 10)     # one final token among n real keys
    assert set(df["n"]) == {10} and set(df["relation"]) == {"final_word"}


def test_row_blocks_and_merged_halves_equal_one_pass():
    sents = [syn.sentence([-1] + [0] * k, words=[f"w{j}" for j in range(k)] + ["."]) for k in (3, 7, 5, 2)]
    b = syn.batch(sents)
    maps = syn.normalise(torch.rand(len(sents), 3, b.input_ids.shape[1], b.input_ids.shape[1]), b)
    whole = syn.run(FinalWordScorer(2, 3), b, maps, layers=2)
    blocked = FinalWordScorer(2, 3)
    blocked.start_batch(b)
    for layer in range(2):
        for r0 in range(0, maps.shape[2], 3):                          # rows in blocks of 3
            rows = maps[:, :, r0:r0 + 3]
            blocked.update(LayerView(layer, rows, replace(b, row_start=r0)))
    blocked.end_batch()
    halves = []
    for part in (slice(0, 2), slice(2, 4)):
        sub = syn.batch(sents[part])
        t = sub.input_ids.shape[1]
        halves.append(syn.run(FinalWordScorer(2, 3), sub, maps[part][:, :, :t, :t], layers=2))
    a, c = FinalWordScorer(2, 3), FinalWordScorer(2, 3)
    for scorer, part in ((a, slice(0, 2)), (c, slice(2, 4))):
        sub = syn.batch(sents[part])
        t = sub.input_ids.shape[1]
        syn.run(scorer, sub, maps[part][:, :, :t, :t], layers=2)
    merged = a.merge(c).result()
    for other in (blocked.result(), merged):
        assert other["score"].to_numpy() == pytest.approx(whole["score"].to_numpy(), abs=1e-6)
    assert whole["score"].to_numpy() != pytest.approx(halves[0]["score"].to_numpy(), abs=1e-6)


def test_the_registered_task_runs_and_is_reported(tiny_bert_loaded, tmp_path):
    result = headscope.analyze(tiny_bert_loaded, None, tasks="final", max_sentences=20, bootstrap=50)
    heads = result.scores[result.scores["task"] == "final"]
    assert len(heads) == 2 * 4 and heads["ci_low"].notna().all() and (heads["score"] > 0).all()
    result.save(tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "final_word.png").is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    best = heads.loc[heads["score"].idxmax()]
    assert f"L{int(best['layer'])}.H{int(best['head'])}" in report and "final_word" in report
