"""Reports (HTML / Markdown / JSON), escaping, held-out selection, the control, compare and explain."""

from __future__ import annotations

import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli.app import app

sys.path.insert(0, str(Path(__file__).parent))
from reference import full_attentions, word_attention  # noqa: E402

runner = CliRunner()
EVIL = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
EVIL_REL = "<img/src=x/onerror=alert(1)>"      # a relation name: reaches tables and figure file names


def _conllu(path: Path, sentences: list[list[tuple[str, int, str]]], ids: list[str] | None = None) -> Path:
    lines = []
    for k, sent in enumerate(sentences):
        lines.append(f"# sent_id = {ids[k] if ids else f's{k}'}")
        for i, (word, head, rel) in enumerate(sent, start=1):
            lines.append(f"{i}\t{word}\t_\t_\t_\t_\t{head}\t{rel}\t_\t_")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _evil_file(tmp_path: Path) -> Path:
    sents = []
    for k in range(12):                     # at least MIN_UNITS sentences, so that intervals exist
        sents.append([("The", 2, "det"), ("cat", 4, "nsubj"), (EVIL[k % 2], 2, EVIL_REL), ("sat", 0, "root"),
                      ("on", 7, "case"), ("the", 7, "det"), ("mat", 4, "obl"), (".", 4, "punct")])
    return _conllu(tmp_path / "evil.conllu", sents, ids=[f"s{k}<script>x</script>" for k in range(len(sents))])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict, str]] = []     # (attributes, content): kept apart from the page's text

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self.scripts.append((dict(attrs), ""))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] == "script" and self.scripts and not self.scripts[-1][1]:
            self.scripts[-1] = (self.scripts[-1][0], data)
        else:
            self.text.append(data)


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("evil")
    data = _evil_file(tmp)
    out = tmp / "out"
    res = runner.invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(data), "--control", "random-init",
                              "--bootstrap", "200", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def test_dataset_text_is_only_ever_text_in_the_html(evil_run):
    html = (evil_run / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(html)
    tags = {t for t, _ in parser.tags}
    assert "iframe" not in tags
    # the only scripts: the attention viewer's code (allowed by its hash) and its data block (never run)
    from headscope.reports.viewer import asset, csp_hash

    assert [(a, len(c) > 0) for a, c in parser.scripts] == [({"type": "application/json", "id": "hs-viewer-data"},
                                                             True), ({}, True)]
    assert parser.scripts[1][1] == asset("viewer.js")
    assert not set("<>&") & set(parser.scripts[0][1])
    assert EVIL[0] in json.dumps(json.loads(parser.scripts[0][1]), ensure_ascii=False)   # the data holds it as text
    policy = next(a["content"] for t, a in parser.tags if t == "meta" and a.get("http-equiv"))
    assert f"script-src {csp_hash(asset('viewer.js'))}" in policy and "unsafe-eval" not in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1]
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "nav", "a", "table",
                    "tr", "th", "td", "span", "img", "details", "summary", "code", "div", "figure", "figcaption", "b",
                    "ul", "li", "script", "noscript"}
    for tag, attrs in parser.tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")      # self-contained: no file, no URL
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    text = "".join(parser.text)
    assert EVIL[0] in text and EVIL[1] in text                             # shown, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_heatmaps_are_shown_at_a_size_their_numbers_can_be_read(evil_run, browser):
    """Each cell's value is written in 12-pixel type, and report.html shows every heatmap at its own size, not
    shrunk into a thumbnail (Chromium at 1200 pixels)."""
    from conftest import open_page

    import pandas as pd

    from headscope.reports import figures

    grid = pd.DataFrame(np.full((6, 12), 0.5))
    figures.heatmap_png(grid, "t", evil_run.parent / "cells.png")
    canvas = next(c for c in figures._CANVASES.values() if c.image.get_array().shape == (6, 12))
    assert canvas.texts[0][0].get_fontsize() * getattr(figures, "DPI", 110) / 72 >= 12      # pixels of type
    page, problems = open_page(browser, evil_run / "report.html")
    sizes = page.evaluate("""() => [...document.querySelectorAll("#heatmaps ~ .grid img")].map(
        i => [i.getBoundingClientRect().width, i.naturalWidth])""")
    assert len(sizes) >= 3 and all(shown >= natural - 0.5 for shown, natural in sizes), sizes
    assert not problems, problems
    page.close()


