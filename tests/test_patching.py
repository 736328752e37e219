"""Activation patching (interventions.patching) against hand references that never enter headscope's attention
function: eager attention with a hook that swaps one head's slice of the output projection's input between the
clean and the corrupt run (tiny BERT with its MLM head, GPT-2, Llama with GQA), and the gradient at that input
times the slices' difference for attribution; the effects as ratios of means; and bad pairs in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from headscope.datasets.contrast import induction_pairs, load_contrast, parse_contrast
from headscope.errors import DataError, HeadscopeError
from headscope.interventions.patching import Recorder, encode_pairs, logit_difference, patch
from headscope.models.loading import load_model
from headscope.types import ContrastPair, ContrastSet

from conftest import invoke, tiny_bert, tiny_gpt2, tiny_llama

# the output projection of each layer, whose input holds every head's output side by side
PROJECTIONS = {"bert": "attention.output.dense", "gpt2": "attn.c_proj", "llama": "self_attn.o_proj"}


def build(name):
    model, tok = {"bert": lambda: tiny_bert(mlm=True), "gpt2": tiny_gpt2, "llama": tiny_llama}[name]()
    return load_model(model, tokenizer=tok, name=f"tiny-{name}")


def pairs_for(loaded, n=6):
    """Induction pairs; for a masked LM the answer's place holds the mask token."""
    made = induction_pairs(loaded.tokenizer, count=n, length=5, seed=3)
    if loaded.info.is_decoder:
        return made
    mask = loaded.tokenizer.mask_token
    return ContrastSet("masked", tuple(ContrastPair(p.pair_id, p.clean + " " + mask, p.corrupt + " " + mask,
                                                    p.answer, p.foil, p.source) for p in made.pairs))


def projections(model, name):
    return [m for n, m in model.named_modules() if n.endswith(PROJECTIONS[name])]


