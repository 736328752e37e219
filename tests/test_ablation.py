"""Head ablation: each method against a hand-written reference on tiny BERT, GPT-2 and Llama (GQA), the table
ablate() writes, its errors, and (with smollm2) the induction heads' causal effect."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_bert, tiny_gpt2, tiny_llama
from headscope.interventions.ablate import ablate
from headscope.interventions.edits import HeadEdit
from headscope.interventions.groups import parse_heads
from headscope.interventions.measures import edited_forward
from headscope.interventions.methods import Method
from headscope.errors import HeadscopeError
from headscope.models.loading import load_model

LAYER, HEAD = 1, 2


def _out_proj(name, model):
    """The module that takes the heads' concatenated outputs (its input slice h*d:(h+1)*d is head h)."""
    if name == "bert":
        return model.encoder.layer[LAYER].attention.output.dense
    if name == "gpt2":
        return model.transformer.h[LAYER].attn.c_proj
    return model.model.layers[LAYER].self_attn.o_proj


BUILDERS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama}


def _batch(loaded):
    enc = loaded.tokenizer(["the cat sat on the mat today", "a dog ran"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    return {"input_ids": ids, "attention_mask": mask}


def _plain_forward(loaded, batch):
    """The model as users run it (no headscope session), final hidden states."""
    with torch.no_grad():
        out = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True)
    return out.hidden_states[-1]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def arch(request):
    model, tok = BUILDERS[request.param]()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return request.param, load_model(model, tokenizer=tok, name=f"tiny-{request.param}")


def _with_slice(loaded, name, batch, replace):
    """Hidden states with head HEAD's slice of the output projection's input replaced by ``replace(slice)``."""
    d = loaded.model.config.hidden_size // loaded.info.num_heads
    proj = _out_proj(name, loaded.model)

    def hook(module, args):
        x = args[0].clone()
        x[..., HEAD * d:(HEAD + 1) * d] = replace(x[..., HEAD * d:(HEAD + 1) * d])
        return (x,)

    handle = proj.register_forward_pre_hook(hook)
    try:
        return _plain_forward(loaded, batch)
    finally:
        handle.remove()


def test_zero_ablation_equals_zeroing_the_heads_slice_of_the_output_projection(arch):
    name, loaded = arch
    batch = _batch(loaded)
    ours = edited_forward(loaded, batch, HeadEdit({LAYER: [HEAD]}, Method("zero"))).hidden
    ref = _with_slice(loaded, name, batch, torch.zeros_like)
    plain = _plain_forward(loaded, batch)
    real = batch["attention_mask"].bool()
    assert (ours[real] - plain[real]).abs().max() > 1e-3           # the ablation changes something
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)


def test_mean_ablation_equals_the_heads_mean_slice_over_real_tokens(arch):
    name, loaded = arch
    batch = _batch(loaded)
    d = loaded.model.config.hidden_size // loaded.info.num_heads
    real = batch["attention_mask"].bool()
    seen = {}

    def record(module, args):
        seen["x"] = args[0][..., HEAD * d:(HEAD + 1) * d].detach().clone()

    handle = _out_proj(name, loaded.model).register_forward_pre_hook(record)
    _plain_forward(loaded, batch)
    handle.remove()
    mean = seen["x"][real].mean(0)                                   # by hand: over the real tokens only
    ref = _with_slice(loaded, name, batch, lambda x: mean.expand_as(x))
    result = ablate(loaded, heads=[f"L{LAYER}.H{HEAD}"], method="mean", measures=["hidden"], random_draws=1,
                    bootstrap=50)
    assert result.table["effect"].iloc[0] > 0
    from headscope.interventions.edits import MeanRecorder

    recorder = MeanRecorder(loaded.info.num_layers, loaded.info.num_heads)
    edited_forward(loaded, batch, recorder, real=real)
    means = recorder.means()
    torch.testing.assert_close(means[LAYER, HEAD], mean, atol=1e-5, rtol=1e-5)
    ours = edited_forward(loaded, batch, HeadEdit({LAYER: [HEAD]}, Method("mean"), means)).hidden
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)


