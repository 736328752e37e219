"""Coreference and GAP loaders: CoNLL-2012, CorefUD, jsonlines, folder dispatch (coref.py), GAP TSV (gap.py).

Writers inside this file turn documents (sentences of words + document-level mention spans) into each
format; loading them back must give the same words and spans. Every malformed-input test asserts the
exact ``path:line`` of the offending line and that the message is a single line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA, write  # noqa: E402

from headscope.datasets import load_conll2012, load_coref, load_corefud, load_gap, load_jsonlines  # noqa: E402
from headscope.datasets.coref import EMPTY_NODE_NOTE  # noqa: E402
from headscope.datasets.formats import COREF_FORMATS, candidates  # noqa: E402
from headscope.datasets.gap import HEADER, char_span_to_words, tokenize  # noqa: E402
from headscope.errors import DataError  # noqa: E402
from headscope.types import Document, DocumentCorpus, GapCorpus  # noqa: E402

LITBANK = SHARED_DATA / "litbank_coref_sample"
GAP_DEV = SHARED_DATA / "gap_coreference" / "gap-development.tsv"
needs_litbank = pytest.mark.skipif(not LITBANK.is_dir(),
                                   reason=f"needs ../shared/data (LitBank not found at {LITBANK})")
needs_gap = pytest.mark.skipif(not GAP_DEV.is_file(), reason=f"needs ../shared/data (GAP dev not found at {GAP_DEV})")

Span = tuple[int, int, str]  # (start, end, cluster), inclusive document-level word offsets


# --------------------------------------------------------------------------- helpers and writers


def located(exc: pytest.ExceptionInfo, path: Path, line: int | None, sent_id: str | None = None) -> str:
    """Check the DataError's location and that it renders as one line; return the message."""
    err = exc.value
    assert isinstance(err, DataError)
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert (err.path, err.line, err.sent_id) == (str(path), line, sent_id), msg
    prefix = str(path) + (f":{line}" if line is not None else "") + (f" ({sent_id})" if sent_id else "") + ": "
    assert msg.startswith(prefix), (msg, prefix)
    return msg


def bracket_fields(n_words: int, mentions: list[Span], fmt: str) -> list[list[str]]:
    """Per word, the bracket parts in an order both formats read back: closings (latest opened first),
    openings (longest first), single words. ``fmt`` is 'conll' (12) or 'corefud' ((e12-x-1)."""
    fields: list[list[str]] = [[] for _ in range(n_words)]
    opens = "({}" if fmt == "conll" else "({}-thing-1"
    singles = "({})" if fmt == "conll" else "({}-thing-1)"
    for start, end, c in sorted((m for m in mentions if m[0] != m[1]), key=lambda m: (-m[0], m[1])):
        fields[end].append(f"{c})")
    for start, end, c in sorted((m for m in mentions if m[0] != m[1]), key=lambda m: (m[0], -m[1])):
        fields[start].append(opens.format(c))
    for start, _, c in (m for m in mentions if m[0] == m[1]):
        fields[start].append(singles.format(c))
    return fields


def conll_lines(doc_id: str, part: int, sentences: list[list[str]], mentions: list[Span], *,
                pos: bool = False, trailing_tab: bool = False) -> list[str]:
    """One CoNLL-2012 document (begin line, token lines, blank lines, end line)."""
    words = [w for s in sentences for w in s]
    fields = bracket_fields(len(words), mentions, "conll")
    out, k = [f"#begin document ({doc_id}); part {part}"], 0
    for sentence in sentences:
        for i, word in enumerate(sentence):
            coref = "|".join(fields[k]) or ("" if trailing_tab else "-")
            cols = [doc_id, str(part), str(i), word, "NN" if pos else "-", "_", "_", coref]
            out.append("\t".join(cols))
            k += 1
        out.append("")
    out.append("#end document")
    return out


def corefud_lines(doc_id: str | None, sentences: list[list[str]], mentions: list[Span]) -> list[str]:
    """One CorefUD document: CoNLL-U sentences (word 1 is the root, others attach to it)."""
    words = [w for s in sentences for w in s]
    fields = bracket_fields(len(words), mentions, "corefud")
    out = [f"# newdoc id = {doc_id}"] if doc_id else []
    k = 0
    for j, sentence in enumerate(sentences):
        out.append(f"# sent_id = {doc_id or 'x'}-{j}")
        for i, word in enumerate(sentence, start=1):
            misc = "Entity=" + "".join(fields[k]) if fields[k] else "_"
            head, rel = (0, "root") if i == 1 else (1, "dep:sub")
            out.append("\t".join([str(i), word, "_", "X", "_", "_", str(head), rel, "_", misc]))
            k += 1
        out.append("")
    return out


def jsonlines_line(doc_key: str, sentences: list[list[str]], mentions: list[Span]) -> str:
    clusters: dict[str, list[list[int]]] = {}
    for start, end, c in mentions:
        clusters.setdefault(c, []).append([start, end])
    return json.dumps({"doc_key": doc_key, "sentences": sentences, "clusters": list(clusters.values()),
                       "speakers": [["s"] * len(s) for s in sentences]})


def spans(doc: Document) -> list[Span]:
    return [(m.start, m.end, m.cluster) for m in doc.mentions]


def by_span(mentions: list[Span]) -> list[tuple[int, int]]:
    return sorted((s, e) for s, e, _ in mentions)


