"""examples/sink_heads.ipynb: stored executed, and run again headless (nbclient, a real kernel) on the bundled
sample, where every number it prints must be what its own scores.csv says, recomputed here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "sink_heads.ipynb"


def outputs(book, kind: str) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == kind]


def printed(book) -> str:
    return "".join(o.get("text", "") for o in outputs(book, "stream") if o.get("name") == "stdout")


def test_the_stored_notebook_is_executed_without_errors():
    nbformat = pytest.importorskip("nbformat")
    book = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") for c in code), "store the notebook executed (jupyter execute --inplace)"
    assert not outputs(book, "error")
    assert any("image/png" in o.get("data", {}) for o in outputs(book, "display_data")), "the scatter plot"
    assert "heads with more than half their weight on [CLS]+[SEP]:" in printed(book)


def shares(scores):
    """Per head, the mass on [CLS] ("first") plus [SEP] ("sep") under each weighting, from scores.csv's rows."""
    rows = scores[(scores["task"] == "positional") & scores["relation"].isin(["first", "sep"])
                  & scores["layer"].notna()]
    out = {}
    for (layer, head, weighting), part in rows.groupby(["layer", "head", "weighting"]):
        assert sorted(part["relation"]) == ["first", "sep"]
        out.setdefault((int(layer), int(head)), {})[weighting] = float(part["score"].sum())
    return out


@pytest.mark.slow
def test_the_notebook_on_the_bundled_sample_prints_what_its_scores_say(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    import numpy as np
    import pandas as pd

    import headscope

    # no shared data: the notebook falls back to the bundled sample (the kernel inherits the environment)
    monkeypatch.setenv("HEADSCOPE_SHARED_DATA", str(tmp_path / "no-shared-data"))
    book = nbformat.read(NOTEBOOK, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    book.cells.append(nbformat.v4.new_code_cell('print("SCORES_CSV", out / "scores.csv")'))
    nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = printed(book)
    assert not outputs(book, "error")
    csv = Path(re.search(r"^SCORES_CSV (.+)$", text, re.M).group(1))
    scores = pd.read_csv(csv)
    assert set(scores["weighting"]) == {"weight", "norm"} and set(scores["dataset"]) == {"sample_en"}

    sample = headscope.load_sample()
    per_head = shares(scores)
    weight = np.array([v["weight"] for v in per_head.values()])
    norm = np.array([v["norm"] for v in per_head.values()])
    assert ((0 <= weight) & (weight <= 1 + 1e-6) & (0 <= norm) & (norm <= 1 + 1e-6)).all()
    sink = weight > 0.5
    lines = text.splitlines()
    assert f"sample_en: {len(sample)} sentences scored; 6 layers x 12 heads" in lines
    assert f"heads with more than half their weight on [CLS]+[SEP]: {int(sink.sum())} of {len(per_head)}" in lines
    assert (f"  their median weight share {np.median(weight[sink]):.3f}, median norm share "
            f"{np.median(norm[sink]):.3f}") in lines
    assert f"all heads: median weight share {np.median(weight):.3f}, median norm share {np.median(norm):.3f}" in lines

    # the masses on [CLS] and on [SEP] apart, for the same heads
    rows = scores[(scores["task"] == "positional") & scores["layer"].notna()]
    heads = [key for key, s in zip(per_head, sink) if s]

    def median(relation, weighting):
        part = rows[(rows["relation"] == relation) & (rows["weighting"] == weighting)]
        by_head = {(int(r.layer), int(r.head)): r.score for r in part.itertuples()}
        return np.median([by_head[h] for h in heads])

    assert (f"sink heads, median: weight on [CLS] {median('first', 'weight'):.3f}, on [SEP] "
            f"{median('sep', 'weight'):.3f}; norm on [CLS] {median('first', 'norm'):.3f}, on [SEP] "
            f"{median('sep', 'norm'):.3f}") in lines
    # the value norms it measures are positive numbers, and its table has one row per sink head
    norms = re.search(r"^sink heads, median \|v W_O\| at \[CLS\] (\S+), at \[SEP\] (\S+), at words (\S+)$", text, re.M)
    assert norms and all(float(x) > 0 for x in norms.groups())
    table = [o["data"]["text/html"] for o in outputs(book, "execute_result") if "text/html" in o["data"]][-1]
    assert set(re.findall(r"<th>(L\d+\.H\d+)</th>", table)) == {f"L{layer}.H{head}" for layer, head in heads}
    assert any("image/png" in o.get("data", {}) for o in outputs(book, "display_data"))
