"""The documentation: every format's example file loads as that format, the site's hooks refuse an
undocumented public name, and `mkdocs build --strict` passes with every example executed (skipped without the
docs extra: pip install -e '.[docs]')."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import headscope
from headscope.datasets.loading import format_example

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, kind, fmt", [
    ("example.conllu", "Corpus", None), ("example_corefud.conllu", "DocumentCorpus", "corefud"),
    ("example.conll", "DocumentCorpus", "conll2012"), ("example.jsonlines", "DocumentCorpus", "jsonlines"),
    ("example.tsv", "GapCorpus", None), ("example_pairs.jsonl", "PairCorpus", None),
    ("example.txt", "Corpus", None), ("example.jsonl", "Corpus", None)])
def test_each_format_example_loads_as_its_format(name, kind, fmt):
    corpus = headscope.load_data(format_example(name))
    assert type(corpus).__name__ == kind and len(corpus) >= 1
    if fmt is not None:
        assert corpus.format == fmt
    if name == "example.conllu":
        assert corpus.sentences[1].words == ("It", "did", "n't", "move", ".") and corpus.sentences[0].heads
    if name == "example.tsv":
        import csv

        with open(format_example(name), newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        for row, ex in zip(rows, corpus.examples):        # the offsets written in the file point at the words
            for col in ("Pronoun", "A", "B"):
                assert row["Text"][int(row[f"{col}-offset"]):].startswith(row[col])
            words = lambda span: " ".join(ex.words[span[0]:span[1] + 1])  # noqa: E731
            assert (words(ex.pronoun), words(ex.a), words(ex.b)) == (row["Pronoun"], row["A"], row["B"])
    with pytest.raises(headscope.HeadscopeError, match="no format example"):
        format_example("nothing.xyz")


def needs_docs_extra() -> None:
    """Skip unless the docs extra (what ``mkdocs build`` of this site needs) is installed."""
    for module in ("mkdocs", "mkdocs_jupyter", "mkdocstrings", "material", "jupytext"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the docs extra is not installed ({module} missing): pip install -e '.[docs]'")


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_refuses_a_public_name_without_an_entry_or_a_docstring(monkeypatch):
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    h = hooks()
    api = (ROOT / "docs" / "api.md").read_text()
    h.check_api(api)                                       # the real page passes
    with pytest.raises(PluginError, match="without an entry: explain"):
        h.check_api(api.replace("::: headscope.explain\n", ""))

    def bare():
        pass

    monkeypatch.setattr(headscope, "bare_function", bare, raising=False)
    monkeypatch.setattr(headscope, "__all__", [*headscope.__all__, "bare_function"])
    with pytest.raises(PluginError, match="without a docstring: bare_function"):
        h.check_api(api + "\n::: headscope.bare_function\n")

    class Shown:
        """A class with one method lacking a docstring."""

        def method(self):
            pass

    assert h.undocumented_methods(Shown) == ["method"]


def test_the_cli_reference_is_generated_from_the_app():
    pytest.importorskip("mkdocs")
    text = hooks().cli_reference()
    for command in ("run", "merge", "explain", "ablate", "context", "patch", "probe", "compare"):
        assert f"headscope {command}" in text
    assert "--attention-memory" in text and "--checkpoint-every" in text


@pytest.mark.slow
def test_the_site_builds_strict_with_every_example_executed(tmp_path):
    needs_docs_extra()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "cli/index.html", "api/index.html", "formats/index.html"):
        assert (site / page).is_file(), page
    assert "--checkpoint-every" in (site / "cli" / "index.html").read_text()
    for example in ("syntax_heads", "coreference_and_gap", "trained_vs_random", "induction_ablation",
                    "streaming_heads", "probes", "sink_heads", "patching_heads"):
        html = (site / "examples" / example / "index.html").read_text()
        assert "jp-OutputArea" in html or "output_area" in html, example      # executed: outputs are there
        assert "Traceback" not in html, example


def test_a_dead_internal_link_fails_the_build(tmp_path):
    """The same site with one broken link, built without executing the examples: strict mode refuses it."""
    import shutil

    needs_docs_extra()
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, symlinks=False)
    page = docs / "index.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks: [{docs / 'hooks.py'}]\n")
    env = {**os.environ, "HEADSCOPE_DOCS_EXECUTE": "false", "NO_MKDOCS_2_WARNING": "1"}
    args = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(tmp_path / "site")]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "no-such-page.md" in done.stderr, done.stderr[-3000:]
    page.write_text(page.read_text().replace("\nSee [the missing page](no-such-page.md).\n", "\n"))
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]                  # and without it, the build passes


def test_an_example_that_raises_fails_the_build(tmp_path):
    """A site whose only example raises: the build executes it and stops (allow_errors is off)."""
    needs_docs_extra()
    docs = tmp_path / "docs"
    (docs / "examples").mkdir(parents=True)
    (docs / "index.md").write_text("# Home\n\n[The example](examples/broken.py)\n")
    (docs / "examples" / "broken.py").write_text("# %% [markdown]\n# # Broken\n\n# %%\nraise ValueError('example broke')\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks: []\n"
                      "nav:\n  - index.md\n  - examples/broken.py\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "example broke" in done.stderr, done.stderr[-3000:]
