"""Data loaders: CoNLL-U (ud.py), plain text / jsonl (text.py), dispatch (loading.py), the sample, EWT dev.

Every malformed-input test asserts the exact ``path:line`` of the offending line, a fragment of the
message saying what was expected, and that the message is a single line.
"""

from __future__ import annotations

import collections
import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import EWT_DEV, needs_ewt, write  # noqa: E402

from headscope.datasets import FORMATS, load_conllu, load_data, load_sample, load_text, parse_conllu  # noqa: E402
from headscope.datasets.loading import detect_format, sample_path  # noqa: E402
from headscope.datasets.ud import fold_relation  # noqa: E402
from headscope.errors import DataError, HeadscopeError  # noqa: E402


# --------------------------------------------------------------------------- helpers


def tok(i, form, head, rel, upos="X", lemma="_", misc="_", deps="_") -> str:
    """One CoNLL-U token line with real tabs."""
    return "\t".join([str(i), form, lemma, upos, "_", "_", str(head), rel, deps, misc])


def located(exc: pytest.ExceptionInfo, path: Path, line: int | None, sent_id: str | None = None) -> str:
    """Check the DataError's location fields and rendering; return its one-line message."""
    err = exc.value
    assert isinstance(err, DataError)
    assert isinstance(err, HeadscopeError)
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert err.path == str(path)
    assert err.line == line
    assert err.sent_id == sent_id
    prefix = str(path) + (f":{line}" if line is not None else "") + (f" ({sent_id})" if sent_id else "") + ": "
    assert msg.startswith(prefix), (msg, prefix)
    return msg


def good(sent_id: str, word: str = "Dogs") -> list[str]:
    """A valid 3-word sentence block (4 lines) followed by a blank line (5 lines in all)."""
    return [f"# sent_id = {sent_id}", tok(1, word, 2, "nsubj", "NOUN"), tok(2, "bark", 0, "root", "VERB"),
            tok(3, ".", 2, "punct", "PUNCT"), ""]


# --------------------------------------------------------------------------- valid CoNLL-U


VALID = [
    "# newdoc id = doc-1",       # 1 (comment-only block: a file header)
    "",                          # 2
    "# sent_id = s-1",           # 3
    "# text = The cat sat.",     # 4
    tok(1, "The", 2, "det", "DET", "the"),          # 5
    tok(2, "cat", 3, "nsubj", "NOUN", "cat"),       # 6
    tok(3, "sat", 0, "root", "VERB", "sit", "SpaceAfter=No"),  # 7
    tok(4, ".", 3, "punct", "PUNCT", "."),          # 8
    "",                          # 9
    "# text = Birds fly",        # 10 (no sent_id)
    tok(1, "Birds", 2, "nsubj", "NOUN"),            # 11
    tok(2, "fly", 0, "root", "VERB"),               # 12
]


def test_valid_sentence_fields(tmp_path):
    path = write(tmp_path, VALID, "valid.conllu")
    corpus = load_conllu(path)
    assert len(corpus) == 2
    s = corpus.sentences[0]
    assert s.words == ("The", "cat", "sat", ".")
    assert s.heads == (1, 2, -1, 2)
    assert s.relations == ("det", "nsubj", "root", "punct")
    assert s.upos == ("DET", "NOUN", "VERB", "PUNCT")
    assert s.sent_id == "s-1"
    assert s.source == f"{path}:3"
    assert s.has_tree and len(s) == 4
    t = corpus.sentences[1]
    assert t.words == ("Birds", "fly") and t.heads == (1, -1)
    assert t.sent_id == "valid.conllu:10"  # fallback: file name and first line of the block
    assert t.source == f"{path}:10"
    assert corpus.name == "valid"
    assert corpus.path == str(path)
    assert corpus.skipped == 0 and corpus.skipped_reasons == ()


def test_parse_conllu_from_string_and_bytes():
    text = "\n".join(VALID) + "\n"
    a = parse_conllu(text, "mem.conllu")
    b = parse_conllu(text.encode("utf-8"), "mem.conllu")
    assert a == b
    assert a.sentences[0].source == "mem.conllu:3"
    assert a.checksum == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert parse_conllu(text).sentences[0].source == "<string>:3"
    assert parse_conllu(text, "mem.conllu", name="custom").name == "custom"


def test_upos_underscore_becomes_placeholder(tmp_path):
    path = write(tmp_path, [tok(1, "hi", 0, "root", "_")])
    assert load_conllu(path).sentences[0].upos == ("_",)


