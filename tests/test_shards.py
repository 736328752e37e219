"""Shards without a launcher: `run --shard I/N` writes scorer states, `merge` gives the run one process gives
(counts exactly, sums and intervals to 1e-6), and every way the shards can disagree fails in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from headscope.config import RunConfig
from headscope.errors import HeadscopeError
from headscope.run.analyze import analyze
from headscope.run.shards import analyze_shard, merge_shards, parse_shard, read_shard, write_shard

EWT_DEV = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
LITBANK = SHARED_DATA / "litbank_coref_sample"
GAP = SHARED_DATA / "gap_coreference" / "gap-development.tsv"
KEYS = ["model", "dataset", "task", "relation", "direction", "metric", "baseline", "layer", "head"]


def _same_scores(one, merged):
    a, b = one.scores.reset_index(drop=True), merged.scores.reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert a[KEYS].astype(str).equals(b[KEYS].astype(str))            # the same rows in the same order
    assert (a["n"].astype(float).values == b["n"].astype(float).values).all()     # counts exactly
    for col in ("score", "ci_low", "ci_high", "p_value", "q_value"):
        x, y = a[col].astype(float).to_numpy(), b[col].astype(float).to_numpy()
        assert (np.isnan(x) == np.isnan(y)).all(), col
        ok = ~np.isnan(x)
        assert np.allclose(x[ok], y[ok], rtol=1e-6, atol=1e-6), col     # float32 sums in another order
    keep = ["layer", "head", "role", "dataset"]
    assert one.roles[keep].astype(str).equals(merged.roles[keep].astype(str))


def _shards(model, data, config, n, folder):
    return [write_shard(analyze_shard(model, data, config=config, shard=(i, n)), folder / f"part{i}", model=model,
                        data=data, select_on=None, config=config) for i in range(n)]


def test_three_shards_merged_equal_one_process(tiny_bert_dir, tmp_path):
    model = str(tiny_bert_dir)
    config = RunConfig(tasks=("syntax", "positional", "pairs", "induction"), bootstrap=200, induction_count=9,
                       max_sentences=30)
    one = analyze(model, None, config=config)
    parts = _shards(model, None, config, 3, tmp_path)
    sizes = [sum(d["scored"] for d in read_shard(p)[0]["datasets"]) for p in parts]
    assert all(s > 0 for s in sizes) and sum(sizes) == sum(d["scored"] for d in one.meta.datasets)
    merged = merge_shards(parts)
    _same_scores(one, merged)
    assert [d["scored"] for d in merged.meta.datasets] == [d["scored"] for d in one.meta.datasets]
    assert merged.meta.merged["shards"] == 3


@pytest.mark.skipif(not (EWT_DEV.is_file() and LITBANK.is_dir() and GAP.is_file()),
                    reason=f"needs ../shared/data ({SHARED_DATA} not found)")
def test_shards_of_treebank_coreference_and_gap_data_merge_to_one_process(tiny_bert_dir, tmp_path):
    """Coreference documents are read in windows, and a document's windows land in different shards: their
    per-document rows add up at the merge."""
    model = str(tiny_bert_dir)
    data = [EWT_DEV, LITBANK, GAP]
    config = RunConfig(tasks=("syntax", "positional", "coref", "gap"), bootstrap=100, max_sentences=40)
    one = analyze(model, data, config=config)
    merged = merge_shards(_shards(model, data, config, 2, tmp_path))
    _same_scores(one, merged)


def test_cli_shards_then_merge_write_the_run_of_one_process(tiny_bert_dir, tmp_path):
    from test_cli import invoke

    common = ["--model", tiny_bert_dir, "--max-sentences", 16, "--bootstrap", 100, "--no-figures"]
    for i in range(2):
        done = invoke("run", *common, "--shard", f"{i}/2", "--out", tmp_path / f"p{i}")
        assert done.exit_code == 0, done.output
        assert {p.name for p in (tmp_path / f"p{i}").iterdir()} >= {"shard.json", "states.npz"}
    done = invoke("merge", tmp_path / "p0", tmp_path / "p1", "--out", tmp_path / "merged", "--no-figures")
    assert done.exit_code == 0, done.output
    assert invoke("run", *common, "--out", tmp_path / "one").exit_code == 0
    a, b = pd.read_csv(tmp_path / "one" / "scores.csv"), pd.read_csv(tmp_path / "merged" / "scores.csv")
    assert a["n"].equals(b["n"]) and np.allclose(a["score"], b["score"], rtol=1e-6, atol=1e-6, equal_nan=True)
    run = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert run["merged"]["shards"] == 2 and "headscope merge" in run["command"]


def test_shards_that_disagree_or_are_broken_fail_in_one_line(tiny_bert_dir, tmp_path):
    from test_cli import invoke
    from test_run_safety import one_line_error

    model = str(tiny_bert_dir)
    config = RunConfig(tasks=("positional",), bootstrap=0, max_sentences=8)
    p0, p1 = _shards(model, None, config, 2, tmp_path)
    other = RunConfig(tasks=("positional",), bootstrap=0, max_sentences=8, window=5)
    odd = write_shard(analyze_shard(model, None, config=other, shard=(1, 2)), tmp_path / "odd", model=model, data=None,
                      select_on=None, config=other)
    with pytest.raises(HeadscopeError, match=r"settings differ .* in window \(3 against 5\)"):
        merge_shards([p0, odd])
    with pytest.raises(HeadscopeError, match="shard 1/2 is missing"):
        merge_shards([p0])
    with pytest.raises(HeadscopeError, match="given twice"):
        merge_shards([p0, p0, p1])
    three = write_shard(analyze_shard(model, None, config=config, shard=(2, 3)), tmp_path / "three", model=model,
                        data=None, select_on=None, config=config)
    with pytest.raises(HeadscopeError, match="split differently"):
        merge_shards([p0, p1, three])
    manifest = (p1 / "shard.json").read_text()
    (p1 / "shard.json").write_text(manifest[:40] + "\n{{")
    with pytest.raises(HeadscopeError, match=r"shard.json:\d+: not valid JSON"):
        merge_shards([p0, p1])
    (p1 / "shard.json").write_text(manifest)
    arrays = dict(np.load(p1 / "states.npz"))
    arrays.pop(next(iter(arrays)))
    np.savez(p1 / "states.npz", **arrays)
    with pytest.raises(HeadscopeError, match="are missing; write the shard again"):
        merge_shards([p0, p1])
    (p1 / "states.npz").write_bytes(b"not a zip")
    with pytest.raises(HeadscopeError, match="not readable"):
        merge_shards([p0, p1])
    with pytest.raises(HeadscopeError, match="not a shard"):
        merge_shards([p0, tmp_path])
    for bad in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(HeadscopeError, match="I/N"):
            parse_shard(bad)
    one_line_error(invoke("run", "--model", model, "--shard", "3/2", "--out", tmp_path / "x"), "I/N")
    one_line_error(invoke("run", "--model", model, "--shard", "0/2", "--ablate", "zero", "--out", tmp_path / "x"),
                   "--ablate does not run on a shard")
    one_line_error(invoke("merge", p0, "--out", tmp_path / "x"), "missing")
    assert not (tmp_path / "x").exists()


def test_a_shard_with_no_inputs_still_merges(tiny_bert_dir, tmp_path):
    model = str(tiny_bert_dir)
    config = RunConfig(tasks=("positional",), bootstrap=50, max_sentences=2)
    parts = _shards(model, None, config, 3, tmp_path)                 # two sentences, three shards
    assert [read_shard(p)[0]["datasets"][0]["scored"] for p in parts] == [1, 1, 0]
    _same_scores(analyze(model, None, config=config), merge_shards(parts))
