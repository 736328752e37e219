"""Coreference per head: antecedent selection accuracy by mention type, with three rule baselines (METRICS §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..capture.alignment import Batch
from ..schema import frame
from ..types import Document, Sentence
from .base import LayerView, Scorer, check_same_inputs
from .units import UnitStore
from .mentions import TYPES, MentionInfo, agree, mention_infos

BASELINES = ("nearest", "head_match", "rules")
GROUPS = ("all",) + TYPES
DIRECTION = "mention_to_antecedent"


@dataclass(frozen=True)
class Query:
    """One mention to resolve, in window coordinates (word offsets from the window's first word)."""

    head: int                        # the mention's head word: the attention row that is read
    start: int                       # candidates are the words before the mention
    antecedent_heads: tuple[int, ...]
    type: str
    baselines: tuple[bool, ...]      # whether each baseline (BASELINES order) picks a gold antecedent


@dataclass(frozen=True)
class CorefWindow:
    """A run of whole sentences of one document that fits the model, with its queries."""

    doc_id: str
    offset: int
    queries: tuple[Query, ...]
    document: int = -1               # the document's position in the input of make_windows (-1: unknown)


@dataclass
class WindowStats:
    documents: int = 0
    windows: int = 0
    mentions: int = 0
    with_antecedent: int = 0      # mentions with an earlier mention of their cluster in the document
    scored: int = 0
    dropped_out_of_window: int = 0  # every earlier mention of the cluster lies in an earlier window
    dropped_too_long: int = 0       # the mention's sentence alone is longer than the window
    dropped_crosses_window: int = 0  # the mention runs past the end of its window
    head_rules: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)
    table: list = field(default_factory=list)   # one record per mention, for mentions.csv


def _baselines(m: MentionInfo, earlier: list[MentionInfo], words_lower: tuple[str, ...]) -> tuple[bool, ...]:
    """Over the mentions that end before ``m`` starts: nearest earlier mention; nearest with the same
    head word; 4-sieve rules (exact string ->
    head word -> number/gender/person agreement -> nearest), each picking the nearest mention that
    passes the earliest sieve. Correct when the pick is in the mention's cluster."""
    ordered = sorted(earlier, key=lambda a: (a.start, a.end), reverse=True)  # nearest first
    head = words_lower[m.head]

    def first(pred):
        return next((a for a in ordered if pred(a)), None)

    nearest = ordered[0] if ordered else None
    head_match = first(lambda a: words_lower[a.head] == head)
    rules = (first(lambda a: a.text == m.text) or head_match or first(lambda a: agree(a, m)) or nearest)
    return tuple(p is not None and p.cluster == m.cluster for p in (nearest, head_match, rules))


def make_windows(documents: Sequence[Document], token_lengths: Sequence[Sequence[int]], max_tokens: int,
                 specials: int) -> tuple[list[Sentence], list[CorefWindow], WindowStats]:
    """Pack each document's sentences greedily into windows of at most ``max_tokens`` tokens.

    ``token_lengths[d][k]`` is the number of pieces of sentence k of document d without special
    tokens; ``specials`` is how many special tokens the tokenizer adds to one input. A mention is
    scored when an earlier mention of its cluster lies inside its window; the others are counted.
    """
    stats = WindowStats(documents=len(documents))
    sentences: list[Sentence] = []
    windows: list[CorefWindow] = []
    for d, (doc, lengths) in enumerate(zip(documents, token_lengths)):
        groups, too_long = _pack(lengths, max_tokens, specials)
        starts = doc.sentence_starts()
        per_window = _window_queries(doc, groups, too_long, starts, stats)
        for g, ks in enumerate(groups):
            lo = starts[ks[0]]
            words = tuple(w for k in ks for w in doc.sentences[k].words)
            sentences.append(Sentence(words=words, sent_id=f"{doc.doc_id}#w{g}", source=doc.source))
            windows.append(CorefWindow(doc.doc_id, lo, tuple(per_window[g]), d))
    stats.windows = len(windows)
    return sentences, windows, stats