# Two sentences: nested mentions (same and different clusters), single words, several brackets per word.
SENTS = [["Mary", "Lennox", "'s", "uncle", "saw", "her", "."], ["She", "smiled", "at", "the", "old", "man", "."]]
MENTIONS: list[Span] = [
    (0, 1, "1"), (0, 3, "2"), (0, 0, "9"), (5, 5, "1"),          # nested, different clusters; single word
    (7, 7, "1"), (10, 12, "2"), (11, 12, "2"), (12, 12, "2"),    # same-cluster nesting down to one word
]


def random_doc(rng: random.Random, n_sentences: int) -> tuple[list[list[str]], list[Span]]:
    """Random sentences and mentions inside sentences (no same-cluster crossing spans, no duplicates)."""
    sentences = [[f"w{j}_{i}" for i in range(rng.randint(1, 9))] for j in range(n_sentences)]
    mentions: list[Span] = []
    offset = 0
    for sentence in sentences:
        for _ in range(rng.randint(0, 5)):
            start = offset + rng.randrange(len(sentence))
            end = rng.randint(start, offset + len(sentence) - 1)
            cluster = str(rng.randint(0, 4))
            crosses = any(c == cluster and (s < start <= e < end or start < s <= end < e) for s, e, c in mentions)
            if not crosses and (start, end, cluster) not in mentions:
                mentions.append((start, end, cluster))
        offset += len(sentence)
    return sentences, mentions


# --------------------------------------------------------------------------- CoNLL-2012: valid


def test_conll2012_round_trip_several_documents(tmp_path):
    other = [["It", "rained", "."]]
    lines = (conll_lines("news/a", 0, SENTS, MENTIONS) + conll_lines("news/a", 1, other, [(0, 0, "7")])
             + conll_lines("b", 0, other, []))
    path = write(tmp_path, lines, "t.conll")
    corpus = load_conll2012(path)
    assert isinstance(corpus, DocumentCorpus) and corpus.format == "conll2012" and corpus.name == "t"
    assert [d.doc_id for d in corpus.documents] == ["news/a part 0", "news/a part 1", "b"]
    doc = corpus.documents[0]
    assert [list(s.words) for s in doc.sentences] == SENTS
    assert spans(doc) == sorted(MENTIONS, key=lambda m: (m[0], m[1]))
    assert [(m.start, m.end) for m in doc.mentions] == by_span(MENTIONS)
    assert doc.clusters()["2"][0].span == (0, 3)
    assert [s.sent_id for s in doc.sentences] == ["news/a part 0#0", "news/a part 0#1"]
    assert doc.sentences[1].source == f"{path}:10" and doc.source == f"{path}:1"
    assert doc.mentions[0].source == f"{path}:2"                                  # where (0, 3) opens
    assert doc.sentence_starts() == (0, 7)
    assert spans(corpus.documents[1]) == [(0, 0, "7")] and corpus.documents[2].mentions == ()
    assert all(s.heads is None and s.upos is None for d in corpus.documents for s in d.sentences)
    assert corpus.checksum == hashlib.sha256(path.read_bytes()).hexdigest() and corpus.skipped == 0


@pytest.mark.parametrize("seed", range(5))
def test_conll2012_random_round_trip(tmp_path, seed):
    rng = random.Random(seed)
    docs = [random_doc(rng, rng.randint(1, 6)) for _ in range(3)]
    lines = [line for k, (s, m) in enumerate(docs) for line in conll_lines(f"d{k}", 0, s, m)]
    corpus = load_conll2012(write(tmp_path, lines, "r.conll"))
    assert [d.doc_id for d in corpus.documents] == ["d0", "d1", "d2"]
    for doc, (sentences, mentions) in zip(corpus.documents, docs):
        assert [list(s.words) for s in doc.sentences] == sentences
        assert sorted(spans(doc)) == sorted(mentions)


def test_conll2012_litbank_style_trailing_tab_and_space_separated(tmp_path):
    tabbed = load_conll2012(write(tmp_path, conll_lines("lit", 0, SENTS, MENTIONS, trailing_tab=True), "l.conll"))
    assert sorted(spans(tabbed.documents[0])) == sorted(MENTIONS)
    spaced = [line.replace("\t", "   ") for line in conll_lines("sp", 0, SENTS, MENTIONS)]
    doc = load_conll2012(write(tmp_path, spaced, "s.conll")).documents[0]
    assert doc.doc_id == "sp" and [list(s.words) for s in doc.sentences] == SENTS
    assert sorted(spans(doc)) == sorted(MENTIONS)


def test_conll2012_pos_column_becomes_upos(tmp_path):
    doc = load_conll2012(write(tmp_path, conll_lines("p", 0, SENTS, [], pos=True), "p.conll")).documents[0]
    assert doc.sentences[0].upos == ("NN",) * 7
    five_cols = ["#begin document (f); part 0", "f 0 0 Hi (1)", "f 0 1 there -", "", "#end document"]
    doc = load_conll2012(write(tmp_path, five_cols, "f.conll")).documents[0]
    assert doc.sentences[0].upos is None and spans(doc) == [(0, 0, "1")]


def test_conll2012_part_naming_and_comments(tmp_path):
    lines = ["#begin document (x); part 2", "# a comment", "x 2 0 Hi -", "#end document", "",
             "#begin document (y)", "y 0 0 Yo -", "#end document"]
    corpus = load_conll2012(write(tmp_path, lines, "n.conll"))
    assert [d.doc_id for d in corpus.documents] == ["x part 2", "y"]
    assert corpus.documents[0].words == ("Hi",)


