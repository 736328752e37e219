"""Coreference and GAP runs say what they read (issue 32): a coreference corpus read as sentences and as document
windows is two datasets with two names (no doubled report sections or roles), ``-n`` limits its documents to
the same first N sentences, and a GAP run counts rows, saying how many rows its accuracy leaves out and why."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA, invoke  # noqa: E402

LITBANK = SHARED_DATA / "litbank_coref_sample"
GAP_DEV = SHARED_DATA / "gap_coreference" / "gap-development.tsv"


def litbank_style(tmp_path: Path, docs: int = 3, sentences: int = 4) -> Path:
    """A LitBank-format file (CoNLL-2012 brackets in the last of 12 columns): ``docs`` documents of ``sentences``
    sentences, each naming Anna and Tom and referring back to them."""
    lines = []
    for d in range(docs):
        doc = f"{d}_novel_brat"
        lines.append(f"#begin document ({doc}); part 0")
        for s in range(sentences):
            words = [("Anna", "(1)"), ("met", "-"), ("Tom", "(2)"), (".", "-")] if s == 0 else \
                [("She", "(1)"), ("thanked", "-"), ("him", "(2)"), ("again", "-"), (".", "-")]
            lines += [f"{doc}\t0\t{i}\t{w}\t" + "_\t" * 7 + mark for i, (w, mark) in enumerate(words)] + [""]
        lines.append("#end document")
    path = tmp_path / "novels.conll"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_views(model, data, out, *extra):
    result = invoke("run", "--model", model, "--data", data, "--bootstrap", "0", "--no-figures", "-q", "--out", out,
                    *extra)
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "run.json").read_text())


def assert_one_section_per_dataset(out: Path, sentences: str, documents: str) -> None:
    report = (out / "report.md").read_text()
    headings = re.findall(r"^### (.+)$", report, re.M)
    assert len(headings) == len(set(headings)), headings
    assert f"Positional patterns — {sentences}" in headings and f"Coreference — {documents}" in headings, headings
    roles = pd.read_csv(out / "roles.csv")
    assert not roles.duplicated().any(), roles[roles.duplicated(keep=False)]
    positional = roles[roles["task"] == "positional"]
    assert not positional.duplicated(["layer", "head", "relation"]).any()
    assert set(pd.read_csv(out / "scores.csv")["dataset"]) == {sentences, documents}


def test_the_sentence_and_document_views_have_their_own_names(tiny_bert_dir, tmp_path):
    data = litbank_style(tmp_path)
    out = tmp_path / "out"
    result, run = run_views(tiny_bert_dir, data, out)
    sents, docs = run["datasets"]
    assert (sents["name"], sents["kind"]) == ("novels (sentences)", "sentences")
    assert (docs["name"], docs["kind"]) == ("novels", "documents")
    assert_one_section_per_dataset(out, "novels (sentences)", "novels")
    assert f"scored {sents['scored'] + docs['scored']} inputs (novels (sentences) 12 sentences, novels " \
           f"{docs['scored']} document windows)" in result.stdout


def test_max_sentences_limits_the_documents_to_the_same_sentences(tiny_bert_dir, tmp_path):
    data = litbank_style(tmp_path, docs=3, sentences=4)
    out = tmp_path / "out"
    _, run = run_views(tiny_bert_dir, data, out, "-n", "6")
    sents, docs = run["datasets"]
    assert sents["scored"] == 6
    assert docs["documents"] == 2 and docs["document_sentences"] == 6     # all of the first, 2 of the second
    # two mentions a sentence (Anna and Tom, then she and him); the first of each chain has no antecedent
    assert docs["mentions"] == 2 * 4 + 2 * 2 and docs["mentions_with_antecedent"] == 2 * 3 + 2 * 1

    from headscope.run.preparation import first_sentences
    from headscope.datasets import load_data

    corpus = load_data(data)
    cut = first_sentences(corpus.documents, 6)
    assert [len(d.sentences) for d in cut] == [4, 2] and first_sentences(corpus.documents, None) == \
        list(corpus.documents)
    words = sum(len(s.words) for s in cut[1].sentences)
    assert all(m.end < words for m in cut[1].mentions) and len(cut[1].mentions) == 4


@pytest.mark.skipif(not LITBANK.is_dir(), reason=f"needs ../shared/data (LitBank not found at {LITBANK})")
def test_a_litbank_run_of_100_sentences(tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    _, run = run_views(tiny_bert_dir, LITBANK, out, "-n", "100")
    sents, docs = run["datasets"]
    assert sents["scored"] == 100 and docs["document_sentences"] == 100 and docs["documents"] < 10
    assert_one_section_per_dataset(out, "litbank_coref_sample (sentences)", "litbank_coref_sample")


# --------------------------------------------------------------------------- GAP rows


GAP_HEADER = ["ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset", "B-coref",
              "URL"]


def gap_file(tmp_path: Path) -> Path:
    """Six GAP rows: four with one referent, two with neither (GAP's Neither label)."""
    text = "Anna met Tom at the station and she gave him the keys ."
    rows = [("TRUE", "FALSE", "she", 32), ("FALSE", "TRUE", "him", 41), ("TRUE", "FALSE", "she", 32),
            ("FALSE", "TRUE", "him", 41), ("FALSE", "FALSE", "she", 32), ("FALSE", "FALSE", "him", 41)]
    lines = ["\t".join(GAP_HEADER)]
    for i, (a, b, pronoun, offset) in enumerate(rows):
        assert text[offset:offset + len(pronoun)] == pronoun
        lines.append("\t".join([f"x-{i}", text, pronoun, str(offset), "Anna", "0", a, "Tom", "9", b, "u"]))
    path = tmp_path / "gap-x.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_gap_run_counts_rows_and_explains_the_rows_it_leaves_out(tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    result, run = run_views(tiny_bert_dir, gap_file(tmp_path), out)
    (d,) = run["datasets"]
    assert d["scored"] == 6 and d["rows_with_one_referent"] == 4 and d["unusable_rows"] == 2
    assert d["unusable_reasons"] == {"neither name is the referent": 2}
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{Path(tiny_bert_dir).name}: scored 6 rows; 2 of gap-x's rows are not counted in its "
                           f"accuracy (neither name is the referent: 2); wrote"), line
    assert "sentences" not in line
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores.loc[scores["relation"] == "all", "n"]) == {4}
    note = "2 rows not counted in the accuracy, having no single referent (neither name is the referent: 2)"
    assert note in (out / "report.md").read_text()
    assert note in (out / "report.html").read_text()


