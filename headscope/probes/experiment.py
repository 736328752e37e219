"""``probe``: train parent / relation probes on one treebank, test on another, with control tasks."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ProbeConfig
from ..errors import HeadscopeError
from ..types import Corpus

log = logging.getLogger(__name__)

PROBE_COLUMNS = ["model", "train", "test", "probe", "features", "labels", "metric", "value", "n"]
HEAD_COLUMNS = ["model", "probe", "features", "labels", "layer", "head", "weight_from_dependent",
                "weight_to_dependent", "importance", "share", "drop_uas"]


@dataclass
class ProbeResult:
    """``table``: one row per probe x features x labels x metric (``PROBE_COLUMNS``); ``heads``: each
    head's share of the parent probe's weights; ``meta``: provenance."""

    table: Any
    heads: Any
    meta: dict = field(default_factory=dict)

    def summary(self, model: str | None = None) -> Any:
        """Wide view: one row per model x probe x features, task / control / selectivity side by side."""
        df = self.table if model is None else self.table[self.table["model"] == model]
        main = df[df["metric"].isin(["uas", "accuracy", "macro_f1"])]
        wide = main.pivot_table(index=["model", "probe", "features", "metric"], columns="labels", values="value",
                                sort=False).reset_index()
        if {"task", "control"} <= set(wide.columns):
            wide["selectivity"] = wide["task"] - wide["control"]
        wide.columns.name = None
        return wide

    def save(self, out: str | Path, *, figures: bool = True, command: str | None = None, force: bool = False) -> Path:
        """probes.csv, probe_heads.csv, report.md, run.json and figures/ into ``out``, written whole."""
        from ..reports.probes import write_probe_report

        return write_probe_report(self, Path(out), figures=figures, command=command, force=force)


def _load_treebank(data: Any, what: str, limit: int | None, on_error: str) -> Corpus:
    from ..datasets import load_data
    from ..types import Sentence

    if isinstance(data, (list, tuple)) and data and all(isinstance(s, Sentence) for s in data):
        data = Corpus(name=what, sentences=tuple(data))      # sentences in hand, e.g. part of a loaded corpus
    if not isinstance(data, (str, Path, Corpus)):
        raise HeadscopeError(f"{what}: expected a treebank path, a Corpus or a list of Sentences, got "
                             f"{type(data).__name__}")
    corpus = data if isinstance(data, Corpus) else load_data(data, fmt="conllu" if str(data).endswith(".conllu")
                                                              else None, on_error=on_error, limit=limit)
    if not isinstance(corpus, Corpus) or not any(s.has_tree for s in corpus.sentences):
        raise HeadscopeError(f"{what} {getattr(corpus, 'path', '') or data}: probes need a dependency treebank "
                             f"(.conllu with HEAD and DEPREL)")
    if limit is not None and len(corpus.sentences) > limit:
        corpus = dataclasses.replace(corpus, sentences=corpus.sentences[:limit])
    return corpus


def _memory_check(loaded: Any, train: list, test: list, features: list[str], pca_dim: int) -> None:
    """Refuse, in one line, a run whose candidate rows would not fit in memory (rows = words² per sentence)."""
    import os

    rows = sum(len(s) ** 2 for s in train) + sum(len(s) ** 2 for s in test)
    widest = max(2 * loaded.info.num_layers * loaded.info.num_heads * ("attention" in f) + 13
                 + 3 * pca_dim * ("words" in f) for f in features)
    stored = 2 * loaded.info.num_layers * loaded.info.num_heads + 8
    need = rows * 4 * (stored + widest)            # the features, plus one design matrix at a time
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise HeadscopeError(f"the probe features need about {need / 2**30:.1f} GiB ({rows:,} candidate rows of "
                             f"{len(train)} + {len(test)} sentences) but this machine has {total / 2**30:.1f} GiB; "
                             f"use fewer sentences (--max-train-sentences, --max-test-sentences)")


def _usable(loaded: Any, corpus: Corpus, bos_id: int | None) -> tuple[list, dict]:
    from ..capture.alignment import encode_sentences

    sents = [s for s in corpus.sentences if s.has_tree]
    enc = encode_sentences(loaded.tokenizer, sents, bos_id=bos_id)
    keep = [s for s, e in zip(sents, enc) if len(e) <= loaded.info.max_length]
    counts = {"sentences": len(corpus.sentences), "without_tree": len(corpus.sentences) - len(sents),
              "longer_than_model": len(sents) - len(keep), "used": len(keep),
              "words": sum(len(s) for s in keep)}
    if not keep:
        raise HeadscopeError(f"{corpus.path or corpus.name}: no sentence with a tree fits the model")
    return keep, counts


def design(data: Any, features: str, pca: Any = None, rows: Any = None) -> Any:
    """The feature matrix of a feature set (candidate rows, or only ``rows``); ROOT is always marked by one column.

    ``words`` adds the candidate's vector, the dependent's vector and their product (PCA of the
    model's input embeddings; ROOT has a zero vector).
    """
    parts = features.split("+")
    sel = slice(None) if rows is None else rows
    candidate = data.candidate[sel]
    cols = []
    if "attention" in parts:
        cols.append(data.attention[sel])
    if "distance" in parts:
        cols.append(data.distance()[sel])                # its column 0 marks ROOT
    else:
        cols.append((candidate < 0).astype(np.float32)[:, None])
    if "words" in parts:
        if data.vectors is None or pca is None:
            raise HeadscopeError("word-vector features need the model's input embeddings")
        v = pca.transform(data.vectors).astype(np.float32)
        v = np.vstack([v, np.zeros((1, v.shape[1]), dtype=np.float32)])   # row -1: ROOT has no vector
        group = data.group[sel]
        word_of_candidate = np.where(candidate < 0, -1, data.sentence_first_word[data.sentence[group]] + candidate)
        vc = v[word_of_candidate]
        vd = v[group]
        cols += [vc, vd, vd * vc]
    return np.hstack(cols).astype(np.float32)


def _uas(data: Any, picked_candidate: Any, heads: Any) -> tuple[float, int]:

    mask = ~data.punct
    n = int(mask.sum())
    return (float(np.mean(picked_candidate[mask] == heads[mask])) if n else float("nan")), n


def probe(model: Any = "minilm", train: Any = None, test: Any = None, *, config: ProbeConfig | None = None,
          tokenizer: Any = None, partial_on_interrupt: bool = False, **options: Any) -> ProbeResult:
    """Train attention probes on ``train`` and report them on ``test`` (both dependency treebanks: a path, a
    Corpus, or a list of Sentences).

    ``probes``: ``parent`` (which word is each word's head: UAS without punctuation) and/or
    ``relation`` (the relation of each gold dependent-head pair: accuracy, macro-F1). ``features``:
    feature sets made of ``attention`` (2·L·H weights between the word and the candidate),
    ``words`` (the model's input embeddings, PCA to ``pca_dim``) and ``distance`` (signed offset
    buckets). Every probe is also trained on control targets fixed per word type (Hewitt & Liang),
    and ``selectivity = task - control`` is reported. ``control="random-init"`` repeats everything
    with the same architecture re-initialised (seeded). Splits are the two files: never by word.
    ``partial_on_interrupt``: Ctrl-C returns the models finished so far (``meta["complete"]`` False).
    The settings are those of :class:`headscope.config.ProbeConfig`, as keywords or ``config=``.
    """
    import pandas as pd

    from ..models.loading import load_model, random_init
    from ..run.provenance import package_versions

    cfg = ProbeConfig.given(config, options)
    probe_list, feature_list, control, seed = list(cfg.probes), list(cfg.features), cfg.control, cfg.seed
    max_train_sentences, max_test_sentences, on_error = cfg.max_train_sentences, cfg.max_test_sentences, cfg.on_error
    batch_size, alpha, pca_dim, drop_heads = cfg.batch_size, cfg.alpha, cfg.pca_dim, cfg.drop_heads
    device, prepend_bos, trust_remote_code = cfg.device, cfg.prepend_bos, cfg.trust_remote_code
    if train is None or test is None:
        raise HeadscopeError("probes need a training treebank and a test treebank (--train and --test)")
    t0 = time.perf_counter()
    train_c = _load_treebank(train, "training data", max_train_sentences, on_error)
    test_c = _load_treebank(test, "test data", max_test_sentences, on_error)
    if train_c.checksum and train_c.checksum == test_c.checksum:
        log.warning("the training and test data are the same file: the probe scores are not held out")
    loaded = load_model(model, tokenizer=tokenizer, device=device, trust_remote_code=trust_remote_code)
    models = [loaded] + ([random_init(loaded, seed=seed)] if control == "random-init" else [])
    rows, heads, meta_models = [], [], []
    complete = True
    try:
        _probe_models(models, train_c, test_c, probe_list, feature_list, rows, heads, meta_models, seed=seed,
                      alpha=alpha, pca_dim=pca_dim, drop_heads=drop_heads, batch_size=batch_size,
                      prepend_bos=prepend_bos)
    except KeyboardInterrupt:
        if not partial_on_interrupt or not meta_models:
            raise
        complete = False
        log.warning("interrupted: results cover %s only", ", ".join(m["name"] for m in meta_models))
    table = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    head_table = pd.DataFrame(heads, columns=HEAD_COLUMNS)
    meta = {"complete": complete, "probes": probe_list, "features": feature_list, "control": control, "seed": seed,
            "alpha": alpha, "pca_dim": pca_dim, "drop_heads": drop_heads, "batch_size": batch_size,
            "prepend_bos": prepend_bos,
            "train": {"name": train_c.name, "path": train_c.path, "sha256": train_c.checksum},
            "test": {"name": test_c.name, "path": test_c.path, "sha256": test_c.checksum},
            "models": meta_models, "model": dataclasses.asdict(loaded.info), "versions": package_versions(),
            "seconds": round(time.perf_counter() - t0, 1)}
    return ProbeResult(table=table, heads=head_table, meta=meta)


def _probe_models(models: list, train_c: Corpus, test_c: Corpus, probe_list: list[str], feature_list: list[str],
                  rows: list, heads: list, meta_models: list, *, seed: int, alpha: float, pca_dim: int,
                  drop_heads: bool, batch_size: int, prepend_bos: bool | None) -> None:
    """Features, probes and controls for each model in turn; each model's rows are added when it is done."""
    from ..models.loading import leading_token
    from .features import collect_features

    for lm in models:
        bos_id = leading_token(lm, prepend_bos)
        train_s, train_counts = _usable(lm, train_c, bos_id)
        test_s, test_counts = _usable(lm, test_c, bos_id)
        _memory_check(lm, train_s, test_s, feature_list, pca_dim)
        t1 = time.perf_counter()
        need_vectors = any("words" in f for f in feature_list)
        tr = collect_features(lm, train_s, batch_size=batch_size, vectors=need_vectors, bos_id=bos_id)
        te = collect_features(lm, test_s, batch_size=batch_size, vectors=need_vectors, bos_id=bos_id)
        t_features = time.perf_counter() - t1
        fits: list[dict] = []
        r, h = _run_probes(lm, tr, te, probe_list, feature_list, seed=seed, alpha=alpha, pca_dim=pca_dim,
                           drop_heads=drop_heads, fits=fits)
        name = lm.info.name
        for x in r:
            x.update(model=name, train=train_c.name, test=test_c.name)
        for x in h:
            x.update(model=name)
        rows += r
        heads += h
        meta_models.append({"name": name, "description": lm.info.describe(), "train": train_counts,
                            "test": test_counts, "candidate_rows": {"train": int(len(tr.candidate)),
                                                                    "test": int(len(te.candidate))},
                            "seconds_features": round(t_features, 1), "fits": fits,
                            "seconds_total": round(time.perf_counter() - t1, 1)})


def _fit(est: Any, fits: list | None, what: dict, *args: Any, **kwargs: Any) -> Any:
    """Fit quietly; record iterations and convergence (a control task may not converge: that is data)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            est.fit(*args, **kwargs)
        except ValueError as exc:
            raise HeadscopeError(f"cannot fit the {what['probe']} probe ({what['features']}, {what['labels']} "
                                 f"labels): {str(exc).splitlines()[0]}; use more training sentences") from None
    converged = getattr(est, "converged_", None)
    if converged is None:
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    n_iter = np.max(getattr(est, "n_iter_", 0))
    if fits is not None:
        fits.append({**what, "iterations": int(n_iter), "converged": bool(converged)})
    if not converged:
        log.info("%s did not converge in %d iterations", what, n_iter)
    return est


def _run_probes(loaded: Any, tr: Any, te: Any, probe_list: list[str], feature_list: list[str], *, seed: int,
                alpha: float, pca_dim: int, drop_heads: bool, fits: list | None = None
                ) -> tuple[list[dict], list[dict]]:
    from sklearn.decomposition import PCA
    from sklearn.metrics import f1_score

    from .controls import control_heads, control_relations
    from .estimators import ParentProbe, relation_probe

    pca = None
    if any("words" in f for f in feature_list):
        pca = PCA(n_components=min(pca_dim, tr.vectors.shape[1], tr.n_words), random_state=seed).fit(tr.vectors)
    targets = {"task": (tr.head, te.head), "control": (control_heads(tr, seed), control_heads(te, seed))}
    rows: list[dict] = []
    heads: list[dict] = []

    def add(probe_name, feats, labels, metric, value, n):
        rows.append({"probe": probe_name, "features": feats, "labels": labels, "metric": metric,
                     "value": float(value), "n": int(n)})

    if "parent" in probe_list:
        sizes = np.diff(np.append(te.sentence_first_word, te.n_words))
        last = np.repeat(sizes - 1, sizes)
        branching = {"right_branching": te.position - 1,                                   # previous word; first: ROOT
                     "left_branching": np.where(te.position == last, -1, te.position + 1)}  # next word; last: ROOT
        for base, guess in branching.items():
            for labels, (h_tr, h_te) in targets.items():
                uas, n = _uas(te, guess, h_te)
                add("parent", base, labels, "uas", uas, n)
        for feats in feature_list:
            X_tr, X_te = design(tr, feats, pca), design(te, feats, pca)
            for labels, (h_tr, h_te) in targets.items():
                est = _fit(ParentProbe(alpha=alpha, random_state=seed), fits,
                           {"probe": "parent", "features": feats, "labels": labels},
                           X_tr, tr.gold_rows(h_tr), groups=tr.group)
                picked = te.candidate[est.pick(X_te, te.group)]
                uas, n = _uas(te, picked, h_te)
                add("parent", feats, labels, "uas", uas, n)
                if feats == "attention" and labels == "task":
                    heads += _head_weights(est, loaded, feats, labels)
                    if drop_heads:
                        _drop_one_head(heads[-loaded.info.num_layers * loaded.info.num_heads:], tr, te, h_tr, h_te,
                                       alpha, seed, uas)
        for feats in feature_list:
            task = [r for r in rows if r["probe"] == "parent" and r["features"] == feats]
            by = {r["labels"]: r for r in task}
            add("parent", feats, "task", "selectivity", by["task"]["value"] - by["control"]["value"], by["task"]["n"])
        for base in branching:
            rb = {r["labels"]: r for r in rows if r["features"] == base}
            add("parent", base, "task", "selectivity", rb["task"]["value"] - rb["control"]["value"], rb["task"]["n"])

    if "relation" in probe_list:
        labels_tr = tr.relation
        kinds, counts = np.unique(labels_tr, return_counts=True)
        rel_targets = {"task": (tr.relation, te.relation),
                       "control": (control_relations(tr.form, list(kinds), counts, seed),
                                   control_relations(te.form, list(kinds), counts, seed))}
        gold_tr = np.flatnonzero(tr.gold_rows())
        gold_te = np.flatnonzero(te.gold_rows())
        for feats in feature_list:
            X_tr, X_te = design(tr, feats, pca, gold_tr), design(te, feats, pca, gold_te)
            result = {}
            for labels, (y_tr, y_te) in rel_targets.items():
                est = _fit(relation_probe(random_state=seed), fits,
                           {"probe": "relation", "features": feats, "labels": labels}, X_tr, y_tr.astype(str))
                pred = est.predict(X_te)
                acc = float(np.mean(pred == y_te.astype(str)))
                f1 = float(f1_score(y_te.astype(str), pred, average="macro", zero_division=0))
                add("relation", feats, labels, "accuracy", acc, len(y_te))
                add("relation", feats, labels, "macro_f1", f1, len(y_te))
                result[labels] = (acc, f1)
            add("relation", feats, "task", "selectivity", result["task"][0] - result["control"][0], len(gold_te))
    return rows, heads


def _head_weights(est: Any, loaded: Any, feats: str, labels: str) -> list[dict]:
    """Each head's two weights (standardised features) and its share of the total absolute weight."""
    L, H = loaded.info.num_layers, loaded.info.num_heads
    w = est.coef_[:2 * L * H]
    fwd, bwd = w[:L * H], w[L * H:]
    importance = np.abs(fwd) + np.abs(bwd)
    total = importance.sum() or 1.0
    return [{"probe": "parent", "features": feats, "labels": labels, "layer": k // H, "head": k % H,
             "weight_from_dependent": float(fwd[k]), "weight_to_dependent": float(bwd[k]),
             "importance": float(importance[k]), "share": float(importance[k] / total), "drop_uas": float("nan")}
            for k in range(L * H)]


def _drop_one_head(head_rows: list[dict], tr: Any, te: Any, h_tr: Any, h_te: Any, alpha: float, seed: int,
                   full_uas: float) -> None:
    """UAS lost when one head's two features are left out and the attention probe is refitted."""
    from .estimators import ParentProbe

    LH = tr.attention.shape[1] // 2
    root_tr = (tr.candidate < 0).astype(np.float32)[:, None]
    root_te = (te.candidate < 0).astype(np.float32)[:, None]
    for k, row in enumerate(head_rows):
        keep = np.array([j for j in range(2 * LH) if j not in (k, LH + k)])
        X_tr = np.hstack([tr.attention[:, keep], root_tr])
        X_te = np.hstack([te.attention[:, keep], root_te])
        est = ParentProbe(alpha=alpha, random_state=seed).fit(X_tr, tr.gold_rows(h_tr), groups=tr.group)
        uas, _ = _uas(te, te.candidate[est.pick(X_te, te.group)], h_te)
        row["drop_uas"] = float(full_uas - uas)