def _reference_head(q, k, v, mask_row_ok, method, window):
    """Slow reference for one head: q [T, d], k and v [S, d]; mask_row_ok(i, j) says whether row i may see key j."""
    T, S = q.shape[0], k.shape[0]
    out = torch.zeros(T, v.shape[1], dtype=torch.float64)
    for i in range(T):
        keys = [j for j in range(S) if mask_row_ok(i, j)]
        if method == "sink":
            out[i] = v[0]
            continue
        if method == "window":
            keys = [j for j in keys if j == 0 or abs(i - j) < window]
        if not keys:
            continue
        if method == "uniform":
            out[i] = sum(v[j].double() for j in keys) / len(keys)
            continue
        scores = [float(q[i].double() @ k[j].double()) / math.sqrt(q.shape[1]) for j in keys]
        top = max(scores)
        w = [math.exp(s - top) for s in scores]
        out[i] = sum(wj / sum(w) * v[j].double() for wj, j in zip(w, keys))
    return out


@pytest.mark.parametrize("method", ["uniform", "sink", "window:2"])
def test_uniform_sink_and_window_equal_a_row_by_row_reference(arch, method):
    """The head's new output is checked against a loop over rows and keys that reads the layer's query, key and
    value as the attention function received them (GQA: the head's key/value group)."""
    from headscope.capture.attention import Session, session

    name, loaded = arch
    batch = _batch(loaded)
    parsed = Method.parse(method)
    captured = {}

    def keep(layer, out, inputs):
        if layer == LAYER:
            captured["inputs"], captured["before"] = inputs, out.clone()
            captured["after"] = HeadEdit({LAYER: [HEAD]}, parsed)(layer, out, inputs)
            return captured["after"]
        return out

    state = Session(modules=list(loaded.attention_modules), edit=keep)
    with torch.no_grad(), session(state):
        loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    inputs = captured["inputs"]
    n_rep = inputs.query.shape[1] // inputs.key.shape[1]
    g = HEAD // n_rep
    lengths = batch["attention_mask"].sum(1).tolist()
    for b, n in enumerate(lengths):
        def ok(i, j, n=n):
            return j < n and (j <= i or not loaded.info.is_decoder)
        ref = _reference_head(inputs.query[b, HEAD, :n], inputs.key[b, g], inputs.value[b, g], ok, parsed.name,
                              parsed.param)
        torch.testing.assert_close(captured["after"][b, :n, HEAD].double(), ref, atol=1e-5, rtol=1e-5)
        others = [h for h in range(inputs.query.shape[1]) if h != HEAD]
        assert torch.equal(captured["after"][b, :, others], captured["before"][b, :, others])


def test_the_table_has_one_row_per_head_and_its_interval_holds_the_estimate():
    model, tok = tiny_gpt2()
    loaded = load_model(model, tokenizer=tok, name="tiny-gpt2")
    result = ablate(loaded, heads="each", method="zero", max_sentences=12, random_draws=3, bootstrap=100)
    t = result.table
    assert list(t.columns) == ["model", "dataset", "heads", "method", "measure", "base", "ablated", "effect",
                               "ci_low", "ci_high", "random_median", "ratio_to_random", "n", "no_effect"]
    assert list(t["no_effect"]) == [(lo <= 0 <= hi) for lo, hi in zip(t["ci_low"], t["ci_high"])]
    assert len(t) == loaded.info.num_layers * loaded.info.num_heads and set(t["measure"]) == {"loss"}
    assert (t["ci_low"] <= t["effect"]).all() and (t["effect"] <= t["ci_high"]).all()
    assert (t["ablated"] - t["base"] - t["effect"]).abs().max() < 1e-9
    assert (t["n"] == 12).all()
    group = ablate(loaded, heads="L0.H1,L1.H3", max_sentences=12, random_draws=4, bootstrap=100).table
    assert group["heads"].tolist() == ["L0.H1,L1.H3"]
    effect, median, ratio = group[["effect", "random_median", "ratio_to_random"]].iloc[0]
    assert ratio == pytest.approx(effect / median) if median > 0 else math.isnan(ratio)   # no ratio to a gain


