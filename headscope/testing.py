"""Tiny random-weight models with tokenizers trained offline on the bundled sample: for tests, benchmarks and
examples that must run without downloading anything."""

from __future__ import annotations


def _train_corpus() -> list[str]:
    from headscope.datasets import load_sample

    return [" ".join(s.words) for s in load_sample().sentences] * 3


def wordpiece_tokenizer():
    """The real WordPiece tokenizer of the minilm package (30522 pieces)."""
    from transformers import AutoTokenizer

    from headscope.models.loading import resolve_alias

    return AutoTokenizer.from_pretrained(resolve_alias("minilm"))


def bpe_tokenizer():
    """Byte-level BPE (GPT-2 style, no BOS) trained on the bundled sample; add_prefix_space=True."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_train_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def sentencepiece_tokenizer(bos: bool = True):
    """SentencePiece-style (Metaspace) BPE trained on the sample; adds <s> when ``bos``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(_train_corpus(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def tiny_bert(mlm: bool = False):
    """A tiny random BERT and its WordPiece tokenizer; ``mlm``: with its masked-LM head (BertForMaskedLM)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, initializer_range=0.5,
                     attn_implementation="eager")
    return (BertForMaskedLM if mlm else BertModel)(cfg).eval(), wordpiece_tokenizer()


def tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = bpe_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, initializer_range=0.5,
                     attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval(), tok


def tiny_llama(bos: bool = True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = sentencepiece_tokenizer(bos)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.5, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval(), tok


def tiny_qwen2():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = bpe_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.5, attn_implementation="eager")
    return Qwen2ForCausalLM(cfg).eval(), tok


def long_models():
    """{"llama": (model, tokenizer), "bert": ...}: tiny random Llama (GQA) and BERT with room for 1,024
    tokens, for documents long enough to read in row blocks."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(sentencepiece_tokenizer(True)), hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=1024,
                                         initializer_range=0.5)).eval()
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=1024, initializer_range=0.5)).eval()
    return {"llama": (llama, sentencepiece_tokenizer(True)), "bert": (bert, wordpiece_tokenizer())}
