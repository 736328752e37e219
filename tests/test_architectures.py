"""Capture on every architecture family (issue 12): tiny random-weight configs of 30+ families, each loaded
as an object and from a saved folder. headscope's captured probabilities must equal transformers' own eager
``output_attentions`` maps to 1e-5 (sinks and softcap included), and decoders must be detected as decoders
both ways, from the model itself (no ``architectures`` entry in the config).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import bpe_tokenizer, wordpiece_tokenizer  # noqa: E402
from reference import eager_forward  # noqa: E402

H, L, NH = 32, 2, 4  # hidden size, layers, query heads

# family -> (config class name, decoder?, config keyword arguments); sizes are set in ``config``.
FAMILIES = {
    # encoders
    "bert": ("BertConfig", False, {}),
    "roberta": ("RobertaConfig", False, {"pad_token_id": 1}),
    "distilbert": ("DistilBertConfig", False, {"dim": H, "n_layers": L, "n_heads": NH, "hidden_dim": 64}),
    "albert": ("AlbertConfig", False, {"embedding_size": 16}),
    "electra": ("ElectraConfig", False, {"embedding_size": 16}),
    "deberta-v2": ("DebertaV2Config", False, {}),
    "modernbert": ("ModernBertConfig", False, {"global_attn_every_n_layers": 2, "local_attention": 4,
                                               "pad_token_id": 0}),
    "xlm-roberta": ("XLMRobertaConfig", False, {"pad_token_id": 1}),
    "mpnet": ("MPNetConfig", False, {}),
    "camembert": ("CamembertConfig", False, {"pad_token_id": 1}),
    # decoders
    "gpt2": ("GPT2Config", True, {"n_embd": H, "n_layer": L, "n_head": NH}),
    "gpt-neo": ("GPTNeoConfig", True, {"num_layers": L, "num_heads": NH, "attention_types": [[["global", "local"], 1]],
                                        "window_size": 4}),
    "gpt-neox": ("GPTNeoXConfig", True, {}),
    "gptj": ("GPTJConfig", True, {"n_embd": H, "n_layer": L, "n_head": NH, "rotary_dim": 4}),
    "opt": ("OPTConfig", True, {"ffn_dim": 64, "word_embed_proj_dim": H}),
    "bloom": ("BloomConfig", True, {"n_layer": L, "n_head": NH}),
    "falcon": ("FalconConfig", True, {"multi_query": True, "new_decoder_architecture": False}),
    "phi": ("PhiConfig", True, {}),
    "phi3": ("Phi3Config", True, {"num_key_value_heads": 2, "pad_token_id": 0}),
    "llama": ("LlamaConfig", True, {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", True, {"num_key_value_heads": 2, "sliding_window": 4}),
    "mixtral": ("MixtralConfig", True, {"num_key_value_heads": 2, "num_local_experts": 2, "num_experts_per_tok": 1}),
    "qwen2": ("Qwen2Config", True, {"num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", True, {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma": ("GemmaConfig", True, {"num_key_value_heads": 1, "head_dim": 8}),
    "gemma2": ("Gemma2Config", True, {"num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4,
                                      "attn_logit_softcapping": 5.0, "final_logit_softcapping": 5.0}),
    "gemma3": ("Gemma3TextConfig", True, {"num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4,
                                          "sliding_window_pattern": 2}),
    "olmo2": ("Olmo2Config", True, {"num_key_value_heads": 2}),
    "starcoder2": ("Starcoder2Config", True, {"num_key_value_heads": 2, "sliding_window": 4}),
    "gpt-oss": ("GptOssConfig", True, {"num_key_value_heads": 2, "head_dim": 8, "num_local_experts": 2,
                                       "num_experts_per_tok": 1, "sliding_window": 4,
                                       "layer_types": ["sliding_attention", "full_attention"]}),
    # encoder-decoders: the encoder is analysed
    "t5": ("T5Config", False, {"d_model": H, "d_kv": 8, "d_ff": 64, "num_layers": L, "num_heads": NH,
                               "decoder_start_token_id": 0}),
    "bart": ("BartConfig", False, {"d_model": H, "encoder_layers": L, "decoder_layers": L,
                                   "encoder_attention_heads": NH, "decoder_attention_heads": NH,
                                   "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}),
}


def config(family: str, vocab: int):
    import transformers

    cls_name, _, extra = FAMILIES[family]
    kwargs = {"vocab_size": vocab, "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
              "intermediate_size": 64, "max_position_embeddings": 64, "initializer_range": 0.5}
    kwargs.update(extra)
    cfg = getattr(transformers, cls_name)(**kwargs)
    cfg.architectures = None  # facts must come from the model, not from a class name in the config
    return cfg


def build(family: str):
    import torch
    import transformers

    decoder = FAMILIES[family][1]
    tok = bpe_tokenizer() if decoder else wordpiece_tokenizer()
    torch.manual_seed(0)
    cfg = config(family, len(tok))
    model = (transformers.AutoModelForCausalLM if decoder else transformers.AutoModel).from_config(cfg)
    return model.eval(), tok


def _sentences():
    from headscope.types import Sentence

    return [Sentence(words=tuple("the cat sat on the mat".split()), sent_id="a"),
            Sentence(words=("dogs", "bark"), sent_id="b")]


def captured_equals_eager(loaded) -> float:
    """Largest difference between captured probabilities and eager maps over real (unpadded) positions."""
    import torch

    from headscope.capture.alignment import collate, encode_sentences
    from headscope.capture.session import attention_capture, forward_kwargs, start_forward
    from headscope.models.loading import model_body

    sents = _sentences()
    enc = encode_sentences(loaded.tokenizer, sents, bos_id=loaded.tokenizer.bos_token_id if loaded.info.is_decoder
                           else None)
    batch = collate(sents, enc, pad_id=loaded.tokenizer.pad_token_id or 0, device="cpu", causal=loaded.info.is_decoder)
    got: dict = {}
    with attention_capture(loaded, lambda layer, w: got.setdefault(layer, w.clone())) as capturing, \
            torch.inference_mode():
        start_forward(capturing)
        model_body(loaded.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 **forward_kwargs(loaded))
    body = model_body(loaded.model)
    ref = eager_forward(body, input_ids=batch.input_ids, attention_mask=batch.attention_mask).attentions
    assert sorted(got) == list(range(len(ref))) == list(range(loaded.info.num_layers))
    worst = 0.0
    valid = batch.token_mask[:, None, :, None] & batch.token_mask[:, None, None, :]
    for layer, r in enumerate(ref):
        assert got[layer].shape == r.shape, (layer, got[layer].shape, r.shape)
        worst = max(worst, float(((got[layer] - r.float()).abs() * valid).max()))
    return worst


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_capture_equals_eager_as_object_and_from_folder(family, tmp_path):
    from headscope.models.loading import load_model

    model, tok = build(family)
    decoder = FAMILIES[family][1]
    loaded = load_model(model, tokenizer=tok, name=family)
    assert loaded.info.is_decoder is decoder, (family, loaded.info)
    # an encoder-decoder is read on its encoder, and says so
    assert (loaded.info.part == "encoder") is (family in ("t5", "bart"))
    assert ("the encoder of an encoder-decoder is analysed" in loaded.info.describe()) is (family in ("t5", "bart"))
    assert captured_equals_eager(loaded) <= 1e-5
    model.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    again = load_model(tmp_path / family)
    assert again.info.is_decoder is decoder and again.info.attention == loaded.info.attention
    assert (again.info.num_heads, again.info.num_kv_heads) == (loaded.info.num_heads, loaded.info.num_kv_heads)
    assert captured_equals_eager(again) <= 1e-5


def test_kv_heads_come_from_the_attention_calls():
    from headscope.models.loading import load_model

    for family, kv in (("llama", 2), ("gemma", 1), ("falcon", 1), ("gpt2", 4)):
        model, tok = build(family)
        assert load_model(model, tokenizer=tok).info.num_kv_heads == kv


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_normalised_entropy_counts_the_keys_a_sliding_window_leaves_visible(family):
    """Mistral with a 4-key window: entropy_norm divides each row's entropy by log(min(i + 1, 4)), the keys the
    model's mask leaves visible, not by log(i + 1) as the causal rule alone would say. Gemma 3 windows its
    local layer (0) only: its global layer (1) keeps the causal rule."""
    import math

    import numpy as np
    import torch

    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.models.loading import load_model
    from headscope.types import Sentence

    model, tok = build(family)
    loaded = load_model(model, tokenizer=tok)
    types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * 2    # Mistral: every layer
    local = [t == "sliding_attention" for t in types]
    assert loaded.info.sliding_windows == tuple(4 if x else None for x in local)
    sentence = Sentence(words=tuple("the cat sat on the mat and the dog sat on the rug".split()), sent_id="w")
    scores = headscope.analyze(loaded, [sentence], tasks="positional", bootstrap=0, n_examples=0).scores
    (enc,) = encode_sentences(tok, [sentence], bos_id=tok.bos_token_id)
    ids = torch.tensor([enc.input_ids])
    maps = eager_forward(model.model, input_ids=ids, attention_mask=torch.ones_like(ids)).attentions
    t = ids.shape[1]
    assert t > 6
    for layer, att in enumerate(maps):
        for head in range(att.shape[1]):
            a = att[0, head].double().numpy()
            window, causal = [], []
            for i in range(1, t):
                entropy = -float(np.sum(a[i, : i + 1] * np.log(np.clip(a[i, : i + 1], 1e-30, None))))
                window.append(entropy / math.log(min(i + 1, 4) if local[layer] else i + 1))
                causal.append(entropy / math.log(i + 1))
            got = scores[(scores["relation"] == "entropy_norm") & (scores["layer"] == layer) & (scores["head"] == head)]
            assert float(got["score"].iloc[0]) == pytest.approx(np.mean(window), abs=1e-5)
            assert (abs(np.mean(window) - np.mean(causal)) > 1e-3) == local[layer]  # the rules differ where local


@pytest.mark.parametrize("family", ["llama", "bert", "gemma2"])
def test_row_blocks_score_like_whole_maps(family):
    """Positional scores from attention computed in blocks of 3 query rows equal those from whole maps."""
    import headscope
    from headscope.models.loading import load_model
    from headscope.run.analyze import block_rows
    from headscope.types import Sentence

    model, tok = build(family)
    loaded = load_model(model, tokenizer=tok)
    texts = ["the cat sat on the mat and the dog sat on the rug .", "birds sing", "a b c d e f g h i j k l m n o"]
    sentences = [Sentence(words=tuple(w.split()), sent_id=str(i)) for i, w in enumerate(texts * 4)]  # 12: intervals
    whole = headscope.analyze(loaded, sentences, tasks="positional", n_examples=0, bootstrap=200).scores
    # a budget that leaves room for 3 rows of the batch: rows = budget / (4 * batch * heads * t * 4 bytes)
    from headscope.capture.alignment import collate, encode_sentences

    enc = encode_sentences(tok, sentences, bos_id=tok.bos_token_id if loaded.info.is_decoder else None)
    t = max(len(e) for e in enc)
    mib = 3 * len(sentences) * loaded.info.num_heads * t * 16 / 2 ** 20
    batch = collate(sentences, enc, pad_id=0, device="cpu", causal=loaded.info.is_decoder)
    from headscope.analysis.positional import PositionalScorer

    assert block_rows([PositionalScorer(1, 1)], loaded.info.num_heads, mib)(batch) == 3
    blocked = headscope.analyze(loaded, sentences, tasks="positional", n_examples=0, bootstrap=200,
                                attention_memory=mib).scores
    key = ["relation", "metric", "layer", "head"]
    m = whole.merge(blocked, on=key, suffixes=("", "_b"))
    assert len(m) == len(whole) == len(blocked)
    assert (m["n"] == m["n_b"]).all()
    assert (m["score"] - m["score_b"]).abs().max() <= 1e-5
    assert m["ci_low"].notna().any() and (m["ci_low"] - m["ci_low_b"]).abs().max() <= 1e-5


def test_attention_sinks_are_a_model_fact_and_rows_may_sum_below_one():
    import headscope
    from headscope.models.loading import load_model

    model, tok = build("gpt-oss")
    loaded = load_model(model, tokenizer=tok)
    assert loaded.info.sinks is True and load_model(build("llama")[0], tokenizer=tok).info.sinks is False
    texts = ["the cat sat on the mat", "a dog barked"]
    scores = headscope.analyze(loaded, texts, tasks="positional", bootstrap=0, n_examples=0).scores
    assert len(scores) and scores["score"].notna().all()
    # the sink's share is a measure: 1 minus the row's mass on real keys, from transformers' eager maps
    import numpy as np
    import torch

    from headscope.capture.alignment import encode_sentences
    from headscope.types import Sentence

    shares: dict = {}
    for text in texts:
        (enc,) = encode_sentences(tok, [Sentence(words=tuple(text.split()))], bos_id=tok.bos_token_id)
        ids = torch.tensor([enc.input_ids])
        for layer, att in enumerate(eager_forward(model, input_ids=ids, attention_mask=torch.ones_like(ids)).attentions):
            for head in range(att.shape[1]):
                shares.setdefault((layer, head), []).extend((1 - att[0, head].sum(-1)).tolist())
    sink = scores[scores["relation"] == "sink"]
    assert len(sink) == loaded.info.num_layers * loaded.info.num_heads
    for r in sink.itertuples():
        assert r.score == pytest.approx(np.mean(shares[(r.layer, r.head)]), abs=1e-5)
    assert sink["score"].max() > 0.01   # the sinks take a visible share
    llama = load_model(build("llama")[0], tokenizer=build("llama")[1])
    assert "sink" not in set(headscope.analyze(llama, texts, tasks="positional", bootstrap=0,
                                               n_examples=0).scores["relation"])


@pytest.mark.parametrize("blocks", [False, True])
def test_syntax_reach_follows_a_sliding_window(blocks, sample):
    """Mistral with a 4-token window: a dependent's head counts as reachable in a layer only when some piece of
    one sees some piece of the other through the window, so n_reachable falls below the causal rule's count;
    the heads' hits equal the one-sentence-at-a-time eager reference's hits on reachable heads, whole maps or
    blocks of 3 query rows, padded batches included."""
    import torch

    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.models.loading import load_model

    window = 4
    model, tok = build("mistral")
    loaded = load_model(model, tokenizer=tok)
    sentences = [s for s in sample.sentences if s.has_tree][:6]
    encoded = encode_sentences(tok, sentences, bos_id=tok.bos_token_id)
    t = max(len(e) for e in encoded)
    mib = 3 * 3 * loaded.info.num_heads * t * 16 / 2 ** 20 if blocks else 256   # 3 rows of the longest batch
    if blocks:
        from headscope.capture.alignment import collate
        from headscope.analysis.syntax import SyntaxScorer
        from headscope.run.analyze import block_rows

        longest = sorted(range(6), key=lambda i: -len(encoded[i]))[:3]
        batch = collate([sentences[i] for i in longest], [encoded[i] for i in longest], pad_id=0, device="cpu",
                        causal=True)
        assert block_rows([SyntaxScorer(1, 1, [])], loaded.info.num_heads, mib)(batch) == 3
    scores = headscope.analyze(loaded, sentences, tasks="syntax", bootstrap=0, n_examples=0, batch_size=3,
                               attention_memory=mib).scores
    heads = scores[scores["layer"].notna() & (scores["relation"] == "all")]
    reach = {d: 0 for d in ("dep_to_head", "head_to_dep")}
    rule = dict(reach)
    hits: dict = {}
    for s, enc in zip(sentences, encoded):
        pieces = {}
        for p, w in enumerate(enc.word_ids):
            pieces.setdefault(w, []).append(p)
        ids = torch.tensor([enc.input_ids])
        maps = eager_forward(model.model, input_ids=ids, attention_mask=torch.ones_like(ids)).attentions
        for d, gold in enumerate(s.heads):
            if gold < 0:
                continue
            for direction, (q, k) in (("dep_to_head", (d, gold)), ("head_to_dep", (gold, d))):
                seen = any(p - window < c <= p for p in pieces[q] for c in pieces[k])
                reach[direction] += seen
                rule[direction] += k < q
                for layer, att in enumerate(maps):
                    a = att[0].float()
                    for head in range(a.shape[0]):
                        w = torch.stack([a[head][pieces[i]].mean(0) for i in range(len(s))])   # word rows
                        w = torch.stack([w[:, pieces[i]].sum(1) for i in range(len(s))], 1)
                        # dep_to_head ranks the keys of row d, head_to_dep the queries of column d (first of equals)
                        row = w[d] if direction == "dep_to_head" else w[:, d]
                        allowed = [j for j in range(len(s)) if (j < d if direction == "dep_to_head" else j > d)]
                        pred = max(allowed, key=lambda j: (float(row[j]), -j)) if allowed else -1
                        key = (layer, head, direction)
                        hits[key] = hits.get(key, 0) + int(seen and pred == gold)
    for (layer, head, direction), n in hits.items():
        got = heads[(heads["layer"] == layer) & (heads["head"] == head) & (heads["direction"] == direction)]
        assert int(got["n_reachable"].iloc[0]) == reach[direction] < rule[direction]
        assert round(float(got["score"].iloc[0]) * int(got["n"].iloc[0])) == n, (layer, head, direction)


def captured_decoder_equals_eager(loaded) -> float:
    """Largest difference between the captured decoder self-attention of an encoder-decoder and transformers'
    eager ``decoder_attentions`` for the same teacher-forced inputs, over real positions."""
    import torch

    from headscope.capture.alignment import collate, encode_sentences
    from headscope.capture.session import attention_capture, forward_kwargs, model_inputs, start_forward
    from headscope.models.loading import model_body
    from headscope.models.loading import leading_token

    sents = _sentences()
    enc = encode_sentences(loaded.tokenizer, sents, bos_id=leading_token(loaded, None))
    batch = collate(sents, enc, pad_id=loaded.tokenizer.pad_token_id or 0, device="cpu", causal=True)
    inputs = model_inputs(loaded, batch)
    assert (inputs["decoder_input_ids"][:, 0] == loaded.model.config.decoder_start_token_id).all()
    got: dict = {}
    body = model_body(loaded.model, "decoder")
    with attention_capture(loaded, lambda layer, w: got.setdefault(layer, w.clone())) as capturing, \
            torch.inference_mode():
        start_forward(capturing)
        body(**inputs, **forward_kwargs(loaded))
    ref = eager_forward(body, **inputs).decoder_attentions
    assert sorted(got) == list(range(len(ref))) == list(range(loaded.info.num_layers))
    valid = batch.token_mask[:, None, :, None] & batch.token_mask[:, None, None, :]
    worst = 0.0
    for layer, r in enumerate(ref):
        assert got[layer].shape == r.shape, (layer, got[layer].shape, r.shape)
        worst = max(worst, float(((got[layer] - r.float()).abs() * valid).max()))
    return worst


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_an_encoder_decoder_can_be_read_on_its_decoder_self_attention(family, tmp_path):
    """part="decoder": the decoder's self-attention (not its cross-attention, not the encoder), teacher-forced
    after the decoder start token, equal to eager ``decoder_attentions``; scored as a causal model; the same from
    a saved folder. The default stays the encoder."""
    import headscope
    from headscope.models.loading import load_model

    model, tok = build(family)
    loaded = load_model(model, tokenizer=tok, part="decoder")
    assert loaded.info.part == "decoder" and loaded.info.is_decoder
    assert "decoder's self-attention" in loaded.info.describe()
    decoder = model.get_decoder()
    assert all(any(m is x for x in decoder.modules()) for m in loaded.attention_modules)
    assert captured_decoder_equals_eager(loaded) <= 1e-5
    result = headscope.analyze(loaded, [s for s in _sentences()], tasks="positional", bootstrap=0, n_examples=0)
    first = result.scores[(result.scores["relation"] == "entropy_norm")]
    assert len(first) == loaded.info.num_layers * loaded.info.num_heads
    model.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    again = load_model(tmp_path / family, part="decoder")
    assert again.info.part == "decoder" and captured_decoder_equals_eager(again) <= 1e-5
    assert load_model(tmp_path / family).info.part == "encoder"


def test_part_decoder_needs_an_encoder_decoder():
    from headscope.errors import ModelError
    from headscope.models.loading import load_model

    model, tok = build("bert")
    with pytest.raises(ModelError, match="not one; leave the part out"):
        load_model(model, tokenizer=tok, part="decoder")
    with pytest.raises(ModelError, match="part must be one of encoder, decoder"):
        load_model(model, tokenizer=tok, part="middle")


# Held out from the first sweep (issue 32): families read differently as an object and from a saved folder, or
# refused. case -> (config class, model class: a transformers name, or "module:Name" of a class transformers does not
# export; decoder?, config keyword arguments, model layers that compute attention (None: all), each attention
# layer's sliding window (None: full attention)).
HELD_OUT = {
    "falcon-alibi": ("FalconConfig", "AutoModelForCausalLM", True,
                     {"alibi": True, "multi_query": True, "new_decoder_architecture": False}, None, (None, None)),
    "mpt": ("MptConfig", "AutoModelForCausalLM", True, {"d_model": H, "n_heads": NH, "n_layers": L, "max_seq_len": 64},
            None, (None, None)),
    "xglm": ("XGLMConfig", "AutoModelForCausalLM", True,
             {"d_model": H, "num_layers": L, "attention_heads": NH, "ffn_dim": 64}, None, (None, None)),
    "bart-encoder": ("BartConfig", "transformers.models.bart.modeling_bart:BartEncoder", False, FAMILIES["bart"][2],
                     None, (None, None)),
    "t5-encoder": ("T5Config", "T5EncoderModel", False, FAMILIES["t5"][2], None, (None, None)),
    "jamba": ("JambaConfig", "AutoModelForCausalLM", True,
              {"num_hidden_layers": 4, "num_key_value_heads": 2, "attn_layer_period": 2, "attn_layer_offset": 1,
               "expert_layer_period": 2, "num_experts": 2, "mamba_d_state": 4, "mamba_dt_rank": 4}, (1, 3),
              (None, None)),
    "gpt-neo-local": ("GPTNeoConfig", "AutoModelForCausalLM", True, FAMILIES["gpt-neo"][2], None, (None, 4)),
}


def build_held_out(case: str):
    import importlib

    import torch
    import transformers

    cls_name, model_cls, decoder, extra, _, _ = HELD_OUT[case]
    tok = bpe_tokenizer() if decoder else wordpiece_tokenizer()
    kwargs = {"vocab_size": len(tok), "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
              "intermediate_size": 64, "max_position_embeddings": 64, "initializer_range": 0.5, **extra}
    cfg = getattr(transformers, cls_name)(**kwargs)
    cfg.architectures = None  # facts must come from the model, not from a class name in the config
    module, _, name = model_cls.rpartition(":")
    cls = getattr(importlib.import_module(module) if module else transformers, name)
    torch.manual_seed(0)
    model = cls.from_config(cfg) if name.startswith("Auto") else cls(cfg)
    return model.eval(), tok


def reference_positional(model, tok, sentences, decoder: bool, windows) -> dict:
    """(layer, head) -> (entropy_norm, prev) from transformers' eager maps, one sentence at a time, written out:
    a row's entropy over log(the keys its mask leaves visible: all in an encoder, the last ``window`` up to the
    query in a decoder's windowed layer, all up to it otherwise), over rows that see 2 or more keys; prev: the
    weight on the previous token, over rows that have one. Rows of all sentences pooled."""
    import math

    import numpy as np
    import torch

    from headscope.capture.alignment import encode_sentences

    sums: dict = {}
    for sentence in sentences:
        (enc,) = encode_sentences(tok, [sentence], bos_id=None)
        ids = torch.tensor([enc.input_ids])
        maps = eager_forward(model, input_ids=ids, attention_mask=torch.ones_like(ids)).attentions
        assert len(maps) == len(windows)
        for layer, (att, window) in enumerate(zip(maps, windows)):
            for head in range(att.shape[1]):
                a = att[0, head].double().numpy()
                t = a.shape[0]
                s = sums.setdefault((layer, head), [0.0, 0, 0.0, 0])
                for i in range(t):
                    visible = (min(i + 1, window or t) if decoder else t)
                    p = np.clip(a[i], 1e-30, None)
                    if visible >= 2:
                        s[0] += -float(np.sum(a[i] * np.log(p))) / math.log(visible)
                        s[1] += 1
                    if i >= 1:
                        s[2] += float(a[i, i - 1])
                        s[3] += 1
    return {k: (v[0] / v[1], v[2] / v[3]) for k, v in sums.items()}


@pytest.mark.parametrize("how", ["object", "folder"])
@pytest.mark.parametrize("case", sorted(HELD_OUT))
def test_held_out_families_score_like_eager_whichever_way_loaded(case, how, tmp_path):
    """Issue 32: each of these families is read the same way as an object and from a saved folder: a decoder is
    causal both ways (ALiBi Falcon, MPT, XGLM), an encoder-only class loads as itself (BART's and T5's encoders), a
    hybrid's attention layers are the layers analysed and the model info says which they are (Jamba), a local layer's
    window counts in normalised entropy (GPT-Neo). entropy_norm and prev equal an eager reference."""
    import dataclasses

    import headscope
    from headscope.models.loading import load_model, model_body
    from headscope.types import Sentence

    model, tok = build_held_out(case)
    _, _, decoder, _, layers, windows = HELD_OUT[case]
    if how == "object":
        loaded = load_model(model, tokenizer=tok, name=case)
    else:
        model.save_pretrained(tmp_path / case)
        tok.save_pretrained(tmp_path / case)
        loaded = load_model(tmp_path / case)
    info = loaded.info
    assert info.is_decoder is decoder, (case, how, info)
    assert info.num_layers == len(windows)
    assert tuple(info.attention_layers) == (layers or ())
    if layers:
        assert dataclasses.asdict(info)["attention_layers"] == layers      # run.json's model says which
        assert f"model layers {', '.join(map(str, layers))}" in info.describe()
    sentences = [Sentence(words=tuple("the cat sat on the mat and the dog sat on the rug".split()), sent_id="a"),
                 Sentence(words=("dogs", "bark", "at", "night"), sent_id="b")]
    result = headscope.analyze(loaded, sentences, tasks="positional", bootstrap=0, n_examples=0)
    if layers:
        assert tuple(result.meta.model["attention_layers"]) == layers
    scores = result.scores
    # the reference is the model that was saved: a folder must load as the same model, not one with weights at random
    ref = reference_positional(model_body(model), tok, sentences, decoder, windows)
    assert len(ref) == info.num_layers * info.num_heads
    for (layer, head), (entropy_norm, prev) in ref.items():
        at = scores[(scores["layer"] == layer) & (scores["head"] == head)].set_index("relation")["score"]
        assert float(at["entropy_norm"]) == pytest.approx(entropy_norm, abs=1e-5), (case, how, layer, head)
        assert float(at["prev"]) == pytest.approx(prev, abs=1e-5), (case, how, layer, head)


def test_the_report_says_which_layers_are_local_and_their_window(tmp_path):
    """Gemma 3 interleaves sliding-window layers with global ones: the model line of the report and run.json
    name the local layers and their window, as the model's first forward passed them."""
    import json

    import headscope
    from headscope.models.loading import load_model

    model, tok = build("gemma3")
    loaded = load_model(model, tokenizer=tok)
    types = list(model.config.layer_types)
    assert types == ["sliding_attention", "full_attention"]
    assert loaded.info.sliding_windows == (4, None)
    assert "local layers 0 (sliding window of 4 tokens), global layers 1" in loaded.info.describe()
    result = headscope.analyze(loaded, _sentences(), tasks="positional", bootstrap=0, n_examples=0)
    result.save(tmp_path / "out")
    assert "local layers 0 (sliding window of 4 tokens), global layers 1" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"]["sliding_windows"] == [4, None]


def test_a_model_without_windows_says_nothing_of_them():
    from headscope.models.loading import load_model

    model, tok = build("llama")
    info = load_model(model, tokenizer=tok).info
    assert info.windows_line() == "" and "sliding window" not in info.describe()
