"""Induction task: generated [BOS] r r sequences, planted heads with known scores, the reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference import reference_induction  # noqa: E402

import headscope  # noqa: E402
from headscope.capture.alignment import collate  # noqa: E402
from headscope.analysis.base import LayerView  # noqa: E402
from headscope.analysis.induction import InductionScorer, encode_sequences, make_sequences  # noqa: E402


def test_sequences_repeat_distinct_ordinary_tokens(tiny):
    _, loaded = tiny
    seqs = make_sequences(loaded.tokenizer, count=5, length=10, seed=3, bos=True)
    special = set(loaded.tokenizer.all_special_ids)
    for s in seqs:
        r = s.input_ids[s.bos:s.bos + 10]
        assert s.input_ids[s.bos + 10:] == r and len(set(r)) == 10 and not special & set(r)
    again = make_sequences(loaded.tokenizer, count=5, length=10, seed=3, bos=True)
    assert [s.input_ids for s in again] == [s.input_ids for s in seqs]      # seeded


@pytest.mark.parametrize("bos", [True, False])
def test_planted_heads_score_exactly_one(tiny_bert_loaded, bos):
    seqs = make_sequences(tiny_bert_loaded.tokenizer, count=3, length=6, seed=0, bos=bos)
    sentences, encoded = encode_sequences(seqs)
    b = collate(sentences, encoded, pad_id=0, device="cpu", causal=True)
    n = b.input_ids.shape[1]
    maps = torch.zeros(3, 3, n, n)
    o, t = int(bos), 6
    for i in range(n):
        maps[:, 2, i, max(i - 1, 0)] = 1.0                      # previous-token head
        k = i - o - t
        if 0 <= k < t:
            maps[:, 0, i, o + k + 1] = 1.0                      # induction head
            maps[:, 1, i, o + k] = 1.0                          # duplicate-token head
        else:
            maps[:, 0, i, i] = maps[:, 1, i, i] = 1.0
    scorer = InductionScorer(1, 3, seqs)
    scorer.start_batch(b)
    scorer.update(LayerView(0, maps, b))
    scorer.end_batch()
    df = scorer.result()
    val = {(r.head, r.relation): r.score for r in df.itertuples()}
    assert val[(0, "induction")] == 1.0 and val[(1, "duplicate")] == 1.0 and val[(2, "previous")] == 1.0
    assert val[(0, "duplicate")] == 0.0 and val[(1, "induction")] == 0.0
    n_rows = {r.relation: r.n for r in df.itertuples()}
    assert n_rows == {"induction": 3 * t, "duplicate": 3 * t, "previous": 3 * (o + 2 * t - 1)}


def test_matches_reference_on_tiny_models(tiny):
    _, loaded = tiny
    result = headscope.analyze(loaded, None, tasks="induction", induction_count=6, induction_length=8,
                               batch_size=4)
    (d,) = result.meta.datasets
    seqs = make_sequences(loaded.tokenizer, count=6, length=8, seed=0, bos=loaded.info.is_decoder)
    assert d["sequences"] == 6 and d["bos"] == bool(seqs[0].bos)
    ref = reference_induction(loaded.model, seqs)
    df = result.scores
    assert len(df) == 3 * loaded.info.num_layers * loaded.info.num_heads
    for r in df.itertuples():
        assert r.score == pytest.approx(ref[(r.layer, r.head, r.relation)], abs=1e-6)


def test_cli_induction_options(tiny_bert_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from headscope.cli.app import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--model", str(tiny_bert_dir), "--tasks", "induction", "--induction-count",
                                   "3", "--induction-length", "5", "--seed", "7", "--no-figures", "-q", "--out",
                                   str(out)])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["seed"] == 7 and run["config"]["induction_length"] == 5
    assert run["datasets"][0]["sequences"] == 3 and run["datasets"][0]["bos"] is False   # an encoder: r r
    assert "### Induction, duplicate-token and previous-token heads" in (out / "report.md").read_text()