def test_gap_counts_merge_and_survive_a_state(tiny_bert_loaded, tmp_path):
    """The counts are scorer sums: they add across shards and go through a checkpoint's state."""
    from headscope.analysis.gap import GapScorer
    from headscope.datasets import load_data

    examples = load_data(gap_file(tmp_path)).examples
    a, b = GapScorer(1, 2, examples), GapScorer(1, 2, examples)
    a.unusable[:] = (1, 0)
    b.unusable[:] = (1, 1)
    merged = a.merge(b)
    assert merged.summary()["unusable_reasons"] == {"neither name is the referent": 2,
                                                    "both names are marked as the referent": 1}
    restored = GapScorer(1, 2, examples).from_state(merged.state())
    assert restored.summary() == merged.summary()


@pytest.mark.skipif(not GAP_DEV.is_file(), reason=f"needs ../shared/data (GAP not found at {GAP_DEV})")
def test_a_gap_development_run_of_300_rows(tiny_bert_dir, tmp_path):
    result, run = run_views(tiny_bert_dir, GAP_DEV, tmp_path / "out", "-n", "300")
    (d,) = run["datasets"]
    counted = d["rows_with_one_referent"] + d["unusable_rows"]
    assert counted == d["scored"] == 300 - d["skipped_too_long"]
    assert d["unusable_reasons"] == {"neither name is the referent": d["unusable_rows"]} and d["unusable_rows"] > 0
    assert f"scored {d['scored']} rows" in result.stdout          # the tiny model reads 128 tokens: some are too long
    assert f"{d['unusable_rows']} of gap-development's rows" in result.stdout
