"""The library surface: cheap import, analyze() inputs, result queries, save(), the README's examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import baseline_row, head_row  # noqa: E402

import headscope  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402
from headscope.schema import SCORE_COLUMNS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_cheap_and_has_no_side_effects():
    code = "import sys, headscope; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(headscope.__all__) <= set(dir(headscope))


def test_analyze_accepts_sentences_strings_and_corpora(tiny_bert_loaded, sample):
    by_sentences = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:5]), tasks="syntax")
    by_corpus = headscope.analyze(tiny_bert_loaded, headscope.Corpus("c", sample.sentences[:5]), tasks="syntax")
    assert by_sentences.scores["score"].tolist() == by_corpus.scores["score"].tolist()
    plain = headscope.analyze(tiny_bert_loaded, ["The cat sat .", "Dogs bark"], tasks="positional")
    assert set(plain.scores["task"]) == {"positional"}
    assert list(plain.scores.columns) == SCORE_COLUMNS


def test_tree_tasks_need_trees(tiny_bert_loaded):
    with pytest.raises(HeadscopeError, match="task syntax needs dependency trees"):
        headscope.analyze(tiny_bert_loaded, ["no trees here"], tasks="syntax")


@pytest.mark.parametrize("tasks, message", [("nope", "unknown task 'nope'"), ("", "no task given")])
def test_unknown_tasks_list_the_valid_ones(tiny_bert_loaded, tasks, message):
    with pytest.raises(HeadscopeError, match=message):
        headscope.analyze(tiny_bert_loaded, None, tasks=tasks)


def test_result_queries_and_save(tiny_bert_loaded, tmp_path):
    result = headscope.analyze(tiny_bert_loaded, None, tasks="syntax,positional", max_sentences=10)
    best = result.best("syntax", "all", "dep_to_head")
    assert (int(best["layer"]), int(best["head"]), best["score"]) == brute_force_best(
        result.scores.to_dict("records"), result.model.name, "syntax", "all", "dep_to_head")
    assert len(result.top("syntax", "all", "dep_to_head", k=3)) == 3
    base = result.best_baseline("syntax", "all", "dep_to_head")
    assert str(base["baseline"]).startswith("offset:") and base["layer"] is pd_na()
    with pytest.raises(HeadscopeError, match="relations present: .*all"):
        result.best("syntax", "no-such-relation")
    out = result.save(tmp_path / "out")
    assert {p.name for p in out.iterdir()} >= {"scores.csv", "report.md", "run.json", "figures"}
    run = json.loads((out / "run.json").read_text())
    assert run["datasets"][0]["scored"] == 10 and run["complete"] is True
    report = (out / "report.md").read_text()
    row = [line for line in report.splitlines() if line.startswith("| all | dep_to_head |")]
    assert len(row) == 1 and f"| L{int(best['layer'])}.H{int(best['head'])} |" in row[0]   # the same best head


def brute_force_best(records: list[dict], model: str, task: str, relation: str,
                     direction: str) -> tuple[int, int, float]:
    """``(layer, head, score)`` of ``model``'s highest-scoring head row (not a baseline), by a plain loop over
    the rows; the first such row on a tie."""
    found = None
    for r in records:
        if (r["model"], r["task"], r["relation"], r["direction"]) != (model, task, relation, direction) \
                or isinstance(r.get("baseline"), str):
            continue
        if found is None or r["score"] > found[2]:
            found = (int(r["layer"]), int(r["head"]), r["score"])
    assert found is not None
    return found


def test_best_and_top_pick_the_known_best_head():
    """A score table built so that the best head is known: L1.H2 scores highest on syntax 'all' dep→head, while a
    baseline, another direction, another relation, another task and another model each score higher still."""
    from headscope.run.result import AnalysisResult
    from headscope.schema import frame
    from headscope.types import ModelInfo

    rows = [head_row("m", "syntax", "all", layer, head, 0.01 * (3 * layer + head + 1), direction="dep_to_head")
            for layer in range(2) for head in range(3)]                                    # L1.H2: 0.06
    rows += [baseline_row("m", "syntax", "all", "offset:-1", 0.9, "dep_to_head"),
             head_row("m", "syntax", "all", 0, 0, 0.8, direction="head_to_dep"),
             head_row("m", "syntax", "det", 0, 1, 0.7, direction="dep_to_head"),
             head_row("m", "positional", "prev", 1, 0, 0.6, metric="mass"),
             head_row("other", "syntax", "all", 0, 2, 0.5, direction="dep_to_head")]
    info = ModelInfo("m", "test", "none", "none", False, 2, 3, 3, 16)
    result = AnalysisResult(scores=frame(rows), model=info)
    best = result.best("syntax", "all", "dep_to_head")
    assert (int(best["layer"]), int(best["head"])) == (1, 2) and best["score"] == pytest.approx(0.06)
    assert brute_force_best(rows, "m", "syntax", "all", "dep_to_head") == (1, 2, best["score"])
    top = result.top("syntax", "all", "dep_to_head", k=3)
    assert [(int(r.layer), int(r.head)) for r in top.itertuples()] == [(1, 2), (1, 1), (1, 0)]
    assert result.best_baseline("syntax", "all", "dep_to_head")["baseline"] == "offset:-1"


def pd_na():
    import pandas as pd

    return pd.NA


def test_readme_python_examples_run_in_a_notebook(tmp_path):
    """The README's library examples as notebook cells, run headless by nbclient on a real kernel; then the
    result and the explanation as the last expressions of cells, as a notebook user shows them."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    cells = [nbformat.v4.new_code_cell(part.strip()) for code in blocks for part in re.split(r"\n\s*\n", code)
             if part.strip()]
    cells += [nbformat.v4.new_code_cell("result"), nbformat.v4.new_code_cell("e")]
    book = nbformat.v4.new_notebook(cells=cells)
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []) if o["output_type"] == "stream")
    # what the first example prints is what its saved scores say
    import pandas as pd

    scores = pd.read_csv(tmp_path / "headscope-out" / "scores.csv")
    det = scores[(scores["task"] == "syntax") & (scores["relation"] == "det") & (scores["direction"] == "dep_to_head")]
    head = det[det["baseline"].isna()].nlargest(1, "score").iloc[0]
    base = det[det["baseline"].notna()]["score"].max()
    line = f"det: L{int(head['layer'])}.H{int(head['head'])} {head['score']:.2f} (best offset baseline {base:.2f})"
    assert line in printed.splitlines()
    # the rendered HTML: the result's summary and role map, the explanation's viewer
    result_out, explain_out = (book.cells[-2]["outputs"][0]["data"], book.cells[-1]["outputs"][0]["data"])
    assert "headscope-role-map" in result_out["text/html"] and "best head per measure" in result_out["text/html"]
    assert explain_out["text/html"].startswith('<iframe sandbox="allow-scripts"')
    assert "hs-viewer-data" in explain_out["text/html"] and "Content-Security-Policy" in explain_out["text/html"]
