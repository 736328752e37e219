"""examples/patching_heads.ipynb: stored executed (four minutes of exact patching on smollm2, so the site shows its
stored outputs rather than running it again), without errors, and saying what its numbers say: the heads it
lists are ranked by |effect|, each effect inside its interval, the agreement line consistent with its heatmaps'
table, and minilm refused in one line for want of a language-model head."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "patching_heads.ipynb"


def _printed(book) -> str:
    return "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o["output_type"] == "stream" and o.get("name") == "stdout")


def test_the_stored_notebook_is_executed_and_consistent():
    nbformat = pytest.importorskip("nbformat")
    book = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") for c in code), "store the notebook executed (jupyter execute --inplace)"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs if o["output_type"] == "display_data")
    text = _printed(book)
    pairs, clean, corrupt = re.search(r"^(\d+) pairs; logit difference (\S+) clean, (\S+) corrupt$", text, re.M).groups()
    assert int(pairs) == 16 and float(clean) > float(corrupt)
    heads = re.findall(r"^(L\d+\.H\d+): ([+-]\d\.\d+) \[([+-]\d\.\d+), ([+-]\d\.\d+)\]$", text, re.M)
    assert len(heads) == 5
    effects = [abs(float(e)) for _, e, _, _ in heads]
    assert effects == sorted(effects, reverse=True)
    assert all(float(lo) <= float(e) <= float(hi) for _, e, lo, hi in heads)
    group = re.search(r"^induction heads together \((\S+)\): ([+-]\d\.\d+)", text, re.M)
    assert group and group.group(1) == "L18.H6,L17.H3,L17.H4,L17.H5"
    # the table beside the roles repeats the exact effects printed first, in the same order
    table = re.findall(r"^(L\d+\.H\d+)\s+([+-]\d\.\d+)\s+([+-]\d\.\d+)  (.+)$", text, re.M)
    assert [(h, e) for h, e, _, _ in table[:5]] == [(h, f"{float(e):+.3f}") for h, e, _, _ in heads]
    agreement = re.search(r"^Spearman (\S+); (\d) of exact's top 5 in attribution's top 10; missed: (.+)$", text,
                          re.M)
    assert agreement and -1 <= float(agreement.group(1)) <= 1
    assert 5 - int(agreement.group(2)) == len([m for m in agreement.group(3).split(", ") if m != "none"])
    assert "no language-model head" in text