def test_crlf_line_endings(tmp_path):
    data = ("\r\n".join(VALID) + "\r\n").encode("utf-8")
    path = write(tmp_path, data)
    corpus = load_conllu(path)
    assert corpus.sentences[0].words == ("The", "cat", "sat", ".")
    assert corpus.sentences[0].relations == ("det", "nsubj", "root", "punct")
    assert corpus.sentences[1].source == f"{path}:10"


def test_multiword_tokens_and_empty_nodes_are_skipped(tmp_path):
    lines = [
        "# sent_id = mwt",                                      # 1
        "# text = The dog didn't bark.",                        # 2
        tok(1, "The", 2, "det", "DET"),                         # 3
        tok(2, "dog", 5, "nsubj", "NOUN"),                      # 4
        "3-4\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_",                  # 5
        tok(3, "did", 5, "aux", "AUX"),                         # 6
        tok(4, "n't", 5, "advmod", "PART"),                     # 7
        tok(5, "bark", 0, "root", "VERB", misc="SpaceAfter=No"),  # 8
        "5.1\tbarked\tbark\tVERB\t_\t_\t_\t_\t5:conj\t_",       # 9
        tok(6, ".", 5, "punct", "PUNCT"),                       # 10
    ]
    corpus = load_conllu(write(tmp_path, lines))
    (s,) = corpus.sentences
    assert s.words == ("The", "dog", "did", "n't", "bark", ".")
    assert s.heads == (1, 4, 4, 4, -1, 4)
    assert s.relations == ("det", "nsubj", "aux", "advmod", "root", "punct")
    assert s.upos == ("DET", "NOUN", "AUX", "PART", "VERB", "PUNCT")
    assert "didn't" not in s.words and "barked" not in s.words


def test_subtypes_folded_by_default_and_kept_on_request(tmp_path):
    lines = [
        tok(1, "It", 3, "nsubj:pass", "PRON"),
        tok(2, "was", 3, "aux:pass", "AUX"),
        tok(3, "eaten", 0, "root", "VERB"),
        tok(4, "by", 6, "case", "ADP"),
        tok(5, "my", 6, "nmod:poss", "PRON"),
        tok(6, "dog", 3, "obl:agent", "NOUN"),
    ]
    path = write(tmp_path, lines)
    assert load_conllu(path).sentences[0].relations == ("nsubj", "aux", "root", "case", "nmod", "obl")
    assert load_conllu(path, keep_subtypes=True).sentences[0].relations == (
        "nsubj:pass", "aux:pass", "root", "case", "nmod:poss", "obl:agent")
    assert load_data(path, keep_subtypes=True).sentences[0].relations[0] == "nsubj:pass"


@pytest.mark.parametrize("rel, folded", [("nsubj:pass", "nsubj"), ("acl:relcl", "acl"), ("obl:npmod", "obl"),
                                         ("det", "det"), ("a:b:c", "a")])
def test_fold_relation(rel, folded):
    assert fold_relation(rel) == folded
    assert fold_relation(rel, keep_subtypes=True) == rel


# --------------------------------------------------------------------------- malformed CoNLL-U

