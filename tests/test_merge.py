"""Every scorer merges: two shards of one job (each scoring half of its inputs through the real capture) give,
merged, the table of one pass over all of them, intervals and p-values included."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402

import headscope  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402
from headscope.types import Corpus, GapCorpus, PairCorpus  # noqa: E402


def _score(loaded, job, keep) -> None:
    """Run ``job``'s scorers over the inputs whose index passes ``keep`` (a shard)."""
    from headscope.capture.alignment import encode_sentences
    from headscope.analysis.base import LayerView
    from headscope.capture.session import capture

    encoded = job.encoded or encode_sentences(loaded.tokenizer, job.sentences, max_length=loaded.info.max_length)
    encoded = [e for e in encoded if keep(e.index) and len(e) <= loaded.info.max_length]

    def on_layer(layer, weights, batch):
        for s in job.scorers:
            s.update(LayerView(layer, weights, batch))

    capture(loaded, job.sentences, encoded, on_layer, batch_size=4,
            on_batch_start=lambda b: [s.start_batch(b) for s in job.scorers],
            on_batch_end=lambda b: [s.end_batch() for s in job.scorers],
            row_stats=any(getattr(s, "wants_row_stats", False) for s in job.scorers))


def _sources(sample):
    from headscope.analysis.induction import RepeatedTokens
    from headscope.datasets.pairs import load_bundled_pairs

    sources = {"syntax": Corpus("s", sample.sentences[:24]), "tree": Corpus("s", sample.sentences[:24]),
               "positional": Corpus("s", sample.sentences[:24]), "final": Corpus("s", sample.sentences[:24]),
               "pairs": PairCorpus("p", load_bundled_pairs().pairs[:16]),
               "induction": RepeatedTokens(count=16, length=8, seed=0)}
    gap = SHARED_DATA / "gap_coreference" / "gap-development.tsv"
    if gap.is_file():
        sources["gap"] = GapCorpus("g", headscope.load_data(gap, limit=24).examples)
    litbank = SHARED_DATA / "litbank_coref_sample"
    if litbank.is_dir():
        sources["coref"] = headscope.load_data(litbank, limit=10)   # documents are the units: MIN_UNITS of them
    return sources


TASKS = ["syntax", "tree", "positional", "final", "pairs", "induction", "gap", "coref"]


@pytest.mark.parametrize("task", TASKS)
def test_two_shards_merged_equal_one_pass_intervals_included(task, tiny_bert_loaded, sample):
    from headscope.run.jobs import make_job as _make_job

    sources = _sources(sample)
    if task not in sources:
        pytest.skip(f"needs ../shared/data for {task}")
    source = sources[task]

    def job():
        return _make_job(source, [task], tiny_bert_loaded, max_sentences=None, window=3, bos_id=None)

    whole, first, second = job(), job(), job()
    _score(tiny_bert_loaded, whole, lambda i: True)
    if task == "pairs":   # a pair's two sentences must land in one shard
        _score(tiny_bert_loaded, first, lambda i: i // 2 % 2 == 0)
        _score(tiny_bert_loaded, second, lambda i: i // 2 % 2 == 1)
    else:
        _score(tiny_bert_loaded, first, lambda i: i % 2 == 0)
        _score(tiny_bert_loaded, second, lambda i: i % 2 == 1)
    merged = first.scorers[0].merge(second.scorers[0])
    one = whole.scorers[0]
    for s in (merged, one, first.scorers[0]):
        s.intervals(n_boot=200, seed=1)
    want, got, half = one.result(), merged.result(), first.scorers[0].result()
    key = ["relation", "direction", "metric", "baseline", "layer", "head"]
    want, got, half = (t.sort_values(key, na_position="first").reset_index(drop=True) for t in (want, got, half))
    assert len(want) and len(got) == len(want)
    for col in ("score", "ci_low", "ci_high", "p_value", "n"):
        a, b = want[col].to_numpy(dtype=float), got[col].to_numpy(dtype=float)
        # float32 sums over batches of other sentences: equal to rounding
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True), (task, col)
    assert want["ci_low"].notna().any(), task                         # the intervals were there to compare
    both = want.fillna({"direction": "", "baseline": ""}).merge(half.fillna({"direction": "", "baseline": ""}),
                                                                   on=key, suffixes=("", "_half"))
    assert not np.allclose(both["score"].to_numpy(dtype=float), both["score_half"].to_numpy(dtype=float),
                           equal_nan=True), task                       # one shard alone is not the whole


def test_scorers_of_different_inputs_do_not_merge(tiny_bert_loaded):
    from headscope.analysis.pairs import PairScorer
    from headscope.datasets.pairs import load_bundled_pairs

    pairs = load_bundled_pairs().pairs
    with pytest.raises(HeadscopeError, match="cannot merge scorers of different pairs"):
        PairScorer(1, 1, pairs[:4]).merge(PairScorer(1, 1, pairs[4:8]))


def _to_disk_and_back(state: dict, path: Path) -> dict:
    """``state`` through an .npz file (plain arrays only: no pickle allowed on the way back)."""
    flat = {k: v for k, v in state.items() if k != "units"}
    flat.update({f"units/{k}": v for k, v in (state.get("units") or {}).items()})
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
    with np.load(path, allow_pickle=False) as f:
        back = {k: f[k] for k in f.files}
    units = {k.split("/", 1)[1]: back.pop(k) for k in list(back) if k.startswith("units/")}
    back["task"] = str(back["task"])
    return {**back, **({"units": units} if units else {})}


@pytest.mark.parametrize("task", TASKS)
def test_state_goes_to_disk_and_back_into_a_fresh_scorer(task, tiny_bert_loaded, sample, tmp_path):
    """A shard's state, written as plain arrays and read into a scorer built again for the same job, merges with
    the other shard into the one-pass table: what a resumed or distributed run does."""
    from headscope.run.jobs import make_job as _make_job

    sources = _sources(sample)
    if task not in sources:
        pytest.skip(f"needs ../shared/data for {task}")

    def job():
        return _make_job(sources[task], [task], tiny_bert_loaded, max_sentences=None, window=3, bos_id=None)

    whole, first, second = job(), job(), job()
    _score(tiny_bert_loaded, whole, lambda i: True)
    pair = 2 if task == "pairs" else 1
    _score(tiny_bert_loaded, first, lambda i: i // pair % 2 == 0)
    _score(tiny_bert_loaded, second, lambda i: i // pair % 2 == 1)
    restored = job().scorers[0].from_state(_to_disk_and_back(first.scorers[0].state(), tmp_path / "shard.npz"))
    merged = restored.merge(second.scorers[0])
    for s in (merged, whole.scorers[0]):
        s.intervals(n_boot=100, seed=2)
    key = ["relation", "direction", "metric", "baseline", "layer", "head"]
    want, got = (s.result().sort_values(key, na_position="first").reset_index(drop=True)
                 for s in (whole.scorers[0], merged))
    for col in ("score", "ci_low", "ci_high", "n"):
        assert np.allclose(want[col].to_numpy(dtype=float), got[col].to_numpy(dtype=float), rtol=1e-5, atol=1e-6,
                           equal_nan=True), (task, col)
    with pytest.raises(HeadscopeError, match="cannot go into"):
        job().scorers[0].from_state({**first.scorers[0].state(), "task": "other"})
