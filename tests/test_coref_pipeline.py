"""Coreference tasks end to end: LitBank, GAP, CorefUD with trees, automatic task choice, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402

import headscope  # noqa: E402
from headscope.analysis.coref import BASELINES  # noqa: E402

LITBANK = SHARED_DATA / "litbank_coref_sample"
GAP_DEV = SHARED_DATA / "gap_coreference" / "gap-development.tsv"
needs_litbank = pytest.mark.skipif(not LITBANK.is_dir(), reason=f"needs ../shared/data ({LITBANK} not found)")
needs_gap = pytest.mark.skipif(not GAP_DEV.is_file(), reason=f"needs ../shared/data ({GAP_DEV} not found)")

COREFUD = """# newdoc id = d1
# sent_id = s1
# text = The old king slept .
1\tThe\tthe\tDET\tDT\t_\t3\tdet\t_\tEntity=(e1-person-1
2\told\told\tADJ\tJJ\t_\t3\tamod\t_\t_
3\tking\tking\tNOUN\tNN\t_\t4\tnsubj\t_\tEntity=e1)
4\tslept\tsleep\tVERB\tVBD\t_\t0\troot\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
# text = He woke the queen .
1\tHe\the\tPRON\tPRP\t_\t2\tnsubj\t_\tEntity=(e1-person-1)
2\twoke\twake\tVERB\tVBD\t_\t0\troot\t_\t_
3\tthe\tthe\tDET\tDT\t_\t4\tdet\t_\tEntity=(e2-person-1
4\tqueen\tqueen\tNOUN\tNN\t_\t2\tobj\t_\tEntity=e2)
5\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_

"""


@needs_litbank
def test_litbank_all_documents_in_windows(tiny_bert_loaded):
    result = headscope.analyze(tiny_bert_loaded, LITBANK, tasks="coref")
    (d,) = result.meta.datasets
    assert d["kind"] == "documents" and d["documents"] == 10 and d["mentions"] == 3253
    assert d["mentions_with_antecedent"] == (d["mentions_scored"] + d["dropped_antecedent_outside_window"]
                                             + d["dropped_sentence_longer_than_window"])
    assert d["dropped_antecedent_outside_window"] > 0   # 128-token windows cut many chains: counted, not hidden
    df = result.scores
    assert set(df["relation"]) == {"all", "pronoun", "proper", "nominal"}
    bases = df[df["baseline"].notna()]
    assert set(bases["baseline"]) == set(BASELINES)
    assert int(df.loc[df["relation"] == "all", "n"].iloc[0]) == d["mentions_scored"]


@needs_litbank
def test_cli_coref_report_compares_best_head_with_baselines(tmp_path, tiny_bert_dir):
    from typer.testing import CliRunner

    from headscope.cli.app import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(LITBANK), "--max-sentences",
                                   "2", "--no-figures", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["tasks"] == ["positional", "coref"]   # chosen from the data: documents are sentences too
    (docs,) = [d for d in run["datasets"] if d["kind"] == "documents"]
    assert docs["documents"] == 1 and docs["document_sentences"] == 2    # -n: the first 2 sentences' documents
    report = (out / "report.md").read_text()
    assert "### Coreference — litbank_coref_sample" in report
    assert "| mention type | n | best head | score | nearest | head_match | rules |" in report
    for group in ("all", "pronoun"):
        assert f"\n| {group} | " in report
    import pandas as pd

    mentions = pd.read_csv(out / "mentions.csv")         # every mention: head word, rule, type, status
    assert {"doc_id", "text", "head", "head_rule", "type", "status"} <= set(mentions.columns)
    assert (mentions["status"] == "scored").sum() == docs["mentions_scored"]
    assert set(mentions["head_rule"]) == {"last"}       # LitBank has no trees
    assert "mentions.csv" in run["files"]


@needs_gap
def test_gap_by_gender_with_bias_ratio(tiny_bert_loaded):
    result = headscope.analyze(tiny_bert_loaded, GAP_DEV, tasks="gap", max_sentences=120)
    from headscope.capture.alignment import encode_sentences

    corpus = headscope.load_data(GAP_DEV, limit=120)
    encoded = encode_sentences(tiny_bert_loaded.tokenizer, [headscope.Sentence(words=e.words) for e in corpus.examples])
    fits = [len(e) <= tiny_bert_loaded.info.max_length for e in encoded]
    assert result.meta.datasets[0]["skipped_too_long"] == fits.count(False) > 0   # counted, not hidden
    one = [e for e, ok in zip(corpus.examples, fits) if ok and e.a_coref != e.b_coref]
    df = result.scores[result.scores["baseline"].isna()]
    n = {r: int(df.loc[df["relation"] == r, "n"].iloc[0]) for r in ("all", "masculine", "feminine")}
    assert n == {"all": len(one), "masculine": sum(e.gender == "masculine" for e in one),
                 "feminine": sum(e.gender == "feminine" for e in one)}
    wide = df.pivot_table(index=["layer", "head"], columns="relation", values="score")
    assert (wide["bias"] - wide["feminine"] / wide["masculine"]).abs().max() < 1e-12


def test_corefud_file_uses_tree_heads(tmp_path, tiny_bert_loaded):
    path = tmp_path / "tiny.conllu"
    path.write_text(COREFUD, encoding="utf-8")
    result = headscope.analyze(tiny_bert_loaded, path)   # format and tasks detected: a CorefUD file is a treebank too
    sents, d = result.meta.datasets
    assert result.meta.tasks == ["syntax", "positional", "coref"] and d["format"] == "corefud"
    assert sents["kind"] == "sentences" and sents["tasks"] == ["syntax", "positional"]
    assert d["mention_head_rule"] == {"tree": 3}          # "The old king" -> king, not the last-word rule
    assert d["mentions_scored"] == 1 and d["mention_types"] == {"nominal": 2, "pronoun": 1}


def test_tasks_without_suitable_data_fail_clearly(tiny_bert_loaded):
    with pytest.raises(headscope.HeadscopeError, match="task coref needs coreference documents"):
        headscope.analyze(tiny_bert_loaded, None, tasks="coref")
    with pytest.raises(headscope.HeadscopeError, match="task gap needs GAP rows"):
        headscope.analyze(tiny_bert_loaded, ["some text"], tasks="positional,gap")


@needs_litbank
def test_litbank_document_matches_reference(tiny_bert_loaded):
    """Real document, real tokenizer, the same windows: the batched scorer equals the one-window-at-a-time
    reference (full maps via output_attentions, numpy loops)."""
    from reference import reference_coref

    from headscope.capture.alignment import encode_sentences
    from headscope.analysis.coref import make_windows
    from headscope.types import DocumentCorpus

    corpus = headscope.load_data(LITBANK, limit=1)
    doc = corpus.documents[0]
    result = headscope.analyze(tiny_bert_loaded, DocumentCorpus("one", (doc,)), tasks="coref")
    enc = encode_sentences(tiny_bert_loaded.tokenizer, list(doc.sentences))
    specials = sum(1 for w in enc[0].word_ids if w < 0)
    sents, wins, stats = make_windows([doc], [[len(e) - specials for e in enc]], tiny_bert_loaded.info.max_length,
                                      specials)
    assert stats.scored > 50
    correct, total = reference_coref(tiny_bert_loaded.model, tiny_bert_loaded.tokenizer, sents, wins)
    heads = result.scores[result.scores["baseline"].isna()]
    for r in heads.itertuples():
        assert r.n == total[r.relation]
        assert r.score == pytest.approx(correct[(r.layer, r.head, r.relation)] / total[r.relation], abs=1e-6)
