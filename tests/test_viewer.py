"""The attention viewer: links taken block by block against eager maps, the page's data format and its CSP,
escaping, and the page itself driven in headless Chromium (skipped where Chromium or playwright is missing)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli.app import app
from headscope.capture.links import read_links
from headscope.models.loading import load_model
from headscope.reports.viewer import asset, csp_hash, pack
from headscope.types import Sentence

sys.path.insert(0, str(Path(__file__).parent))
from conftest import long_models, open_page, tiny_bert, tiny_llama  # noqa: E402
from reference import full_attentions, word_attention  # noqa: E402

runner = CliRunner()
EVIL = ["</script><script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "&amp;<!--"]
SENTENCE = "The animal did not cross the street because it was too tired ."


@pytest.fixture(scope="module", params=["bert", "llama"])
def tiny_loaded(request):
    model, tok = (tiny_bert if request.param == "bert" else tiny_llama)()
    return load_model(model, tokenizer=tok, name=f"tiny-{request.param}")


def reference_top(att: np.ndarray, k: int, n: int, causal: bool):
    """Per head and row (unit i of n): the k strongest links to other units, from a full [head, col, col] map
    whose first n columns are the units; the rest (special tokens) summed apart. Plain loops."""
    out = []
    for h in range(att.shape[0]):
        rows = []
        for i in range(n):
            cand = [(float(att[h, i, j]), j) for j in range(n) if j != i and (not causal or j < i)]
            cand.sort(key=lambda x: -x[0])
            rows.append(([j for w, j in cand[:k] if w > 0], [w for w, j in cand[:k] if w > 0],
                         float(att[h, i, n:].sum()), float(att[h, i, i])))
        out.append(rows)
    return out


def test_links_equal_the_eager_maps_in_row_blocks(tiny_loaded):
    info = tiny_loaded.info
    sent = Sentence(words=tuple(SENTENCE.split()))
    # 0.002 MiB: a few rows per block, so that word rows are assembled from several blocks
    (item,) = read_links(tiny_loaded, [sent], k=3, keep_rows="all", attention_memory=0.002)
    maps, word_ids = full_attentions(tiny_loaded.model, tiny_loaded.tokenizer, sent)
    specials = [t for t, w in enumerate(word_ids) if w is None]
    n = len(sent.words)
    for layer, att in enumerate(maps):
        words = np.stack([word_attention(att[h], word_ids) for h in range(info.num_heads)])
        special_cols = att[:, :, specials]                                         # [head, tok, special]
        # word rows: mean over the word's pieces of each special column
        pieces = [[t for t, w in enumerate(word_ids) if w == i] for i in range(n)]
        spec = np.stack([special_cols[:, p].mean(1) for p in pieces], 1)            # [head, word, special]
        full = np.concatenate([words, spec], -1)
        rows = np.stack([item["rows"][j][layer] for j in range(n)], 1)              # [head, word, col]
        np.testing.assert_allclose(rows, full, atol=1e-5)
        links = item["links"]["word"]
        for h, per_row in enumerate(reference_top(full, 3, n, info.is_decoder)):
            for i, (cols, weights, special_mass, own) in enumerate(per_row):
                got = links.top(layer, h, i)
                assert [c for c, _ in got] == cols, (layer, h, i)
                np.testing.assert_allclose([w for _, w in got], weights, atol=1e-5)
                assert links.special_mass[layer, h, i] == pytest.approx(special_mass, abs=1e-5)
                assert links.self_mass[layer, h, i] == pytest.approx(own, abs=1e-5)
        # token level: the model's own rows, special tokens apart (units keep their order, so "earlier" holds)
        tok = item["links"]["token"]
        units = [t for t, w in enumerate(word_ids) if w is not None]
        order = units + specials
        reordered = att[:, order][:, :, order]
        for h, per_row in enumerate(reference_top(reordered, 3, len(units), info.is_decoder)):
            for i, (cols, weights, special_mass, own) in enumerate(per_row):
                got = tok.top(layer, h, i)
                assert [c for c, _ in got] == cols, (layer, h, i)
                np.testing.assert_allclose([w for _, w in got], weights, atol=1e-5)
                assert tok.special_mass[layer, h, i] == pytest.approx(special_mass, abs=1e-5)


def test_read_links_refuses_what_it_cannot_do(tiny_bert_loaded):
    sent = Sentence(words=("a", "b", "c"))
    with pytest.raises(headscope.HeadscopeError, match="links per row must be 1 or more"):
        read_links(tiny_bert_loaded, [sent], k=0)
    with pytest.raises(headscope.HeadscopeError, match="levels must be among word, token"):
        read_links(tiny_bert_loaded, [sent], levels=("words",))
    with pytest.raises(headscope.HeadscopeError, match="reads at most 128"):
        read_links(tiny_bert_loaded, [Sentence(words=("word",) * 300)])


def unpack(level: dict, layers: int, heads: int) -> dict:
    """The page's data read back as the script reads it (an independent decoder of ``pack``)."""
    raw = gzip.decompress(base64.b64decode(level["data"]))
    rows, k = len(level["labels"]), level["k"]
    n, m = layers * heads * rows * k, layers * heads * rows
    width = level["offset_bytes"]
    off = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4", count=n).reshape(layers, heads, rows, k)
    at = n * width
    weight = np.frombuffer(raw, dtype=np.uint8, count=n, offset=at).reshape(layers, heads, rows, k)
    specials = np.frombuffer(raw, dtype=np.uint8, count=m, offset=at + n).reshape(layers, heads, rows)
    own = np.frombuffer(raw, dtype=np.uint8, count=m, offset=at + n + m).reshape(layers, heads, rows)
    assert len(raw) == at + n + 2 * m
    return {"off": off, "weight": weight, "specials": specials, "self": own, "none": level["none"]}