def test_kv_group_ablation_takes_every_query_head_of_the_group():
    model, tok = tiny_llama()
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")     # 4 query heads, 2 key/value heads
    t = ablate(loaded, heads="L1.H3", kv_group=True, max_sentences=6, random_draws=1, bootstrap=50).table
    assert t["heads"].tolist() == ["L1.H2,L1.H3"]


def test_bad_specs_give_one_line_errors():
    with pytest.raises(HeadscopeError, match=r"not of the form L<layer>\.H<head>"):
        parse_heads("L1H2", 2, 4)
    with pytest.raises(HeadscopeError, match=r"L5\.H0 is not in the model: it has layers 0-1"):
        parse_heads("L5.H0", 2, 4)
    with pytest.raises(HeadscopeError, match="unknown ablation method 'window:0'"):
        Method.parse("window:0")
    model, tok = tiny_bert()
    loaded = load_model(model, tokenizer=tok, name="tiny-bert")
    with pytest.raises(HeadscopeError, match="needs a language-model head"):
        ablate(loaded, heads="L0.H0", measures=["loss"])
    with pytest.raises(HeadscopeError, match="unknown measure 'los'"):
        ablate(loaded, heads="L0.H0", measures=["los"])


def test_cli_ablate_writes_the_table_and_fails_bad_input_in_one_line(tiny_bert_dir, tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from headscope.cli.app import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    def one_line_error(result, fragment):
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("headscope: error:")]
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
        assert fragment in lines[0], lines[0]

    out = tmp_path / "ab"
    done = invoke("ablate", "--model", tiny_bert_dir, "--heads", "L0.H1,L1.H0", "--max-sentences", 12,
                  "--random-draws", 2, "--bootstrap", 50, "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "ablation.csv")
    assert set(table["measure"]) == {"hidden", "embedding"} and set(table["heads"]) == {"L0.H1,L1.H0"}
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "zero" and "ablate" in run["command"]
    one_line_error(invoke("ablate", "--model", tiny_bert_dir, "--heads", "L9.H0", "--out", tmp_path / "x"),
                   "L9.H0 is not in the model")
    one_line_error(invoke("ablate", "--model", tiny_bert_dir, "--method", "window", "--out", tmp_path / "x"),
                   "unknown ablation method 'window'")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tword\n")
    one_line_error(invoke("ablate", "--model", tiny_bert_dir, "--data", bad, "--out", tmp_path / "x"),
                   f"{bad}:1")
    one_line_error(invoke("ablate", "--model", tiny_bert_dir, "--data", tmp_path / "none.conllu", "--out",
                          tmp_path / "x"), "none.conllu")
    assert not (tmp_path / "x").exists()                       # nothing written for a failed call


def test_smollm2_induction_heads_found_by_headscope_carry_the_second_copy(smollm2):
    """The three strongest induction heads of headscope's own scoring pass, zeroed together, raise the loss on
    the second copy of repeated random tokens by at least 3 nats and 5 times a random three-head group."""
    t = ablate(smollm2, heads="top:induction:3", measures=["induction-loss"], random_draws=5, induction_count=12,
               induction_length=50, bootstrap=200).table
    row = t.iloc[0]
    assert len(row["heads"].split(",")) == 3
    assert row["effect"] >= 3.0 and row["ci_low"] > 1.0, row.to_dict()
    assert row["ratio_to_random"] >= 5.0, row.to_dict()


def test_gate_gradients_equal_finite_differences_of_the_loss():
    """The gradient importance is d loss / d gate at gate 1: checked against a central difference per head."""
    from headscope.interventions.edits import GateEdit
    from headscope.interventions.importance import importance

    model, tok = tiny_gpt2()
    loaded = load_model(model, tokenizer=tok, name="tiny-gpt2")
    result = importance(loaded, max_sentences=8, batch_size=8, steps=2)
    from headscope.interventions.batches import as_batches

    _, batches = as_batches(loaded, None, ["loss"], batch_size=8, max_sentences=8, seed=0, induction_count=0,
                             induction_length=0)
    (batch,) = batches

    def loss_at(gates):
        unit = edited_forward(loaded, batch, GateEdit(gates))
        weight = batch["scored"]["loss"].float()
        return float((unit.nll * weight).sum() / weight.sum())

    eps = 1e-3
    for layer, head in [(0, 1), (1, 3)]:
        up, down = torch.ones(2, 4), torch.ones(2, 4)
        up[layer, head] += eps
        down[layer, head] -= eps
        numeric = abs(loss_at(up) - loss_at(down)) / (2 * eps)
        row = result.table[(result.table["layer"] == layer) & (result.table["head"] == head)]
        assert row["importance"].iloc[0] == pytest.approx(numeric, rel=2e-2, abs=1e-4)
    assert sorted(result.table["rank"]) == list(range(1, 9))
    curve = result.curve
    assert curve["removed"].tolist() == [0, 4, 8] and curve["value"].iloc[0] == pytest.approx(curve["base"].iloc[0])


def test_cli_importance_writes_the_ranking_and_pruning_curve(tiny_bert_dir, tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from headscope.cli.app import app

    out = tmp_path / "imp"
    done = CliRunner().invoke(app, ["ablate", "--model", str(tiny_bert_dir), "--heads", "L0.H0", "--importance",
                                    "--max-sentences", "12", "--bootstrap", "50", "--out", str(out)])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "importance.csv")
    assert len(table) == 8 and sorted(table["rank"]) == list(range(1, 9))
    assert (out / "pruning.png").stat().st_size > 1000 and len(pd.read_csv(out / "pruning.csv")) >= 2
    run = json.loads((out / "run.json").read_text())
    assert run["importance"]["measure"] == "hidden" and "prunable_heads" in run["importance"]
    assert "heads can go" in done.output


def test_the_ablation_folder_plots_the_effects_and_each_heads_grid(tiny_bert_loaded, sample, tmp_path):
    import numpy as np
    import pandas as pd

    from headscope.reports.figures import ablation_grids

    each = ablate(tiny_bert_loaded, list(sample.sentences[:8]), heads="each", measures=["hidden"], bootstrap=50,
                  random_draws=2)
    out = each.save(tmp_path / "each")
    assert each.meta["figures"] == ["ablation_effects.png", "ablation_hidden.png"]
    for name in each.meta["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in (out / "report.md").read_text()
    # the grid puts each head's effect in its cell
    grid = ablation_grids(each.table, 2, 4)["hidden"]
    table = pd.read_csv(out / "ablation.csv")
    for layer, head in [(0, 0), (1, 3)]:
        assert grid.iloc[layer, head] == pytest.approx(table.set_index("heads").loc[f"L{layer}.H{head}", "effect"])
    assert np.isfinite(grid.to_numpy()).all()
    # a group of heads has effects but no grid
    group = ablate(tiny_bert_loaded, list(sample.sentences[:8]), heads="L0.H0,L1.H1", measures=["hidden"],
                   bootstrap=0, random_draws=2)
    assert group.save(tmp_path / "group") and group.meta["figures"] == ["ablation_effects.png"]
    assert ablation_grids(group.table, 2, 4) == {}


def test_no_effect_reads_a_losss_interval_and_a_distances_size():
    from headscope.interventions.measures import NEGLIGIBLE_DISTANCE, no_effect

    nan = float("nan")
    assert no_effect(0.1, -0.02, 0.2, "loss") and not no_effect(0.1, 0.01, 0.2, "loss")
    assert no_effect(-0.1, -0.3, -0.01, "loss") is False          # a reliable fall of the loss is an effect
    assert no_effect(0.0, nan, nan, "loss") and not no_effect(0.2, nan, nan, "induction-loss")
    assert no_effect(NEGLIGIBLE_DISTANCE / 2, 0.0, NEGLIGIBLE_DISTANCE * 0.9, "hidden")
    assert not no_effect(NEGLIGIBLE_DISTANCE / 2, 0.0, NEGLIGIBLE_DISTANCE * 2, "hidden")
    assert not no_effect(NEGLIGIBLE_DISTANCE * 3, nan, nan, "embedding")


def test_roles_carry_each_heads_ablation_effect_into_roles_csv_and_the_reports(minilm, tmp_path):
    import pandas as pd

    import headscope
    from headscope.interventions.measures import no_effect
    from headscope.analysis.roles import EVIDENCE_COLUMNS
    from headscope.reports import write_report

    result = headscope.analyze(minilm, tasks="positional", max_sentences=16, bootstrap=100)
    evidence = ablate(minilm, heads="each", measures=["hidden"], max_sentences=16, bootstrap=100, random_draws=3)
    result.add_ablation(evidence)
    roles = result.roles
    assert set(EVIDENCE_COLUMNS) <= set(roles.columns)
    named = roles[roles["role"] != "none"]
    assert len(named) and roles["ablation_effect"].notna().all()
    table = evidence.table.set_index("heads")
    for _, r in roles.iterrows():
        row = table.loc[f"L{r['layer']}.H{r['head']}"]
        assert r["ablation_effect"] == row["effect"] and r["ablation_measure"] == "hidden"
        assert bool(r["no_effect"]) == no_effect(row["effect"], row["ci_low"], row["ci_high"], "hidden")
        assert bool(r["no_effect"]) == bool(row["no_effect"])
    out = write_report(result, tmp_path / "run", figures=False)
    saved = pd.read_csv(out / "roles.csv")
    assert "ablation_effect" in saved and (out / "ablation.csv").is_file()
    md = (out / "report.md").read_text()
    assert "Causal evidence" in md and "ablation effect [95% CI]" in md
    assert "ablation effect [95% CI]" in (out / "report.html").read_text()
    with pytest.raises(HeadscopeError, match="single-head"):
        result.add_ablation(ablate(minilm, heads="L0.H0,L1.H1", measures=["hidden"], max_sentences=8, bootstrap=0))
    model, tok = tiny_bert()
    other = ablate(load_model(model, tokenizer=tok, name="other"), heads="each", measures=["hidden"],
                   max_sentences=8, bootstrap=0)
    with pytest.raises(HeadscopeError, match="not of minilm"):
        result.add_ablation(other)


def test_cli_run_ablate_joins_the_evidence_and_refuses_a_bad_method_first(tiny_bert_dir, tmp_path):
    from test_cli import invoke
    from test_run_safety import one_line_error

    one_line_error(invoke("run", "--model", tiny_bert_dir, "--ablate", "half", "--out", tmp_path / "x"),
                   "--ablate", "unknown ablation method")
    assert not (tmp_path / "x").exists()
    done = invoke("run", "--model", tiny_bert_dir, "--tasks", "positional", "--max-sentences", 12, "--no-figures",
                  "--bootstrap", 50, "--ablate", "mean", "--out", tmp_path / "run")
    assert done.exit_code == 0, done.output
    roles = (tmp_path / "run" / "roles.csv").read_text().splitlines()[0]
    assert "ablation_effect" in roles and "no_effect" in roles
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["ablation"]["method"] == "mean" and "ablation.csv" in run["files"]


def test_role_losses_read_pronouns_and_dependents_whose_head_the_decoder_has_seen():
    from headscope.interventions.batches import as_batches
    from headscope.capture.alignment import encode_sentences
    from headscope.datasets import load_sample
    from headscope.models.loading import leading_token

    model, tok = tiny_gpt2()
    loaded = load_model(model, tokenizer=tok, name="tiny-gpt2")
    measures = ["pronoun-loss", "syntax-loss"]
    _, batches = as_batches(loaded, None, measures, batch_size=8, max_sentences=8, seed=0, induction_count=0,
                             induction_length=0)
    sentences = load_sample().sentences[:8]
    encoded = encode_sentences(loaded.tokenizer, sentences, bos_id=leading_token(loaded, None))
    pronouns = dependents = 0
    for j, (s, e) in enumerate(zip(sentences, encoded)):          # by hand, word by word
        for t, w in enumerate(e.word_ids):
            first = t == 0                                          # no context to predict it from
            is_pron = w >= 0 and s.upos[w] == "PRON" and not first
            sees_head = w >= 0 and 0 <= s.heads[w] < w and not first
            assert bool(batches[0]["scored"]["pronoun-loss"][j, t]) == is_pron
            assert bool(batches[0]["scored"]["syntax-loss"][j, t]) == sees_head
            pronouns, dependents = pronouns + is_pron, dependents + sees_head
    assert pronouns > 0 and dependents > pronouns
    table = ablate(loaded, heads="L1.H2", measures=measures, max_sentences=8, bootstrap=0, random_draws=1).table
    b = batches[0]
    with torch.no_grad():
        logits = loaded.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["input_ids"][:, 1:], reduction="none")
    for m in measures:
        weight = b["scored"][m][:, 1:].float()
        expected = float((nll * weight).sum() / weight.sum())
        assert table.set_index("measure").loc[m, "base"] == pytest.approx(expected, rel=1e-5)


def test_an_encoders_masked_lm_loss_masks_a_seeded_share_of_tokens():
    from headscope.interventions.batches import as_batches

    model, tok = tiny_bert(mlm=True)
    loaded = load_model(model, tokenizer=tok, name="tiny-bert-mlm")
    args = dict(batch_size=16, max_sentences=16, seed=3, induction_count=0, induction_length=0)
    _, batches = as_batches(loaded, None, ["loss"], **args)
    _, again = as_batches(loaded, None, ["loss"], **args)
    (b,) = batches
    picked = b["scored"]["loss"]
    assert torch.equal(picked, again[0]["scored"]["loss"])                # seeded
    real = b["attention_mask"].bool() & (b["input_ids"] != tok.cls_token_id) & (b["input_ids"] != tok.sep_token_id)
    assert not (picked & ~real).any()                                    # only words' tokens are masked
    assert 0.10 < picked.sum() / real.sum() < 0.20
    assert torch.equal(b["masked_ids"] == tok.mask_token_id, picked)
    with torch.no_grad():
        logits = loaded.model(input_ids=b["masked_ids"], attention_mask=b["attention_mask"]).logits
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["input_ids"], reduction="none")
    expected = float(nll[picked].mean())
    table = ablate(loaded, heads="L0.H1", max_sentences=16, bootstrap=0, random_draws=1, seed=3).table
    assert list(table["measure"]) == ["loss"]                             # an MLM head: the loss by default
    assert table["base"].iloc[0] == pytest.approx(expected, rel=1e-5)
    assert table["effect"].iloc[0] != 0
    with pytest.raises(HeadscopeError, match="causal language model"):
        ablate(loaded, heads="L0.H1", measures=["induction-loss"], bootstrap=0)


