"""Decoders: words given as running text, BOS handling, the in-context-learning check, SmolLM2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import (EWT_DEV, bpe_tokenizer, needs_ewt, sentencepiece_tokenizer, tiny_bert,  # noqa: E402
                      tiny_llama, wordpiece_tokenizer)

import headscope  # noqa: E402
from headscope.capture.alignment import encode_sentences, space_convention, text_words  # noqa: E402
from headscope.analysis.induction import in_context_loss, make_sequences  # noqa: E402
from headscope.datasets.ud import parse_conllu  # noqa: E402
from headscope.models.loading import load_model  # noqa: E402
from headscope.types import Sentence  # noqa: E402


def running_text(sentence: Sentence) -> str:
    spaces = sentence.space_after or (True,) * len(sentence.words)
    return "".join(w + (" " if sp else "") for w, sp in zip(sentence.words, spaces)).rstrip(" ")


def no_prefix_bpe():
    """Byte-level BPE whose pre-tokenizer adds no prefix space (like SmolLM2's and Llama 3's)."""
    from tokenizers import pre_tokenizers

    tok = bpe_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tok


def metaspace(scheme: str):
    from tokenizers import pre_tokenizers

    tok = sentencepiece_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme)
    return tok


# ----------------------------------------------------------------------------- space conventions

@pytest.mark.parametrize("make, expected", [
    (wordpiece_tokenizer, "plain"), (bpe_tokenizer, "respaced"), (no_prefix_bpe, "spaced"),
    (lambda: metaspace("always"), "respaced"), (lambda: metaspace("first"), "respaced"),
    (lambda: metaspace("never"), "spaced"),
])
def test_space_convention_is_read_off_the_tokenizer(make, expected):
    assert space_convention(make()) == expected


SPACE_MARKING = {"bpe-no-prefix": no_prefix_bpe, "bpe-add-prefix-space": bpe_tokenizer,
                 "metaspace-always": lambda: metaspace("always"), "metaspace-first": lambda: metaspace("first"),
                 "metaspace-never": lambda: metaspace("never")}


@pytest.mark.parametrize("name", sorted(SPACE_MARKING))
def test_spaced_words_reproduce_the_running_text(name, sample):
    tok = SPACE_MARKING[name]()
    sents = list(sample.sentences)
    encoded = encode_sentences(tok, sents)
    same = 0
    for s, e in zip(sents, encoded):
        real = [t for t, w in zip(e.input_ids, e.word_ids) if w >= 0]
        assert tok.decode(real).strip() == running_text(s)
        for i, word in enumerate(s.words):
            pieces = [t for t, w in zip(e.input_ids, e.word_ids) if w == i]
            assert tok.decode(pieces).strip() == word
        same += list(e.input_ids) == list(tok(running_text(s))["input_ids"])
    # Pieces differ from the running text's only where a merge crosses a UD word boundary (did|n't).
    assert same >= 0.9 * len(sents)


def test_prefix_marking_tokenizers_keep_punctuation_attached():
    s = Sentence(words=("I", "did", "n't", "go", "."), space_after=(True, False, True, False, False))
    for make in (bpe_tokenizer, lambda: metaspace("first")):
        tok = make()
        (e,) = encode_sentences(tok, [s])
        pieces = tok.convert_ids_to_tokens([t for t, w in zip(e.input_ids, e.word_ids) if w == 4])
        assert pieces == ["."], pieces                      # not "Ġ." / "▁." as plain pre-split words give


def test_without_the_spaces_a_no_prefix_tokenizer_would_glue_words():
    # The failure the spaced convention prevents: pre-split words read as one run of letters.
    tok = no_prefix_bpe()
    glued = tok([["the", "cat"]], is_split_into_words=True)["input_ids"][0]
    assert tok.decode(glued) == "thecat"
    (e,) = encode_sentences(tok, [Sentence(words=("the", "cat"))])
    assert tok.decode(list(e.input_ids)) == "the cat"


def test_text_words_follow_space_after():
    s = Sentence(words=("I", "did", "n't", "go", "."), space_after=(True, False, True, False, False))
    assert text_words(s, "spaced") == ["I", " did", "n't", " go", "."]
    assert text_words(s, "plain") == list(s.words)
    assert text_words(Sentence(words=("a", "b")), "spaced") == ["a", " b"]


MWT = """# sent_id = m1
# text = I didn't go, ok?
1\tI\tI\tPRON\t_\t_\t4\tnsubj\t_\t_
2-3\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdid\tdo\tAUX\t_\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\t_\t_\t4\tadvmod\t_\t_
4\tgo\tgo\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No
5\t,\t,\tPUNCT\t_\t_\t6\tpunct\t_\t_
6\tok\tok\tINTJ\t_\t_\t4\tdiscourse\t_\tSpaceAfter=No
7\t?\t?\tPUNCT\t_\t_\t4\tpunct\t_\tSpaceAfter=No