def test_conll2012_bom_crlf_and_limit(tmp_path):
    lines = conll_lines("a", 0, SENTS, MENTIONS) + conll_lines("b", 0, [["x"]], [])
    path = write(tmp_path, b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n", "c.conll")
    corpus = load_conll2012(path)
    assert len(corpus) == 2 and sorted(spans(corpus.documents[0])) == sorted(MENTIONS)
    assert corpus.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [d.doc_id for d in load_conll2012(path, limit=1).documents] == ["a"]
    with pytest.raises(ValueError):
        load_conll2012(path, limit=0)
    with pytest.raises(ValueError):
        load_conll2012(path, on_error="ignore")


# --------------------------------------------------------------------------- CoNLL-2012: malformed

BEGIN, END = "#begin document (d); part 0", "#end document"


def tokl(i: int, word: str, coref: str = "-") -> str:
    return "\t".join(["d", "0", str(i), word, "-", coref])


CONLL_BAD = {
    # name: (lines, bad line, message fragment, hint fragment or None)
    "close-without-open": ([BEGIN, tokl(0, "a"), tokl(1, "b", "3)"), "", END], 3,
                           "closing bracket '3)' has no open '(3'", None),
    "close-wrong-cluster": ([BEGIN, tokl(0, "a", "(4"), tokl(1, "b", "3)|4)"), "", END], 3,
                            "closing bracket '3)'", None),
    "open-at-sentence-end": ([BEGIN, tokl(0, "a"), tokl(1, "b", "(3"), tokl(2, "c"), "", tokl(0, "d", "3)"), "",
                              END], 3, "still open at the end of its sentence (line 4)",
                             "close it before the blank line"),
    "open-at-document-end": ([BEGIN, tokl(0, "a", "(3"), END], 2, "'(3' opened here is still open", None),
    "bracket-open-open": ([BEGIN, tokl(0, "a", "(12("), "", END], 2, "malformed coreference field '(12('", None),
    "bracket-word": ([BEGIN, tokl(0, "a", "abc"), "", END], 2, "'abc' is not '(N', 'N)' or '(N)'", None),
    "bracket-empty-part": ([BEGIN, tokl(0, "a", "(1)||(2)"), "", END], 2, "malformed coreference field", None),
    "too-few-columns": ([BEGIN, tokl(0, "a"), "d\t0\t1\tb", "", END], 3, "expected at least 5 columns", None),
    "columns-change": ([BEGIN, tokl(0, "a"), "d\t0\t1\tb\t-\t-\t-", "", END], 3,
                       "7 columns, but the sentence's first token line (2) has 6", None),
    "end-without-begin": ([BEGIN, tokl(0, "a"), END, "", END], 5, "'#end document' without '#begin document'",
                          None),
    "missing-end": ([BEGIN, tokl(0, "a"), "", "#begin document (e); part 0", tokl(0, "b"), END], 1,
                    "document has no '#end document' line", None),
    "missing-end-at-eof": ([BEGIN, tokl(0, "a"), ""], 1, "document has no '#end document' line", None),
    "text-outside": (["d 0 0 a -", BEGIN, tokl(0, "a"), END], 1, "text outside any document", None),
    "text-between": ([BEGIN, tokl(0, "a"), END, "oops", BEGIN.replace("(d)", "(e)"), tokl(0, "b"), END], 4,
                     "text outside any document", None),
    "duplicate-mention": ([BEGIN, tokl(0, "a", "(1|(1"), tokl(1, "b", "1)|1)"), "", END], 2,
                          "duplicate mention: 'a b' (words 0-1) is already a mention of cluster 1", None),
    "duplicate-single": ([BEGIN, tokl(0, "a", "(1)|(1)"), "", END], 2, "duplicate mention", None),
    "malformed-begin": (["#begin document d part 0", tokl(0, "a"), END], 1, "malformed document header", None),
    "duplicate-document": ([BEGIN, tokl(0, "a"), END, BEGIN, tokl(0, "b"), END], 4,
                           "duplicate document (d); part 0, first begun at line 1", None),
    "empty-document": ([BEGIN, "", END], 1, "document has no token lines", None),
}


@pytest.mark.parametrize("case", sorted(CONLL_BAD))
def test_conll2012_malformed(tmp_path, case):
    lines, bad_line, fragment, hint = CONLL_BAD[case]
    path = write(tmp_path, lines, "bad.conll")
    with pytest.raises(DataError) as exc:
        load_conll2012(path)
    msg = located(exc, path, bad_line)
    assert fragment in msg, msg
    if hint:
        assert exc.value.hint == hint


def test_conll2012_bad_utf8_empty_and_missing(tmp_path):
    path = write(tmp_path, ("\n".join([BEGIN, tokl(0, "a")]) + "\n").encode() + b"d\t0\t1\t\xff\t-\t-\n" +
                 END.encode(), "u.conll")
    with pytest.raises(DataError) as exc:
        load_conll2012(path)
    assert "not valid UTF-8 (byte 0xff" in located(exc, path, 3)
    for content in (b"", b"\xef\xbb\xbf\n  \n"):
        empty = write(tmp_path, content, "e.conll")
        with pytest.raises(DataError) as exc:
            load_conll2012(empty)
        assert "file is empty" in located(exc, empty, 1)
    with pytest.raises(DataError) as exc:
        load_conll2012(tmp_path / "nope.conll")
    assert "file not found" in located(exc, tmp_path / "nope.conll", None)
    with pytest.raises(DataError) as exc:
        load_conll2012(tmp_path)
    assert "is a directory" in located(exc, tmp_path, None)


def test_conll2012_skip_mode_counts_documents(tmp_path):
    lines = (conll_lines("good1", 0, SENTS, MENTIONS)                        # lines 1..18
             + ["#begin document (bad); part 0", tokl(0, "a", "7)"), END]    # 19..21: bad bracket at 20
             + ["stray", "more stray"]                                       # 22..23: one stray run
             + conll_lines("good2", 0, [["x", "y"]], [(0, 1, "1")])          # 24..28
             + ["#begin document (open); part 0", tokl(0, "z")])             # 29..30: no end
    assert lines[19] == tokl(0, "a", "7)") and lines[21] == "stray" and lines[28].startswith("#begin")
    path = write(tmp_path, lines, "skip.conll")
    corpus = load_conll2012(path, on_error="skip")
    assert [d.doc_id for d in corpus.documents] == ["good1", "good2"]
    assert corpus.skipped == 3 and len(corpus.skipped_reasons) == 3
    assert corpus.skipped_reasons[0].startswith(f"{path}:20: closing bracket '7)'")
    assert corpus.skipped_reasons[1].startswith(f"{path}:22: text outside any document")
    assert corpus.skipped_reasons[2].startswith(f"{path}:29: document has no '#end document' line")
    with pytest.raises(DataError) as exc:
        load_conll2012(path)
    located(exc, path, 20)
    only_bad = write(tmp_path, ["#begin document (bad); part 0", tokl(0, "a", "7)"), END], "allbad.conll")
    with pytest.raises(DataError) as exc:
        load_conll2012(only_bad, on_error="skip")
    assert "no valid document found (1 skipped)" in located(exc, only_bad, 1)


# --------------------------------------------------------------------------- CorefUD


def test_corefud_round_trip_with_trees(tmp_path):
    other = [["It", "rained", "."]]
    lines = corefud_lines("doc-a", SENTS, MENTIONS) + corefud_lines("doc-b", other, [(0, 0, "e5")])
    path = write(tmp_path, ["# global.Entity = eid-etype-head-other"] + lines, "t.conllu")
    corpus = load_corefud(path)
    assert corpus.format == "corefud" and [d.doc_id for d in corpus.documents] == ["doc-a", "doc-b"]
    doc = corpus.documents[0]
    assert [list(s.words) for s in doc.sentences] == SENTS
    assert sorted(spans(doc)) == sorted(MENTIONS)
    assert all(s.has_tree for s in doc.sentences)
    assert doc.sentences[0].heads == (-1, 0, 0, 0, 0, 0, 0)
    assert doc.sentences[0].relations[1] == "dep" and doc.sentences[0].upos[0] == "X"
    assert [s.sent_id for s in doc.sentences] == ["doc-a-0", "doc-a-1"]
    assert load_corefud(path, keep_subtypes=True).documents[0].sentences[0].relations[1] == "dep:sub"
    assert spans(corpus.documents[1]) == [(0, 0, "e5")]


@pytest.mark.parametrize("seed", range(5))
def test_corefud_random_round_trip(tmp_path, seed):
    rng = random.Random(100 + seed)
    docs = [random_doc(rng, rng.randint(1, 6)) for _ in range(3)]
    lines = [line for k, (s, m) in enumerate(docs) for line in corefud_lines(f"d{k}", s, m)]
    corpus = load_corefud(write(tmp_path, lines, "r.conllu"))
    for doc, (sentences, mentions) in zip(corpus.documents, docs):
        assert [list(s.words) for s in doc.sentences] == sentences
        assert sorted(spans(doc)) == sorted(mentions)


def cu(i, form, misc="_", head=None, rel=None) -> str:
    head = (0 if i == "1" else 1) if head is None else head
    rel = rel or ("root" if head == 0 else "dep")
    return "\t".join([str(i), form, "_", "X", "_", "_", str(head), rel, "_", misc])


def test_corefud_without_newdoc_is_one_document_named_after_the_file(tmp_path):
    lines = ["# sent_id = 1", cu("1", "Anna", "Entity=(e1-person-1)"), cu("2", "sang"), "",
             "# sent_id = 2", cu("1", "She", "SpaceAfter=No|Entity=(e1-person-1)"), cu("2", "smiled"), ""]
    corpus = load_corefud(write(tmp_path, lines, "story.conllu"))
    assert [d.doc_id for d in corpus.documents] == ["story"]
    assert spans(corpus.documents[0]) == [(0, 0, "e1"), (2, 2, "e1")]
    assert corpus.documents[0].clusters() == {"e1": corpus.documents[0].mentions}


def test_corefud_multiword_tokens_empty_nodes_and_discontinuous(tmp_path, caplog):
    lines = ["# newdoc", "# sent_id = s1",
             cu("1", "John", "Entity=(e1-person-1)"),                      # 3
             cu("2", "saw"),                                               # 4
             "2.1\twe\t_\tPRON\t_\t_\t_\t_\t2:nsubj\tEntity=(e3-person-1)",  # 5: dropped (only an empty node)
             "2.2\tthe\t_\tDET\t_\t_\t_\t_\t2:det\tEntity=(e4-thing-1",      # 6: opens before word 3
             "3-4\tMary's\t_\t_\t_\t_\t_\t_\t_\t_",                         # 7: multiword token
             cu("3", "Mary", "Entity=(e2-person-1(e5[1/2]-x-1)"),           # 8
             cu("4", "'s", "Entity=e4)"),                                  # 9
             cu("5", "old", "Entity=(e5[2/2]-x-1)"),                       # 10
             "5.1\tx\t_\tX\t_\t_\t_\t_\t5:dep\tEntity=e2)",                  # 11: closes after word 5
             ""]
    with caplog.at_level(logging.INFO, logger="headscope.datasets.coref"):
        corpus = load_corefud(write(tmp_path, lines, "m.conllu"))
    doc = corpus.documents[0]
    assert doc.doc_id == "m-1" and doc.words == ("John", "saw", "Mary", "'s", "old")
    assert spans(doc) == [(0, 0, "e1"), (2, 2, "e5"), (2, 3, "e4"), (2, 4, "e2"), (4, 4, "e5")]
    assert "dropped 1 Entity mention(s)" in caplog.text and "EMPTY_NODE_NOTE" in caplog.text
    assert "empty node" in EMPTY_NODE_NOTE


CU_BAD = {
    # name: (lines, bad line, message fragment)
    "close-without-open": (["# sent_id = s", cu("1", "a"), cu("2", "b", "Entity=e1)"), ""], 3,
                           "unbalanced Entity brackets: 'e1)' closes a mention that is not open"),
    "open-at-sentence-end": (["# sent_id = s", cu("1", "a", "Entity=(e1-person-1"), cu("2", "b"), "",
                              "# sent_id = t", cu("1", "c", "Entity=e1)"), ""], 2,
                             "'(e1' opened here is still open at the end of its sentence (line 4)"),
    "no-brackets": (["# sent_id = s", cu("1", "a", "Entity=e1"), ""], 2, "malformed Entity value 'e1'"),
    "open-paren-only": (["# sent_id = s", cu("1", "a", "Entity=("), ""], 2, "malformed Entity value '('"),
    "empty-value": (["# sent_id = s", cu("1", "a", "Entity="), ""], 2, "malformed Entity value ''"),
    "no-id": (["# sent_id = s", cu("1", "a", "Entity=(-person-1)"), ""], 2, "does not start with an entity id"),
    "two-entity-attrs": (["# sent_id = s", cu("1", "a", "Entity=(e1-x-1)|Entity=(e2-x-1)"), ""], 2,
                         "more than one Entity= attribute"),
    "duplicate": (["# sent_id = s", cu("1", "a", "Entity=(e1-x-1)(e1-x-1)"), ""], 2, "duplicate mention"),
    "bad-tree": (["# sent_id = s", cu("1", "a"), cu("2", "b", "Entity=(e1-x-1)", head=7), ""], 3,
                 "HEAD 7 of word 2 is out of range"),
}


@pytest.mark.parametrize("case", sorted(CU_BAD))
def test_corefud_malformed(tmp_path, case):
    lines, bad_line, fragment = CU_BAD[case]
    path = write(tmp_path, ["# newdoc id = d"] + lines, "bad.conllu")
    with pytest.raises(DataError) as exc:
        load_corefud(path)
    assert fragment in located(exc, path, bad_line + 1, "s")


def test_corefud_skip_mode_counts_documents(tmp_path):
    lines = (corefud_lines("good", SENTS, MENTIONS)
             + ["# newdoc id = bad", "# sent_id = s", cu("1", "a", "Entity=e9)"), ""]
             + corefud_lines("good2", [["x"]], [(0, 0, "e1")]))
    path = write(tmp_path, lines, "skip.conllu")
    corpus = load_corefud(path, on_error="skip")
    assert [d.doc_id for d in corpus.documents] == ["good", "good2"] and corpus.skipped == 1
    assert corpus.skipped_reasons[0].startswith(f"{path}:{lines.index(cu('1', 'a', 'Entity=e9)')) + 1} (s): ")
    assert len(load_corefud(path, on_error="skip", limit=1)) == 1
    twice = write(tmp_path, corefud_lines("d", [["x"]], []) + corefud_lines("d", [["y"]], []), "twice.conllu")
    with pytest.raises(DataError) as exc:
        load_corefud(twice)
    assert "duplicate document id 'd' (first at line 1)" in located(exc, twice, 5)


# --------------------------------------------------------------------------- jsonlines


def test_jsonlines_round_trip(tmp_path):
    nested = [(0, 3, "0"), (1, 2, "0"), (1, 1, "1")]
    lines = [jsonlines_line("a", SENTS, MENTIONS), "", jsonlines_line("b", [["w", "x", "y", "z"]], nested)]
    path = write(tmp_path, lines, "t.jsonlines")
    corpus = load_jsonlines(path)
    assert corpus.format == "jsonlines" and [d.doc_id for d in corpus.documents] == ["a", "b"]
    doc = corpus.documents[0]
    assert [list(s.words) for s in doc.sentences] == SENTS and doc.sentences[1].sent_id == "a#1"
    assert [(m.start, m.end) for m in doc.mentions] == by_span(MENTIONS)
    groups = {frozenset(m.span for m in ms) for ms in doc.clusters().values()}
    want: dict[str, set] = {}
    for s, e, c in MENTIONS:
        want.setdefault(c, set()).add((s, e))
    assert groups == {frozenset(v) for v in want.values()}
    assert spans(corpus.documents[1]) == [(0, 3, "0"), (1, 1, "1"), (1, 2, "0")]
    assert corpus.documents[1].source == f"{path}:3"


JSON_BAD = {
    "invalid-json": ('{"doc_key": "a", ', "not valid JSON"),
    "not-object": ("[1, 2]", "expected a JSON object"),
    "missing-keys": ('{"doc_key": "a"}', "missing keys sentences, clusters"),
    "bad-doc-key": ('{"doc_key": 3, "sentences": [["a"]], "clusters": []}', "'doc_key' must be a non-empty string"),
    "bad-sentence": ('{"doc_key": "a", "sentences": [["a", 1]], "clusters": []}', "sentence 0 must be"),
    "empty-sentences": ('{"doc_key": "a", "sentences": [], "clusters": []}', "'sentences' must be a non-empty"),
    "out-of-range": ('{"doc_key": "a", "sentences": [["a", "b"], ["c"]], "clusters": [[[0, 0], [2, 3]]]}',
                     "cluster 0: span [2, 3] is out of range 0..2"),
    "negative": ('{"doc_key": "a", "sentences": [["a"]], "clusters": [[[-1, 0]]]}', "out of range"),
    "start-after-end": ('{"doc_key": "a", "sentences": [["a", "b"]], "clusters": [[[1, 0]]]}',
                        "span [1, 0] starts after it ends"),
    "not-a-pair": ('{"doc_key": "a", "sentences": [["a", "b"]], "clusters": [[[0, 1, 1]]]}',
                   "[0, 1, 1] is not a [start, end] pair"),
    "bool-offset": ('{"doc_key": "a", "sentences": [["a", "b"]], "clusters": [[[true, 1]]]}', "not a [start, end]"),
    "span-in-two-clusters": ('{"doc_key": "a", "sentences": [["a", "b"]], "clusters": [[[0, 1]], [[1, 1], [0, 1]]]}',
                             "span [0, 1] is listed in clusters 0 and 1; overlapping spans that the format forbids"),
    "span-twice": ('{"doc_key": "a", "sentences": [["a", "b"]], "clusters": [[[0, 1], [0, 1]]]}',
                   "span [0, 1] is listed twice in cluster 0"),
    "clusters-not-list": ('{"doc_key": "a", "sentences": [["a"]], "clusters": {}}', "'clusters' must be a list"),
    "empty-cluster": ('{"doc_key": "a", "sentences": [["a"]], "clusters": [[]]}', "cluster 0 must be a non-empty"),
}


@pytest.mark.parametrize("case", sorted(JSON_BAD))
def test_jsonlines_malformed(tmp_path, case):
    bad, fragment = JSON_BAD[case]
    path = write(tmp_path, [jsonlines_line("ok", [["a"]], []), "", bad], "bad.jsonl")
    with pytest.raises(DataError) as exc:
        load_jsonlines(path)
    assert fragment in located(exc, path, 3)


def test_jsonlines_duplicate_key_and_skip_mode(tmp_path):
    lines = [jsonlines_line("a", [["x"]], []), "not json", jsonlines_line("a", [["y"]], []),
             jsonlines_line("b", [["z"]], [(0, 0, "0")])]
    path = write(tmp_path, lines, "d.jsonlines")
    corpus = load_jsonlines(path, on_error="skip")
    assert [d.doc_id for d in corpus.documents] == ["a", "b"] and corpus.skipped == 2
    assert corpus.skipped_reasons[1].startswith(f"{path}:3: duplicate doc_key 'a' (first at line 1)")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"not json", b"\xc3("))
    with pytest.raises(DataError) as exc:
        load_jsonlines(path)
    assert "not valid UTF-8" in located(exc, path, 2)


