"""Capture: hooks always removed, padding-invariant scores, sanity checks that fail clearly."""

from __future__ import annotations

import dataclasses

import pytest

import headscope
from headscope.capture.session import attention_hooks, check_attention
from headscope.errors import CaptureError
from headscope.models.loading import LoadedModel
from headscope.types import Sentence


def _hook_count(loaded) -> int:
    # only headscope's hooks: transformers adds its own once a model ran with output_attentions=True
    return sum("attention_hooks" in getattr(h, "__qualname__", "")
               for m in loaded.model.modules() for h in m._forward_hooks.values())


def test_hooks_removed_after_exception_inside_block(tiny):
    _, loaded = tiny
    before = _hook_count(loaded)
    with pytest.raises(RuntimeError, match="boom"):
        with attention_hooks(loaded, lambda layer, w: None):
            assert _hook_count(loaded) == before + loaded.info.num_layers
            raise RuntimeError("boom")
    assert _hook_count(loaded) == before


def test_hooks_removed_after_exception_inside_callback(tiny, sample):
    _, loaded = tiny
    before = _hook_count(loaded)

    def explode(*_):
        raise ValueError("callback failed")

    from headscope.capture.alignment import encode_sentences
    from headscope.capture.session import capture

    sents = list(sample.sentences[:3])
    with pytest.raises(ValueError, match="callback failed"):
        capture(loaded, sents, encode_sentences(loaded.tokenizer, sents), explode)
    assert _hook_count(loaded) == before


def test_padded_batches_score_like_one_sentence_at_a_time(tiny, sample):
    name, loaded = tiny
    sents = list(sample.sentences[:20])
    batched = headscope.analyze(loaded, sents, tasks="syntax,positional", batch_size=16).scores
    single = headscope.analyze(loaded, sents, tasks="syntax,positional", batch_size=1).scores
    key = ["task", "relation", "direction", "metric", "baseline", "layer", "head"]
    m = batched.merge(single, on=key, suffixes=("_b", "_s"), how="outer", indicator=True)
    assert (m["_merge"] == "both").all()
    diff = (m["score_b"] - m["score_s"]).abs()
    assert diff[m["task"] == "syntax"].max() <= 1e-6, name
    assert diff[m["task"] == "positional"].max() <= 1e-5, name


def test_causal_check_passes_for_decoders_and_fails_for_a_non_causal_map(tiny, tiny_bert_loaded, sample):
    name, loaded = tiny
    sents = list(sample.sentences[:4])
    headscope.analyze(loaded, sents, tasks="positional")          # real decoders pass the check
    fake = LoadedModel(tiny_bert_loaded.model, tiny_bert_loaded.tokenizer,
                       dataclasses.replace(tiny_bert_loaded.info, is_decoder=True),
                       tiny_bert_loaded.attention_modules)
    with pytest.raises(CaptureError, match="causal mask is missing"):
        headscope.analyze(fake, sents, tasks="positional")


def test_rows_that_do_not_sum_to_one_fail_clearly(tiny_bert_loaded, sample):
    import copy

    hooked = headscope.load_model(tiny_bert_loaded.model.__class__(copy.deepcopy(tiny_bert_loaded.model.config)).eval(),
                                  tokenizer=tiny_bert_loaded.tokenizer, capture="hooks")
    module = hooked.attention_modules[0]
    handle = module.register_forward_hook(lambda mod, args, out: (out[0], out[1] * 2))
    try:
        with pytest.raises(CaptureError, match=r"layer 0: attention rows .* not 1"):
            headscope.analyze(hooked, list(sample.sentences[:2]), tasks="positional")
    finally:
        handle.remove()


def test_check_attention_rejects_wrong_shapes(tiny_bert_loaded, sample):
    import torch

    from headscope.capture.alignment import collate, encode_sentences

    sents = list(sample.sentences[:2])
    enc = encode_sentences(tiny_bert_loaded.tokenizer, sents)
    b = collate(sents, enc, pad_id=0, device="cpu", causal=False)
    t = b.input_ids.shape[1]
    with pytest.raises(CaptureError, match="expected attention"):
        check_attention(torch.zeros(2, 4, t), b, 0, causal=False, n_heads=4)
    with pytest.raises(CaptureError, match="expected 4 query heads"):
        check_attention(torch.full((2, 3, t, t), 1.0 / t), b, 0, causal=False, n_heads=4)


def test_sentences_longer_than_the_model_are_skipped_and_counted(tiny_bert_loaded, sample):
    long = Sentence(words=tuple(["word"] * 300), heads=tuple([-1] + [0] * 299),
                    relations=tuple(["root"] + ["dep"] * 299), sent_id="long")
    result = headscope.analyze(tiny_bert_loaded, [long] + list(sample.sentences[:3]), tasks="syntax")
    (ds,) = result.meta.datasets
    assert ds["skipped_too_long"] == 1
    assert ds["scored"] == 3


@pytest.mark.parametrize("block_rows", [None, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_row_facts_from_the_scores_equal_those_read_from_the_probabilities(block_rows, causal):
    """The attention function's entropy and confidence (read off the scores: log normaliser at the row's own
    key or first key) equal entr(p) and max p, also for rows where both of those keys get almost no weight
    (two logits 200 above the rest elsewhere), which take the largest score instead."""
    import torch

    from headscope.capture import attention
    torch.manual_seed(0)
    b, h, t, d = 2, 3, 8, 4
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, h, t, d), torch.randn(b, h, t, d)
    k[:, :, 2] = k[:, :, 3] = q[:, :, 5] * 100 / q[:, :, 5].norm(dim=-1, keepdim=True) ** 2 * d ** 0.5
    q[:, :, 5] *= 2       # row 5: half its weight on key 2 and half on key 3 (scores 200 above the others)
    module = torch.nn.Module()
    module.is_causal = causal
    got = {}

    def keep(layer, probs):
        r0 = state.row_start
        got.setdefault("p", []).append((r0, probs.clone()))
        got.setdefault("rows", []).append((r0, state.rows))

    state = attention.Session(modules=[module], on_attention=keep, block_rows=block_rows, causal=causal,
                              row_stats=True)
    with attention.session(state):
        attention.attention_forward(module, q, k, v, None, scaling=d ** -0.5, is_causal=causal)
    for (r0, p), (_, rows) in zip(got["p"], got["rows"]):
        assert torch.allclose(rows.confidence, p.amax(-1))
        assert torch.allclose(rows.entropy, torch.special.entr(p).sum(-1), atol=2e-5)
    five = [(r0, p) for r0, p in got["p"] if r0 <= 5 < r0 + p.shape[2]][0]
    assert torch.allclose(five[1][:, :, 5 - five[0], 2:4], torch.tensor(0.5))   # own and first keys get ~0
    assert (five[1][:, :, 5 - five[0], [0, 5]] < 1e-30).all()
