"""Which heads need the whole context: the window search, retrieval scores against eager attention maps, the KV
cache arithmetic, the report, the CLI and its errors, and (with smollm2) retrieval heads on real text."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import needs_smollm2, tiny_llama
from headscope.interventions.context import context_needs, kv_cache
from headscope.interventions.haystack import (long_documents, make_needles, needle_batches, retrieval_hits,
                                              strongest_keys, text_batches, token_stream)
from headscope.interventions.windows import WindowTest, Windows, parse_windows, windowability
from headscope.errors import HeadscopeError
from headscope.models.loading import load_model
from reference import eager_forward


@pytest.fixture(scope="module")
def llama():
    model, tok = tiny_llama()
    return load_model(model, tokenizer=tok, name="tiny-llama")


def _plain_loss(model, docs):
    """Mean next-token loss of the model as users run it (no headscope session), over every target."""
    with torch.no_grad():
        logits = model(input_ids=docs).logits[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), docs[:, 1:].reshape(-1)))


def test_the_window_search_stops_at_the_first_window_within_the_tolerance(llama):
    name, stream = token_stream(llama, None)
    docs = long_documents(llama, stream, name, tokens=96, count=2)
    assert docs.shape == (2, 96) and int(docs[0, 0]) == llama.tokenizer.bos_token_id
    heads = [(layer, head) for layer in range(2) for head in range(4)]
    text = WindowTest(llama, text_batches(docs, "loss"), "loss")
    assert text.base == pytest.approx(_plain_loss(llama.model, docs), rel=1e-5)
    table = windowability(text, name, "text", windows=(2, 8, 32), tolerance=0.002, heads=heads)
    assert (table["base"] == text.base).all() and (table["inputs"] == "text").all()
    for (layer, head), rows in table.groupby(["layer", "head"]):
        assert list(rows["window"]) == [2, 8, 32][:len(rows)]                 # smallest first
        assert not rows["within"].iloc[:-1].any()                             # none before the last passed
        assert rows["within"].iloc[-1] or len(rows) == 3                      # it stopped at a pass, or ran out
        change = (rows["ablated"] - rows["base"]) / rows["base"]
        assert (change - rows["change"]).abs().max() < 1e-12
        assert list(rows["within"]) == list(rows["change"] <= 0.002)
    assert (table.groupby(["layer", "head"]).size() > 1).any()               # some head needed a wider window
    loose = windowability(text, name, "text", windows=(2, 8), tolerance=0.9, heads=heads[:3])
    assert list(loose["window"]) == [2, 2, 2] and loose["within"].all()


def test_strongest_keys_equal_the_eager_maps_read_in_row_blocks(llama):
    name, stream = token_stream(llama, None)
    needles = make_needles(llama, stream, name, count=3, length=6, tokens=80, seed=1)
    ids = needles.input_ids
    assert ids.shape == (3, 80)
    q, src = needles.rows(), needles.sources()
    for i in range(3):                                              # the copy at the end repeats the needle
        first = needles.first[i]
        assert torch.equal(ids[i, first:first + 6], ids[i, needles.second:needles.second + 6])
        assert all(int(ids[i, s]) == int(ids[i, r + 1]) for r, s in zip(q.tolist(), src[i].tolist()))
    assert len(set(needles.first)) == 3                             # each needle at a depth of its own
    top, copied = strongest_keys(llama, needles, attention_memory=8 * 4 * 4 * 80 * 2)  # 8-row blocks
    out = eager_forward(llama.model, input_ids=ids)
    maps = torch.stack(out.attentions)                              # [layer, needles, head, T, T]
    torch.testing.assert_close(top, maps[:, :, :, q].argmax(-1), rtol=0, atol=0)
    assert torch.equal(copied, out.logits[:, q].argmax(-1) == ids[:, q + 1])


def test_the_needle_loss_reads_the_copys_predicted_tokens(llama):
    name, stream = token_stream(llama, None)
    needles = make_needles(llama, stream, name, count=3, length=6, tokens=80, seed=1)
    batches = needle_batches(needles, 2)
    assert len(batches) == 2
    targets = needles.rows() + 1
    for b in batches:
        assert b["scored"][0].nonzero()[:, 0].tolist() == targets.tolist()
    with torch.no_grad():
        logits = llama.model(input_ids=needles.input_ids[:2]).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, targets - 1].transpose(1, 2), needles.input_ids[:2, targets])
    assert WindowTest(llama, batches, "loss").base == pytest.approx(float(nll), rel=1e-5)


def test_windows_of_several_heads_each_keep_their_own_window(llama):
    """The joint edit windows each head as its own one-head edit would, and leaves the other heads alone."""
    from headscope.interventions.edits import HeadEdit
    from headscope.interventions.methods import Method
    from headscope.capture.attention import Session, session

    name, stream = token_stream(llama, None)
    ids = long_documents(llama, stream, name, tokens=48, count=1)
    seen = {}
    joint = Windows({(1, 0): 3, (1, 3): 9})

    def keep(layer, out, inputs):
        if layer == 1:
            seen.update(before=out.clone(), after=joint(layer, out, inputs),
                        h0=HeadEdit({1: [0]}, Method("window", 3))(layer, out, inputs),
                        h3=HeadEdit({1: [3]}, Method("window", 9))(layer, out, inputs))
        return out

    with torch.no_grad(), session(Session(modules=list(llama.attention_modules), edit=keep)):
        llama.model(input_ids=ids)
    assert torch.equal(seen["after"][:, :, 0], seen["h0"][:, :, 0])
    assert torch.equal(seen["after"][:, :, 3], seen["h3"][:, :, 3])
    assert torch.equal(seen["after"][:, :, 1:3], seen["before"][:, :, 1:3])
    assert not torch.equal(seen["after"][:, :, 0], seen["before"][:, :, 0])


def test_retrieval_hits_count_copied_rows_whose_strongest_key_is_the_source():
    # 1 layer, 2 needles, 2 heads, 3 rows. Sources: needle 0 at 10, 11, 12; needle 1 at 20, 21, 22.
    sources = torch.tensor([[10, 11, 12], [20, 21, 22]])
    copied = torch.tensor([[True, True, False], [True, False, True]])       # 4 copied rows
    top = torch.tensor([[[[10, 11, 12], [10, 0, 12]],                         # needle 0: head 0 all on source
                         [[20, 21, 5], [20, 21, 22]]]])                       # needle 1: head 1 all on source
    hits, n_copied, rows = retrieval_hits(top, sources, copied)
    # head 0: rows (0,0), (0,1), (1,0) hit among copied -> 3; the hit at (0,2) was not copied.
    # head 1: (0,0), (1,0), (1,2) -> 3; (0,2) is a hit but not copied, (0,1) misses.
    assert hits.tolist() == [[3, 3]] and n_copied == 4 and rows == 6


def test_the_kv_cache_shrinks_a_key_value_head_only_when_all_its_query_heads_are_windowed():
    info = SimpleNamespace(num_layers=2, num_heads=4, num_kv_heads=2, kv_group_size=2)
    smallest = {(0, 0): 16, (0, 1): 64, (0, 2): 16, (0, 3): None,   # layer 0: kv head 0 keeps 65 keys, 1 all
                (1, 0): 16, (1, 1): 16, (1, 2): 256}                # layer 1: kv 0 keeps 17; (1, 3) untested: all
    (at_8k,) = kv_cache(info, 8, smallest, contexts=(8192,), bytes_per_value=2)
    per_key = 2 * 8 * 2                                             # a key and a value of 8 dims, 2 bytes each
    assert at_8k["full_bytes"] == 4 * 8192 * per_key
    assert at_8k["windowed_bytes"] == (65 + 8192 + 17 + 8192) * per_key
    assert at_8k["kv_heads_windowed"] == 2 and at_8k["kv_heads"] == 4
    (short,) = kv_cache(info, 8, smallest, contexts=(32,))
    assert short["windowed_bytes"] == (32 + 32 + 17 + 32) * per_key   # a window longer than the context keeps all


def test_the_kv_cache_counts_what_windowing_adds_to_a_model_whose_local_layers_already_window():
    # layer 0 local (the model keeps 64 keys), layer 1 global; one key/value head per layer
    info = SimpleNamespace(num_layers=2, num_heads=1, num_kv_heads=1, kv_group_size=1, sliding_windows=(64, None))
    per_key = 2 * 8 * 2
    (none,) = kv_cache(info, 8, {}, contexts=(8192,))
    assert none["full_bytes"] == 2 * 8192 * per_key and none["model_bytes"] == (64 + 8192) * per_key
    assert none["saved_bytes"] == 0 and none["kv_heads_windowed"] == 0 and none["kv_heads_local"] == 1
    # a window wider than the layer's own adds nothing there; on the global layer it saves
    (wide,) = kv_cache(info, 8, {(0, 0): 256, (1, 0): 256}, contexts=(8192,))
    assert wide["windowed_bytes"] == (64 + 257) * per_key and wide["kv_heads_windowed"] == 1
    assert wide["saved_bytes"] == (8192 - 257) * per_key
    assert wide["saved_share"] == pytest.approx((8192 - 257) / (64 + 8192))
    # a window narrower than the local layer's own saves there too
    (narrow,) = kv_cache(info, 8, {(0, 0): 16}, contexts=(8192,))
    assert narrow["saved_bytes"] == (64 - 17) * per_key and narrow["kv_heads_windowed"] == 1


def test_context_needs_writes_the_tables_and_the_report(llama, tmp_path):
    calls = []
    result = context_needs(llama, tokens=96, documents=2, windows="4,16,32", needles=3, needle_length=6,
                           tolerance=0.005, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 16) for k in range(16)]                 # 8 heads searched on the text, then the needles
    heads = result.heads
    assert len(heads) == 8 and heads["tested"].all()
    assert set(heads["kv_head"]) == {0, 1}
    windows = result.windows
    assert set(windows["inputs"]) == {"text", "needles"}
    for _, r in heads.iterrows():
        found = {}
        for inputs in ("text", "needles"):
            rows = windows[(windows["layer"] == r["layer"]) & (windows["head"] == r["head"])
                           & (windows["inputs"] == inputs)]
            passed = rows[rows["within"]]
            found[inputs] = None if passed.empty else int(passed["window"].iloc[0])
            got = r[f"smallest_window_{inputs}"]
            assert (None if pd.isna(got) else int(got)) == found[inputs]
        both = None if None in found.values() else max(found.values())
        assert (None if pd.isna(r["smallest_window"]) else int(r["smallest_window"])) == both
    joint = result.meta["joint"]
    assert joint["heads"] == int(heads["smallest_window"].notna().sum()) and {"text", "needles"} <= set(joint)
    out = result.save(tmp_path / "ctx")
    report = (out / "report.md").read_text()
    assert "## Which heads could stream" in report and "## Retrieval heads" in report
    assert "8,192 tokens" in report and "32,768 tokens" in report
    meta = json.loads((out / "run.json").read_text())
    assert meta["windows"] == [4, 16, 32] and len(meta["kv_cache"]) == 2
    assert (out / "windows.csv").is_file() and (out / "heads.csv").is_file()


def test_on_a_model_whose_local_layers_window_the_report_says_what_windowing_adds(tmp_path):
    """Gemma 3 (tiny, random): layer 0 keeps a 4-key sliding window, layer 1 everything. The report's cache table
    has the model's own cache, and the saving is counted against it, not against a cache without windows."""
    from test_architectures import build

    model, tok = build("gemma3")
    loaded = load_model(model, tokenizer=tok, name="tiny-gemma3")
    assert loaded.info.sliding_windows == (4, None)
    result = context_needs(loaded, tokens=48, documents=1, windows="2,8", needles=2, needle_length=4, window_needles=0,
                           tolerance=0.99)                    # every head passes at its first window
    (at_8k, _) = result.kv
    assert at_8k["kv_heads_local"] == loaded.info.num_kv_heads
    assert at_8k["model_bytes"] < at_8k["full_bytes"] and at_8k["saved_bytes"] > 0
    assert at_8k["saved_share"] == pytest.approx(at_8k["saved_bytes"] / at_8k["model_bytes"])
    report = (result.save(tmp_path / "ctx") / "report.md").read_text()
    assert "the model's own (local layers windowed)" in report and "already keep only their sliding window" in report