# --------------------------------------------------------------------------- load_coref dispatch


@pytest.mark.parametrize("name", ["a.conll", "a.gold_conll", "a.english.v4_gold_conll", "a.conllu", "a.jsonlines",
                                  "a.JSONL"])
def test_load_coref_dispatches_by_suffix(tmp_path, name):
    fmt = next(f for f in candidates(Path(name)) if f in COREF_FORMATS)
    writer = {"conll2012": lambda: conll_lines("a", 0, SENTS, MENTIONS),
              "corefud": lambda: corefud_lines("a", SENTS, MENTIONS),
              "jsonlines": lambda: [jsonlines_line("a", SENTS, MENTIONS)]}[fmt]
    corpus = load_coref(write(tmp_path, writer(), name))
    assert corpus.format == fmt and corpus.documents[0].doc_id == "a"
    assert [(m.start, m.end) for m in corpus.documents[0].mentions] == by_span(MENTIONS)


def test_load_coref_unknown_suffix_or_format(tmp_path):
    path = write(tmp_path, ["x"], "a.txt")
    with pytest.raises(DataError) as exc:
        load_coref(path)
    msg = located(exc, path, None)
    assert "fmt=" in msg and "--format" not in msg          # a Python caller is told the Python argument
    assert all(name in msg for name in ("conll2012", "corefud", "jsonlines"))
    with pytest.raises(DataError) as exc:
        load_coref(path, fmt="brat")
    assert "unknown coreference format 'brat'" in located(exc, path, None)
    renamed = write(tmp_path, conll_lines("a", 0, SENTS, MENTIONS), "a.data")
    assert load_coref(renamed, fmt="conll2012").documents[0].words[0] == "Mary"
    with pytest.raises(DataError) as exc:
        load_coref(tmp_path / "missing.conll")
    assert "file not found" in located(exc, tmp_path / "missing.conll", None)


