"""Probes: candidate features, the parent probe on planted structure, control tasks, estimator checks, CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import EWT_DEV, needs_ewt  # noqa: E402
from reference import full_attentions, word_attention  # noqa: E402

import headscope  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402
from headscope.probes import ParentProbe, collect_features, relation_probe  # noqa: E402
from headscope.probes.controls import BEHAVIOURS, control_heads, control_relations  # noqa: E402
from headscope.config import parse_features, parse_probes  # noqa: E402
from headscope.probes.experiment import _head_weights, design  # noqa: E402
from headscope.probes.features import FeatureCollector  # noqa: E402
from headscope.types import Sentence  # noqa: E402

SAMPLE = Path(headscope.__file__).parent / "datasets" / "data" / "sample_en.conllu"


def random_tree(rng, n: int) -> list[int]:
    """Heads of a random projective-or-not tree: word 0.. n-1, one root, every word reachable."""
    order = rng.permutation(n)
    heads = [-1] * n
    for k in range(1, n):
        heads[order[k]] = int(order[rng.integers(0, k)])
    return heads


def planted_data(seed: int, sentences: int, layers: int = 2, heads: int = 3, planted=(1, 2), specials: int = 2):
    """Word-level maps: head ``planted`` puts all of each word's attention on its parent (ROOT: on the
    special tokens); every other head is random. Built through the collector's own row layout."""
    rng = np.random.default_rng(seed)
    coll = FeatureCollector(layers, heads, [])
    sents = []
    for i in range(sentences):
        n = int(rng.integers(2, 12))
        tree = random_tree(rng, n)
        s = Sentence(words=tuple(f"w{rng.integers(0, 50)}" for _ in range(n)), heads=tuple(tree),
                     relations=tuple("root" if h < 0 else "dep" for h in tree), upos=("X",) * n)
        sents.append(s)
        c = n + specials
        a = rng.dirichlet(np.ones(c), size=(layers * heads, c)).astype(np.float32)   # [LH, C, C] rows sum to 1
        k = planted[0] * heads + planted[1]
        a[k] = 0.0
        for d, h in enumerate(tree):
            if h >= 0:
                a[k, d, h] = 1.0
            else:
                a[k, d, n:] = 1.0 / specials
        a[k, n:, :] = 1.0 / c
        coll._add_sentence(i, s, a, n, specials, None)
    return coll.result(), sents


# ----------------------------------------------------------------------------- features

def test_rows_are_root_then_every_other_word():
    data, sents = planted_data(0, 5)
    for w in range(data.n_words):
        rows = slice(data.starts[w], data.starts[w + 1])
        n = len(sents[data.sentence[w]].words)
        expected = [-1] + [c for c in range(n) if c != data.position[w]]
        assert data.candidate[rows].tolist() == expected
    assert data.gold_rows().sum() == data.n_words                 # exactly one gold row per word
    dist = data.distance()
    assert (dist.sum(1) == 1).all() and (dist[:, 0] == (data.candidate < 0)).all()


def test_features_equal_a_full_map_reference_on_tiny_models(tiny, sample):
    name, loaded = tiny
    sents = list(sample.sentences[:6])
    data = collect_features(loaded, sents, batch_size=4, vectors=False)
    assert data.n_words == sum(len(s) for s in sents)
    L, H = loaded.info.num_layers, loaded.info.num_heads
    for si, s in enumerate(sents):
        atts, word_ids = full_attentions(loaded.model, loaded.tokenizer, s)
        specials = [t for t, w in enumerate(word_ids) if w is None]
        n = len(s.words)
        pieces = [[t for t, w in enumerate(word_ids) if w == i] for i in range(n)]
        first = data.sentence_first_word[si]
        for d in range(n):
            w = first + d
            rows = range(data.starts[w], data.starts[w + 1])
            for r in rows:
                c = data.candidate[r]
                for layer in range(L):
                    for h in range(H):
                        a = atts[layer][h]
                        if c < 0 and not specials:          # GPT-2 style: no special token at all
                            fwd = bwd = 0.0
                        elif c < 0:
                            fwd = sum(np.mean([a[p, t] for p in pieces[d]]) for t in specials)
                            bwd = np.mean([sum(a[t, q] for q in pieces[d]) for t in specials])
                        else:
                            wa = word_attention(a, word_ids)
                            fwd, bwd = wa[d, c], wa[c, d]
                        k = layer * H + h
                        assert data.attention[r, k] == pytest.approx(fwd, abs=1e-5)
                        assert data.attention[r, L * H + k] == pytest.approx(bwd, abs=1e-5)


