"""Real and hostile input (issue 11): CorefUD as a treebank, CoNLL shared-task names, relation labels,
huge numbers, CR line ends, control characters, long trees, long lines, folders of sentence files.

Each test here failed before the fix it names.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import write  # noqa: E402
from headscope.datasets import load_conllu, load_data  # noqa: E402
from headscope.datasets.loading import detect_format  # noqa: E402
from headscope.datasets.gap import HEADER, load_gap  # noqa: E402
from headscope.datasets.pairs import load_pairs  # noqa: E402
from headscope.errors import DataError  # noqa: E402
from headscope.types import Corpus, DocumentCorpus  # noqa: E402

HUGE = "9" * 5000  # Python's int() refuses more than 4,300 digits with a ValueError


def tok(i, form, head, rel, misc="_", upos="X") -> str:
    return "\t".join([str(i), form, "_", upos, "_", "_", str(head), rel, "_", misc])


def one_line(exc: pytest.ExceptionInfo, path: Path, line: int) -> str:
    err = exc.value
    assert isinstance(err, DataError), repr(err)
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert err.path == str(path) and err.line == line, msg
    assert msg.startswith(f"{path}:{line}"), msg
    return msg


# A two-sentence CorefUD document (UD English GUM style): trees plus Entity brackets; NamedEntity too.
GUM = [
    "# global.columns = ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC",
    "# newdoc id = GUM_a",
    "# sent_id = GUM_a-1",
    tok(1, "Mary", 2, "nsubj", "Entity=(e1-person-1)|NamedEntity=Yes", "PROPN"),
    tok(2, "saw", 0, "root", upos="VERB"),
    tok(3, "the", 4, "det", "Entity=(e2-animal-2", "DET"),
    tok(4, "cat", 2, "obj", "Entity=e2)", "NOUN"),
    tok(5, ".", 2, "punct", upos="PUNCT"),
    "",
    "# sent_id = GUM_a-2",
    tok(1, "She", 2, "nsubj", "Entity=(e1-person-1)", "PRON"),
    tok(2, "fed", 0, "root", upos="VERB"),
    tok(3, "it", 2, "obj", "Entity=(e2-animal-1)", "PRON"),
    tok(4, ".", 2, "punct", upos="PUNCT"),
]


def test_corefud_file_is_a_treebank_too(tmp_path):
    path = write(tmp_path, GUM, "en_gum-ud-dev.conllu")
    assert detect_format(path) == "corefud"
    corpus = load_data(path)
    assert isinstance(corpus, DocumentCorpus)
    sentences = corpus.as_corpus().sentences
    assert [s.relations for s in sentences] == [("nsubj", "root", "det", "obj", "punct"),
                                                 ("nsubj", "root", "obj", "punct")]
    assert all(s.has_tree for s in sentences) and len(corpus.documents[0].mentions) == 4


@pytest.mark.parametrize("misc", ["NamedEntity=Yes", "XEntity=(e1-x-1)", "Entity", "MyEntity=1|SpaceAfter=No"])
def test_other_entity_keys_are_not_corefud(tmp_path, misc):
    path = write(tmp_path, ["# sent_id = a", tok(1, "Mary", 2, "nsubj", misc), tok(2, "ran", 0, "root")], "a.conllu")
    assert detect_format(path) == "conllu"
    assert isinstance(load_data(path), Corpus)


def test_corefud_runs_syntax_tree_positional_and_coref_in_one_run(tmp_path, tiny_bert_loaded):
    from headscope import analyze

    path = write(tmp_path, GUM, "en_gum-ud-dev.conllu")
    result = analyze(tiny_bert_loaded, path, tasks="syntax,tree,positional,coref", bootstrap=0, n_examples=0)
    assert set(result.scores["task"]) == {"syntax", "tree", "positional", "coref"}
    auto = analyze(tiny_bert_loaded, path, bootstrap=0, n_examples=0)  # no tasks: all it supports but tree
    assert auto.meta.tasks == ["syntax", "positional", "coref"]
    assert set(auto.scores["task"]) == {"syntax", "positional", "coref"}
    assert {d["kind"] for d in auto.meta.datasets} == {"sentences", "documents"}


CONLL_DOC = ["#begin document (d); part 0", "d\t0\t0\tMary\tNNP\t(1)", "d\t0\t1\tran\tVBD\t-", "",
             "d\t0\t0\tShe\tPRP\t(1)", "d\t0\t1\tsat\tVBD\t-", "#end document"]


@pytest.mark.parametrize("name", ["a.v4_auto_conll", "a.v4_gold_conll", "a_conll", "a.gold_conll",
                                  "cctv_0001.english.v4_auto_conll"])
def test_conll_shared_task_names_are_conll2012(tmp_path, name):
    path = write(tmp_path, CONLL_DOC, name)
    assert detect_format(path) == "conll2012"
    corpus = load_data(path)
    assert isinstance(corpus, DocumentCorpus) and len(corpus.documents[0].mentions) == 2
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder, CONLL_DOC, name)
    assert len(load_data(folder).documents) == 1


def test_relation_labels_are_stripped_and_lowercased_with_one_warning(tmp_path, caplog):
    path = write(tmp_path, ["# sent_id = a", tok(1, "a", 3, " punct"), tok(2, "b", 3, "Punct"), tok(3, "c", 0, "root"),
                            tok(4, "d", 3, "NSUBJ:Pass "), tok(5, "e", 3, "weird"), tok(6, "f", 3, "odd")], "a.conllu")
    with caplog.at_level(logging.WARNING, logger="headscope"):
        corpus = load_conllu(path)
        kept = load_conllu(path, keep_subtypes=True)
    assert corpus.sentences[0].relations == ("punct", "punct", "root", "nsubj", "weird", "odd")
    assert kept.sentences[0].relations[3] == "nsubj:pass"
    rewritten = [r.getMessage() for r in caplog.records if "read as" in r.getMessage()]
    unknown = [r.getMessage() for r in caplog.records if "is not a UD relation" in r.getMessage()]
    assert len(rewritten) == 2 and len(unknown) == 2  # once per file load
    assert rewritten[0].startswith(f"{path}:2: relation ' punct' read as 'punct'") and "3 label(s)" in rewritten[0]
    assert unknown[0].startswith(f"{path}:6: relation 'weird' is not a UD relation") and "odd" in unknown[0]


# --------------------------------------------------------------------------- huge numbers


@pytest.mark.parametrize("where, lines, bad_line", [
    ("ID", [tok(HUGE, "a", 0, "root")], 1),
    ("HEAD", [tok(1, "a", 0, "root"), tok(2, "b", HUGE, "dep")], 2),
    ("range", [f"1-{HUGE}\tab\t_\t_\t_\t_\t_\t_\t_\t_", tok(1, "a", 0, "root")], 1),
    ("empty node", [tok(1, "a", 0, "root"), f"{HUGE}.1\tz\t_\t_\t_\t_\t_\t_\t_\t_"], 2),
])
def test_conllu_huge_integers_are_one_line_errors(tmp_path, where, lines, bad_line):
    good = [tok(1, "ok", 0, "root")]
    path = write(tmp_path, lines + [""] + good, "a.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    assert "digits" in one_line(exc, path, bad_line)
    assert len(load_conllu(path, on_error="skip")) == 1


def gap_row(rid="r1", text="Ann met Bea and she smiled.", pron_off="16", a_off="0", b_off="8") -> str:
    return "\t".join([rid, text, "she", pron_off, "Ann", a_off, "TRUE", "Bea", b_off, "FALSE", "http://x"])


def test_gap_huge_offset_is_a_one_line_error(tmp_path):
    path = write(tmp_path, ["\t".join(HEADER), gap_row("r1", pron_off=HUGE), gap_row("r2")], "g.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(path)
    assert "digits" in one_line(exc, path, 2)
    assert [e.example_id for e in load_gap(path, on_error="skip").examples] == ["r2"]


def test_conll2012_huge_part_is_a_one_line_error(tmp_path):
    lines = [f"#begin document (x); part {HUGE}", "x\t0\t0\tA\t-", "#end document"] + CONLL_DOC
    path = write(tmp_path, lines, "a.conll")
    with pytest.raises(DataError) as exc:
        load_data(path)
    assert "digits" in one_line(exc, path, 1)
    assert [d.doc_id for d in load_data(path, on_error="skip").documents] == ["d"]


PAIR = {"id": "p1", "a": "The cup fell off the table because it was round .",
        "b": "The cup fell off the table because it was flat .", "pronoun": 7, "candidates": [1, 5],
        "answers": [0, 1]}


@pytest.mark.parametrize("name, good", [
    ("s.jsonl", {"words": ["a", "b"]}),
    ("p.jsonl", PAIR),
    ("c.jsonlines", {"doc_key": "d", "sentences": [["a", "b"]], "clusters": [[[0, 0], [1, 1]]]}),
])
def test_json_huge_numbers_are_one_line_errors(tmp_path, name, good):
    bad = json.dumps(good).replace("{", '{"n": ' + HUGE + ", ", 1)
    second = dict(good, id="p2") if "pronoun" in good else dict(good, doc_key="e") if "doc_key" in good else good
    path = write(tmp_path, [json.dumps(good), bad, json.dumps(second)], name)
    # a huge number in the first line must not change how the file is recognised
    assert detect_format(write(tmp_path, [bad, json.dumps(good)], "first_" + name)) == detect_format(path)
    with pytest.raises(DataError) as exc:
        load_data(path)
    assert "digits" in one_line(exc, path, 2)
    assert len(load_data(path, on_error="skip")) == 2


# --------------------------------------------------------------------------- CR, NUL, control characters


def test_gap_with_old_mac_line_ends_loads(tmp_path):
    text = "\r".join(["\t".join(HEADER), gap_row("r1"), gap_row("r2")]) + "\r"
    path = write(tmp_path, text.encode(), "g.tsv")
    assert [e.example_id for e in load_gap(path).examples] == ["r1", "r2"]


def test_gap_cr_inside_a_field_is_a_bad_row(tmp_path):
    path = write(tmp_path, ["\t".join(HEADER), gap_row("r1", text="Ann met Bea\rand she smiled."), gap_row("r2")],
                 "g.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(path)
    assert "carriage return" in one_line(exc, path, 2)
    assert [e.example_id for e in load_gap(path, on_error="skip").examples] == ["r2"]


def test_error_messages_escape_control_characters(tmp_path):
    path = write(tmp_path, [tok("1x\x1b[2J", "a", 0, "root")], "a.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = one_line(exc, path, 1)
    assert "\x1b" not in msg and "\\x1b[2J" in msg
    cr = write(tmp_path, b"1\x00x\ta\t_\tX\t_\t_\t0\troot\t_\t_\n", "b.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(cr)
    assert "NUL byte" in one_line(exc, cr, 1)
    bidi = DataError("word '\u202egnp.exe' \r overwritten", path="x\ny", line=1)
    assert str(bidi) == "x\\ny:1: word '\\u202egnp.exe' \\r overwritten"


def test_utf16_file_is_named_as_such(tmp_path):
    path = write(tmp_path, "\n".join(["# sent_id = a", tok(1, "a", 0, "root")]).encode("utf-16"), "a.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    assert "UTF-16" in one_line(exc, path, 1)


# --------------------------------------------------------------------------- pairs


def test_duplicate_pair_id_names_its_line(tmp_path):
    path = write(tmp_path, [json.dumps(PAIR), json.dumps(dict(PAIR, a=PAIR["b"], b=PAIR["a"], answers=[1, 0]))],
                 "p.jsonl")
    with pytest.raises(DataError) as exc:
        load_pairs(path)
    assert "used twice (first at line 1)" in one_line(exc, path, 2)


def test_pairs_honour_on_error_skip(tmp_path):
    path = write(tmp_path, [json.dumps(PAIR), "{not json", json.dumps(dict(PAIR, id="p2", pronoun=99))], "p.jsonl")
    with pytest.raises(DataError):
        load_pairs(path)
    corpus = load_data(path, on_error="skip")
    assert [p.pair_id for p in corpus.pairs] == ["p1"] and corpus.skipped == 2


# --------------------------------------------------------------------------- folders, long trees, long lines


def test_folder_of_sentence_jsonl_files_is_sentences(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    write(folder, [json.dumps({"words": ["a", "b"]}), json.dumps({"text": "c d e"})], "one.jsonl")
    write(folder, ["f g", "h"], "two.txt")
    (folder / "README").write_text("not data\n")
    corpus = load_data(folder)
    assert isinstance(corpus, Corpus) and corpus.name == "texts"
    assert [s.words for s in corpus.sentences] == [("a", "b"), ("c", "d", "e"), ("f", "g"), ("h",)]
    write(folder, CONLL_DOC, "doc.conll")  # with coreference files beside them, those are what the folder holds
    assert isinstance(load_data(folder), DocumentCorpus)


def test_long_chain_tree_is_checked_in_linear_time(tmp_path):
    # each word's head is the next word: the walk-up check used to take time cubic in the length
    n = 30_000
    lines = [tok(i, f"w{i}", i + 1 if i < n else 0, "dep" if i < n else "root") for i in range(1, n + 1)]
    corpus = load_conllu(write(tmp_path, lines, "chain.conllu"))
    assert corpus.sentences[0].heads[:3] == (1, 2, 3) and corpus.sentences[0].heads[-1] == -1
    # word 1 is the root; 2 -> 3 -> ... -> n -> 2 is a cycle as long as the sentence
    cycle = [tok(1, "r", 0, "root")] + lines[1:-1] + [tok(n, f"w{n}", 2, "dep")]
    with pytest.raises(DataError) as exc:
        load_conllu(write(tmp_path, cycle + ["", tok(1, "x", 0, "root")], "cycle.conllu"))
    assert "makes a cycle 2 -> 3 -> 4" in str(exc.value) and f"-> ... -> 2 ({n - 1} words)" in str(exc.value)


def test_sentences_longer_than_the_model_are_not_tokenized():
    from conftest import wordpiece_tokenizer

    from headscope.capture.alignment import encode_sentences
    from headscope.types import Sentence

    huge = Sentence(words=("word",) * 3_000_000, sent_id="huge")
    short = Sentence(words=("a", "b"), sent_id="short")
    encoded = encode_sentences(wordpiece_tokenizer(), [huge, short], max_length=512)
    assert [e.index for e in encoded] == [1]


# --------------------------------------------------------------------------- the UD validator's classes of error

GOOD_SENT = ["# sent_id = ok", tok(1, "Dogs", 2, "nsubj"), tok(2, "bark", 0, "root")]
# name -> (sentence lines; the bad line counts from 1 within them, after a good sentence and a blank line; fragment)
STRUCTURAL = {
    "nine-columns": ([tok(1, "a", 0, "root").rsplit("\t", 1)[0]], 1, "expected 10 tab-separated columns"),
    "spaces-not-tabs": (["1 a _ X _ _ 0 root _ _"], 1, "expected 10 tab-separated columns"),
    "id-not-integer": ([tok("one", "a", 0, "root")], 1, "is not a positive integer"),
    "id-zero": ([tok(0, "a", 0, "root")], 1, "ID '0'"),
    "id-gap": ([tok(1, "a", 0, "root"), tok(3, "b", 1, "dep")], 2, "ID 3 out of sequence; expected 2"),
    "id-repeated": ([tok(1, "a", 0, "root"), tok(1, "b", 1, "dep")], 2, "ID 1 out of sequence; expected 2"),
    "range-reversed": (["3-2\tab\t_\t_\t_\t_\t_\t_\t_\t_", tok(1, "a", 0, "root")], 1, "must run forwards"),
    "head-out-of-range": ([tok(1, "a", 0, "root"), tok(2, "b", 9, "dep")], 2, "HEAD 9 of word 2 is out of range"),
    "head-negative": ([tok(1, "a", 0, "root"), tok(2, "b", -1, "dep")], 2, "out of range"),
    "head-not-integer": ([tok(1, "a", 0, "root"), tok(2, "b", "x", "dep")], 2, "is not an integer"),
    "head-padded": ([tok(1, "a", 0, "root"), tok(2, "b", " 1", "dep")], 2, "is not an integer"),
    "self-loop": ([tok(1, "a", 0, "root"), tok(2, "b", 2, "dep")], 2, "makes a cycle 2 -> 2"),
    "cycle": ([tok(1, "a", 0, "root"), tok(2, "b", 3, "dep"), tok(3, "c", 2, "dep")], 2, "makes a cycle 2 -> 3 -> 2"),
    "no-root": ([tok(1, "a", 2, "dep"), tok(2, "b", 1, "dep")], 1, "no word with HEAD 0"),
    "two-roots": ([tok(1, "a", 0, "root"), tok(2, "b", 0, "root")], 2, "2 roots"),
    "no-deprel": ([tok(1, "a", 0, "root"), tok(2, "b", 1, "_")], 2, "has no DEPREL"),
    "empty-form": ([tok(1, "", 0, "root")], 1, "empty FORM"),
    "blank-line-inside": ([tok(1, "a", 0, "root"), "", tok(2, "b", 1, "dep")], 3, "ID 2 out of sequence; expected 1"),
    "whitespace-line-inside": ([tok(1, "a", 0, "root"), "   ", tok(2, "b", 1, "dep")], 3, "ID 2 out of sequence"),
    "latin-1": ([tok(1, "caf\udce9", 0, "root")], 1, "not valid UTF-8"),
    "nul-byte": ([tok(1, "a\x00", 0, "root")], 1, "NUL byte"),
}


def _conllu_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_structural_errors_exit_2_with_path_line(tmp_path, tiny_bert_dir, name):
    from typer.testing import CliRunner

    from headscope.cli.app import app

    lines, bad, fragment = STRUCTURAL[name]
    path = tmp_path / "broken.conllu"
    path.write_bytes(_conllu_bytes(GOOD_SENT + [""] + lines))
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(path), "--tasks", "syntax",
                                      "--bootstrap", "0", "--no-figures", "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert errors[0].startswith(f"headscope: error: {path}:{len(GOOD_SENT) + 1 + bad}"), errors[0]
    assert fragment in errors[0], errors[0]
    skipped = CliRunner().invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(path), "--tasks", "syntax",
                                       "--bootstrap", "0", "--no-figures", "-q", "--on-error", "skip",
                                       "--out", str(tmp_path / "skipped")])
    assert skipped.exit_code == 0 and "skipped" in skipped.stdout, skipped.output


# Errors the UD validator reports that leave the words and the tree as they are: the file still runs.
TREE_NEUTRAL = {
    "unknown-upos": [tok(1, "a", 0, "root", upos="XYZ"), tok(2, "b", 1, "dep")],
    "bad-feats": ["\t".join(["1", "a", "_", "X", "_", "Foo", "0", "root", "_", "_"]), tok(2, "b", 1, "dep")],
    "bad-deps-and-misc": ["\t".join(["1", "a", "_", "X", "_", "_", "0", "root", "x:y:z", "SpaceAfter"]),
                          tok(2, "b", 1, "dep", "Foo=")],
    "relation-case-and-space": [tok(1, "a", 0, "root"), tok(2, "b", 1, " Punct "), tok(3, "c", 1, "weird")],
    "space-in-form": [tok(1, "New York", 0, "root"), tok(2, "b", 1, "dep")],
    "no-sent-id-or-text": [tok(1, "a", 0, "root")],
    "range-past-the-end": ["2-5\tbx\t_\t_\t_\t_\t_\t_\t_\t_", tok(1, "a", 0, "root"), tok(2, "b", 1, "dep")],
    "comment-after-tokens": [tok(1, "a", 0, "root"), "# a late comment", tok(2, "b", 1, "dep")],
}


@pytest.mark.parametrize("name", sorted(TREE_NEUTRAL))
def test_errors_that_keep_the_tree_still_run(tmp_path, name):
    raw = _conllu_bytes(["", "", "# sent_id = ok", "# sent_id = ok"] + TREE_NEUTRAL[name] + ["", "", ""] + GOOD_SENT)
    for variant, data in (("lf", raw), ("crlf-bom", b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")),
                          ("no-final-newline", raw.rstrip(b"\n"))):
        path = tmp_path / f"{name}-{variant}.conllu"
        path.write_bytes(data)
        corpus = load_conllu(path)
        assert len(corpus) == 2 and corpus.skipped == 0, variant
        assert corpus.sentences[0].heads[0] == -1 or corpus.sentences[0].heads[1] == -1