def test_load_coref_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    b = write(folder, corefud_lines("doc-b", SENTS, MENTIONS), "b.conllu")
    a = write(folder, conll_lines("doc-a", 0, SENTS, MENTIONS), "a.conll")
    c = write(folder, [jsonlines_line("doc-c", [["x"]], [])], "c.jsonl")
    write(folder, ["not data"], "README.md")
    (folder / "sub.conll").mkdir()
    corpus = load_coref(folder)
    assert corpus.name == "mixed" and corpus.format == "mixed" and corpus.path == str(folder)
    assert [d.doc_id for d in corpus.documents] == ["doc-a", "doc-b", "doc-c"]
    assert corpus.checksum == hashlib.sha256(a.read_bytes() + b.read_bytes() + c.read_bytes()).hexdigest()
    assert [d.doc_id for d in load_coref(folder, limit=2).documents] == ["doc-a", "doc-b"]
    assert load_coref(folder, limit=2).checksum == corpus.checksum
    only = load_coref(folder, fmt="jsonlines")
    assert [d.doc_id for d in only.documents] == ["doc-c"] and only.format == "jsonlines"
    # a document id that an earlier file already gave
    dup = write(folder, [jsonlines_line("doc-a", [["y"]], [])], "d.jsonlines")
    with pytest.raises(DataError) as exc:
        load_coref(folder)
    assert "document 'doc-a' was already loaded from" in located(exc, dup, 1)
    skipped = load_coref(folder, on_error="skip")
    assert len(skipped) == 3 and skipped.skipped == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_coref(empty)
    msg = located(exc, empty, None)
    assert "is a directory with no coreference file" in msg and "fmt=" in msg