def expected_links(level: dict, layers: int, heads: int, layer: int, head: int, i: int, direction: str = "both"):
    """{(from, to)} that the page should draw for unit i: its own links, and the rows that link to it."""
    u = unpack(level, layers, heads)
    off, w = u["off"][layer, head].astype(int), u["weight"][layer, head]
    out = set()
    if direction in ("both", "from"):
        out |= {(i, i - o) for o, x in zip(off[i], w[i]) if x > 0 and o != u["none"]}
    if direction in ("both", "to"):
        out |= {(r, i) for r in range(off.shape[0]) for o, x in zip(off[r], w[r]) if x > 0 and o != u["none"]
                and r - o == i}
    return out


def test_pack_round_trips_to_a_255th(tiny_loaded):
    (item,) = read_links(tiny_loaded, [Sentence(words=tuple(SENTENCE.split()))], k=4)
    info = tiny_loaded.info
    for level, links in item["links"].items():
        packed = pack(links)
        u = unpack(packed, info.num_layers, info.num_heads)
        valid = (links.index >= 0) & (np.rint(links.weight * 255) > 0)
        rows = np.arange(links.index.shape[2]).reshape(1, 1, -1, 1)
        assert (u["off"][valid] == (rows - links.index)[valid]).all()
        assert (u["off"][~valid] == u["none"]).all()
        assert np.abs(u["weight"] / 255 - links.weight).max() <= 0.5 / 255 + 1e-6
        assert np.abs(u["specials"] / 255 - links.special_mass).max() <= 0.5 / 255 + 1e-6
        assert np.abs(u["self"] / 255 - links.self_mass).max() <= 0.5 / 255 + 1e-6
        if info.is_decoder:
            assert (u["off"][valid] > 0).all()          # a decoder links only to earlier units
        else:
            assert (u["off"][valid] < 0).any()          # an encoder also to later ones
        assert packed["labels"] == [str(x) for x in links.labels]