def test_role_losses_refuse_data_without_tags_or_trees(tmp_path):
    model, tok = tiny_gpt2()
    loaded = load_model(model, tokenizer=tok, name="tiny-gpt2")
    text = tmp_path / "plain.txt"
    text.write_text("the cat sat on the mat\nshe saw him there\n")
    with pytest.raises(HeadscopeError, match="part-of-speech tags"):
        ablate(loaded, text, heads="L0.H0", measures=["pronoun-loss"], bootstrap=0)
    with pytest.raises(HeadscopeError, match="dependency trees"):
        ablate(loaded, text, heads="L0.H0", measures=["syntax-loss"], bootstrap=0)


def test_layer_and_role_specs_choose_their_heads_and_bad_ones_fail_in_one_line(minilm):
    from headscope.interventions.groups import role_task

    layer = ablate(minilm, heads="layer:3", measures=["hidden"], max_sentences=8, bootstrap=0, random_draws=1)
    assert layer.table["heads"].tolist() == [",".join(f"L3.H{h}" for h in range(12))]
    result = headscope_analyze(minilm)
    broad = sorted({(int(r.layer), int(r.head)) for r in result.roles[result.roles["role"] == "broad"].itertuples()})
    assert broad
    by_role = ablate(minilm, heads="role:broad", measures=["hidden"], max_sentences=8, bootstrap=0, random_draws=1)
    assert by_role.table["heads"].tolist() == [",".join(f"L{a}.H{b}" for a, b in broad)]
    assert by_role.meta["selected_by"] == "role broad (task positional)"
    assert role_task("syntax:nsubj", False) == "syntax" and role_task("induction", True) == "induction"
    for bad, words in (("layer:12", "layer:N"), ("role:juggler", "no task gives that role")):
        with pytest.raises(HeadscopeError, match=words):
            ablate(minilm, heads=bad, measures=["hidden"], max_sentences=8, bootstrap=0)


def headscope_analyze(loaded):
    import headscope

    return headscope.analyze(loaded, tasks=["positional"], max_sentences=8, bootstrap=1000)
