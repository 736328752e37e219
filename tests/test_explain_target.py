"""``explain --target``: every head ranked by its attention from the word to the target, and by what it writes
from there (value-weighted attention), against hand computations on eager attention; the viewer opens on the
best head."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import invoke, open_page, tiny_bert, tiny_llama  # noqa: E402
from reference import word_attention  # noqa: E402
from reference_norm import norm_maps  # noqa: E402

import headscope  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402

TEXT = "The animal didn't cross the street because it was too tired ."


def _by_hand(loaded, words, word, target):
    """[layer, head] word-level weight and norm share from ``word`` to ``target``: eager attention and hooked
    values (tests/reference_norm.py), rows of the norm view normalised, pooled as every scorer pools."""
    import torch

    from headscope.capture.alignment import encode_sentences
    from headscope.types import Sentence

    (enc,) = encode_sentences(loaded.tokenizer, [Sentence(words=tuple(words))])
    ids = torch.tensor([enc.input_ids])
    weights, norms = norm_maps(loaded.model, ids, torch.ones_like(ids))
    word_ids = [w if w >= 0 else None for w in enc.word_ids]
    out = {}
    for name, maps in (("weight", weights), ("norm", norms)):
        grid = np.zeros((len(maps), maps[0].shape[1]))
        for layer, m in enumerate(maps):
            for head in range(m.shape[1]):
                rows = m[0, head] / m[0, head].sum(-1, keepdims=True)
                grid[layer, head] = word_attention(rows, word_ids)[word, target]
        out[name] = grid
    return out


@pytest.mark.parametrize("build", [tiny_bert, tiny_llama], ids=["bert", "llama"])
def test_heads_are_ranked_by_the_link_to_the_target_as_computed_by_hand(build):
    model, tok = build()
    loaded = headscope.load_model(model, tokenizer=tok)
    words = TEXT.split()
    e = headscope.explain(words, "it", model=loaded, target="animal")
    hand = _by_hand(loaded, words, words.index("it"), words.index("animal"))
    table = e.table
    assert list(table["link_weight"]) == sorted(table["link_weight"], reverse=True)
    best = table.iloc[0]
    assert best["link_weight"] == pytest.approx(hand["weight"].max(), abs=1e-5)
    assert (best["layer"], best["head"]) == np.unravel_index(hand["weight"].argmax(), hand["weight"].shape)
    for r in table.itertuples():
        assert r.link_weight == pytest.approx(hand["weight"][r.layer, r.head], abs=1e-5)
        assert r.link_norm == pytest.approx(hand["norm"][r.layer, r.head], abs=1e-5)
    relative = (table["link_weight"] - table["link_norm"]).abs() / table["link_weight"].clip(lower=1e-12)
    assert relative.max() > 0.05                                              # the norm is its own number
    assert e.viewer_data()["initial"] == {"level": "word", "layer": int(best["layer"]), "head": int(best["head"]),
                                          "word": words.index("it")}


def test_several_targets_rank_by_the_contrast(tiny_bert_loaded):
    words = TEXT.split()
    e = headscope.explain(words, "it", model=tiny_bert_loaded, target="animal,street")
    t = e.table
    att = e.attention
    animal, street = words.index("animal"), words.index("street")
    want = att[t["layer"], t["head"], animal] - att[t["layer"], t["head"], street]
    assert np.allclose(t["link_contrast"], want, atol=1e-6)
    assert list(t["link_contrast"]) == sorted(t["link_contrast"], reverse=True)
    assert set(t["link_others"]) == {"street"}
    assert "less their largest attention to street" in e.markdown()


@pytest.mark.parametrize("target, message", [
    ("it", "target 'it' is the explained word itself"),
    ("zebra", "word 'zebra' is not in the sentence"),
    (",", "no target given"),
])
def test_a_bad_target_is_refused_in_one_line(tiny_bert_loaded, target, message):
    with pytest.raises(HeadscopeError, match=message):
        headscope.explain(TEXT.split(), "it", model=tiny_bert_loaded, target=target)


def test_a_decoder_cannot_link_to_a_later_word():
    model, tok = tiny_llama()
    loaded = headscope.load_model(model, tokenizer=tok)
    with pytest.raises(HeadscopeError, match="'tired' comes after 'it'"):
        headscope.explain(TEXT.split(), "it", model=loaded, target="tired")


def test_the_command_prints_the_ranking_and_the_viewer_opens_on_the_best_head(tiny_bert_dir, tmp_path, browser):
    out = tmp_path / "why"
    r = invoke("explain", TEXT, "--word", "it", "--target", "animal", "--model", tiny_bert_dir, "--out", out)
    assert r.exit_code == 0, r.output
    import pandas as pd

    table = pd.read_csv(out / "explain.csv")
    best = table.iloc[0]
    lines = r.stdout.splitlines()
    assert lines[0].endswith("heads ranked by attention from 'it' to 'animal'")
    assert lines[2].split()[:2] == [f"L{best['layer']}.H{best['head']}", f"{best['link_weight']:.3f}"]
    page, problems = open_page(browser, out / "explain.html")
    viewer = page.locator(".hs-viewer")
    assert (int(viewer.get_attribute("data-layer")), int(viewer.get_attribute("data-head"))) == (
        best["layer"], best["head"])
    assert viewer.get_attribute("data-selected") == str(best["word_index"])        # the explained word
    # the side panel ranks the heads by the link, with what each writes from the target (the norm view)
    ranking = page.locator(".hs-ranking tr[data-head]")
    assert ranking.count() == min(8, len(table))
    cells = ranking.nth(0).locator("td").all_inner_texts()
    assert cells == [f"L{best['layer']}.H{best['head']}", f"{best['link_weight']:.3f}", f"{best['link_norm']:.3f}"]
    assert page.locator(".hs-ranking th").all_inner_texts() == ["head", "weight", "norm"]
    assert "hs-current" in (ranking.nth(0).get_attribute("class") or "")
    second = table.iloc[1]
    ranking.nth(1).click()                                                           # a row opens its head
    assert (int(viewer.get_attribute("data-layer")), int(viewer.get_attribute("data-head"))) == (
        second["layer"], second["head"])
    assert "hs-current" in (page.locator(".hs-ranking tr[data-head]").nth(1).get_attribute("class") or "")
    assert not problems, problems
    page.close()


def test_a_target_may_be_an_index(tiny_bert_loaded):
    words = TEXT.split()
    by_index = headscope.explain(words, "it", model=tiny_bert_loaded, target=words.index("animal"))
    by_word = headscope.explain(words, "it", model=tiny_bert_loaded, target="animal")
    assert by_index.table["link_weight"].tolist() == by_word.table["link_weight"].tolist()
