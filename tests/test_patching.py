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


def reference(loaded, name, batch, layer, head, direction):
    """LD per pair with head ``layer.head`` patched by hooks on eager attention, and the attribution of every head
    (the gradient at the projection's input in the run, times the other run's input less its own)."""
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
        x[..., head * width:(head + 1) * width] = kept[layer][..., head * width:(head + 1) * width]
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
                               [..., h * width:(h + 1) * width].sum((1, 2)).numpy()
                               for h in range(info.num_heads)], 1) for i in range(len(mods))], 1)
    return patched, attr


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