def test_word_vectors_are_mean_input_embeddings(tiny_bert_loaded, sample):
    import torch

    loaded = tiny_bert_loaded
    s = sample.sentences[0]
    data = collect_features(loaded, [s], vectors=True)
    from headscope.capture.alignment import encode_sentences

    (enc,) = encode_sentences(loaded.tokenizer, [s])
    emb = loaded.model.get_input_embeddings()(torch.tensor([enc.input_ids]))[0]
    wids = enc.word_ids
    for i in range(len(s.words)):
        expected = torch.stack([emb[t] for t, w in enumerate(wids) if w == i]).mean(0).detach().numpy()
        np.testing.assert_allclose(data.vectors[i], expected, atol=1e-5)


# ----------------------------------------------------------------------------- the parent probe

def test_parent_probe_recovers_a_planted_head_and_weights_it():
    train, _ = planted_data(1, 120)
    test, _ = planted_data(2, 60)
    X_tr, X_te = design(train, "attention"), design(test, "attention")
    est = ParentProbe(random_state=0).fit(X_tr, train.gold_rows(), groups=train.group)
    assert est.score(X_te, test.gold_rows(), groups=test.group) == 1.0
    picked = test.candidate[est.pick(X_te, test.group)]
    assert (picked == test.head).all()
    heads = _head_weights(est, SimpleNamespace(info=SimpleNamespace(num_layers=2, num_heads=3)), "attention", "task")
    top = max(heads, key=lambda r: r["importance"])
    assert (top["layer"], top["head"]) == (1, 2)
    assert top["share"] > 0.5
    assert abs(top["weight_from_dependent"]) > abs(top["weight_to_dependent"])


def test_distance_probe_learns_a_fixed_offset():
    data, _ = planted_data(3, 80)
    # Replace the gold heads by "previous word" (ROOT for the first): distance alone decides it.
    heads = np.where(data.position == 0, -1, data.position - 1).astype(np.int32)
    X = design(data, "distance")
    est = ParentProbe().fit(X, data.gold_rows(heads), groups=data.group)
    assert est.score(X, data.gold_rows(heads), groups=data.group) == 1.0