# The bad sentence is the second block: `# sent_id = bad-1` on line 6, its word lines on 7, 8, 9.
ROW1 = tok(1, "a", 0, "root")
MALFORMED = {
    "non-integer HEAD": (
        [ROW1, tok(2, "b", "x", "dep"), tok(3, "c", 1, "dep")], 8,
        ["HEAD 'x' of word 2 is not an integer", "use 0 for the root and the ID of the head word"]),
    "HEAD out of range": (
        [ROW1, tok(2, "b", 1, "dep"), tok(3, "c", 9, "dep")], 9,
        ["HEAD 9 of word 3 is out of range 0..3"]),
    "negative HEAD": (
        [ROW1, tok(2, "b", -1, "dep"), tok(3, "c", 1, "dep")], 8,
        ["HEAD -1 of word 2 is out of range 0..3"]),
    "9 columns": (
        [ROW1, "\t".join(["2", "b", "_", "X", "_", "_", "1", "dep", "_"]), tok(3, "c", 1, "dep")], 8,
        ["expected 10 tab-separated columns, got 9", "ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC"]),
    "11 columns": (
        [ROW1, tok(2, "b", 1, "dep") + "\textra", tok(3, "c", 1, "dep")], 8,
        ["expected 10 tab-separated columns, got 11"]),
    "4 columns": (
        [ROW1, tok(2, "b", 1, "dep"), "3\tc\t1\tdep"], 9,
        ["expected 10 tab-separated columns, got 4"]),
    "spaces instead of tabs": (
        [ROW1, "2 b _ X _ _ 1 dep _ _", tok(3, "c", 1, "dep")], 8,
        ["expected 10 tab-separated columns, got 1"]),
    "cycle": (
        [ROW1, tok(2, "b", 3, "dep"), tok(3, "c", 2, "dep")], 8,
        ["HEAD of word 2 makes a cycle 2 -> 3 -> 2"]),
    "longer cycle": (
        [ROW1, tok(2, "b", 4, "dep"), tok(3, "c", 2, "dep"), tok(4, "d", 3, "dep")], 8,
        ["HEAD of word 2 makes a cycle 2 -> 4 -> 3 -> 2"]),
    "self loop": (
        [ROW1, tok(2, "b", 1, "dep"), tok(3, "c", 3, "dep")], 9,
        ["HEAD of word 3 makes a cycle 3 -> 3"]),
    "two roots": (
        [ROW1, tok(2, "b", 0, "root"), tok(3, "c", 1, "dep")], 8,
        ["2 roots (words 1, 2)", "a sentence needs exactly one root"]),
    "three roots": (
        [ROW1, tok(2, "b", 1, "dep"), tok(3, "c", 0, "root"), tok(4, "d", 0, "root")], 9,
        ["3 roots (words 1, 3, 4)", "a sentence needs exactly one root"]),
    # no root: there is no single offending word, so the sentence's first line (the comment) is reported
    "no root": (
        [tok(1, "a", 2, "dep"), tok(2, "b", 3, "dep"), tok(3, "c", 2, "dep")], 6,
        ["no word with HEAD 0", "a sentence needs exactly one root"]),
    "two words heading each other, no root": (
        [tok(1, "a", 2, "dep"), tok(2, "b", 1, "dep")], 6,
        ["no word with HEAD 0", "a sentence needs exactly one root"]),
    "ID out of sequence": (
        [ROW1, tok(3, "b", 1, "dep"), tok(4, "c", 1, "dep")], 8,
        ["ID 3 out of sequence; expected 2"]),
    "ID repeated": (
        [ROW1, tok(2, "b", 1, "dep"), tok(2, "c", 1, "dep")], 9,
        ["ID 2 out of sequence; expected 3"]),
    "first ID not 1": (
        [tok(2, "a", 0, "root")], 7,
        ["ID 2 out of sequence; expected 1"]),
    "non-integer ID": (
        [ROW1, tok("two", "b", 1, "dep"), tok(3, "c", 1, "dep")], 8,
        ["ID 'two' is not a positive integer"]),
    "malformed range ID": (
        [ROW1, "2-x\tbc\t_\t_\t_\t_\t_\t_\t_\t_", tok(2, "b", 1, "dep")], 8,
        ["ID '2-x' is not a word id, a range like 3-4 or an empty node like 5.1"]),
    "missing DEPREL": (
        [ROW1, tok(2, "b", 1, "_")], 8,
        ["word 2 has no DEPREL"]),
    "empty FORM": (
        [ROW1, tok(2, "", 1, "dep")], 8,
        ["word 2 has an empty FORM"]),
    "only a multiword range": (
        ["1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_"], 6,
        ["sentence has no word lines"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("with_sent_id", [True, False], ids=["sent_id", "no-sent_id"])
def test_malformed_conllu(tmp_path, case, with_sent_id):
    rows, bad_line, fragments = MALFORMED[case]
    header = ["# sent_id = bad-1"] if with_sent_id else ["# text = a b c"]
    path = write(tmp_path, good("ok-1") + header + rows + ["", *good("ok-2")])
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = located(exc, path, bad_line, "bad-1" if with_sent_id else None)
    for fragment in fragments:
        assert fragment in msg
    # the same data through parse_conllu and load_data report the same thing
    with pytest.raises(DataError) as exc2:
        parse_conllu(path.read_bytes(), str(path))
    assert str(exc2.value) == msg
    with pytest.raises(DataError) as exc3:
        load_data(path)
    assert str(exc3.value) == msg


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_conllu_is_skipped(tmp_path, case):
    rows, bad_line, fragments = MALFORMED[case]
    path = write(tmp_path, good("ok-1") + ["# sent_id = bad-1"] + rows + ["", *good("ok-2")])
    corpus = load_conllu(path, on_error="skip")
    assert [s.sent_id for s in corpus.sentences] == ["ok-1", "ok-2"]
    assert corpus.skipped == 1
    (reason,) = corpus.skipped_reasons
    assert reason.startswith(f"{path}:{bad_line} (bad-1): ")
    assert all(f in reason for f in fragments)


def test_non_utf8_bytes_in_form(tmp_path):
    data = ("\n".join(good("ok-1") + ["# sent_id = bad-1", ROW1]) + "\n").encode("utf-8")
    data += b"2\tca\xff\xfe\t_\tX\t_\t_\t1\tdep\t_\t_\n"  # line 8; the bad byte is byte 5 of the line
    data += (tok(3, "c", 1, "dep") + "\n").encode("utf-8")
    path = write(tmp_path, data)
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = located(exc, path, 8, "bad-1")
    assert "not valid UTF-8 (byte 0xff at column 5)" in msg
    assert "re-save the file as UTF-8" in msg
    corpus = load_conllu(path, on_error="skip")
    assert [s.sent_id for s in corpus.sentences] == ["ok-1"] and corpus.skipped == 1
    assert corpus.skipped_reasons[0].startswith(f"{path}:8 (bad-1): not valid UTF-8")


def test_non_utf8_bytes_in_comment(tmp_path):
    data = b"# sent_id = s\n# text = caf\xe9\n" + (ROW1 + "\n").encode("utf-8")
    path = write(tmp_path, data)
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = located(exc, path, 2, "s")
    assert "not valid UTF-8 (byte 0xe9 at column 13)" in msg


@pytest.mark.parametrize("content", [b"", b"   \n\t\n\n", b"\n", b"\r\n\r\n"], ids=["empty", "whitespace", "newline",
                                                                                 "crlf"])
def test_empty_or_whitespace_file(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = located(exc, path, 1)
    assert "file is empty; expected CoNLL-U sentences (10 tab-separated columns" in msg


def test_comment_only_file(tmp_path):
    path = write(tmp_path, ["# newdoc id = x", "# sent_id = 1"])
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = located(exc, path, 1)
    assert "no valid sentence found (0 skipped)" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.conllu"
    for loader in (load_conllu, load_data, load_text):
        with pytest.raises(DataError) as exc:
            loader(path)
        msg = located(exc, path, None)
        assert msg == f"{path}: file not found; check the path"


def test_directory_given_as_file(tmp_path):
    path = tmp_path / "dir.conllu"
    path.mkdir()
    for loader in (load_conllu, load_data, load_text):
        with pytest.raises(DataError) as exc:
            loader(path)
        msg = located(exc, path, None)
        assert "is a directory" in msg and "give a" in msg


def test_sent_id_in_error_only_when_present(tmp_path):
    with_id = write(tmp_path, ["# sent_id = weblog-42", "# text = a b", ROW1, tok(2, "b", "?", "dep")], "a.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(with_id)
    assert str(exc.value).startswith(f"{with_id}:4 (weblog-42): HEAD '?' of word 2 is not an integer")
    without = write(tmp_path, ["# text = a b", ROW1, tok(2, "b", "?", "dep")], "b.conllu")
    with pytest.raises(DataError) as exc:
        load_conllu(without)
    assert str(exc.value).startswith(f"{without}:3: HEAD '?' of word 2 is not an integer")


def test_sent_id_without_spaces_around_equals(tmp_path):
    path = write(tmp_path, ["#sent_id=tight", ROW1, tok(2, "b", 9, "dep")])
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    located(exc, path, 3, "tight")


# --------------------------------------------------------------------------- skip mode, limit, checksum


def test_skip_mode_counts_and_names_lines(tmp_path, caplog):
    lines = (good("ok-1")                                                        # 1-5
             + ["# sent_id = bad-1", ROW1, tok(2, "b", "x", "dep"), ""]          # 6-9, bad on 8
             + good("ok-2")                                                      # 10-14
             + ["# sent_id = bad-2", ROW1, tok(2, "b", 3, "dep"), tok(3, "c", 2, "dep"), ""]  # 15-19, bad on 17
             + good("ok-3")[:-1])                                                # 20-23
    path = write(tmp_path, lines)
    with caplog.at_level("WARNING", logger="headscope.datasets.ud"):
        corpus = load_conllu(path, on_error="skip")
    assert len(corpus) == 3
    assert [s.sent_id for s in corpus.sentences] == ["ok-1", "ok-2", "ok-3"]
    assert [s.source for s in corpus.sentences] == [f"{path}:1", f"{path}:10", f"{path}:20"]
    assert corpus.skipped == 2
    assert len(corpus.skipped_reasons) == 2
    assert corpus.skipped_reasons[0].startswith(f"{path}:8 (bad-1): HEAD 'x' of word 2 is not an integer")
    assert corpus.skipped_reasons[1].startswith(f"{path}:17 (bad-2): HEAD of word 2 makes a cycle 2 -> 3 -> 2")
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(DataError) as exc:  # fail mode stops at the first one
        load_conllu(path)
    located(exc, path, 8, "bad-1")


def test_skip_mode_all_bad_raises(tmp_path):
    lines = ["# sent_id = bad-1", ROW1, tok(2, "b", "x", "dep"), "", "# sent_id = bad-2", ROW1, tok(2, "b", 0, "root")]
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as exc:
        load_conllu(path, on_error="skip")
    msg = located(exc, path, 1)
    assert "no valid sentence found (2 skipped)" in msg
    assert f"first problem: {path}:3 (bad-1): HEAD 'x' of word 2 is not an integer" in msg


def test_on_error_must_be_known(tmp_path):
    path = write(tmp_path, good("ok-1"))
    with pytest.raises(ValueError, match="on_error must be one of"):
        load_conllu(path, on_error="ignore")


def test_limit_stops_after_n_valid_sentences(tmp_path):
    lines = good("ok-1") + good("ok-2") + good("ok-3") + ["# sent_id = bad", ROW1, tok(2, "b", "x", "dep")]
    path = write(tmp_path, lines)
    assert [s.sent_id for s in load_conllu(path, limit=2).sentences] == ["ok-1", "ok-2"]
    # the bad sentence after the limit is never read, even in fail mode
    assert len(load_conllu(path, limit=3)) == 3
    assert len(load_data(path, limit=1)) == 1
    with pytest.raises(DataError):
        load_conllu(path, limit=4)


def test_limit_counts_valid_sentences_in_skip_mode(tmp_path):
    lines = good("ok-1") + ["# sent_id = bad", ROW1, tok(2, "b", "x", "dep"), ""] + good("ok-2") + good("ok-3")
    path = write(tmp_path, lines)
    corpus = load_conllu(path, on_error="skip", limit=2)
    assert [s.sent_id for s in corpus.sentences] == ["ok-1", "ok-2"]
    assert corpus.skipped == 1


def test_checksum_is_sha256_of_file_bytes(tmp_path):
    path = write(tmp_path, VALID)
    data = path.read_bytes()
    corpus = load_conllu(path)
    assert corpus.checksum == hashlib.sha256(data).hexdigest()
    assert len(corpus.checksum) == 64
    # the checksum covers the whole file, not only the sentences that were kept
    assert load_conllu(path, limit=1).checksum == corpus.checksum
    other = write(tmp_path, VALID + ["# extra"], "other.conllu")
    assert load_conllu(other).checksum != corpus.checksum


# --------------------------------------------------------------------------- load_data dispatch


def test_load_data_dispatches_by_suffix(tmp_path):
    conllu_path = write(tmp_path, VALID, "a.conllu")
    txt = tmp_path / "b.txt"
    txt.write_text("one two three\nfour five\n", encoding="utf-8")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"words": ["x", "y"]}\n', encoding="utf-8")
    js = tmp_path / "d.json"
    js.write_text('{"text": "p q r"}\n', encoding="utf-8")
    upper = write(tmp_path, VALID, "E.CONLLU")

    c = load_data(conllu_path)
    assert c.sentences[0].has_tree and c.sentences[0].words == ("The", "cat", "sat", ".")
    t = load_data(txt)
    assert [s.words for s in t.sentences] == [("one", "two", "three"), ("four", "five")]
    assert all(not s.has_tree and s.heads is None for s in t.sentences)
    assert load_data(jsonl).sentences[0].words == ("x", "y")
    assert load_data(js).sentences[0].words == ("p", "q", "r")
    assert load_data(upper).sentences[0].has_tree
    assert detect_format(Path("x.conllu")) == "conllu"
    assert detect_format(Path("x.txt")) == "text"
    assert detect_format(Path("x.jsonl")) == "jsonl"
    assert {"conllu", "text", "jsonl"} <= set(FORMATS)


@pytest.mark.parametrize("name", ["data.csv", "data", "data.xyz"])
def test_load_data_rejects_unknown_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_data(path)
    msg = located(exc, path, None)
    assert f"cannot tell the format from the file name '{path.name}'" in msg
    assert "pass fmt=" in msg and "--format" not in msg      # the command line says --format (test_cli)
    assert ".conllu" in msg and ".txt" in msg and ".jsonl" in msg


def test_load_data_fmt_overrides_suffix(tmp_path):
    conllu_as_txt = write(tmp_path, VALID, "tree.txt")
    assert load_data(conllu_as_txt, fmt="conllu").sentences[0].heads == (1, 2, -1, 2)
    # without fmt, the same file is plain text: every non-empty line is a sentence of whitespace-split words
    assert not load_data(conllu_as_txt).sentences[0].has_tree
    unknown = tmp_path / "sents.data"
    unknown.write_text('{"id": "s", "words": ["a"]}\n', encoding="utf-8")
    assert load_data(unknown, fmt="jsonl").sentences[0].sent_id == "s"
    assert load_data(unknown, fmt="text").sentences[0].words == ('{"id":', '"s",', '"words":', '["a"]}')
    jsonl_as_text = tmp_path / "x.jsonl"
    jsonl_as_text.write_text("plain words here\n", encoding="utf-8")
    assert load_data(jsonl_as_text, fmt="text").sentences[0].words == ("plain", "words", "here")


def test_load_data_rejects_unknown_fmt(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(DataError) as exc:
        load_data(path, fmt="xml")
    msg = located(exc, path, None)
    assert "unknown format 'xml'; choose from conllu, text, jsonl" in msg


# --------------------------------------------------------------------------- text and jsonl


def test_text_one_sentence_per_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"The cat sat .\n\n   \n  Dogs   bark\tloudly  \r\nlast line without newline")
    corpus = load_text(path)
    assert [s.words for s in corpus.sentences] == [("The", "cat", "sat", "."), ("Dogs", "bark", "loudly"),
                                                   ("last", "line", "without", "newline")]
    assert [s.sent_id for s in corpus.sentences] == ["s.txt:1", "s.txt:4", "s.txt:5"]
    assert [s.source for s in corpus.sentences] == [f"{path}:1", f"{path}:4", f"{path}:5"]
    assert all(s.heads is None and s.relations is None and s.upos is None for s in corpus.sentences)
    assert corpus.name == "s" and corpus.path == str(path) and corpus.skipped == 0
    assert corpus.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_text_limit(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("a\n\nb\nc\nd\n", encoding="utf-8")
    assert [s.words for s in load_text(path, limit=2).sentences] == [("a",), ("b",)]


def test_jsonl_words_text_and_ids(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = [json.dumps({"id": "first", "words": ["New York", "is", "big"]}),
            "",
            json.dumps({"text": "  Hello   world  "}),
            json.dumps({"id": 7, "text": "a b"}),
            json.dumps({"words": ["x"], "text": "ignored because words wins"})]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    corpus = load_text(path)
    assert [s.words for s in corpus.sentences] == [("New York", "is", "big"), ("Hello", "world"), ("a", "b"), ("x",)]
    assert [s.sent_id for s in corpus.sentences] == ["first", "s.jsonl:3", "7", "s.jsonl:5"]
    assert [s.source for s in corpus.sentences] == [f"{path}:1", f"{path}:3", f"{path}:4", f"{path}:5"]
    assert all(not s.has_tree for s in corpus.sentences)


WORDS_MSG = "'words' must be a non-empty list of non-empty strings"
JSONL_BAD = {
    "invalid JSON": ('{"words": ["a", ', None, "not valid JSON (Expecting value at column 17)"),
    "list instead of object": ('["a", "b"]', None, "expected a JSON object with 'words' or 'text', got list"),
    "string instead of object": ('"a b"', None, "expected a JSON object with 'words' or 'text', got str"),
    "words is a string": ('{"id": "w1", "words": "a b"}', "w1", WORDS_MSG),
    "words has a number": ('{"words": ["a", 1]}', None, WORDS_MSG),
    "words has a blank": ('{"words": ["a", " "]}', None, WORDS_MSG),
    "empty words": ('{"id": "e", "words": []}', "e", WORDS_MSG),
    "missing both keys": ('{"id": "z"}', "z", "expected a 'words' list or a non-empty 'text' string"),
    "blank text": ('{"text": "   "}', None, "expected a 'words' list or a non-empty 'text' string"),
    "text not a string": ('{"text": ["a"]}', None, "expected a 'words' list or a non-empty 'text' string"),
}


@pytest.mark.parametrize("case", sorted(JSONL_BAD))
def test_jsonl_malformed(tmp_path, case):
    bad, sent_id, fragment = JSONL_BAD[case]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(['{"words": ["ok"]}', "", bad, '{"text": "fine too"}']) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_text(path)
    msg = located(exc, path, 3, sent_id)
    assert fragment in msg
    with pytest.raises(DataError) as exc2:
        load_data(path)
    assert str(exc2.value) == msg
    corpus = load_text(path, on_error="skip")
    assert [s.words for s in corpus.sentences] == [("ok",), ("fine", "too")]
    assert corpus.skipped == 1
    assert corpus.skipped_reasons[0] == msg


def test_jsonl_skip_counts_and_all_bad(tmp_path):
    path = tmp_path / "mix.jsonl"
    path.write_text("\n".join(['{"words": ["a"]}', "[1]", '{"text": "b c"}', "{oops", '{"words": []}']) + "\n",
                    encoding="utf-8")
    corpus = load_text(path, on_error="skip")
    assert len(corpus) == 2 and corpus.skipped == 3
    assert [r.split(": ", 1)[0] for r in corpus.skipped_reasons] == [f"{path}:2", f"{path}:4", f"{path}:5"]
    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_text("[1]\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_text(all_bad, on_error="skip")
    msg = located(exc, all_bad, 1)
    assert "no valid sentence found (2 skipped)" in msg
    with pytest.raises(DataError) as exc:
        load_text(all_bad)
    located(exc, all_bad, 1)


def test_text_non_utf8_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good line\ncaf\xe9 au lait\nanother good one\n")
    with pytest.raises(DataError) as exc:
        load_text(path)
    msg = located(exc, path, 2)
    assert "not valid UTF-8 (byte 0xe9 at column 4)" in msg and "re-save the file as UTF-8" in msg
    corpus = load_text(path, on_error="skip")
    assert [s.words for s in corpus.sentences] == [("good", "line"), ("another", "good", "one")]
    assert corpus.skipped == 1 and corpus.skipped_reasons[0].startswith(f"{path}:2: not valid UTF-8")


def test_jsonl_non_utf8_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"words": ["a"]}\n{"words": ["\xff"]}\n')
    with pytest.raises(DataError) as exc:
        load_text(path)
    assert "not valid UTF-8 (byte 0xff at column 13)" in located(exc, path, 2)


@pytest.mark.parametrize("name, what", [("e.txt", "one sentence per line"), ("e.jsonl", "one JSON object per line")])
@pytest.mark.parametrize("content", [b"", b" \n\n\t\n"], ids=["empty", "whitespace"])
def test_text_empty_file(tmp_path, name, what, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_text(path)
    assert f"file is empty; expected {what}" in located(exc, path, 1)


def test_jsonl_null_id_falls_back(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": null, "words": ["a"]}\n', encoding="utf-8")
    assert load_text(path).sentences[0].sent_id == "n.jsonl:1"


# --------------------------------------------------------------------------- values the conllu package would misread


@pytest.mark.parametrize("head", ["--1", "\u00b2"], ids=["double-minus", "superscript-two"])
def test_weird_head_is_data_error(tmp_path, head):
    path = write(tmp_path, ["# sent_id = s", ROW1, tok(2, "b", head, "dep")])
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    assert "is not an integer" in located(exc, path, 3, "s")


def test_form_with_two_spaces(tmp_path):
    path = write(tmp_path, ["# sent_id = s", tok(1, "New  York", 0, "root", "PROPN", lemma="New  York")])
    try:
        corpus = load_conllu(path)
    except DataError as err:  # a located DataError would also be acceptable
        assert err.line == 2
    else:
        assert corpus.sentences[0].words == ("New  York",)
        assert corpus.sentences[0].lemmas == ("New  York",)


def test_lemmas_are_kept_and_absent_ones_are_none(tmp_path):
    path = write(tmp_path, ["# sent_id = a", tok(1, "Dogs", 2, "nsubj", "NOUN", lemma="dog"),
                            tok(2, "ran", 0, "root", "VERB"), "", "# sent_id = b", tok(1, "Go", 0, "root", "VERB")])
    a, b = load_conllu(path).sentences
    assert a.lemmas == ("dog", "_") and b.lemmas is None
    with pytest.raises(ValueError, match="lemmas has 1 items for 2 words"):
        type(a)(words=("x", "y"), lemmas=("x",))


@pytest.mark.parametrize("row", [tok("02", "b", 1, "dep"), tok(2, "b", "01", "dep")], ids=["id-02", "head-01"])
def test_leading_zero_reported_at_its_line(tmp_path, row):
    path = write(tmp_path, ["# sent_id = s", "# text = a b", ROW1, row])
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    located(exc, path, 4, "s")


# --------------------------------------------------------------------------- the bundled sample

COMMON_RELATIONS = {"nsubj", "obj", "iobj", "det", "amod", "advmod", "case", "obl", "nmod", "compound", "conj", "cc",
                    "mark", "aux", "cop", "xcomp", "ccomp", "advcl", "acl", "nummod", "appos", "flat", "punct"}


def test_sample_trees_are_well_formed(sample):
    assert sample.name == "sample_en"
    assert len(sample) >= 40
    assert sample.skipped == 0
    assert len({s.sent_id for s in sample.sentences}) == len(sample)
    for s in sample.sentences:
        assert s.has_tree and len(s) > 0, s.sent_id
        n = len(s)
        assert all(-1 <= h < n for h in s.heads), s.sent_id
        assert s.heads.count(-1) == 1, s.sent_id
        root = s.heads.index(-1)
        assert s.relations[root] == "root", s.sent_id
        assert all(h != i for i, h in enumerate(s.heads)), s.sent_id
        for i in range(n):  # every word reaches the root within n steps: no cycles
            j, steps = i, 0
            while j != -1:
                j, steps = s.heads[j], steps + 1
                assert steps <= n, (s.sent_id, i)


def test_sample_covers_common_relations_folded(sample):
    used = collections.Counter(r for s in sample.sentences for r in s.relations)
    assert COMMON_RELATIONS <= set(used), COMMON_RELATIONS - set(used)
    assert all(":" not in r for r in used)
    kept = {r for s in load_sample(keep_subtypes=True).sentences for r in s.relations}
    assert any(":" in r for r in kept)
    assert {r.split(":")[0] for r in kept} == set(used)


def test_sample_limit_and_checksum(sample):
    assert len(load_sample(limit=5)) == 5
    assert load_sample(limit=5).sentences == sample.sentences[:5]
    assert sample.checksum == hashlib.sha256(sample_path().read_bytes()).hexdigest()


def test_sample_raw_file_has_multiword_tokens_and_matching_text():
    import conllu

    raw = sample_path().read_text(encoding="utf-8")
    parsed = conllu.parse(raw)
    sample = load_sample()
    assert len(parsed) == len(sample)
    multiword = 0
    for tokens, sentence in zip(parsed, sample.sentences):
        assert tokens.metadata["sent_id"] == sentence.sent_id
        surface, covered = [], set()
        for t in tokens:
            tid = t["id"]
            if isinstance(tid, tuple):
                if tid[1] == "-":
                    multiword += 1
                    covered.update(range(tid[0], tid[2] + 1))
                else:
                    continue  # empty node
            elif tid in covered:
                continue
            space = "" if (t["misc"] or {}).get("SpaceAfter") == "No" else " "
            surface.append(t["form"] + space)
        assert "".join(surface).strip() == tokens.metadata["text"], sentence.sent_id
        words = [t["form"] for t in tokens if isinstance(t["id"], int)]
        assert tuple(words) == sentence.words
    assert multiword >= 1


# --------------------------------------------------------------------------- EWT dev (shared data)


@pytest.fixture(scope="module")
def ewt_dev():
    return load_conllu(EWT_DEV)


@needs_ewt
def test_ewt_dev_counts(ewt_dev):
    assert len(ewt_dev) == 2001
    assert sum(len(s) for s in ewt_dev.sentences) == 25147
    assert ewt_dev.skipped == 0 and ewt_dev.skipped_reasons == ()
    assert all(s.heads.count(-1) == 1 for s in ewt_dev.sentences)


@needs_ewt
def test_ewt_dev_folded_relation_counts(ewt_dev):
    counts = collections.Counter(r for s in ewt_dev.sentences for r in s.relations)
    assert counts["nsubj"] == 2137
    assert counts["det"] == 1841
    assert counts["root"] == 2001
    assert counts["punct"] == 3061
    assert all(":" not in r for r in counts)


def test_byte_order_mark_is_ignored_but_checksummed(tmp_path):
    text = "# sent_id = s\n" + ROW1 + "\n\n"
    path = tmp_path / "bom.conllu"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    corpus = load_conllu(path)
    assert corpus.sentences[0].words == ("a",) and corpus.sentences[0].sent_id == "s"
    assert corpus.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    txt = tmp_path / "bom.txt"
    txt.write_bytes(b"\xef\xbb\xbfhello world\n")
    assert load_text(txt).sentences[0].words == ("hello", "world")


def test_limit_below_one_is_rejected(tmp_path):
    path = write(tmp_path, ["# sent_id = s", ROW1])
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_conllu(path, limit=0)


@pytest.mark.parametrize("loader_suffix", ["t.jsonl", "c.jsonlines"])
def test_deeply_nested_json_is_a_data_error(tmp_path, loader_suffix):
    path = tmp_path / loader_suffix
    path.write_text("[" * 100000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: (JSON nested too deeply|not valid JSON)"):
        load_data(path)