@pytest.fixture(scope="module")
def evil_explanation(tiny_bert_dir):
    words = ["The", EVIL[0], "cat", EVIL[1], "sat", "on", EVIL[2], "it", "."]
    return headscope.explain(words, word="it", model=str(tiny_bert_dir))


def test_the_page_allows_only_its_own_script_and_escapes_the_data(evil_explanation, tmp_path):
    page = evil_explanation.html()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert f"script-src {csp_hash(asset('viewer.js'))}" in policy and "default-src 'none'" in policy
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="hs-viewer-data"', ""]
    data, code = scripts[0][1], scripts[1][1]
    assert code == asset("viewer.js")
    assert "<" not in data and ">" not in data and "&" not in data   # nothing in the data can end the element
    payload = json.loads(data)
    assert payload["docs"][0]["levels"]["word"]["labels"][1] == EVIL[0]
    assert payload["initial"]["word"] == evil_explanation.word_index
    bare = re.sub(r"/\*.*?\*/|(?m:^\s*//[^\n]*)", "", code, flags=re.S)      # the code without its comments
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(", "fetch("):
        assert sink not in bare, sink
    assert "http" not in bare.replace('"http://www.w3.org/2000/svg"', "")    # no address but SVG's namespace
    html = evil_explanation._repr_html_()
    assert html.startswith("<iframe sandbox=\"allow-scripts\"") and "<script" not in html   # all of it escaped


def test_an_explanation_prints_in_a_few_lines(evil_explanation):
    """repr() says what was explained, the sizes and the strongest heads, not the arrays behind them."""
    text = repr(evil_explanation)
    layers, heads = evil_explanation.shape
    first = evil_explanation.table.iloc[0]
    assert len(text) < 600 and len(text.splitlines()) <= 4, text
    assert f"{layers} layers × {heads} heads" in text and f"L{first['layer']}.H{first['head']} → " in text
    assert repr(evil_explanation.word) in text and "array(" not in text


def drawn(page) -> set:
    return {(int(f), int(t)) for f, t in page.eval_on_selector_all(
        "path.hs-link", "ps => ps.map(p => [p.dataset.from, p.dataset.to])")}


def test_the_viewer_in_chromium_draws_the_clicked_words_links(browser, evil_explanation, tmp_path):
    e = evil_explanation
    e.save(tmp_path / "out", figure=False)
    page, problems = open_page(browser, tmp_path / "out" / "explain.html")
    data = e.viewer_data()
    level = data["docs"][0]["levels"]["word"]
    layers, heads = e.shape
    viewer = page.locator(".hs-viewer")
    # opened on the explained word and its strongest head
    first = e.table.iloc[0]
    assert (int(viewer.get_attribute("data-layer")), int(viewer.get_attribute("data-head"))) == (
        first["layer"], first["head"])
    assert drawn(page) == expected_links(level, layers, heads, first["layer"], first["head"], e.word_index)
    # every text from the data is shown as text
    assert page.locator(".hs-unit").all_text_contents() == e.words
    # a click on another word draws that word's links
    page.locator(".hs-unit[data-i='2']").click()
    page.mouse.move(5, 5)                                            # leave the text: the click stays
    assert viewer.get_attribute("data-selected") == "2"
    before = drawn(page)
    assert before and before == expected_links(level, layers, heads, first["layer"], first["head"], 2)
    # a head switch redraws for the same word
    other = next(h for h in range(heads) if expected_links(level, layers, heads, first["layer"], h, 2) != before)
    page.select_option(".hs-head", str(other))
    assert viewer.get_attribute("data-head") == str(other)
    assert drawn(page) == expected_links(level, layers, heads, first["layer"], other, 2)
    # one direction only
    page.select_option(".hs-direction", "from")
    assert drawn(page) == expected_links(level, layers, heads, first["layer"], other, 2, "from")
    # a thumbnail picks its head; the grid has every head
    assert page.locator(".hs-thumb").count() == layers * heads
    page.locator(".hs-thumb[data-head='1,0']").click()
    assert (viewer.get_attribute("data-layer"), viewer.get_attribute("data-head")) == ("1", "0")
    # the token level is there for a short input
    page.select_option(".hs-level", "token")
    page.wait_for_selector(".hs-viewer[data-ready='1']")
    assert page.locator(".hs-text.hs-token .hs-unit").count() == len(data["docs"][0]["levels"]["token"]["labels"])
    assert not problems, problems
    page.close()


def test_the_viewer_layout_keeps_words_visible_and_labels_what_it_shows(browser, evil_explanation, tmp_path):
    """Arcs leave every word above it (none covers the word it links); each offset bin of the histogram is
    labelled; the grid sits right under the text, not below the head's panel; the token level says "token"."""
    evil_explanation.save(tmp_path / "out", figure=False)
    page, problems = open_page(browser, tmp_path / "out" / "explain.html")
    for word in ("2", "7"):
        page.locator(f".hs-unit[data-i='{word}']").click()
        page.mouse.move(5, 5)
        # [(bottom of the arc's geometry, top of its two words)], in the text's coordinates
        arcs = page.evaluate("""() => {
            const text = document.querySelector(".hs-text").getBoundingClientRect();
            const top = i => document.querySelector(`.hs-unit[data-i='${i}']`).getBoundingClientRect().top - text.top;
            return [...document.querySelectorAll("path.hs-link")].map(p => {
                const b = p.getBBox(), w = +p.getAttribute("stroke-width");
                return [b.y + b.height + w / 2, Math.min(top(p.dataset.from), top(p.dataset.to))];
            });
        }""")
        assert arcs and all(bottom <= top + 0.5 for bottom, top in arcs), arcs
    labels = evil_explanation.viewer_data()["docs"][0]["distance"]["labels"]
    assert page.locator(".hs-distance rect").count() == len(labels)
    assert page.locator(".hs-distance text.hs-bin").all_text_contents() == labels
    gap = page.evaluate("""() => document.querySelector(".hs-grid").getBoundingClientRect().top
                                 - document.querySelector(".hs-stage").getBoundingClientRect().bottom""")
    side = page.evaluate("() => document.querySelector('.hs-side').getBoundingClientRect().bottom")
    stage = page.evaluate("() => document.querySelector('.hs-stage').getBoundingClientRect().bottom")
    assert side > stage + 200 and gap < 120, (gap, side, stage)      # the panel is long; the grid does not wait
    assert page.locator(".hs-linklist:not(.hs-ranking) th").all_text_contents()[1] == "word"
    page.select_option(".hs-level", "token")
    page.wait_for_selector(".hs-viewer[data-ready='1']")
    page.locator(".hs-unit[data-i='1']").click()
    assert page.locator(".hs-linklist:not(.hs-ranking) th").all_text_contents()[1] == "token"
    assert page.locator(".hs-direction option").all_text_contents()[0] == "from and to the token"
    assert not problems, problems
    page.close()


def test_the_notebook_frame_is_as_tall_as_the_viewer(browser, evil_explanation, tmp_path):
    """Jupyter shows the viewer in a sandboxed frame: tall enough for the whole page (nothing cut, the grid of
    heads included), and not much taller."""
    (tmp_path / "notebook.html").write_text("<!doctype html><body style='margin:0'>" + evil_explanation._repr_html_()
                                            + "</body>", encoding="utf-8")
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto((tmp_path / "notebook.html").as_uri())
    frame = page.frames[1]
    frame.wait_for_selector(".hs-viewer[data-ready='1']", timeout=30_000)
    height = page.evaluate("() => document.querySelector('iframe').clientHeight")
    bottom = frame.evaluate("""() => Math.max(...[".hs-main", ".hs-grid", ".hs-side"].map(
        s => document.querySelector(s).getBoundingClientRect().bottom))""")
    assert bottom <= height <= bottom + 80, (bottom, height)
    page.close()


def test_a_long_document_opens_with_word_links_only(browser, tmp_path, sample, monkeypatch):
    import headscope.capture.links

    monkeypatch.setattr(headscope.capture.links, "TOKEN_LEVEL_MAX", 256)   # the token level stops above this many tokens
    model, tok = long_models()["llama"]
    loaded = load_model(model, tokenizer=tok, name="tiny-long-llama")
    words = [w for s in sample.sentences for w in s.words][:500]
    e = headscope.explain(words, word=450, model=loaded, attention_memory=0.05)
    assert set(e.links) == {"word"} and e.links["word"].index.shape[2] == 500
    e.save(tmp_path / "out", figure=False)
    page, problems = open_page(browser, tmp_path / "out" / "explain.html")
    assert page.locator(".hs-level").is_hidden()
    level = e.viewer_data()["docs"][0]["levels"]["word"]
    first = e.table.iloc[0]
    assert drawn(page) == expected_links(level, *e.shape, first["layer"], first["head"], 450)
    page.locator(".hs-unit[data-i='400']").click()
    page.mouse.move(5, 5)
    assert drawn(page) == expected_links(level, *e.shape, first["layer"], first["head"], 400)
    assert not problems, problems
    page.close()


def test_explain_file_writes_the_viewer(tiny_bert_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("\ufeffThe animal did not cross the street.\nIt was too tired.\n", encoding="utf-8")
    out = tmp_path / "out"
    res = runner.invoke(app, ["explain", "--file", str(doc), "--word", "It", "--model", str(tiny_bert_dir),
                              "--links", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "explain.html" in res.output
    page = (out / "explain.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="hs-viewer-data">(.*?)</script>', page, flags=re.S).group(1))
    assert data["docs"][0]["levels"]["word"]["labels"][:3] == ["The", "animal", "did"]
    assert data["docs"][0]["levels"]["word"]["k"] == 3


@pytest.mark.parametrize("args, message", [
    ([], "give the sentence as an argument or --file PATH"),
    (["A sentence.", "--file", "x.txt"], "give the sentence as an argument or --file PATH"),
    (["--file", "missing.txt"], "missing.txt: file not found"),
    (["--file", "bad.txt"], "bad.txt:2: not valid UTF-8"),
    (["--file", "empty.txt"], "empty.txt:1: file is empty"),
    (["A sentence.", "--links", "0"], "Invalid value for '--links'"),
])
def test_explain_file_refuses_bad_input_in_one_line(tiny_bert_dir, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.txt").write_bytes(b"fine\nnot \xff utf-8\n")
    (tmp_path / "empty.txt").write_bytes(b"  \n")
    res = runner.invoke(app, ["explain", *args, "--model", str(tiny_bert_dir)])
    assert res.exit_code == 2
    assert message in res.output


def test_the_distance_profile_is_the_mass_at_each_offset(tiny_loaded):
    sent = Sentence(words=tuple((SENTENCE + " and so it slept all day long .").split()))
    (item,) = read_links(tiny_loaded, [sent], attention_memory=0.002)
    maps, word_ids = full_attentions(tiny_loaded.model, tiny_loaded.tokenizer, sent)
    edges = item["distance"]["edges"]
    assert edges[:4] == [0, 1, 2, 4] and edges[-1] >= len(word_ids)
    assert item["distance"]["absolute"] is (not tiny_loaded.info.is_decoder)
    units = [i for i, w in enumerate(word_ids) if w is not None]
    for layer, att in enumerate(maps):
        ref = np.zeros((att.shape[0], len(edges) - 1))
        for i in units:
            for j, w in enumerate(word_ids):
                if w is None:
                    continue
                d = abs(i - j)
                ref[:, max(b for b in range(len(edges) - 1) if edges[b] <= d)] += att[:, i, j]
        np.testing.assert_allclose(item["distance"]["mass"][layer], ref / len(units), atol=1e-6)
