"""Extension points that take one module plus one registry entry: a kind of data (``headscope.run.kinds``)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

import headscope
from headscope.errors import HeadscopeError
from headscope.run.kinds import KINDS, DataKind, Prepared, register
from headscope.types import Corpus, Sentence


@dataclass(frozen=True)
class WordLists:
    """A new kind of data: lists of words, each read as one input."""

    name: str
    lists: tuple


def _prepare(data: WordLists, how) -> Prepared:
    chosen = list(data.lists[:how.max_sentences] if how.max_sentences else data.lists)
    rows = [Sentence(words=tuple(words), sent_id=f"list{i}") for i, words in enumerate(chosen)]
    return Prepared(rows, {"lists": len(rows)})


LISTS = (("the", "cat", "sat", "on", "the", "mat"), ("a", "dog", "ran", "home"), ("birds", "sing", "at", "dawn"),
         ("she", "read", "the", "old", "letter", "twice"))


@pytest.fixture
def word_lists():
    remove = register(DataKind("wordlists", WordLists, frozenset({"sentences"}), _prepare, "word lists"))
    yield WordLists("lists", LISTS)
    remove()
    assert "wordlists" not in KINDS


def test_a_new_kind_of_data_is_one_entry_and_scores_as_its_sentences_would(tiny_bert_loaded, word_lists):
    new = headscope.analyze(tiny_bert_loaded, word_lists, tasks="positional", bootstrap=0, n_examples=0)
    dataset = new.meta.datasets[0]
    assert dataset["kind"] == "wordlists" and dataset["lists"] == 4 and dataset["scored"] == 4
    same = Corpus(name="lists", sentences=tuple(Sentence(words=w, sent_id=f"list{i}") for i, w in enumerate(LISTS)))
    old = headscope.analyze(tiny_bert_loaded, same, tasks="positional", bootstrap=0, n_examples=0)
    keys = ["relation", "metric", "layer", "head"]
    a = new.scores.sort_values(keys, ignore_index=True)
    b = old.scores.sort_values(keys, ignore_index=True)
    assert len(a) > 0
    pd.testing.assert_series_equal(a["score"], b["score"], check_exact=False, rtol=1e-6, atol=1e-9)
    # a task the kind cannot supply is refused in one line naming what it needs
    with pytest.raises(HeadscopeError, match="task syntax needs dependency trees"):
        headscope.analyze(tiny_bert_loaded, word_lists, tasks="syntax", bootstrap=0, n_examples=0)


def test_a_kind_named_twice_and_an_unknown_object_are_refused(tiny_bert_loaded, word_lists):
    with pytest.raises(HeadscopeError, match="registered already"):
        register(DataKind("wordlists", WordLists, frozenset({"sentences"}), _prepare, "lists"))
    from headscope.run.kinds import kind_or_fail

    with pytest.raises(HeadscopeError, match="unsupported data object set; the kinds of data are sentences"):
        kind_or_fail({1, 2})


def test_every_registered_kind_names_a_type_a_preparation_and_a_unit():
    for kind in KINDS.values():
        assert isinstance(kind.cls(), type) and kind.unit and kind.supplies, kind.name
        assert callable(kind.prepare) or ":" in kind.prepare, kind.name


def final_section(ctx, dataset):
    """A report section for the ``final`` task (which has none of its own): its three strongest heads."""
    from headscope.reports.sections import Section

    rows = ctx.scores[(ctx.scores["task"] == "final") & (ctx.scores["dataset"] == dataset)
                      & ctx.scores["baseline"].isna()]
    if rows.empty:
        return None
    top = rows.nlargest(3, "score")
    out = Section("final", dataset, "Final-word heads", ["Heads that look at the sentence's last word:"],
                  ["head", "mass"], "lr")
    out.rows = [[f"L{int(r.layer)}.H{int(r.head)}", f"{r.score:.3f}"] for r in top.itertuples()]
    return out


def test_a_new_report_section_is_one_entry_and_every_renderer_draws_it(tiny_bert_loaded, tmp_path, monkeypatch):
    import dataclasses
    import json

    from headscope.reports import write_report
    from headscope.tasks import TASKS

    result = headscope.analyze(tiny_bert_loaded, None, tasks="final", max_sentences=12, bootstrap=0, n_examples=0)
    write_report(result, tmp_path / "before", figures=False)
    assert "Final-word heads" not in (tmp_path / "before" / "report.md").read_text()
    monkeypatch.setitem(TASKS, "final", dataclasses.replace(TASKS["final"], section="test_extending:final_section"))
    write_report(result, tmp_path / "after", figures=False)
    best = result.scores[result.scores["task"] == "final"].nlargest(1, "score").iloc[0]
    label = f"L{int(best['layer'])}.H{int(best['head'])}"
    md = (tmp_path / "after" / "report.md").read_text()
    assert "Final-word heads" in md and f"| {label} | {best['score']:.3f} |" in md
    html = (tmp_path / "after" / "report.html").read_text()
    assert "Final-word heads" in html and label in html
    sections = json.loads((tmp_path / "after" / "report.json").read_text())["details"]
    assert any(s["title"] == "Final-word heads" and s["rows"][0] == [label, f"{best['score']:.3f}"] for s in sections)