"""


def test_conllu_space_after_with_multiword_tokens():
    (s,) = parse_conllu(MWT).sentences
    assert s.words == ("I", "did", "n't", "go", ",", "ok", "?")
    assert s.space_after == (True, False, True, False, True, False, False)
    assert running_text(s) == "I didn't go, ok?"


def test_multiword_token_range_line_carries_space_after():
    text = ("1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No\n"
            "1\tdo\tdo\tAUX\t_\t_\t3\taux\t_\t_\n"
            "2\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\t_\n"
            "3\t!\t!\tPUNCT\t_\t_\t0\troot\t_\t_\n\n")
    (s,) = parse_conllu(text).sentences
    assert s.space_after == (False, False, True)


@needs_ewt
def test_ewt_space_after_rebuilds_every_sentence_text():
    import conllu

    corpus = headscope.load_conllu(EWT_DEV)
    with open(EWT_DEV, encoding="utf-8") as f:
        texts = [s.metadata["text"] for s in conllu.parse_incr(f)]
    assert len(texts) == len(corpus.sentences)
    wrong = [s.sent_id for s, t in zip(corpus.sentences, texts) if running_text(s) != t]
    assert wrong == []


# ----------------------------------------------------------------------------- BOS handling

def test_bos_and_no_bos_tokenizers_give_the_same_word_level_scores(sample):
    model, tok = tiny_llama(bos=True)
    with_bos = load_model(model, tokenizer=tok, name="tiny-llama")
    model, tok = tiny_llama(bos=False)
    without = load_model(model, tokenizer=tok, name="tiny-llama")
    sents = list(sample.sentences[:20])
    a = headscope.analyze(with_bos, sents, tasks="syntax,positional")
    b = headscope.analyze(without, sents, tasks="syntax,positional")
    assert a.meta.datasets[0]["bos_added"] == 0                  # the tokenizer adds <s> itself
    assert b.meta.datasets[0]["bos_added"] == 20                 # headscope adds it
    assert a.meta.datasets[0]["first_token"] == b.meta.datasets[0]["first_token"] == "<s>"
    cols = ["task", "relation", "direction", "metric", "baseline", "layer", "head", "score", "n"]
    import pandas as pd

    pd.testing.assert_frame_equal(a.scores[cols].reset_index(drop=True), b.scores[cols].reset_index(drop=True))

    # Without the BOS the first word becomes the attention sink: the scores change.
    c = headscope.analyze(without, sents, tasks="positional", prepend_bos=False)
    assert c.meta.datasets[0]["first_token"] is None
    assert c.meta.datasets[0]["bos_added"] == 0
    pos_a = a.scores[a.scores["task"] == "positional"]["score"].to_numpy()
    assert len(pos_a) == len(c.scores)
    assert abs(pos_a - c.scores["score"].to_numpy()).max() > 1e-3


def test_bos_is_a_special_column_never_a_word():
    tok = sentencepiece_tokenizer(bos=False)
    s = Sentence(words=("the", "cat", "sat"))
    (e,) = encode_sentences(tok, [s], bos_id=tok.bos_token_id)
    assert e.input_ids[0] == tok.bos_token_id and e.word_ids[0] == -1 and e.n_words == 3
    (twice,) = encode_sentences(sentencepiece_tokenizer(bos=True), [s], bos_id=tok.bos_token_id)
    assert twice.input_ids.count(tok.bos_token_id) == 1       # a tokenizer that adds it gets no second one


def test_encoders_get_no_bos_by_default(tiny_bert_loaded, sample):
    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:4]), tasks="positional")
    (d,) = r.meta.datasets
    assert d["bos_added"] == 0 and d["first_token"] == "[CLS]"


# ----------------------------------------------------------------------------- in-context learning

def reference_in_context_loss(model, sequences):
    """Per sequence, the mean loss of tokens 2..T of each copy, one sequence and one position at a time."""
    first, second = [], []
    for seq in sequences:
        ids = torch.tensor([seq.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        o, t = seq.bos, seq.length

        def loss(p):
            return float(-torch.log_softmax(logits[p - 1], -1)[seq.input_ids[p]])

        first.append(sum(loss(p) for p in range(o + 1, o + t)) / (t - 1))
        second.append(sum(loss(p) for p in range(o + t + 1, o + 2 * t)) / (t - 1))
    return sum(first) / len(first), sum(second) / len(second)


@pytest.mark.parametrize("bos", [True, False])
def test_in_context_loss_matches_a_position_by_position_reference(bos):
    model, tok = tiny_llama()
    seqs = make_sequences(tok, count=5, length=7, seed=3, bos=bos)
    got = in_context_loss(model, seqs, batch_size=2)
    f, s = reference_in_context_loss(model, seqs)
    assert got["loss_first_copy"] == pytest.approx(f, abs=1e-4)
    assert got["loss_second_copy"] == pytest.approx(s, abs=1e-4)
    assert got["difference"] == pytest.approx(s - f, abs=2e-4)
    assert got["sequences"] == 5 and got["tokens_per_copy"] == 6


def test_in_context_loss_is_skipped_without_a_language_model_head():
    model, tok = tiny_bert()
    seqs = make_sequences(tok, count=2, length=4, seed=0, bos=False)
    assert "skipped" in in_context_loss(model, seqs)


def test_induction_run_records_the_in_context_check(tiny):
    name, loaded = tiny
    r = headscope.analyze(loaded, None, tasks="induction", induction_count=4, induction_length=6)
    (d,) = r.meta.datasets
    icl = d["in_context_loss"]
    if name == "bert":
        assert "skipped" in icl
    else:
        assert icl["sequences"] == 4 and icl["loss_first_copy"] > 0


# ----------------------------------------------------------------------------- SmolLM2 (real model)

def test_smollm2_describes_itself_with_kv_groups(smollm2):
    info = smollm2.info
    assert (info.model_type, info.is_decoder, info.num_layers, info.num_heads, info.num_kv_heads) == \
        ("llama", True, 30, 9, 3)
    assert [info.kv_head(h) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "3 KV heads" in info.describe()
    assert space_convention(smollm2.tokenizer) == "spaced"


@needs_ewt
def test_smollm2_words_are_aligned_as_running_text_on_ewt(smollm2):
    import conllu

    tok = smollm2.tokenizer
    corpus = headscope.load_conllu(EWT_DEV)
    with open(EWT_DEV, encoding="utf-8") as f:
        texts = [s.metadata["text"] for s in conllu.parse_incr(f)]
    encoded = encode_sentences(tok, corpus.sentences, bos_id=tok.bos_token_id)
    same = 0
    for s, e, text in zip(corpus.sentences, encoded, texts):
        assert e.input_ids[0] == tok.bos_token_id and e.word_ids[0] == -1
        real = list(e.input_ids[1:])
        assert tok.decode(real) == text, s.sent_id
        for i, word in enumerate(s.words):
            pieces = [t for t, w in zip(e.input_ids, e.word_ids) if w == i]
            assert tok.decode(pieces).lstrip(" ") == word, (s.sent_id, word)
        same += real == tok(text, add_special_tokens=False)["input_ids"]
    # Pieces differ from running text only where BPE merges across a UD word boundary (didn't -> did n't).
    assert same / len(encoded) > 0.8


def test_smollm2_induction_matches_reference_and_learns_in_context(smollm2):
    from reference import reference_induction

    r = headscope.analyze(smollm2, None, tasks="induction", induction_count=4, induction_length=12, batch_size=2)
    (d,) = r.meta.datasets
    seqs = make_sequences(smollm2.tokenizer, count=4, length=12, seed=0, bos=True,
                          vocab_size=smollm2.model.get_input_embeddings().num_embeddings)
    assert d["bos"] and seqs[0].input_ids[0] == smollm2.tokenizer.bos_token_id
    ref = reference_induction(smollm2.model, seqs)
    assert len(r.scores) == 30 * 9 * 3
    for row in r.scores.itertuples():
        assert row.score == pytest.approx(ref[(row.layer, row.head, row.relation)], abs=1e-6)
    icl = d["in_context_loss"]
    # A trained decoder predicts the repeated copy far better than the random first one.
    assert icl["loss_second_copy"] < icl["loss_first_copy"] - 1.0


# ----------------------------------------------------------------------------- the report on a GQA decoder

def test_report_shows_kv_groups_causal_coverage_and_the_strongest_heads(tmp_path, sample):
    from headscope.reports import write_report
    from headscope.schema import head_label

    model, tok = tiny_llama()
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")
    r = headscope.analyze(loaded, list(sample.sentences[:30]), tasks="syntax,positional,induction",
                          induction_count=8, induction_length=8)
    write_report(r, tmp_path, figures=False)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Key/value groups (GQA): H0–H1 → KV 0, H2–H3 → KV 1" in text
    assert "| next | — | — | — | not visible under the causal mask |" in text
    assert "In-context-learning check: mean next-token loss" in text
    df = r.scores
    syn = df[(df["task"] == "syntax") & df["baseline"].isna()]
    for (rel, direction), g in syn.groupby(["relation", "direction"]):
        row = next(line for line in text.splitlines() if line.startswith(f"| {rel} | {direction} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[3]) == int(g["n_reachable"].max())
        if int(g["n_reachable"].max()) == 0:
            assert cells[4:] == ["—"] * 7
        else:
            top = g.loc[g["score"].idxmax()]
            assert cells[4] == head_label(top["layer"], top["head"])
    for pattern in ("induction", "previous"):
        sub = df[(df["task"] == "induction") & (df["relation"] == pattern)]
        top = sub.loc[sub["score"].idxmax()]
        kv = loaded.info.kv_head(int(top["head"]))
        assert f"| {pattern} | {head_label(top['layer'], top['head'])} [KV {kv}] ({top['score']:.3f})" in text


def test_cli_prepend_bos_option_is_recorded(tiny_bert_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from headscope.cli.app import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_bert_dir), "--tasks", "positional", "-n", "3",
                                      "--no-prepend-bos", "--no-figures", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["prepend_bos"] is False and "--no-prepend-bos" in run["command"]


def test_gap_rows_keep_the_spacing_of_their_text(tmp_path):
    from headscope.datasets.gap import load_gap

    header = "ID\tText\tPronoun\tPronoun-offset\tA\tA-offset\tA-coref\tB\tB-offset\tB-coref\tURL\n"
    text = "Anna met Mary (a friend), and she smiled."
    row = f"r1\t{text}\tshe\t{text.index('she')}\tAnna\t0\tTRUE\tMary\t{text.index('Mary')}\tFALSE\thttp://x\n"
    path = tmp_path / "gap.tsv"
    path.write_text(header + row, encoding="utf-8")
    (ex,) = load_gap(path).examples
    s = Sentence(words=ex.words, space_after=ex.space_after)
    assert running_text(s) == text
    tok = no_prefix_bpe()
    (e,) = encode_sentences(tok, [s])
    assert tok.decode(list(e.input_ids)) == text