def test_load_coref_folder_skips_empty_file_in_skip_mode(tmp_path):
    write(tmp_path, conll_lines("a", 0, SENTS, MENTIONS), "a.conll")
    empty = write(tmp_path, b"", "b.conll")
    with pytest.raises(DataError) as exc:
        load_coref(tmp_path)
    located(exc, empty, 1)
    corpus = load_coref(tmp_path, on_error="skip")
    assert len(corpus) == 1 and corpus.skipped == 1 and "file is empty" in corpus.skipped_reasons[0]


# --------------------------------------------------------------------------- GAP


def gap_row(text: str, pronoun: str, a: str, b: str, *, ident: str = "development-1", a_coref: str = "TRUE",
            b_coref: str = "FALSE", offsets: tuple | None = None) -> str:
    """A GAP row; offsets default to the first occurrence of each string (as words) in the text."""
    def find(s: str) -> int:
        return f" {text} ".index(f" {s} ") if f" {s} " in f" {text} " else text.index(s)
    po, ao, bo = offsets or (find(pronoun), find(a), find(b))
    return "\t".join([ident, text, pronoun, str(po), a, str(ao), a_coref, b, str(bo), b_coref, "http://x"])


GAP_TEXT = "Mary O'Neill met Jean-Paul Sartre (the writer) in 1960, and she liked Sartre's books."


