"""The README and the data formats page say where each labelled data set comes from and under which licence
(issue 32): the examples name ``en_ewt-ud-dev.conllu``, and a reader must be able to get it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, SHARED_DATA  # noqa: E402

# shared/data folder -> (a file it holds, the source repository, the licence)
SOURCES = {
    "ud_english_ewt": ("en_ewt-ud-dev.conllu", "github.com/UniversalDependencies/UD_English-EWT", "CC BY-SA 4.0"),
    "gap_coreference": ("gap-development.tsv", "github.com/google-research-datasets/gap-coreference", "Apache-2.0"),
    "litbank_coref_sample": ("_brat.conll", "github.com/dbamman/litbank", "CC BY 4.0"),
}
PAGES = ("README.md", "docs/formats.md")


def table_row(text: str, needle: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith("|") and needle in line]
    assert len(rows) == 1, f"{needle}: {len(rows)} table rows"
    return rows[0]


@pytest.mark.parametrize("page", PAGES)
def test_each_data_set_has_its_source_and_licence(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    for file, source, licence in SOURCES.values():
        row = table_row(text, source)
        assert file in row and f"https://{source}" in row and f"| {licence} |" in row, row


@pytest.mark.skipif(not (SHARED_DATA / "README.md").is_file(), reason=f"needs ../shared/data ({SHARED_DATA})")
@pytest.mark.parametrize("page", PAGES)
def test_the_licences_are_those_the_shared_data_names(page):
    """The licence column of ../shared/data/README.md (written when the files were copied) and this page's."""
    shared = (SHARED_DATA / "README.md").read_text(encoding="utf-8")
    text = (ROOT / page).read_text(encoding="utf-8")
    for folder, (file, source, _) in SOURCES.items():
        cells = [c.strip() for c in table_row(shared, f"`{folder}/`").split("|")]
        assert source.split("github.com/")[1] in cells[2], cells
        licence = cells[3].split(" (")[0]                      # "CC BY-SA 4.0 (LICENSE.txt, README.md)"
        assert f"| {licence} |" in table_row(text, source), (page, folder, licence)
        assert any(file in p.name for p in (SHARED_DATA / folder).iterdir()), folder
