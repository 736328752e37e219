"""Value-weighted attention (``capture/norms.py``): the norm view the attention function hands over equals an
independent computation (eager attention, hooked values, the output projection's weights: tests/reference_norm.py)
on tiny BERT, GPT-2 and Llama (GQA), with whole maps and in row blocks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reference_norm import norm_maps  # noqa: E402

from headscope.errors import CaptureError  # noqa: E402
from headscope.testing import tiny_bert, tiny_gpt2, tiny_llama  # noqa: E402
from headscope.types import Sentence  # noqa: E402

TEXTS = ["the cat sat on the mat because it was tired", "a dog ran home", "birds sing at dawn in the old garden",
         "she read it twice"]


def _captured(loaded, rows):
    """Every batch's token-level weight and norm maps, assembled from the blocks handed over, with the batch's
    input ids and mask."""
    from headscope.capture.alignment import encode_sentences
    from headscope.capture.session import capture

    sentences = [Sentence(words=tuple(t.split()), sent_id=f"s{i}") for i, t in enumerate(TEXTS)]
    encoded = encode_sentences(loaded.tokenizer, sentences)
    batches: list = []

    def keep(kind):
        def on(layer, maps, batch):
            if not batches or batches[-1]["batch"] is not batch:
                batches.append({"batch": batch, "weight": {}, "norm": {}})
            b, h, r, k = maps.shape
            full = batches[-1][kind].setdefault(layer, np.zeros((b, h, batch.input_ids.shape[1],
                                                                 batch.input_ids.shape[1])))
            full[:, :, batch.row_start:batch.row_start + r, :k] = maps.double().cpu().numpy()
            if kind == "norm" and batch.row_stats is not None:     # the norm view's row facts, from the capture
                facts = batches[-1].setdefault("facts", {}).setdefault(layer, np.zeros((b, h, full.shape[2], 2)))
                facts[:, :, batch.row_start:batch.row_start + r] = np.stack(
                    [batch.row_stats.entropy.double().cpu().numpy(), batch.row_stats.confidence.double().cpu().numpy()],
                    -1)
        return on

    capture(loaded, sentences, encoded, keep("weight"), batch_size=3, on_norm_layer=keep("norm"),
            block_rows=(lambda batch: rows) if rows else None, row_stats=True)
    return batches


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2, tiny_llama], ids=["bert", "gpt2", "llama-gqa"])
@pytest.mark.parametrize("rows", [None, 3], ids=["whole", "blocks"])
@pytest.mark.parametrize("fast", [True, False], ids=["kernel", "torch"])
def test_the_norm_view_equals_an_independent_computation(build, rows, fast, monkeypatch):
    """Both ways of making the view: the numba pass (CPU) and the torch operations (what a GPU runs)."""
    from headscope.capture import norms as norm_module
    from headscope.models.loading import load_model

    monkeypatch.setattr(norm_module, "FAST", fast)
    calls = []
    kernel = norm_module._rows_kernel
    monkeypatch.setattr(norm_module, "_rows_kernel", lambda: calls.append(1) or kernel())
    model, tok = build()
    loaded = load_model(model, tokenizer=tok)
    compared = 0
    for got in _captured(loaded, rows):
        batch = got["batch"]
        weights, norms = norm_maps(loaded.model, batch.input_ids, batch.attention_mask)
        real = batch.token_mask.cpu().numpy()
        for layer, ref in enumerate(norms):
            ref = ref * real[:, None, None, :]
            ref = ref / ref.sum(-1, keepdims=True)
            mine = got["norm"][layer]
            q = np.broadcast_to(real[:, None, :], mine.shape[:3])
            assert np.abs(mine[q] - ref[q]).max() < 1e-5
            assert np.abs(got["weight"][layer][q] - weights[layer][q]).max() < 1e-5
            # the two views differ (the values' norms are not all equal), so the check can tell them apart
            assert np.abs(mine[q] - weights[layer][q]).max() > 1e-3
            # the norm view's entropy and confidence, worked out from the weights' normaliser without a
            # logarithm over the map, equal those read from the view itself
            facts = got["facts"][layer]
            rq = real.astype(bool)[:, None, :].repeat(facts.shape[1], 1)
            entropy = -(ref * np.log(np.where(ref > 0, ref, 1.0))).sum(-1)
            assert np.abs(facts[..., 0][rq] - entropy[rq]).max() < 1e-4
            assert np.abs(facts[..., 1][rq] - ref.max(-1)[rq]).max() < 1e-5
            compared += 1
    assert compared == 2 * 2      # two batches of two layers each
    assert bool(calls) == fast    # the path asked for is the one that ran


def test_the_output_projection_is_found_and_a_model_that_projects_something_else_is_refused():
    import torch

    from headscope.capture.session import find_output_projections
    from headscope.models.loading import load_model

    model, tok = tiny_bert()
    loaded = load_model(model, tokenizer=tok)
    found = find_output_projections(loaded)
    assert found.modules == [layer.attention.output.dense for layer in model.encoder.layer]
    w = model.encoder.layer[0].attention.output.dense.weight.detach().float()        # [hidden, heads * dim]
    head1 = w[:, 8:16]                                                                   # head 1's columns
    assert torch.allclose(found.gram[0][1], head1.T @ head1, atol=1e-5)
    # a model that gates its heads' outputs before projecting them: no projection reads the output as it is
    for layer in model.encoder.layer:
        dense = layer.attention.output.dense
        dense.register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
    gated = load_model(model, tokenizer=tok)
    with pytest.raises(CaptureError, match="no output projection reads layer 0's attention output"):
        find_output_projections(gated)


def test_a_run_scores_every_measure_under_both_weightings_and_keeps_the_weight_view_as_it_was(tiny_bert_loaded):
    import headscope

    plain = headscope.analyze(tiny_bert_loaded, None, tasks="syntax,positional", max_sentences=16, bootstrap=50,
                              n_examples=0)
    both = headscope.analyze(tiny_bert_loaded, None, tasks="syntax,positional", max_sentences=16, bootstrap=50,
                             n_examples=0, weighting="weight,norm")
    keys = ["dataset", "task", "relation", "direction", "metric", "baseline", "layer", "head"]
    assert set(plain.scores["weighting"]) == {"weight"} and set(both.scores["weighting"]) == {"weight", "norm"}
    weight = both.scores[both.scores["weighting"] == "weight"].reset_index(drop=True)
    # scoring the norm view too leaves every weight row as it was, q-values included (BH runs per weighting)
    import pandas as pd

    pd.testing.assert_frame_equal(weight, plain.scores.reset_index(drop=True))
    norm = both.scores[both.scores["weighting"] == "norm"]
    # the sinks' written shares are the weight view's own: the norm view's masses on first and sep
    written = weight[weight["relation"].isin(["first_written", "sep_written"])]
    assert len(written) == 2 * 2 * 4 and len(norm) == len(weight) - len(written)
    same = written.assign(relation=written["relation"].str.replace("_written", ""), metric="mass").merge(
        norm, on=keys, suffixes=("_w", "_n"))
    assert len(same) == len(written) and (same["score_w"] - same["score_n"]).abs().max() < 1e-5
    joined = weight.merge(norm, on=keys, suffixes=("_w", "_n"))
    assert len(joined) == len(weight) - len(written)
    heads = joined[joined["baseline"].isna() & (joined["task"] == "positional") & (joined["metric"] == "mass")]
    assert (heads["score_w"] - heads["score_n"]).abs().max() > 1e-3       # the two views differ
    assert both.best("positional", "first", weighting="norm")["weighting"] == "norm"
    pd.testing.assert_frame_equal(both.roles, plain.roles)                # roles read the weights


def test_the_weighting_is_checked_before_anything_runs(tiny_bert_loaded):
    import headscope
    from headscope.errors import HeadscopeError

    with pytest.raises(HeadscopeError, match="unknown weighting 'value'; choose from weight, norm"):
        headscope.analyze(tiny_bert_loaded, None, tasks="positional", weighting="weight,value")
    with pytest.raises(HeadscopeError, match="must include weight"):
        headscope.analyze(tiny_bert_loaded, None, tasks="positional", weighting="norm")


def test_the_command_line_writes_both_weightings_and_refuses_a_bad_one_in_one_line(tiny_bert_dir, tmp_path):
    import json

    import pandas as pd

    from conftest import invoke

    out = tmp_path / "run"
    r = invoke("run", "--model", tiny_bert_dir, "--tasks", "positional", "-n", "8", "--bootstrap", "0",
               "--no-figures", "--weighting", "weight,norm", "--out", out)
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["weighting"]) == {"weight", "norm"}
    assert json.loads((out / "run.json").read_text())["config"]["weighting"] == ["weight", "norm"]
    bad = invoke("run", "--model", tiny_bert_dir, "--weighting", "norm", "--out", tmp_path / "bad")
    lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert bad.exit_code == 2 and len(lines) == 1 and "must include weight" in lines[0]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_an_encoder_decoder_read_on_its_decoder_gets_its_norm_view_too(family):
    import headscope
    from headscope.models.loading import load_model
    from test_architectures import _sentences, build

    model, tok = build(family)
    loaded = load_model(model, tokenizer=tok, part="decoder")
    r = headscope.analyze(loaded, _sentences(), tasks="positional", bootstrap=0, n_examples=0,
                          weighting="weight,norm")
    norm = r.scores[r.scores["weighting"] == "norm"]
    written = r.scores["relation"].isin(["first_written", "sep_written"])      # the weight view's only
    assert written.any() and len(norm) == (~written).sum() // 2 and norm["score"].notna().all()
    assert [type(m).__name__ for m in loaded.projections.modules] and len(loaded.projections.modules) == \
        loaded.info.num_layers