def test_parent_probe_checks_its_groups():
    X = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValueError, match="exactly one"):
        ParentProbe().fit(X, [1, 1, 0, 0, 0, 1], groups=[0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="contiguous"):
        ParentProbe().fit(X, [1, 0, 0, 1, 0, 0], groups=[0, 1, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="one value per row"):
        ParentProbe().fit(X, [1, 0, 0, 1, 0, 0], groups=[0, 0, 1])


def test_parent_probe_is_reproducible_with_random_state():
    data, _ = planted_data(4, 30)
    X = design(data, "attention+distance")
    a = ParentProbe(random_state=3).fit(X, data.gold_rows(), groups=data.group).coef_
    b = ParentProbe(random_state=3).fit(X, data.gold_rows(), groups=data.group).coef_
    np.testing.assert_array_equal(a, b)


def _estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    return check_estimator


def test_parent_probe_passes_scikit_learn_estimator_checks():
    results = _estimator_checks()(ParentProbe(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []


def test_relation_probe_passes_scikit_learn_estimator_checks():
    results = _estimator_checks()(relation_probe(random_state=0), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []


# ----------------------------------------------------------------------------- control tasks

def test_control_heads_are_fixed_per_word_type():
    data, _ = planted_data(5, 200)
    a, b = control_heads(data, seed=0), control_heads(data, seed=0)
    np.testing.assert_array_equal(a, b)
    sizes = np.diff(np.append(data.sentence_first_word, data.n_words))
    last = np.repeat(sizes - 1, sizes)
    behaviour = {}
    for w in range(data.n_words):
        kind = "root" if a[w] == -1 else "first" if a[w] == 0 else "last"
        assert a[w] in (-1, 0, last[w]) and a[w] != data.position[w]
        if data.position[w] not in (0, last[w]):              # unambiguous: the word is neither end
            assert behaviour.setdefault(data.form[w], kind) == kind
    assert set(behaviour.values()) == set(BEHAVIOURS)
    assert not np.array_equal(a, control_heads(data, seed=1))


def test_control_relations_follow_the_label_distribution_per_type():
    forms = np.array([f"t{i % 300}" for i in range(3000)], dtype=object)
    labels = control_relations(forms, ["a", "b", "c"], [8, 1, 1], seed=0)
    for t in ("t0", "t7", "t299"):
        assert len(set(labels[forms == t])) == 1
    share = np.mean(labels == "a")
    assert 0.7 < share < 0.9                                   # about 8/10 of the types


# ----------------------------------------------------------------------------- experiment and CLI

def test_parse_features_and_probes():
    assert parse_features("attention, attention+words,distance") == ["attention", "attention+words", "distance"]
    for bad in ("attn", "attention+attention", ""):
        with pytest.raises(HeadscopeError):
            parse_features(bad)
    assert parse_probes("relation,parent") == ["relation", "parent"]
    with pytest.raises(HeadscopeError, match="unknown probe 'tree'"):
        parse_probes("parent,tree")


def test_probe_library_call_on_the_sample(tiny_bert_loaded):
    r = headscope.probe(tiny_bert_loaded, SAMPLE, SAMPLE, max_train_sentences=40, features="attention,distance",
                        control="random-init")
    t = r.table
    assert set(t.columns) >= {"probe", "features", "labels", "metric", "value", "n"}
    assert set(t["model"]) == {"tiny-bert", "tiny-bert (random-init)"}
    differs = []
    for (model, probe_name, feats), g in t.groupby(["model", "probe", "features"]):
        main = "uas" if probe_name == "parent" else "accuracy"
        task = g[(g.labels == "task") & (g.metric == main)]
        control = g[(g.labels == "control") & (g.metric == main)]
        # the control task is scored on the same words, with its own labels
        assert task["n"].item() == control["n"].item() > 0
        differs.append(task["value"].item() != control["value"].item())
        assert g[g.metric == "selectivity"]["value"].item() == pytest.approx(task["value"].item()
                                                                           - control["value"].item())
    assert sum(differs) >= len(differs) // 2   # control labels are not the task's (they would score the same)
    uas = t[(t.probe == "parent") & (t.metric == "uas") & (t.labels == "task")]
    assert ((uas["value"] >= 0) & (uas["value"] <= 1)).all()
    assert len(r.heads) == 2 * 2 * 4                          # both models, L x H rows each
    assert r.heads.groupby("model")["share"].sum().round(6).eq(1.0).all()


def test_random_init_control_model(tiny_bert_loaded):
    import torch

    from headscope.models.loading import random_init

    a = random_init(tiny_bert_loaded, seed=1)
    b = random_init(tiny_bert_loaded, seed=1)
    c = random_init(tiny_bert_loaded, seed=2)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert not torch.equal(pa, next(tiny_bert_loaded.model.parameters()))
    assert a.info.name == "tiny-bert (random-init)" and a.info.num_layers == tiny_bert_loaded.info.num_layers
    assert a.tokenizer is tiny_bert_loaded.tokenizer


def cli(*args):
    from typer.testing import CliRunner

    from headscope.cli.app import app

    return CliRunner().invoke(app, ["probe", *map(str, args)])


def test_cli_probe_writes_files_and_prints_the_table(tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    res = cli("--model", tiny_bert_dir, "--train", SAMPLE, "--test", SAMPLE, "--max-train-sentences", 30,
              "--features", "attention", "--probe", "parent", "--out", out)
    assert res.exit_code == 0, res.output
    assert "parent" in res.stdout and "right_branching" in res.stdout and "select." in res.stdout
    assert {p.name for p in out.iterdir()} >= {"probes.csv", "probe_heads.csv", "report.md", "run.json"}
    run = json.loads((out / "run.json").read_text())
    assert "--max-train-sentences 30" in run["command"] and run["models"][0]["train"]["used"] == 30
    assert "## Probes" in (out / "report.md").read_text()


@pytest.mark.parametrize("args, fragment", [
    (["--train", "missing.conllu"], "file not found"),
    (["--features", "attention+colour"], "unknown feature set 'attention+colour'"),
    (["--probe", "tree"], "unknown probe 'tree'"),
    (["--train", "TEXT"], "probes need a dependency treebank"),
])
def test_cli_probe_bad_input_is_one_line(tiny_bert_dir, tmp_path, args, fragment):
    text = tmp_path / "plain.txt"
    text.write_text("just some words\n")
    base = {"--train": str(SAMPLE), "--test": str(SAMPLE), "--features": "attention", "--probe": "parent"}
    given = dict(zip(args[::2], args[1::2]))
    base.update({k: (str(text) if v == "TEXT" else str(tmp_path / v) if v.endswith(".conllu") else v)
                 for k, v in given.items()})
    flat = [x for kv in base.items() for x in kv]
    res = cli("--model", tiny_bert_dir, *flat, "--out", tmp_path / "out")
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("headscope: error:") and fragment in lines[0], res.output
    assert not (tmp_path / "out" / "probes.csv").exists()


@needs_ewt
def test_probe_on_real_ewt_beats_the_control_and_the_baselines(minilm):
    r = headscope.probe(minilm, EWT_DEV, EWT_DEV.with_name("en_ewt-ud-test.conllu"), max_train_sentences=150,
                        max_test_sentences=100, features="attention,distance", probes="parent")
    t = r.table.set_index(["features", "labels", "metric"])["value"]
    assert t[("attention", "task", "uas")] > t[("distance", "task", "uas")] + 0.1
    assert t[("attention", "task", "uas")] > t[("left_branching", "task", "uas")] + 0.1
    assert t[("attention", "task", "selectivity")] > 0


def test_interrupt_keeps_the_finished_model(tiny_bert_loaded, monkeypatch, tmp_path):
    import headscope.probes.experiment as exp

    real = exp._run_probes
    calls = []

    def stop_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(exp, "_run_probes", stop_on_second)
    r = headscope.probe(tiny_bert_loaded, SAMPLE, SAMPLE, max_train_sentences=20, features="attention",
                        probes="parent", control="random-init", partial_on_interrupt=True)
    assert r.meta["complete"] is False and set(r.table["model"]) == {"tiny-bert"}
    r.save(tmp_path)
    assert "Interrupted" in (tmp_path / "report.md").read_text()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        headscope.probe(tiny_bert_loaded, SAMPLE, SAMPLE, max_train_sentences=20, features="attention",
                        probes="parent", control="random-init")


def test_lists_of_sentences_train_and_test_as_their_corpus_does(tiny_bert_loaded):
    sample = headscope.load_conllu(SAMPLE)
    train, test = list(sample.sentences[:30]), list(sample.sentences[30:])
    as_lists = headscope.probe(tiny_bert_loaded, train, test, features="attention", probes="parent")
    as_corpora = headscope.probe(tiny_bert_loaded, dataclasses.replace(sample, sentences=tuple(train)),
                                 dataclasses.replace(sample, sentences=tuple(test)), features="attention",
                                 probes="parent")
    assert len(as_lists.table) and as_lists.table["value"].tolist() == as_corpora.table["value"].tolist()
    with pytest.raises(headscope.HeadscopeError, match="training data: expected a treebank path, a Corpus or a "
                                                      "list of Sentences, got list"):
        headscope.probe(tiny_bert_loaded, ["not a sentence"], test)


def test_same_file_for_train_and_test_warns(tiny_bert_loaded, caplog):
    headscope.probe(tiny_bert_loaded, SAMPLE, SAMPLE, max_train_sentences=10, features="distance", probes="parent")
    assert "not held out" in caplog.text


def test_dropping_the_planted_head_costs_the_most():
    from headscope.probes.experiment import _drop_one_head

    train, _ = planted_data(6, 80)
    test, _ = planted_data(7, 40)
    est = ParentProbe().fit(design(train, "attention"), train.gold_rows(), groups=train.group)
    full = est.score(design(test, "attention"), test.gold_rows(), groups=test.group)
    rows = _head_weights(est, SimpleNamespace(info=SimpleNamespace(num_layers=2, num_heads=3)), "attention", "task")
    _drop_one_head(rows, train, test, train.head, test.head, 1e-3, 0, full)
    worst = max(rows, key=lambda r: r["drop_uas"])
    assert (worst["layer"], worst["head"]) == (1, 2) and worst["drop_uas"] > 0.3
    others = [r["drop_uas"] for r in rows if (r["layer"], r["head"]) != (1, 2)]
    assert max(others) < 0.05


def test_memory_check_refuses_in_one_line(tiny_bert_loaded, monkeypatch):
    import os

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 100 if name == "SC_PHYS_PAGES" else real(name))
    with pytest.raises(HeadscopeError, match="use fewer sentences") as info:
        headscope.probe(tiny_bert_loaded, SAMPLE, SAMPLE, features="attention", probes="parent")
    assert "\n" not in str(info.value)


def test_decoder_probe_runs_with_its_bos_column():
    from conftest import tiny_llama

    from headscope.models.loading import load_model

    model, tok = tiny_llama(bos=False)
    loaded = load_model(model, tokenizer=tok, name="tiny-llama")
    r = headscope.probe(loaded, SAMPLE, SAMPLE, max_train_sentences=30, features="attention", probes="parent")
    assert r.meta["models"][0]["train"]["used"] == 30
    data = collect_features(loaded, list(headscope.load_conllu(SAMPLE).sentences[:3]), vectors=False,
                            bos_id=tok.bos_token_id)
    root = data.attention[data.candidate < 0]
    L, H = loaded.info.num_layers, loaded.info.num_heads
    assert (root[:, :L * H] > 0).all()           # every word sees the BOS
    assert np.allclose(root[:, L * H:], 0.0)      # the BOS sees no later word (causal)