def test_example_maps_say_why_each_head_was_drawn(evil_run):
    report = json.loads((evil_run / "report.json").read_text(encoding="utf-8"))
    why = report["example_why"]
    assert [h["head"] for h in why] == report["example_heads"] and why
    assert all(h["why"].startswith(("the strongest ", "the only ", "no head has a role")) for h in why)
    md = (evil_run / "report.md").read_text(encoding="utf-8")
    page = (evil_run / "report.html").read_text(encoding="utf-8")
    for h in why:
        assert f"- {h['head']}: " in md
        assert f"<li><b>{h['head']}</b>: " in page


def test_scores_are_on_one_0_to_1_scale_and_the_reports_say_so(evil_run):
    """No score or share in %: report.md and report.html say the scale once and print accuracies as 0.xxx."""
    import html as html_lib

    md = (evil_run / "report.md").read_text(encoding="utf-8")
    page = (evil_run / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(re.sub(r"<style>.*?</style>", "", page, flags=re.S))          # the page's text, not its CSS
    text = html_lib.unescape("".join(parser.text))
    report = json.loads((evil_run / "report.json").read_text(encoding="utf-8"))
    for doc in (md, text):
        assert "Scores, accuracies and shares are on a 0–1 scale throughout" in doc
        rest = re.sub(r"\(an accuracy of 0\.\d+ is \d+\.\d%\)", "", doc).replace("95%", "")
        assert not re.findall(r"\d%", rest), re.findall(r".{40}\d%", rest)
    syntax = next(r for r in report["top_heads"]["evil"] if r["task"] == "syntax")
    assert f"{syntax['score']:.3f} [{syntax['ci_low']:.3f}, {syntax['ci_high']:.3f}]" in md


def test_pair_accuracy_below_chance_is_said_where_it_is_reported():
    from headscope.reports import content, markdown, sections
    from headscope.schema import frame

    def table(scores):
        rows = [{"model": "m", "dataset": "d", "task": "pairs", "relation": "pair", "direction": "pronoun_to_candidate",
                 "metric": "accuracy", "layer": None, "head": None, "baseline": "chance", "score": 0.25,
                 "ci_low": 0.25, "ci_high": 0.25, "n": 100, "n_reachable": None}]
        rows += [{**rows[0], "layer": 0, "head": h, "baseline": None, "score": s, "ci_low": s - 0.05,
                  "ci_high": s + 0.05} for h, s in enumerate(scores)]
        return frame(rows)

    for scores, below in (((0.1, 0.18), True), ((0.1, 0.4), False)):
        df = table(scores)
        section = "\n".join(markdown.render_section(sections.pairs(sections.Context(df), "d").record()))
        (top,) = content.top_heads(df, model="m", dataset="d")
        assert ("The best head is below chance (0.25): no head gets both sentences" in section) is below
        assert bool(top.get("below_chance")) is below
        if below:
            assert "its whole 95% interval is below chance" in section      # 0.18 + 0.05 < 0.25
            lines = markdown._top_section({"top_heads": {"d": [top]}})
            assert "- pairs pair pronoun_to_candidate: the best head is below chance (0.25)" in "\n".join(lines)


def test_dataset_text_is_inert_in_markdown_and_data_in_json(evil_run):
    md = (evil_run / "report.md").read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md
    for f in (evil_run / "figures").iterdir():
        assert re.fullmatch(r"[A-Za-z0-9._-]+", f.name), f.name           # file-safe names only
    assert any("img-src-x-onerror" in f.name for f in (evil_run / "figures").iterdir())
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    report = json.loads((evil_run / "report.json").read_text(encoding="utf-8"))
    words = [w for e in report["examples"] for w in e["words"]]
    assert EVIL[0] in words and EVIL[1] in words                           # JSON keeps the data as it is


def test_detail_sections_are_the_same_in_markdown_html_and_json(evil_run):
    """The detail sections are built once (report.json's ``details``): report.md and report.html show each one,
    with every cell, the dataset's hostile name as text in both."""
    import html as html_lib

    from headscope.reports.markdown import md_text

    report = json.loads((evil_run / "report.json").read_text(encoding="utf-8"))
    md = (evil_run / "report.md").read_text(encoding="utf-8")
    page = (evil_run / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    text = "".join(parser.text)
    details = report["details"]
    assert {d["task"] for d in details} >= {"syntax", "positional"}
    for d in details:
        assert f"### {d['title']} — {md_text(d['dataset'])}" in md
        assert f"{d['title']} — {d['dataset']}" in html_lib.unescape(text)
        for row in d["rows"]:
            assert all(c in md or md_text(c) in md for c in row), row
            assert all(c in text for c in row), row
        for point in d["points"]:
            assert "".join(point) in text and "- " + "".join(point) in md


def test_report_files_carry_the_same_roles_and_intervals(evil_run):
    report = json.loads((evil_run / "report.json").read_text(encoding="utf-8"))
    md = (evil_run / "report.md").read_text(encoding="utf-8")
    html = (evil_run / "report.html").read_text(encoding="utf-8")
    import pandas as pd

    roles = pd.read_csv(evil_run / "roles.csv")
    assert len(report["roles"]["table"]) == int((roles["role"] != "none").sum())
    from headscope.reports.markdown import md_text

    for r in report["roles"]["table"]:
        assert f"| L{r['layer']}.H{r['head']} | {md_text(r['role'])} |" in md
    grid = report["roles"]["grid"]
    assert len(grid) == report["summary"]["layers"] and len(grid[0]) == report["summary"]["heads"]
    assert report["roles"]["heads_without_a_role"] == int((roles["role"] == "none").sum())
    tops = report["top_heads"]["evil"]
    assert tops and all(t["ci_low"] is not None and t["ci_low"] <= t["score"] <= t["ci_high"] for t in tops)
    assert "[no interval]" not in html.split('id="provenance"')[0]
    for section in ("Summary", "Roles", "Top heads", "Heatmaps", "Example attention maps", "Control", "Provenance"):
        assert f">{section}" in html
    assert report["summary"]["control"]["model"].endswith("(random-init)")
    assert report["control"] and all(r["control_score"] is not None for r in report["control"])


def test_html_renders_in_headless_chromium(evil_run, tmp_path):
    from headscope.reports.screenshot import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    png, console = screenshot(evil_run / "report.html", tmp_path / "shot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert not [line for line in console if "Uncaught" in line or "Refused" in line], console


def test_the_reports_viewer_shows_the_example_sentences_as_text(evil_run, browser):
    from conftest import open_page

    page, problems = open_page(browser, evil_run / "report.html")
    data = json.loads(page.locator("#hs-viewer-data").text_content())
    assert len(data["docs"]) == 3
    for i, doc in enumerate(data["docs"]):
        page.select_option(".hs-doc", str(i))
        page.wait_for_selector(".hs-viewer[data-ready='1']")
        assert page.locator(".hs-unit").all_text_contents() == doc["levels"]["word"]["labels"]
        page.locator(".hs-unit[data-i='2']").click()
        assert page.locator(".hs-viewer").get_attribute("data-selected") == "2"
        assert page.locator("path.hs-link").count() > 0
    assert any(EVIL[0] in doc["levels"]["word"]["labels"] for doc in data["docs"])
    assert not problems, problems                # no script ran but the viewer's: no dialog, no CSP report
    page.close()


def test_control_scores_sit_next_to_the_model(tiny_bert_loaded, sample):
    # The tiny test model is itself built with torch seed 0, so the control takes another seed.
    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:20]), tasks="syntax,positional",
                          control="random-init", bootstrap=100, seed=5)
    models = r.scores["model"].value_counts()
    control = r.meta.control["model"]
    assert set(models.index) == {r.model.name, control} and models.iloc[0] == models.iloc[1]
    a = r.scores[r.scores["model"] == r.model.name].reset_index(drop=True)
    b = r.scores[r.scores["model"] == control].reset_index(drop=True)
    cols = ["task", "relation", "direction", "metric", "baseline", "layer", "head"]
    def keys(df):
        return df[cols].astype(object).where(df[cols].notna(), "NA").to_numpy()

    assert (keys(a) == keys(b)).all()
    assert not np.allclose(a["score"].to_numpy(float), b["score"].to_numpy(float))
    # result queries answer for the trained model
    assert r.best("syntax", "all", "dep_to_head")["model"] == r.model.name
    with pytest.raises(headscope.HeadscopeError, match="only one is random-init"):
        headscope.analyze(tiny_bert_loaded, list(sample.sentences[:2]), control="shuffled")