def _pack(lengths: Sequence[int], max_tokens: int, specials: int) -> tuple[list[list[int]], set[int]]:
    """Sentence indices packed greedily into groups of at most ``max_tokens`` tokens (with ``specials``), and
    the sentences too long for a window of their own (they end the group before them and join none)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = specials
    too_long: set[int] = set()
    for k, n in enumerate(lengths):
        if n + specials > max_tokens:
            too_long.add(k)
            if current:
                groups.append(current)
            current, used = [], specials
            continue
        if current and used + n > max_tokens:
            groups.append(current)
            current, used = [], specials
        current.append(k)
        used += n
    if current:
        groups.append(current)
    return groups, too_long


def _window_queries(doc: Document, groups: list[list[int]], too_long: set[int], starts: Sequence[int],
                    stats: WindowStats) -> dict[int, list[Query]]:
    """Each window's queries (by window index): the document's mentions that have an earlier mention of their
    cluster inside their window. Counts every mention in ``stats``, and records each in ``stats.table`` with
    its status (scored, or why not)."""
    infos = mention_infos(doc)
    words_lower = tuple(w.lower() for w in doc.words)
    sent_of = []
    for k, s in enumerate(doc.sentences):
        sent_of += [k] * len(s.words)
    window_of = {k: g for g, ks in enumerate(groups) for k in ks}
    stats.mentions += len(infos)
    for info in infos:
        stats.head_rules[info.head_rule] = stats.head_rules.get(info.head_rule, 0) + 1
        stats.types[info.type] = stats.types.get(info.type, 0) + 1
    per_window: dict[int, list[Query]] = {g: [] for g in range(len(groups))}
    for m in infos:
        record = {"doc_id": doc.doc_id, "start": m.start, "end": m.end, "cluster": m.cluster,
                  "text": " ".join(doc.words[m.start:m.end + 1]), "head": doc.words[m.head],
                  "head_rule": m.head_rule, "type": m.type, "status": "first_mention"}
        stats.table.append(record)
        # Antecedents end before the mention starts: a mention that contains this one is not one.
        earlier = [a for a in infos if a.cluster == m.cluster and a.end < m.start]
        if not earlier:
            continue
        stats.with_antecedent += 1
        k = sent_of[m.start]
        if k in too_long:
            stats.dropped_too_long += 1
            record["status"] = "dropped_sentence_too_long"
            continue
        g = window_of[k]
        lo = starts[groups[g][0]]
        hi = starts[groups[g][-1]] + len(doc.sentences[groups[g][-1]].words)
        if not (lo <= m.end < hi):
            stats.dropped_crosses_window += 1
            record["status"] = "dropped_mention_crosses_window"
            continue
        inside = [a for a in earlier if a.start >= lo]
        if not inside:
            stats.dropped_out_of_window += 1
            record["status"] = "dropped_antecedent_outside_window"
            continue
        candidates = [a for a in infos if lo <= a.start and a.end < m.start]
        per_window[g].append(Query(m.head - lo, m.start - lo, tuple(sorted({a.head - lo for a in inside})),
                                   m.type, _baselines(m, candidates, words_lower)))
        record["status"] = "scored"
        stats.scored += 1
    return per_window


@dataclass
class CorefScorer(Scorer):
    """Per head: does the mention's head word attend most, among the words before the mention,
    to the head word of one of its antecedents (within the window)? By mention type."""

    ACCUMULATORS = ("correct", "total", "baseline_correct")

    num_layers: int
    num_heads: int
    windows: list[CorefWindow]
    stats: WindowStats | None = None
    task: str = "coref"
    correct: Any = field(default=None, repr=False)    # [layer, head, group]
    total: Any = field(default=None, repr=False)      # [group]
    baseline_correct: Any = field(default=None, repr=False)  # [baseline, group]
    keep_units: bool = True      # per-document counts, for bootstrap intervals over documents
    _units: Any = field(default=None, repr=False)   # UnitStore: per-document correct [L, H, group], total, baselines
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if self._units is None:
            self._units = UnitStore()
        # Window -> document (the unit of the intervals, METRICS §7): consecutive windows of one document.
        doc_of, prev = [], None
        for w in self.windows:
            key = (w.document, w.doc_id)
            doc_of.append(doc_of[-1] + (key != prev) if doc_of else 0)
            prev = key
        self._doc_of = doc_of
        if self.correct is None:
            self.correct = np.zeros((self.num_layers, self.num_heads, len(GROUPS)))
            self.total = np.zeros(len(GROUPS))
            self.baseline_correct = np.zeros((len(BASELINES), len(GROUPS)))

    def start_batch(self, batch: Batch) -> None:
        import numpy as np
        import torch

        rows, heads, limits, gold, groups, docs = [], [], [], [], [], []
        w = batch.max_words
        total = np.zeros(len(GROUPS))
        base = np.zeros((len(BASELINES), len(GROUPS)))
        for i, enc in enumerate(batch.encoded):
            for q in self.windows[enc.index].queries:
                rows.append(i)
                docs.append(self._doc_of[enc.index])
                heads.append(q.head)
                limits.append(q.start)
                mask = np.zeros(w, dtype=bool)
                mask[list(q.antecedent_heads)] = True
                gold.append(mask)
                g = GROUPS.index(q.type)
                groups.append(g)
                for k in (0, g):
                    total[k] += 1
                    base[:, k] += q.baselines
        self._batch = {"pending": (total, base)}
        if not rows:
            return
        dev = batch.word_mask.device
        onehot = np.zeros((len(rows), len(GROUPS)), dtype=np.float32)
        onehot[:, 0] = 1.0
        onehot[np.arange(len(rows)), groups] = 1.0
        if self.keep_units:
            # Per document of the batch: queries -> documents, and the documents' totals and baseline hits.
            unit_ids, of_query = np.unique(np.asarray(docs), return_inverse=True)
            to_unit = np.zeros((len(rows), len(unit_ids)), dtype=np.float32)
            to_unit[np.arange(len(rows)), of_query] = 1.0
            base_q = np.array([q.baselines for i, enc in enumerate(batch.encoded)
                               for q in self.windows[enc.index].queries], dtype=np.float32)   # [m, baseline]
            self._batch["unit"] = (unit_ids, torch.from_numpy(to_unit).to(dev), to_unit.T @ onehot,
                                   np.einsum("mu,mb,mg->ubg", to_unit, base_q, onehot))
        self._batch.update({
            "rows": torch.tensor(rows, device=dev), "heads": torch.tensor(heads, device=dev),
            "excluded": 2.0 * (torch.arange(w, device=dev).unsqueeze(0)
                               >= torch.tensor(limits, device=dev).unsqueeze(1)).float(),  # [m, w]
            "gold": torch.from_numpy(np.stack(gold)).to(dev), "onehot": torch.from_numpy(onehot).to(dev),
            "layers": [], "maps": [],
        })

    row_blocks = True  # reads query-row blocks: only the mention heads' word rows are needed

    def update(self, view: LayerView) -> None:
        from ..capture.alignment import WordRows

        g = self._batch
        if "rows" not in g:
            return
        batch = view.batch
        w = batch.max_words
        t = batch.token_mask.shape[1]
        if batch.row_start == 0 and view.tokens.shape[2] == t:     # a whole map
            g["layers"].append(view.layer)
            g["maps"].append(view.words[g["rows"], :, g["heads"], :w])   # [m, head, w]: each mention head's row
            return
        if batch.row_start == 0:
            g["block"] = (WordRows(batch), view.tokens.new_zeros((len(g["rows"]), view.tokens.shape[1], w)))
        assembler, maps = g["block"]
        got = assembler.feed(view.tokens, batch.row_start)
        if got is not None:
            rows, word, lo = got
            at = g["heads"] - lo
            here = (at >= 0) & (at < word.shape[1])
            here &= word[g["rows"], at.clamp(0, word.shape[1] - 1)] >= 0
            if bool(here.any()):
                maps[here] = rows[g["rows"][here], :, at[here], :w]
        if batch.row_start + view.tokens.shape[2] >= t:
            g["layers"].append(view.layer)
            g["maps"].append(maps)
            del g["block"]

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if "pending" not in g:
            return
        total, base = g.pop("pending")
        self.total += total
        self.baseline_correct += base
        if not g.get("maps"):
            return
        rows = torch.stack(g.pop("maps"))                            # [layer, m, head, w]
        pred = (rows - g["excluded"][None, :, None, :]).argmax(-1)   # [layer, m, head]
        hit = torch.gather(g["gold"].unsqueeze(0).unsqueeze(2).expand(*pred.shape, -1), -1,
                           pred.unsqueeze(-1)).squeeze(-1)
        counts = torch.einsum("lmh,mg->lhg", hit.float(), g["onehot"]).double().cpu().numpy()
        self.correct[g["layers"]] += counts
        unit = g.pop("unit", None)
        if unit is not None and sorted(g["layers"]) == list(range(self.num_layers)):
            import numpy as np

            unit_ids, to_unit, unit_total, unit_base = unit
            order = torch.as_tensor(np.argsort(g["layers"]), device=hit.device)
            per = torch.einsum("lmh,mg,mu->ulhg", hit.float(), g["onehot"], to_unit)[:, order]  # [u, layer, head, g]
            self._units.add(unit_ids, correct=per.round().to(torch.int32).cpu().numpy(),
                            total=unit_total.round().astype(np.int32), baselines=unit_base.round().astype(np.int32))
            self._ci = None

    def merge(self, other: "CorefScorer") -> "CorefScorer":
        """The scorer of both shards of one job (the same windows, each scored by one of them)."""
        check_same_inputs(self.windows, other.windows, "windows")
        out = CorefScorer(self.num_layers, self.num_heads, self.windows, self.stats,
                          keep_units=self.keep_units and other.keep_units)
        out.correct = self.correct + other.correct
        out.total = self.total + other.total
        out.baseline_correct = self.baseline_correct + other.baseline_correct
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over documents for every head and baseline by mention group (kept for
        ``result``), and each head's paired p-value against the best baseline of its group."""
        import numpy as np

        from .stats import bootstrap_weights, paired_pvalue, ratio_intervals

        if not self.keep_units or not len(self._units):
            return
        correct = self._units.get("correct")                          # [U, layer, head, group]
        total = self._units.get("total")                              # [U, group]
        base = self._units.get("baselines")                           # [U, baseline, group]
        U, L, H, G = correct.shape
        w = bootstrap_weights(U, n_boot, seed)
        group_of = np.broadcast_to(np.arange(G), (L, H, G)).reshape(-1)
        num = correct.reshape(U, -1)
        _, lo, hi = ratio_intervals(num, total, den_index=group_of, weights=w, level=level)
        _, blo, bhi = ratio_intervals(base.reshape(U, -1), total, den_index=np.tile(np.arange(G), len(BASELINES)),
                                      weights=w, level=level)
        best = base.sum(0).argmax(0)                                  # [group]: best baseline by point estimate
        ref = np.broadcast_to(base[:, best, np.arange(G)][:, None, None, :], correct.shape).reshape(U, -1)
        p = np.full(num.shape[1], np.nan)
        has = total.sum(0)[group_of] > 0                              # groups with no mention have no test
        p[has] = paired_pvalue(num[:, has], ref[:, has], total, den_index=group_of[has], weights=w)
        self._ci = {"heads": (lo.reshape(L, H, G), hi.reshape(L, H, G)), "p": p.reshape(L, H, G),
                    "baselines": (blo.reshape(len(BASELINES), G), bhi.reshape(len(BASELINES), G)), "units": U}

    def summary(self) -> dict:
        if self.stats is None:
            return {}
        s = self.stats
        return {"documents": s.documents, "windows": s.windows, "mentions": s.mentions,
                "mentions_with_antecedent": s.with_antecedent, "mentions_scored": s.scored,
                "dropped_antecedent_outside_window": s.dropped_out_of_window,
                "dropped_sentence_longer_than_window": s.dropped_too_long,
                "dropped_mention_crosses_window": s.dropped_crosses_window,
                "mention_head_rule": dict(s.head_rules), "mention_types": dict(s.types)}

    def tables(self) -> dict:
        """Extra tables for the report folder: every mention with its head word, rule, type and status."""
        import pandas as pd

        return {"mentions": pd.DataFrame(self.stats.table)} if self.stats is not None and self.stats.table else {}

    def result(self):
        ci = self._ci
        nan = float("nan")
        rows = []
        for k, group in enumerate(GROUPS):
            n = int(self.total[k])
            if n == 0:
                continue
            base = {"task": self.task, "relation": group, "direction": DIRECTION, "metric": "accuracy", "n": n}
            for j, name in enumerate(BASELINES):
                rows.append({**base, "baseline": name, "score": self.baseline_correct[j, k] / n,
                             "ci_low": ci["baselines"][0][j, k] if ci else nan,
                             "ci_high": ci["baselines"][1][j, k] if ci else nan})
            for layer in range(self.num_layers):
                for head in range(self.num_heads):
                    at = (layer, head, k)
                    rows.append({**base, "layer": layer, "head": head, "score": self.correct[at] / n,
                                 "ci_low": ci["heads"][0][at] if ci else nan,
                                 "ci_high": ci["heads"][1][at] if ci else nan, "p_value": ci["p"][at] if ci else nan})
        return frame(rows)