def test_windows_and_sizes_are_checked_in_one_line(llama):
    for bad in ("0,4", "4,a", ""):
        with pytest.raises(HeadscopeError, match="window"):
            parse_windows(bad)
    assert parse_windows("64, 16,16") == (16, 64)
    name, stream = token_stream(llama, None)
    with pytest.raises(HeadscopeError, match="positions"):
        long_documents(llama, stream, name, tokens=10_000, count=1)
    with pytest.raises(HeadscopeError, match="fewer than one document"):
        long_documents(llama, stream[:50], name, tokens=96, count=1)
    with pytest.raises(HeadscopeError, match="no room"):
        make_needles(llama, stream, name, count=2, length=40, tokens=80, seed=0)
    with pytest.raises(HeadscopeError, match="tolerance"):
        context_needs(llama, tolerance=1.5)
    with pytest.raises(HeadscopeError, match="whole input"):
        context_needs(llama, tokens=64, windows="64,128")


def test_cli_context_writes_the_folder_and_fails_bad_input_in_one_line(tiny_llama_dir, tiny_bert_dir, tmp_path):
    from test_cli import invoke
    from test_run_safety import one_line_error

    done = invoke("context", "--model", tiny_llama_dir, "--tokens", 64, "--windows", "4,16", "--needles", 2,
                  "--needle-length", 4, "--out", tmp_path / "ctx")
    assert done.exit_code == 0, done.output
    assert "heads can be windowed" in done.output
    assert {p.name for p in (tmp_path / "ctx").iterdir()} >= {"windows.csv", "heads.csv", "report.md", "run.json"}
    assert "headscope context" in json.loads((tmp_path / "ctx" / "run.json").read_text())["command"]
    enc = invoke("context", "--model", tiny_bert_dir, "--tokens", 48, "--windows", "4", "--out", tmp_path / "enc")
    assert enc.exit_code == 0, enc.output
    report = (tmp_path / "enc" / "report.md").read_text()
    assert "keeps no KV cache" in report and "not a causal language model" in report
    one_line_error(invoke("context", "--model", tiny_llama_dir, "--windows", "0,a", "--out", tmp_path / "x"),
                   "window")
    one_line_error(invoke("context", "--model", tiny_llama_dir, "--tokens", 100000, "--out", tmp_path / "x"),
                   "positions")
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.\n")
    one_line_error(invoke("context", "--model", tiny_llama_dir, "--data", short, "--tokens", 64, "--out",
                          tmp_path / "x"), "fewer than one document")
    one_line_error(invoke("context", "--model", tiny_llama_dir, "--heads", "L7.H0", "--tokens", 64, "--out",
                          tmp_path / "x"), "not in the model")
    assert not (tmp_path / "x").exists()


@needs_smollm2
def test_smollm2_copies_needles_and_its_retrieval_heads_are_its_induction_heads():
    """On real text the model copies most needle tokens, and the heads whose strongest key is the token being
    copied include the induction heads that the ablation tests find (L17, L18)."""
    loaded = load_model("smollm2")
    name, stream = token_stream(loaded, None)
    needles = make_needles(loaded, stream, name, count=4, length=12, tokens=400, seed=0)
    top, copied = strongest_keys(loaded, needles)
    hits, n_copied, rows = retrieval_hits(top, needles.sources(), copied)
    assert n_copied >= 0.5 * rows
    scores = hits / n_copied
    best = sorted(((scores[layer, head], layer, head) for layer in range(scores.shape[0])
                   for head in range(scores.shape[1])), reverse=True)[:5]
    assert best[0][0] >= 0.5
    assert any(layer in (17, 18) for _, layer, _ in best)