def test_held_out_selection_picks_on_one_set_and_reports_on_the_other(tiny_bert_loaded, sample, tmp_path):
    from headscope.reports.content import top_heads

    sents = list(sample.sentences)
    pick = headscope.Corpus(name="pick", sentences=tuple(sents[:32]))
    report = headscope.Corpus(name="report", sentences=tuple(sents[32:]))
    r = headscope.analyze(tiny_bert_loaded, report, select_on=pick, tasks="syntax", bootstrap=50)
    assert r.meta.selection == {"select_on": ["pick"], "report_on": ["report"]}
    df = r.scores[r.scores["baseline"].isna()]
    key = (df["relation"] == "all") & (df["direction"] == "dep_to_head")
    on_pick = df[key & (df["dataset"] == "pick")]
    on_report = df[key & (df["dataset"] == "report")]
    best = on_pick.loc[on_pick["score"].idxmax()]
    rows = top_heads(r.scores, model=r.model.name, dataset="report", select_on="pick")
    row = next(x for x in rows if x["relation"] == "all" and x["direction"] == "dep_to_head")
    assert (row["layer"], row["head_index"]) == (int(best["layer"]), int(best["head"]))
    same = on_report[(on_report["layer"] == best["layer"]) & (on_report["head"] == best["head"])].iloc[0]
    assert row["score"] == pytest.approx(float(same["score"])) and row["selected_on"] == "pick"
    r.save(tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "chosen on pick, reported here: held-out selection" in md
    assert "### Syntax — pick" not in md                      # the selection set is not reported on


def test_select_on_from_the_cli(tiny_bert_dir, tmp_path, sample):
    from headscope.datasets.loading import sample_path

    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(sample_path()), "--select-on",
                              str(_evil_file(tmp_path)), "--tasks", "syntax", "--out", str(out), "--no-figures",
                              "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["selection"]["select_on"] == ["evil"]
    bad = runner.invoke(app, ["run", "--model", str(tiny_bert_dir), "--select-on", str(tmp_path / "nope.conllu"),
                              "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "nope.conllu: file not found" in bad.output


def test_compare_with_the_control_and_between_runs(evil_run, tmp_path):
    c = headscope.compare(evil_run)
    assert c.label_b.endswith("(random-init)")
    t = c.table
    np.testing.assert_allclose(t["diff"], t["score_a"] - t["score_b"])
    ok = t["ci_low"].notna()
    assert ok.any() and (t.loc[ok, "ci_low"] <= t.loc[ok, "diff"] + 1e-12).all()
    assert (t.loc[ok, "diff"] <= t.loc[ok, "ci_high"] + 1e-12).all()
    assert set(t["metric"]) >= {"accuracy", "mass"} and "offset" not in set(t["metric"])
    # comparing a run with itself: every difference 0
    same = headscope.compare(evil_run, evil_run)
    assert (same.table["diff"] == 0).all() and not same.table["clear"].any()
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(evil_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "largest changes" in res.output
    assert {p.name for p in out.iterdir()} >= {"compare.csv", "compare_summary.csv", "compare.md", "figures"}
    assert any(p.name.startswith("diff_") for p in (out / "figures").iterdir())


def test_compare_bad_input_is_one_line(tmp_path, evil_run):
    cases = [(["compare", str(tmp_path / "missing")], "run folder not found"),
             (["compare", str(tmp_path)], "no scores.csv there")]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "scores.csv").write_text("a,b\n1,2\n")
    cases.append((["compare", str(broken)], "scores.csv:1: scores table lacks columns"))
    other = tmp_path / "other"
    shutil.copytree(evil_run, other)
    import pandas as pd

    s = pd.read_csv(other / "scores.csv")
    s["dataset"] = "elsewhere"
    s.to_csv(other / "scores.csv", index=False)
    cases.append((["compare", str(evil_run), str(other)], "the runs share no dataset"))
    for argv, message in cases:
        res = runner.invoke(app, argv + ["--out", str(tmp_path / "o")])
        assert res.exit_code == 2, (argv, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("headscope: error: ") and message in lines[0], res.output


SENTENCE = "The animal didn't cross the street because it was too tired."


def test_explain_reads_the_word_row_of_every_head(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    e = headscope.explain(SENTENCE, model=str(tiny_bert_dir))
    assert e.word == "it" and e.words[2:4] == ["did", "n't"]
    model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    maps, word_ids = full_attentions(model, tok, headscope.Sentence(words=tuple(e.words),
                                                                      space_after=tuple(
                                                                          headscope.run.explain.split_words(
                                                                              SENTENCE).space_after)))
    for r in e.table.head(5).itertuples():
        row = word_attention(maps[r.layer][r.head], word_ids)[e.word_index]
        masked = row.copy()
        masked[e.word_index] = -1
        assert r.target_index == int(masked.argmax())
        assert r.weight == pytest.approx(float(row[r.target_index]), abs=1e-5)
    assert (e.table["weight"].diff().dropna() <= 1e-12).all()             # strongest first
    assert len(e.table) == e.attention.shape[0] * e.attention.shape[1]


def test_explain_word_choice_and_errors(tiny_bert_dir):
    e = headscope.explain(["A", "dog", "barked", "."], word=1, model=str(tiny_bert_dir))
    assert e.word == "dog"
    assert headscope.explain("Dogs bark loudly.", model=str(tiny_bert_dir)).word == "loudly"   # no pronoun
    with pytest.raises(headscope.HeadscopeError, match="word 'cat' is not in the sentence"):
        headscope.explain("Dogs bark.", word="cat", model=str(tiny_bert_dir))
    with pytest.raises(headscope.HeadscopeError, match="no words"):
        headscope.explain("   ", model=str(tiny_bert_dir))


def test_explain_cli_with_roles_from_a_run(evil_run, tiny_bert_dir, tmp_path):
    out = tmp_path / "ex"
    res = runner.invoke(app, ["explain", SENTENCE, "--word", "it", "--model", str(tiny_bert_dir), "--run",
                              str(evil_run), "--out", str(out), "--top", "5"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].endswith("heads linking 'it' (word 8) to other words") and len(lines) == 2 + 5 + 1
    assert {p.name for p in out.iterdir()} == {"explain.csv", "explain.md", "explain.png", "explain.html",
                                               "explain_distance.png", ".headscope"}
    import pandas as pd

    roles = pd.read_csv(evil_run / "roles.csv")
    table = pd.read_csv(out / "explain.csv", keep_default_na=False)
    named = roles[roles["role"] != "none"]
    for r in table.itertuples():
        expect = "; ".join(dict.fromkeys(named[(named["layer"] == r.layer) & (named["head"] == r.head)]["role"]))
        assert r.role == expect
    # the viewer shows the same roles beside each head, with their scores
    page = (out / "explain.html").read_text(encoding="utf-8")
    info = json.loads(re.search(r'id="hs-viewer-data">(.*?)</script>', page, re.S).group(1))["head_info"]
    for r in named.itertuples():
        entries = info[r.layer][r.head]["roles"]
        assert any(e["role"] == r.role and e["score"].startswith(f"{r.score:.3f}") for e in entries)
    assert sum(len(cell["roles"]) for row in info for cell in row) == len(named.drop_duplicates(
        ["layer", "head", "role", "score", "criterion"]))
    bad = tmp_path / "badrun"
    bad.mkdir()
    (bad / "roles.csv").write_text("x,y\n1,2\n")
    res = runner.invoke(app, ["explain", SENTENCE, "--model", str(tiny_bert_dir), "--run", str(bad)])
    assert res.exit_code == 2 and "roles.csv:1: roles table lacks columns" in res.output
    res = runner.invoke(app, ["explain", SENTENCE, "--model", str(tiny_bert_dir), "--run", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no roles.csv there" in res.output


def test_example_maps_equal_the_reference(tiny_bert_loaded, sample):
    from headscope.capture.links import word_maps
    from headscope.reports import figures

    sents = list(sample.sentences[:2])
    maps = word_maps(tiny_bert_loaded, sents)
    for sent, m in zip(sents, maps):
        full, word_ids = full_attentions(tiny_bert_loaded.model, tiny_bert_loaded.tokenizer, sent)
        n = len(sent)
        for layer in range(len(full)):
            for head in range(full[layer].shape[0]):
                ref = word_attention(full[layer][head], word_ids)
                np.testing.assert_allclose(m["attention"][layer, head, :n, :n], ref, atol=1e-5)
        assert m["labels"][:n] == list(sent.words) and m["labels"][n:] == ["[CLS]", "[SEP]"]
        assert re.fullmatch(r"\d+", str(m["attention"].shape[0]))
        # the special tokens' own rows, columns pooled as the words' rows are; and every map square
        specials = [t for t, w in enumerate(word_ids) if w is None]
        pieces = [[t for t, w in enumerate(word_ids) if w == i] for i in range(n)]
        assert m["attention"].shape[2:] == (n + len(specials), n + len(specials))
        for layer in range(len(full)):
            for j, t in enumerate(specials):
                row = full[layer][:, t]                                            # [head, token]
                ref = np.concatenate([np.stack([row[:, p].sum(1) for p in pieces], 1), row[:, specials]], 1)
                np.testing.assert_allclose(m["attention"][layer, :, n + j], ref, atol=1e-5)
        # drawn in input order: [CLS] first, [SEP] last, every row a distribution
        labels, grid = figures.ordered_map(m, 1, 0)
        assert labels == ["[CLS]", *sent.words, "[SEP]"]
        np.testing.assert_allclose(grid.sum(1), 1.0, atol=1e-4)


def test_explain_on_a_decoder_only_looks_left():
    from conftest import tiny_llama

    from headscope.models.loading import load_model

    model, tok = tiny_llama()
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")
    e = headscope.explain(SENTENCE, model=loaded)
    assert e.word == "it"
    assert np.allclose(e.attention[:, :, e.word_index + 1:len(e.words)], 0.0)   # later words are invisible
    assert (e.table["target_index"] < e.word_index).all()
    assert e.labels[len(e.words):] == [tok.convert_ids_to_tokens(tok.bos_token_id)]   # the BOS column
    np.testing.assert_allclose(e.attention.sum(-1), 1.0, atol=1e-5)


def test_a_run_whose_example_sentences_do_not_fit_still_writes_everything(tmp_path, tiny_bert_dir):
    long = tmp_path / "long.txt"
    long.write_text(" ".join(["word"] * 600) + "\n" + " ".join(["short"] * 20) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--model", str(tiny_bert_dir), "--data", str(long), "--tasks", "positional",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "scores.csv").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "report.json").read_text())["examples"] == []


def test_too_few_units_give_no_interval_and_no_test(tiny_bert_loaded, sample):
    from headscope.analysis.stats import MIN_UNITS

    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:MIN_UNITS - 1]), tasks="syntax,positional")
    heads = r.scores[r.scores["baseline"].isna()]
    assert heads[["ci_low", "ci_high", "p_value", "q_value"]].isna().all().all()
    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences[:MIN_UNITS]), tasks="syntax")
    assert r.scores["ci_low"].notna().any()


def test_compare_and_explain_refuse_runs_of_another_shape(evil_run, tmp_path, tiny_bert_dir):
    import pandas as pd

    other = tmp_path / "other"
    shutil.copytree(evil_run, other)
    run = json.loads((other / "run.json").read_text())
    run["model"]["num_layers"] += 1
    (other / "run.json").write_text(json.dumps(run))
    res = runner.invoke(app, ["compare", str(evil_run), str(other), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "needs the same layer x head grid" in res.output
    (other / "run.json").write_text(json.dumps({"control": 5}))
    res = runner.invoke(app, ["compare", str(other), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "run.json:1: not a headscope run.json" in res.output
    scores = pd.read_csv(evil_run / "scores.csv")
    scores["score"] = scores["score"].astype(object)
    scores.loc[3, "score"] = "high"
    scores.to_csv(other / "scores.csv", index=False)
    (other / "run.json").unlink()
    res = runner.invoke(app, ["compare", str(other), str(evil_run), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "scores.csv:5: score 'high' is not a number" in res.output
    roles = pd.read_csv(evil_run / "roles.csv")
    roles["model"] = "some-other-model"
    roles.to_csv(other / "roles.csv", index=False)
    res = runner.invoke(app, ["explain", SENTENCE, "--model", str(tiny_bert_dir), "--run", str(other)])
    assert res.exit_code == 2 and "roles are for model 'some-other-model'" in res.output
    roles = pd.read_csv(evil_run / "roles.csv")
    roles["layer"] = roles["layer"].astype(object)
    roles.loc[2, "layer"] = "x"
    roles.to_csv(other / "roles.csv", index=False)
    res = runner.invoke(app, ["explain", SENTENCE, "--model", str(tiny_bert_dir), "--run", str(other)])
    assert res.exit_code == 2 and "roles.csv:4: layer 'x' is not a head index" in res.output
    for r in (res,):
        assert len(r.output.strip().splitlines()) == 1


def test_explain_on_a_decoder_first_word_has_nothing_to_link_to():
    from conftest import tiny_llama

    from headscope.models.loading import load_model

    model, tok = tiny_llama()
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")
    e = headscope.explain("It was raining hard .", word=0, model=loaded)
    assert (e.table["target"] == "—").all() and e.table["weight"].isna().all()
    e = headscope.explain("It was raining hard .", word=1, model=loaded)
    assert (e.table["target"] == "It").all() and (e.table["second"] == "—").all()
    assert "| — |" in e.markdown()


def test_every_detail_section_names_the_head_chosen_on_the_selection_data():
    """Held-out selection holds in every section of report.md, not only syntax: with head L0.H0 best on the
    reported data and L0.H1 best on the selection data, each section names L0.H1 and its score here."""
    from headscope.reports import markdown, sections
    from headscope.schema import frame

    def rows(dataset, task, relation, metric, scores, direction=None, baseline=None):
        return [{"model": "m", "dataset": dataset, "task": task, "relation": relation, "direction": direction,
                 "metric": metric, "layer": None if baseline else 0, "head": None if baseline else h,
                 "baseline": baseline, "score": s, "ci_low": s - 0.01, "ci_high": s + 0.01, "n": 100,
                 "n_reachable": 100} for h, s in enumerate(scores)]

    table = []
    for dataset, scores in (("report", (0.9, 0.6)), ("pick", (0.2, 0.7))):
        for rel in ("prev", "self"):
            table += rows(dataset, "positional", rel, "mass", scores)
        table += rows(dataset, "tree", "all", "uas", scores, direction="dep_to_head")
        table += rows(dataset, "pairs", "pair", "accuracy", scores)
        table += rows(dataset, "gap", "all", "accuracy", scores)
    df = frame(table)
    def section(task, select_on=None):
        return "\n".join(markdown.render_section(getattr(sections, task)(sections.Context(df, select_on=select_on),
                                                                           "report").record()))

    positional = section("positional", "pick")
    assert "| prev | L0.H1 | 0.600" in positional and "| self | L0.H1 | 0.600" in positional
    assert "| dep_to_head | L0.H1 | 0.600" in section("tree", "pick")      # every score on the 0–1 scale
    pairs = section("pairs", "pick").splitlines()
    listed = [line for line in pairs if line.startswith("- ")]
    assert "chosen on pick" in "\n".join(pairs) and listed[0].startswith("- L0.H1: 0.600 [0.590, 0.610] of pairs")
    assert "best head L0.H1 | 0.600" in section("gap", "pick")
    # without selection, the best head here
    assert "| prev | L0.H0 | 0.900" in section("positional")


def test_a_heatmap_on_a_kept_canvas_is_the_image_a_new_canvas_draws(tmp_path):
    """Heatmaps of one layout share a canvas: what the previous grid left there (its values, NaN cells, colour
    range, title) must not show in the next one."""
    import numpy as np
    import pandas as pd

    from headscope.reports import figures

    rng = np.random.default_rng(0)
    first = pd.DataFrame(rng.random((3, 4)) * 5)
    second = pd.DataFrame(rng.random((3, 4)))
    second.iloc[1, 2] = np.nan
    figures._CANVASES.clear()
    figures.heatmap_png(first, "first", tmp_path / "first.png", vmax=None)
    figures.heatmap_png(second, "second", tmp_path / "kept.png")
    assert len(figures._CANVASES) == 1
    figures._CANVASES.clear()
    figures.heatmap_png(second, "second", tmp_path / "new.png")
    assert (tmp_path / "kept.png").read_bytes() == (tmp_path / "new.png").read_bytes()
    assert (tmp_path / "first.png").read_bytes() != (tmp_path / "new.png").read_bytes()


def test_figures_from_workers_forked_ahead_equal_those_of_a_fresh_pool(tmp_path):
    """``workers_ahead`` forks the figure workers before the run; the first drawing takes them, and what they draw
    is byte for byte what workers forked at drawing time draw. Unused workers are stopped when the block ends."""
    import multiprocessing

    import numpy as np
    import pandas as pd

    from headscope.reports import figures

    if figures._worker_count() < 2:
        pytest.skip("figure workers need fork and at least 2 CPUs")
    rng = np.random.default_rng(1)
    todo = [figures.Figure(f"h{i}.png", "_heatmap", (pd.DataFrame(rng.random((3, 4))), f"grid {i}", 1.0))
            for i in range(3)]
    (tmp_path / "fresh").mkdir()
    (tmp_path / "ahead").mkdir()
    assert figures.draw_figures(todo, tmp_path / "fresh") == ["h0.png", "h1.png", "h2.png"]
    before = set(multiprocessing.active_children())
    with figures.workers_ahead():
        pool = figures._AHEAD[0]
        drawing = figures.Drawing(todo, tmp_path / "ahead")
        assert drawing.pool is pool and not figures._AHEAD            # taken by the first drawing
        assert drawing.finish() == ["h0.png", "h1.png", "h2.png"]
    for i in range(3):
        assert (tmp_path / "ahead" / f"h{i}.png").read_bytes() == (tmp_path / "fresh" / f"h{i}.png").read_bytes()
    with figures.workers_ahead():
        assert len(figures._AHEAD) == 1                               # never used
    assert not figures._AHEAD and set(multiprocessing.active_children()) <= before


def test_a_cancelled_drawing_keeps_no_figure(tmp_path):
    import numpy as np
    import pandas as pd

    from headscope.reports import figures

    todo = [figures.Figure(f"h{i}.png", "_heatmap", (pd.DataFrame(np.eye(3)), "grid", 1.0)) for i in range(4)]
    drawing = figures.Drawing(todo, tmp_path)
    drawn = figures.Drawn()
    drawing.cancel()
    drawn.keep_finished(tmp_path)
    assert drawing.pool is None and not list(tmp_path.iterdir()) and drawn.files() == []