def test_gap_tokenization_keeps_internal_apostrophes_and_hyphens():
    words = [w for w, _, _ in tokenize(GAP_TEXT)]
    assert words == ["Mary", "O'Neill", "met", "Jean-Paul", "Sartre", "(", "the", "writer", ")", "in", "1960", ",",
                     "and", "she", "liked", "Sartre", "'s", "books", "."]      # clitics split, as in PTB
    assert all(GAP_TEXT[s:e] == w for w, s, e in tokenize(GAP_TEXT))
    assert [w for w, _, _ in tokenize("rock-'n'-roll -- well...' x_y café naïve’s")] == \
        ["rock", "-", "'", "n", "'", "-", "roll", "-", "-", "well", ".", ".", ".", "'", "x", "_", "y", "café",
         "naïve", "’s"]
    assert [w for w, _, _ in tokenize("she's he'd we'll don't")] == ["she", "'s", "he", "'d", "we", "'ll", "don't"]
    tokens = tokenize(GAP_TEXT)
    assert char_span_to_words(tokens, GAP_TEXT.index("Neill"), GAP_TEXT.index("Neill") + 5) == (1, 1)
    assert char_span_to_words(tokens, 3, 6) == (0, 1)             # "y O" overlaps Mary and O'Neill
    assert char_span_to_words(tokens, 4, 5) is None               # the space alone


def test_gap_spans_map_to_words(tmp_path):
    text2 = "His friend Tom Smith-Jones met O'Neill."
    rows = [gap_row(GAP_TEXT, "she", "Mary O'Neill", "Jean-Paul Sartre"),
            gap_row(text2, "His", "Tom Smith-Jones", "O'Neill", ident="development-2", a_coref="FALSE")]
    path = write(tmp_path, ["\t".join(HEADER)] + rows, "g.tsv")
    corpus = load_gap(path)
    assert isinstance(corpus, GapCorpus) and len(corpus) == 2 and corpus.name == "g"
    one, two = corpus.examples
    assert one.words[one.pronoun[0]:one.pronoun[1] + 1] == ("she",) and one.gender == "feminine"
    assert one.words[one.a[0]:one.a[1] + 1] == ("Mary", "O'Neill")
    assert one.words[one.b[0]:one.b[1] + 1] == ("Jean-Paul", "Sartre")
    assert (one.a_coref, one.b_coref, one.source) == (True, False, f"{path}:2")
    assert two.pronoun == (0, 0) and two.gender == "masculine" and two.words[two.a[0]:two.a[1] + 1] == \
        ("Tom", "Smith-Jones")
    assert two.words[two.b[0]] == "O'Neill" and not two.a_coref and not two.b_coref
    assert corpus.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_gap_partial_word_maps_to_the_whole_word(tmp_path):
    text = "Anna met Sartre's friend; she smiled."
    row = gap_row(text, "she", "Anna", "Sartre", offsets=(text.index("she"), 0, text.index("Sartre")))
    example = load_gap(write(tmp_path, ["\t".join(HEADER), row], "p.tsv")).examples[0]
    assert example.words[example.b[0]] == "Sartre" and example.b[0] == example.b[1]   # the clitic is its own word
    text = "Anna met Jean-Paul; she smiled."
    row = gap_row(text, "she", "Anna", "Jean", offsets=(text.index("she"), 0, text.index("Jean")))
    example = load_gap(write(tmp_path, ["\t".join(HEADER), row], "q.tsv")).examples[0]
    assert example.words[example.b[0]] == "Jean-Paul" and example.b[0] == example.b[1]