def reference(loaded, name, batch, layer, head, direction, position=None, per_position=False):
    """LD per pair with head ``layer.head`` patched by hooks on eager attention (at every position, or at
    ``position`` only), and the attribution of every head (the gradient at the projection's input in the run,
    times the other run's input less its own; ``[pairs, layer, head]``, or with ``per_position``
    ``[pairs, layer, head, position]``)."""
    model, info = loaded.model, loaded.info
    model.set_attn_implementation("eager")
    run, other = (batch.clean, batch.corrupt) if direction == "noising" else (batch.corrupt, batch.clean)
    mods = projections(model, name)
    kept, handles = {}, []

    def keep(i):
        def hook(mod, args):
            kept[i] = args[0].detach().clone()
        return hook

    for i, m in enumerate(mods):
        handles.append(m.register_forward_pre_hook(keep(i)))
    with torch.no_grad():
        model(input_ids=other, attention_mask=batch.mask)
    for h in handles:
        h.remove()
    width = kept[0].shape[-1] // info.num_heads

    def swap(mod, args):
        x = args[0].clone()
        at = slice(None) if position is None else slice(position, position + 1)
        for h in ([head] if isinstance(head, int) else head):     # one head, or several patched together
            x[:, at, h * width:(h + 1) * width] = kept[layer][:, at, h * width:(h + 1) * width]
        return (x,) + args[1:]

    handle = mods[layer].register_forward_pre_hook(swap)
    with torch.no_grad():
        logits = model(input_ids=run, attention_mask=batch.mask).logits
    handle.remove()
    rows = torch.arange(len(run))
    at = logits[rows, batch.position]
    patched = (at[rows, batch.answer] - at[rows, batch.foil]).numpy()
    # attribution: the gradient at every projection's input in the run
    inputs, handles = {}, []

    def grab(i):
        def hook(mod, args):          # a zero added there: its gradient is the input's, every path kept
            z = torch.zeros_like(args[0], requires_grad=True)
            inputs[i] = (args[0].detach(), z)
            return (args[0] + z,) + args[1:]
        return hook

    for i, m in enumerate(mods):
        handles.append(m.register_forward_pre_hook(grab(i)))
    logits = model(input_ids=run, attention_mask=batch.mask).logits
    for h in handles:
        h.remove()
    at = logits[rows, batch.position]
    (at[rows, batch.answer] - at[rows, batch.foil]).sum().backward()
    real = batch.mask[:, :, None].float()
    attr = np.stack([np.stack([((inputs[i][1].grad * (kept[i] - inputs[i][0])) * real)
                               [..., h * width:(h + 1) * width].sum(2).numpy()
                               for h in range(info.num_heads)], 1) for i in range(len(mods))], 1)
    return patched, (attr if per_position else attr.sum(-1))


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_exact_and_attribution_patching_equal_hand_references(name):
    loaded = build(name)
    pairs = pairs_for(loaded)
    result = patch(loaded, pairs, bootstrap=0)
    (batch,) = encode_pairs(loaded, pairs, 16)
    L, H = loaded.info.num_layers, loaded.info.num_heads
    ld = {k: logit_difference(loaded, batch, getattr(batch, k), Recorder()).numpy() for k in ("clean", "corrupt")}
    diff = ld["clean"].mean() - ld["corrupt"].mean()
    assert abs(diff) > 1e-3
    for direction in ("noising", "denoising"):
        exact = result.effects("exact", direction)
        attribution = result.effects("attribution", direction)
        for layer in range(L):
            for head in range(H):
                patched, attr = reference(loaded, name, batch, layer, head, direction)
                want = ((ld["clean"].mean() - patched.mean()) if direction == "noising"
                        else (patched.mean() - ld["corrupt"].mean())) / diff
                assert exact[layer, head] == pytest.approx(want, abs=1e-5), (direction, layer, head)
                start = ld["clean"] if direction == "noising" else ld["corrupt"]
                guess = start + attr[:, layer, head]
                want = ((ld["clean"].mean() - guess.mean()) if direction == "noising"
                        else (guess.mean() - ld["corrupt"].mean())) / diff
                assert attribution[layer, head] == pytest.approx(want, abs=1e-5), (direction, layer, head)
    t = result.table
    assert set(t["method"]) == {"exact", "attribution"} and set(t["direction"]) == {"noising", "denoising"}
    assert len(t) == 2 * 2 * L * H
    kv = t.dropna(subset=["layer"])
    assert (kv["kv_head"] == kv["head"] // (H // loaded.info.num_kv_heads)).all()


def test_kv_groups_patch_the_query_heads_of_one_key_and_value_head_together():
    """Under GQA (tiny Llama: 4 query heads, 2 KV heads) ``kv=True`` patches each KV group's query heads
    together: the hand reference swaps both heads' slices; attribution is the sum of the heads' own."""
    loaded = build("llama")
    info = loaded.info
    per = info.num_heads // info.num_kv_heads
    assert per == 2
    pairs = pairs_for(loaded)
    result = patch(loaded, pairs, bootstrap=0, kv=True, directions="noising")
    (batch,) = encode_pairs(loaded, pairs, 16)
    ld = {k: logit_difference(loaded, batch, getattr(batch, k), Recorder()).numpy() for k in ("clean", "corrupt")}
    diff = ld["clean"].mean() - ld["corrupt"].mean()
    exact, attribution = result.effects("exact"), result.effects("attribution")
    assert exact.shape == (info.num_layers, info.num_kv_heads)
    for layer in range(info.num_layers):
        for k in range(info.num_kv_heads):
            heads = list(range(k * per, (k + 1) * per))
            patched, attr = reference(loaded, "llama", batch, layer, heads, "noising")
            assert exact[layer, k] == pytest.approx((ld["clean"].mean() - patched.mean()) / diff, abs=1e-5)
            guess = ld["clean"] + attr[:, layer, heads].sum(1)
            assert attribution[layer, k] == pytest.approx((ld["clean"].mean() - guess.mean()) / diff, abs=1e-5)
    t = result.table
    assert len(t) == 2 * info.num_layers * info.num_kv_heads and t["head"].isna().all()
    assert set(t["heads"]) == {f"L{la}.KV{k}" for la in range(info.num_layers) for k in range(info.num_kv_heads)}


def test_a_group_patched_together_and_intervals():
    loaded = build("llama")
    pairs = pairs_for(loaded, 10)
    result = patch(loaded, pairs, groups=["L0.H0,L1.H2"], methods="exact", directions="noising", bootstrap=200)
    t = result.table
    group = t[t["heads"] == "L0.H0,L1.H2"].iloc[0]
    assert pd_isna(group["layer"]) and group["n"] == 10
    singles = t[t["layer"].notna()]
    assert ((singles["ci_low"] <= singles["effect"] + 1e-9) & (singles["effect"] <= singles["ci_high"] + 1e-9)).all()
    assert group["ci_low"] < group["ci_high"]


def pd_isna(x):
    import pandas as pd

    return pd.isna(x)


def test_the_command_writes_the_folder(tmp_path, tiny_llama_dir):
    _written_folder(tmp_path, tiny_llama_dir)


def _written_folder(tmp_path, tiny_llama_dir):
    """`headscope patch` on a pairs file of tiny Llama with a group: the folder checked, and its table."""
    f = tmp_path / "pairs.jsonl"
    loaded = build("llama")
    rows = [{"clean": p.clean, "corrupt": p.corrupt, "answer": p.answer, "foil": p.foil}
            for p in pairs_for(loaded).pairs]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    r = invoke("patch", "--model", str(tiny_llama_dir), "--pairs", str(f), "--bootstrap", "50",
               "--heads", "L0.H1,L1.H1", "--out", str(out))
    assert r.exit_code == 0, r.output
    import pandas as pd

    table = pd.read_csv(out / "patching.csv")
    assert list(table.columns) == ["model", "dataset", "heads", "layer", "head", "kv_head", "method", "direction",
                                   "effect", "ci_low", "ci_high", "n"]
    assert (out / "patching_exact_noising.png").is_file() and (out / "patching_attribution_denoising.png").is_file()
    report = (out / "report.md").read_text()
    assert "Groups patched together" in report and "L0.H1,L1.H1" in report and "Spearman" in report
    meta = json.loads((out / "run.json").read_text())
    assert meta["pairs"] == len(rows) and meta["agreement"]["noising"]["top5_in_top10"] >= 0
    return out, table


def test_the_html_report_shows_the_tables_and_heatmaps_in_chromium(tmp_path, tiny_llama_dir, browser):
    """report.html: its first table's first row is patching.csv's largest exact noising effect, every heatmap
    loads, and the page breaks no CSP rule."""
    out, table = _written_folder(tmp_path, tiny_llama_dir)
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.goto((out / "report.html").as_uri())
    exact = table[(table["method"] == "exact") & (table["direction"] == "noising")]
    best = exact.loc[exact["effect"].abs().idxmax()]
    first = page.locator("table").nth(0).locator("tr").nth(1).locator("td").all_inner_texts()
    assert first[:2] == [best["heads"], f"{best['effect']:+.3f}"]
    images = page.locator("img")
    assert images.count() == 4
    assert all(w > 0 for w in images.evaluate_all("els => els.map(e => e.naturalWidth)"))
    assert "Groups patched together" in page.content()
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("line, message", [
    ('{"clean": "a b", "corrupt": "a c", "answer": " d"}', "missing key(s) foil"),
    ('{"clean": "a b", "corrupt": "a b", "answer": " d", "foil": " e"}', "the same text"),
    ('{"clean": "a b", "corrupt": "a c", "answer": " d", "foil": " d"}', "the same token"),
    ('{"clean": "", "corrupt": "a c", "answer": " d", "foil": " e"}', "'clean' must be non-empty"),
    ('["clean"]', "expected a JSON object"),
    ('{"clean": "a b", ', "not valid JSON"),
])
def test_malformed_pairs_fail_in_one_line(line, message):
    with pytest.raises(DataError, match=re.escape(message)) as err:
        parse_contrast((json.dumps({"clean": "x y", "corrupt": "x z", "answer": " a", "foil": " b"}) + "\n" + line
                        + "\n").encode(), "p.jsonl")
    assert str(err.value).startswith("p.jsonl:2") and "\n" not in str(err.value)


def test_pairs_of_different_lengths_or_long_answers_name_the_pair(tmp_path):
    loaded = build("gpt2")
    words = [p for p in induction_pairs(loaded.tokenizer, count=1, length=4).pairs][0].clean.split()
    lines = [{"clean": " ".join(words), "corrupt": " ".join(words[:-1]), "answer": " " + words[0],
              "foil": " " + words[1]}]
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl:1 \(1\): clean has \d+ tokens and corrupt \d+ \(\+\d+\)"):
        encode_pairs(loaded, load_contrast(f), 4)
    lines[0]["corrupt"] = " ".join(words[:-1] + [words[0]])
    lines[0]["answer"] = " " + words[0] + words[1] + words[2] + "zzq"
    f.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl:1: answer .* is \d+ tokens"):
        encode_pairs(loaded, load_contrast(f), 4)


def test_no_difference_and_no_lm_head_are_refused():
    loaded = build("gpt2")
    p = induction_pairs(loaded.tokenizer, count=2, length=4).pairs[0]
    with pytest.raises(HeadscopeError, match="same mean logit difference"):
        patch(loaded, ContrastSet("same", (ContrastPair("0", p.clean, p.clean, p.answer, p.foil),)), bootstrap=0)
    model, tok = tiny_bert()
    with pytest.raises(HeadscopeError, match="no language-model head"):
        patch(load_model(model, tokenizer=tok, name="tiny-bert-body"), "ioi")


def test_bundled_sets_load():
    assert len(load_contrast("ioi")) == 40 and len(load_contrast("coref")) == 8
    with pytest.raises(HeadscopeError, match="no contrast set 'nope'"):
        load_contrast("nope")


def test_a_bad_pairs_file_fails_before_the_model_loads(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"clean": "a", "corrupt": "b", "answer": " x"}\n')
    r = invoke("patch", "--model", "no-such-model-anywhere", "--pairs", str(f), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and "bad.jsonl:1: missing key(s) foil" in r.output
    assert not (tmp_path / "out").exists()


def test_a_run_sets_each_roles_patching_effect_beside_it_and_names_heads_without_one(tmp_path):
    """``add_patching``: roles.csv gets each head's exact noising effect (the patching table's own row), and the
    report's patching section lists the heads that move the answer by |effect| with their roles, those with no
    role, and the role assignments whose head moves nothing, as worked out here from the two tables."""
    import pandas as pd

    import headscope
    from headscope.analysis.roles import PATCH_MIN
    from headscope.reports.writer import write_report

    loaded = build("llama")
    result = headscope.analyze(loaded, None, tasks="positional", max_sentences=12, bootstrap=50, n_examples=0)
    patched = patch(loaded, pairs_for(loaded, 8), directions="noising", bootstrap=200)
    result.add_patching(patched)
    roles = result.roles
    t = patched.table
    exact = t[(t["method"] == "exact") & t["head"].notna()].set_index(["layer", "head"])
    assert len(roles) and roles["patching_effect"].notna().all()
    for _, r in roles.iterrows():
        row = exact.loc[(r["layer"], r["head"])]
        assert r["patching_effect"] == row["effect"] and r["patching_method"] == "exact"
        counts = abs(row["effect"]) >= PATCH_MIN and (row["ci_low"] > 0 or row["ci_high"] < 0)
        assert bool(r["patching_causal"]) == counts
    named = roles[roles["role"] != "none"]
    with_role = set(zip(named["layer"], named["head"]))
    moving = [(la, h) for (la, h), row in exact.iterrows()
              if abs(row["effect"]) >= PATCH_MIN and (row["ci_low"] > 0 or row["ci_high"] < 0)]
    out = write_report(result, tmp_path / "run", figures=False)
    assert "patching_effect" in pd.read_csv(out / "roles.csv") and (out / "patching.csv").is_file()
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    from headscope.reports.content import build_content

    got = build_content(result, roles)["patching"]
    assert [r["head"] for r in got["without_role"]] == [
        f"L{la}.H{h}" for la, h in sorted(moving, key=lambda k: -abs(exact.loc[k, "effect"])) if (la, h) not in with_role]
    idle = named[~named["patching_causal"].astype(bool)]
    assert got["roles_without_effect"] == len(idle) and got["roles"] == len(named)
    top = exact["effect"].abs().sort_values(ascending=False, kind="stable")
    assert got["top"][0]["head"] == f"L{top.index[0][0]}.H{top.index[0][1]}"
    md = (out / "report.md").read_text()
    assert "## Causal evidence from patching" in md and md.index("Causal evidence from patching") < md.index("## Roles")
    assert "Causal evidence from patching" in (out / "report.html").read_text()
    assert report is None or "patching" in report
    with pytest.raises(HeadscopeError, match="single-head"):
        result.add_patching(patch(loaded, pairs_for(loaded, 4), kv=True, methods="attribution", bootstrap=0))


def test_cli_run_patch_joins_the_evidence_and_refuses_a_bad_pairs_file_first(tiny_llama_dir, tiny_bert_dir, tmp_path):
    from test_run_safety import one_line_error

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clean": "a b", "corrupt": "a c", "answer": " x"}\n')
    one_line_error(invoke("run", "--model", tiny_llama_dir, "--patch", bad, "--out", tmp_path / "x"), "--patch",
                   "bad.jsonl:1")
    assert not (tmp_path / "x").exists()
    done = invoke("run", "--model", tiny_llama_dir, "--tasks", "positional", "--max-sentences", 12, "--no-figures",
                  "--bootstrap", 50, "--patch", "induction", "--out", tmp_path / "run")
    assert done.exit_code == 0, done.output
    assert "patching_effect" in (tmp_path / "run" / "roles.csv").read_text().splitlines()[0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["patching"]["dataset"] == "induction" and "patching.csv" in run["files"]
    # a model with no language-model head: the analysis is written, the patching's failure said in one line
    done = invoke("run", "--model", tiny_bert_dir, "--tasks", "positional", "--max-sentences", 8, "--no-figures",
                  "--bootstrap", 0, "--patch", "induction", "--out", tmp_path / "enc")
    assert done.exit_code != 0 and "--patch:" in done.output and "language-model head" in done.output
    assert (tmp_path / "enc" / "roles.csv").is_file()
    assert "Patching was not done" in (tmp_path / "enc" / "report.md").read_text()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_position_resolved_patching_equals_hooks_that_swap_one_position(name):
    """``positions=True``: the chosen heads (the largest exact effects) patched at one position at a time equal
    the hand reference that swaps that head's slice at that position only; their attribution per position is
    the gradient times the change there, and sums over positions to the head's attribution."""
    loaded = build(name)
    pairs = pairs_for(loaded, 5)
    result = patch(loaded, pairs, bootstrap=0, positions=True, position_heads=2)
    (batch,) = encode_pairs(loaded, pairs, 16)
    t, pos = result.table, result.positions
    exact = t[(t["method"] == "exact") & (t["direction"] == "noising")]
    top = exact.reindex(exact["effect"].abs().sort_values(ascending=False, kind="stable").index).head(2)
    assert set(pos["heads"]) == set(top["heads"]) == set(result.meta["position_heads"])
    ld = {k: logit_difference(loaded, batch, getattr(batch, k), Recorder()).numpy() for k in ("clean", "corrupt")}
    diff = ld["clean"].mean() - ld["corrupt"].mean()
    width = batch.clean.shape[1]
    assert len(pos) == 2 * 2 * 2 * len(pairs.pairs) * width      # heads x methods x directions x pairs x tokens
    for r in top.itertuples():
        layer, head = int(r.layer), int(r.head)
        for direction in ("noising", "denoising"):
            rows = pos[(pos["heads"] == r.heads) & (pos["direction"] == direction)]
            _, attr = reference(loaded, name, batch, layer, head, direction, per_position=True)
            sign = -1 if direction == "noising" else 1
            start = ld["clean"] if direction == "noising" else ld["corrupt"]
            for p in range(width):
                patched, _ = reference(loaded, name, batch, layer, head, direction, position=p)
                got = rows[(rows["position"] == p) & (rows["method"] == "exact")].sort_values("pair")
                want = sign * (patched - start) / diff
                order = np.argsort([x.pair_id for x in pairs.pairs])
                assert np.allclose(got["effect"].to_numpy(), want[order], atol=1e-5), (r.heads, direction, p)
                got = rows[(rows["position"] == p) & (rows["method"] == "attribution")].sort_values("pair")
                assert np.allclose(got["effect"].to_numpy(), sign * attr[order, layer, head, p] / diff, atol=1e-5)
            # attribution per position adds up to the head's attribution
            per_pair = rows[rows["method"] == "attribution"].groupby("pair")["effect"].sum().mean()
            whole = t[(t["heads"] == r.heads) & (t["method"] == "attribution") & (t["direction"] == direction)]
            assert per_pair == pytest.approx(float(whole["effect"].iloc[0]), abs=1e-5)
    first = pos[(pos["pair"] == pairs.pairs[0].pair_id) & (pos["heads"] == top["heads"].iloc[0])
                & (pos["method"] == "exact") & (pos["direction"] == "noising")].sort_values("position")
    assert first["token"].tolist() == [loaded.tokenizer.decode([x]) for x in batch.clean[0].tolist()]


def test_positions_page_colours_the_tokens_by_a_heads_effect(tmp_path, browser):
    """positions.html in Chromium: the first head's first pair, its tokens in order, and the strongest position
    listed first as patching_positions.csv has it; another pair is drawn when picked; no CSP or script error."""
    import pandas as pd


    loaded = build("gpt2")
    result = patch(loaded, pairs_for(loaded, 4), bootstrap=0, positions=True, position_heads=1,
                   directions="noising")
    out = result.save(tmp_path / "p")
    table = pd.read_csv(out / "patching_positions.csv", keep_default_na=False)
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto((out / "positions.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    head = page.locator("#hs-head").input_value()
    method = page.locator("#hs-method").input_value()
    assert page.locator("#hs-pair").input_value() == "mean"           # induction pairs share one length
    page.locator("#hs-pair").select_option(index=2)
    pair = page.locator("#hs-pair").input_value()
    rows = table[(table["heads"] == head) & (table["method"] == method) & (table["pair"].astype(str) == pair)]
    tokens = page.locator("#hs-tokens .tok")
    assert tokens.count() == len(rows)
    assert [float(x) for x in tokens.evaluate_all("els => els.map(e => e.dataset.effect)")] == pytest.approx(
        rows.sort_values("position")["effect"].tolist(), abs=1e-9)
    best = rows.loc[rows["effect"].abs().idxmax()]
    assert page.locator("#hs-best tr").nth(0).locator("td").all_inner_texts()[0] == str(best["position"])
    assert page.locator("#hs-tokens .tok.answer").count() == 1
    assert not problems, problems
    page.close()