GOOD_ROW = gap_row("Anna met Bea. She left.", "She", "Anna", "Bea")
GAP_BAD = {
    "columns": (GOOD_ROW + "\textra", "expected 11 tab-separated columns, got 12"),
    "offset-mismatch": (GOOD_ROW.replace("\tAnna\t0\t", "\tAnna\t1\t"), "A-offset 1 does not point at A 'Anna'"),
    "offset-not-int": (GOOD_ROW.replace("\tAnna\t0\t", "\tAnna\tzero\t"), "A-offset 'zero' is not a non-negative"),
    "offset-negative": (GOOD_ROW.replace("\tAnna\t0\t", "\tAnna\t-1\t"), "A-offset '-1' is not"),
    "offset-past-end": (GOOD_ROW.replace("\tBea\t9\t", "\tBea\t99\t"), "B-offset 99 does not point at B 'Bea'"),
    "coref-value": (GOOD_ROW.replace("\tTRUE\t", "\tyes\t"), "A-coref is 'yes', expected TRUE or FALSE"),
    "both-coref": (GOOD_ROW.replace("\tFALSE\t", "\tTRUE\t"), "A-coref and B-coref are both TRUE"),
    "pronoun-gender": (gap_row("Anna met Bea. They left.", "They", "Anna", "Bea"), "pronoun 'They' is not one of"),
    "no-word-overlap": (gap_row("Anna met Bea. She left.", "She", " ", "Bea", offsets=(14, 4, 9)),
                        "A ' ' at 4 overlaps no word"),
    "empty-name": (gap_row("Anna met Bea. She left.", "She", "", "Bea", offsets=(14, 0, 9)), "does not point at A ''"),
}


@pytest.mark.parametrize("case", sorted(GAP_BAD))
def test_gap_malformed(tmp_path, case):
    bad, fragment = GAP_BAD[case]
    path = write(tmp_path, ["\t".join(HEADER), GOOD_ROW.replace("development-1", "ok"), bad], "bad.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(path)
    assert fragment in located(exc, path, 3)


def test_gap_header_duplicates_skip_and_empty(tmp_path):
    wrong = write(tmp_path, ["ID\tText", GOOD_ROW], "h.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(wrong, on_error="skip")
    assert "expected the GAP header" in located(exc, wrong, 1)
    rows = ["\t".join(HEADER), GOOD_ROW, "broken", GOOD_ROW, GOOD_ROW.replace("development-1", "development-2"), ""]
    path = write(tmp_path, rows, "s.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(path)
    located(exc, path, 3)
    corpus = load_gap(path, on_error="skip")
    assert [e.example_id for e in corpus.examples] == ["development-1", "development-2"] and corpus.skipped == 2
    assert corpus.skipped_reasons[1].startswith(f"{path}:4: duplicate ID 'development-1' (first at line 2)")
    assert len(load_gap(path, on_error="skip", limit=1)) == 1
    bom = write(tmp_path, b"\xef\xbb\xbf" + "\r\n".join(rows[:2]).encode(), "bom.tsv")
    assert len(load_gap(bom)) == 1
    empty = write(tmp_path, b"", "e.tsv")
    with pytest.raises(DataError) as exc:
        load_gap(empty)
    assert "file is empty" in located(exc, empty, 1)
    with pytest.raises(DataError) as exc:
        load_gap(tmp_path / "none.tsv")
    located(exc, tmp_path / "none.tsv", None)


# --------------------------------------------------------------------------- real data


@needs_litbank
def test_litbank_sample_counts():
    corpus = load_coref(LITBANK)
    assert corpus.name == "litbank_coref_sample" and corpus.format == "conll2012" and corpus.skipped == 0
    assert len(corpus) == 10
    assert sum(len(d.sentences) for d in corpus.documents) == 870
    assert sum(len(d.words) for d in corpus.documents) == 21_315
    assert sum(len(d.mentions) for d in corpus.documents) == 3_253
    assert sum(len(d.clusters()) for d in corpus.documents) == 673
    assert sum(1 for d in corpus.documents for ms in d.clusters().values() if len(ms) >= 2) == 209
    doc = load_conll2012(LITBANK / "113_the_secret_garden_brat.conll").documents[0]
    assert doc.doc_id == "113_the_secret_garden_brat" and doc.words[8:10] == ("Mary", "Lennox")
    assert ("Mary", "Lennox") in {doc.words[m.start:m.end + 1] for m in doc.clusters()["2"]}


@needs_gap
def test_gap_development_counts():
    corpus = load_gap(GAP_DEV)
    assert len(corpus) == 2000 and corpus.skipped == 0
    genders = [e.gender for e in corpus.examples]
    assert genders.count("masculine") == 1000 and genders.count("feminine") == 1000
    assert sum(e.a_coref for e in corpus.examples) == 874
    assert sum(e.b_coref for e in corpus.examples) == 925
    assert sum(not e.a_coref and not e.b_coref for e in corpus.examples) == 201
    first = corpus.examples[0]
    assert first.words[first.pronoun[0]] == "her" and first.words[first.a[0]:first.a[1] + 1] == ("Cheryl", "Cassidy")


def test_gap_name_overlapping_the_pronoun_is_an_error(tmp_path):
    text = "Anna met Bea. She left."
    row = gap_row(text, "She", "Anna", "She", offsets=(text.index("She"), 0, text.index("She")))
    path = write(tmp_path, ["\t".join(HEADER), row], "o.tsv")
    with pytest.raises(DataError, match=r"o.tsv:2: Pronoun and B cover the same words"):
        load_gap(path)
