"""Per-head positional and surface patterns on tokens: masses, distance, entropy, confidence (METRICS §4)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from ..capture.alignment import Batch
from ..schema import frame
from . import rowscan
from .base import LayerView, Scorer
from .units import UnitStore

# (relation name, metric unit, description). The masses and distance are linear in the row (a weighted
# sum of its keys); entropy, entropy_norm and confidence come last.
FAR = (64, 256, 1024)   # long-range thresholds in tokens
PAIR_MEASURES = ("same_word", "induction_text")   # masses on keys paired with the query (see _batch_pairs)
CONTENT_UPOS = frozenset({"NOUN", "PROPN", "VERB", "ADJ", "ADV"})
METRICS = (
    ("self", "mass", "attention to the query token itself"),
    ("prev", "mass", "attention to the previous token (rows that have one)"),
    ("next", "mass", "attention to the next token (rows that have one)"),
    ("first", "mass", "attention to the first token ([CLS]/BOS)"),
    ("last", "mass", "attention to the last word (its final piece; never [SEP]/EOS, which `sep` measures)"),
    ("sep", "mass", "attention to [SEP]/EOS special tokens"),
    ("punct", "mass", "attention to pieces of punctuation words"),
    ("local", "mass", "attention within the local window |i-j| <= w"),
    ("distance", "tokens", "mean attention distance sum_j A[i,j] |i-j|"),
    *((f"beyond_{d}", "mass", f"attention to keys more than {d} tokens away (rows that can see one)") for d in FAR),
    ("other_sentences", "mass", "attention to other sentences of a document (rows that can see one)"),
    ("same_word", "mass", "attention to other occurrences of the query's lemma (the case-folded word where the "
                          "data has no lemma; earlier ones in a decoder; rows of non-punctuation words that have "
                          "one)"),
    ("induction_text", "mass", "attention to the token after an earlier occurrence of the query's token, "
                               "before the query (induction on the text itself; rows that have one)"),
    ("content", "mass", "attention to content words (UPOS NOUN, PROPN, VERB, ADJ, ADV; inputs with UPOS)"),
    ("sink", "mass", "the attention sink's share of the row (models with attention sinks, GPT-OSS)"),
    ("entropy", "nats", "row entropy"),
    ("entropy_norm", "ratio", "row entropy / log(number of visible keys), rows with >= 2 visible keys"),
    ("confidence", "max_weight", "Voita confidence: max_j A[i,j]"),
    # What a head writes from its sinks (Kobayashi et al. 2020): the share of ``sum_j A[i,j] ‖v_j W_O^h‖`` that
    # comes from the first token and from [SEP]/EOS. A sink that takes most of the weight but writes little
    # from there is a no-op. Only where the capture hands over the value norms (``batch.value_norms``).
    ("first_written", "share", "share of what the head writes (value-weighted) that comes from the first token"),
    ("sep_written", "share", "share of what the head writes (value-weighted) that comes from [SEP]/EOS"),
)
NAMES = [m[0] for m in METRICS]
LINEAR = NAMES.index("entropy")   # metrics before this one are linear in the row
WRITTEN = NAMES.index("first_written")   # this one and the next: from the value norms
POSITIONAL_SHARE = 0.9  # Voita et al.: argmax at one fixed offset in >= 90% of rows


def _segments(sentence: Any, word_ids: Any) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of the sentences joined in one input (``Sentence.sentence_starts``);
    special tokens before the first word belong to the first sentence, later ones to the one before."""
    starts = getattr(sentence, "sentence_starts", None)
    if not starts or len(starts) < 2:
        return []
    bounds = []
    k = 0
    for tok, w in enumerate(word_ids):
        while k < len(starts) and w >= starts[k]:
            bounds.append(tok if k else 0)
            k += 1
    return [(a, b) for a, b in zip(bounds, bounds[1:] + [len(word_ids)]) if b > a]


def _group_pairs(groups: Any, unit: Any, earlier: bool) -> tuple[Any, Any]:
    """(query, key) token pairs with the same group id (>= 0) and a different unit; with ``earlier``, the
    key's unit comes first. All groups at once with numpy: a batch of short sentences has thousands of
    small groups, a long document has groups of thousands."""
    import numpy as np

    order = np.argsort(groups, kind="stable")
    g = groups[order]
    order, g = order[g >= 0], g[g >= 0]
    empty = np.zeros(0, dtype=np.int64)
    if len(g) < 2:
        return empty, empty
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    if not (sizes >= 2).any():
        return empty, empty
    members = order                                    # tokens sorted by group
    size_of = np.repeat(sizes, sizes)                  # each sorted token's group size
    start_of = np.repeat(starts, sizes)
    many = size_of >= 2
    order, size_of, start_of = order[many], size_of[many], start_of[many]
    q = np.repeat(order, size_of)                      # each token once per member of its group
    first = np.cumsum(size_of) - size_of
    within = np.arange(len(q)) - np.repeat(first, size_of)
    k = members[np.repeat(start_of, size_of) + within]
    keep = unit[k] < unit[q] if earlier else unit[k] != unit[q]
    return q[keep], k[keep]


def _token_words(batch: Batch) -> tuple[Any, Any]:
    """On the host: each token's word ``[b, t]`` (-1 for special tokens and padding), and the index to read a
    per-word table ``[b, max_words + 1]`` at, whose last column is what those tokens read."""
    import numpy as np

    w = batch.max_words
    col = batch.col_of.cpu().numpy()
    word = np.where(col < w, col, -1)
    return word, np.where(word >= 0, word, w)


def _last_word_token(word: Any, lengths: Any, device: Any) -> Any:
    """``[b]``: each input's token that ends its last word (``word``: ``_token_words``); the last real token
    where an input has no word."""
    import numpy as np
    import torch

    pos = np.arange(word.shape[1])
    last = np.where(word >= 0, pos, -1).max(1) if word.shape[1] else np.full(len(word), -1)
    fallback = (lengths - 1).clamp_min(0).cpu().numpy()
    return torch.from_numpy(np.where(last >= 0, last, fallback)).to(device)


def _per_word(rows: Any, width: int, fill: Any, dtype: Any) -> Any:
    """``[len(rows), width]`` from per-word value lists (as many as fit), padded with ``fill``."""
    import numpy as np

    flat: list = []
    for r in rows:
        r = r[:width]
        flat += r
        flat += [fill] * (width - len(r))
    return np.array(flat, dtype=dtype).reshape(len(rows), width)


def _batch_pairs(batch: Batch, causal: bool, word: Any, at: Any) -> dict:
    """The batch's (input, query token, key token) pairs for ``same_word`` (a piece of another occurrence of
    the query's lemma, or its case-folded word where the data gives no lemma, punctuation left out; earlier
    occurrences only in a decoder) and for
    ``induction_text`` (the token after an earlier occurrence of the query's token id, before the query;
    special tokens left out), found for the whole batch at once. ``word``, ``at``: ``_token_words``."""
    import numpy as np

    b, t = batch.token_mask.shape
    forms: dict = {}
    of_word = _per_word([[forms.setdefault((i, (x if m == "_" else m).casefold()), len(forms))
                          for x, m in zip(s.words, s.lemmas or ("_",) * len(s.words))]
                         for i, s in enumerate(batch.sentences)], batch.max_words + 1, -1, np.int64)
    form = np.take_along_axis(of_word, at, 1)                   # specials and padding read the last column
    form[batch.punct_mask.cpu().numpy()] = -1                   # pieces of punctuation words take no part
    ids = np.where(word >= 0, batch.input_ids.cpu().numpy(), -1)
    flat_word = (word + np.arange(b)[:, None] * (t + 1)).reshape(-1)   # distinct across inputs
    q, k = _group_pairs(form.reshape(-1), flat_word, earlier=causal)
    out = {"same_word": (q // t, q % t, k % t)}
    vocab = int(ids.max()) + 1 if ids.size else 1
    groups = np.where(ids >= 0, ids + np.arange(b)[:, None] * vocab, -1).reshape(-1)
    q, j = _group_pairs(groups, np.arange(b * t), earlier=True)
    keep = j + 1 < q
    q, j = q[keep], j[keep]
    out["induction_text"] = (q // t, q % t, j % t + 1)
    return out


def _pair_tensors(found: tuple, device: Any) -> Any:
    """(input, query, key, ...) pairs as long tensors sorted by query, plus the sorted queries on the host;
    None when there are none."""
    import numpy as np
    import torch

    pq = found[1]
    if not len(pq):
        return None
    order = np.argsort(pq, kind="stable")
    # the sorted queries stay on the host too: a block finds its pairs there, with no device round trip
    return tuple(torch.from_numpy(np.ascontiguousarray(x[order])).to(device) for x in found) + (pq[order],)


@dataclass
class PositionalScorer(Scorer):
    """Row-averaged attention statistics per layer × head over real (non-padding) query tokens.

    Keys are the visible real tokens: all of them in an encoder, those up to the query in a decoder.
    Also histograms each row's argmax offset (j - i) in [-max_offset, max_offset] for the
    positional-head flag: a head is positional when one offset holds >= 90% of rows.
    Reads attention in blocks of query rows of any size: every statistic is one row's.
    """

    ACCUMULATORS = ("sums", "counts", "offsets")

    num_layers: int
    num_heads: int
    window: int = 3
    causal: bool = False
    max_offset: int = 8
    task: str = "positional"
    sums: Any = field(default=None, repr=False)    # [layer, head, metric]
    counts: Any = field(default=None, repr=False)  # [metric] rows counted (same for every head)
    offsets: Any = field(default=None, repr=False)  # [layer, head, 2*max_offset+2]; last bucket = further away
    keep_units: bool = True      # per-sentence sums, for bootstrap intervals over sentences
    sinks: bool = False          # the model has attention sinks: rows sum to 1 minus the sink's share
    _units: Any = field(default=None, repr=False)   # UnitStore: per-sentence sums [L, H, metric] and counts,
    #                                                 argmax-offset counts [L, H, 2*max_offset+1] and rows
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    # Query rows per chunk: temporaries stay [batch, head, ROWS, key] however long the input.
    ROWS = 512
    row_blocks = True        # reads query-row blocks (``batch.row_start``): every statistic here is per row
    wants_row_stats = True   # entropy and confidence come from the capture where it can
    wants_value_norms = True  # the sinks' written shares

    def __post_init__(self) -> None:
        import torch

        if self._units is None:
            self._units = UnitStore()
        if self.sums is None:
            self.sums = torch.zeros((self.num_layers, self.num_heads, len(NAMES)), dtype=torch.float64)
            self.counts = torch.zeros(len(NAMES), dtype=torch.float64)
            self.offsets = torch.zeros((self.num_layers, self.num_heads, 2 * self.max_offset + 2), dtype=torch.float64)

    def start_batch(self, batch: Batch) -> None:
        import torch

        tm = batch.token_mask                                        # [b, t]
        dev = tm.device
        for name in ("sums", "counts", "offsets"):
            setattr(self, name, getattr(self, name).to(dev))
        b, t = tm.shape
        pos = torch.arange(t, device=dev)
        lengths = batch.lengths.unsqueeze(1)                         # [b, 1]
        visible = (pos + 1).unsqueeze(0).expand_as(tm) if self.causal else lengths.expand_as(tm)
        real = tm.float()
        # keys: sep, punct, content, and a column of ones (the row's mass)
        import numpy as np

        has_upos = torch.tensor([s.upos is not None for s in batch.sentences], device=dev)
        segments = [_segments(s, e.word_ids) for s, e in zip(batch.sentences, batch.encoded)]
        punct_words = batch.punct_mask  # token level
        word, at = _token_words(batch)
        of_word = _per_word([[u in CONTENT_UPOS for u in s.upos] if s.upos is not None else [] for s in batch.sentences],
                            batch.max_words + 1, False, bool)
        content = torch.from_numpy(np.take_along_axis(of_word, at, 1)).to(dev)
        found = _batch_pairs(batch, self.causal, word, at)
        keys = torch.stack([batch.sep_mask.float(), punct_words.float(), content.float(), real], -1)  # [b, t, 4]
        masks = [real] * len(NAMES)
        masks[NAMES.index("prev")] = real * (pos >= 1)
        masks[NAMES.index("next")] = real * (pos.unsqueeze(0) < lengths - 1)
        masks[NAMES.index("entropy_norm")] = real * (visible >= 2)
        for d in FAR:
            far = pos > d if self.causal else (pos > d) | (pos.unsqueeze(0) < lengths - 1 - d)
            masks[NAMES.index(f"beyond_{d}")] = real * far
        other = torch.zeros((b, t), device=dev)
        for i, segs in enumerate(segments):
            if segs:
                first_end = segs[0][1]
                other[i, first_end if self.causal else 0:segs[-1][1]] = 1
        masks[NAMES.index("other_sentences")] = real * other
        pairs = {}
        # both measures' pairs in one list (a block reads them with one gather); column = which measure
        both = [(*found[name], np.full(len(found[name][1]), k)) for k, name in enumerate(PAIR_MEASURES)]
        pairs_both = _pair_tensors(tuple(np.concatenate(x) for x in zip(*both)), dev)
        for name in PAIR_MEASURES:
            pairs[name] = _pair_tensors(found[name], dev)
            rows = torch.zeros((b, t), device=dev)
            if pairs[name] is not None:
                rows[pairs[name][0], pairs[name][1]] = 1
            masks[NAMES.index(name)] = real * rows
        masks[NAMES.index("content")] = real * has_upos.unsqueeze(1).float()
        masks[NAMES.index("sink")] = real * float(self.sinks)
        row_w = torch.stack(masks, -1)                               # [b, t, metric]
        unit_counts = row_w.sum(1)                                   # [b, metric]
        counts = unit_counts.sum(0).double()                         # committed in end_batch
        log_visible = torch.log(visible.clamp_min(2).float())
        ent_w = torch.stack([real, masks[NAMES.index("entropy_norm")] / log_visible], -1)  # [b, t, 2]
        self._batch = {
            "keys": keys,
            "last": _last_word_token(word, lengths[:, 0], dev),  # [b]: the last word's final piece
            "entropy": ent_w,
            "real": real,
            "row_w": row_w[..., :LINEAR],
            "informative": masks[NAMES.index("entropy_norm")],
            "pos": pos,
            "segments": segments if any(segments) else None,
            "pairs": pairs,
            "pairs_both": pairs_both,
            "counts": counts,
            "unit": ([e.index for e in batch.encoded], unit_counts) if self.keep_units else None,
        }

    def update(self, view: LayerView) -> None:
        a = view.tokens                                              # [b, h, rows, w]: rows r0.. of the map
        t = view.batch.token_mask.shape[1]
        if view.batch.value_norms is not None:
            self._written(view, a)
        if view.batch.row_start == 0 and a.shape[2] == t and self._whole_weights() is not None:
            self._whole(view, a.float())
            return
        self._rows(view, a)

    # A whole map whose batch weights (``[b, t * t, metric]``) fit in this many bytes is scored by
    # ``_whole``: one product gives every linear measure's row-weighted sum at once.
    WHOLE_BYTES = 32 * 2 ** 20
    # The geometry of a long input's row blocks (``_geometry``: key columns, triangles) kept for the next
    # layers, at most this many bytes per batch.
    GEOMETRY_BYTES = 128 * 2 ** 20

    def _whole_weights(self) -> Any:
        """``[b, t * t, LINEAR]``: the weight of key j in row i for each linear measure, times the row's
        weight for that measure, so that one product of a whole map with it gives the batch's per-input
        sums. Made once per batch on first use (every layer reads the same), None when too large."""
        import torch

        g = self._batch
        if "whole" in g:
            return g["whole"]
        b, t = g["real"].shape
        if b * t * t * LINEAR * 4 > self.WHOLE_BYTES:
            g["whole"] = None
            return None
        dev = g["real"].device
        pos = g["pos"]
        d = pos.unsqueeze(1) - pos.unsqueeze(0)                     # [query, key]: i - j
        far = d.abs()
        w = torch.zeros((b, t, t, LINEAR), device=dev)
        col = NAMES.index
        for name, plane in (("self", d == 0), ("prev", d == 1), ("next", d == -1), ("local", far <= self.window),
                            *((f"beyond_{x}", far > x) for x in FAR)):
            w[..., col(name)] = plane.float()
        w[..., col("distance")] = far.float()
        w[:, :, 0, col("first")] = 1
        w[torch.arange(b, device=dev), :, g["last"], col("last")] = 1
        keys = g["keys"]                                              # [b, t, (sep, punct, content, ones)]
        for k, name in enumerate(("sep", "punct", "content")):
            w[..., col(name)] = keys[:, None, :, k]
        w[..., col("sink")] = -1                                      # sink = 1 - mass: the 1 is added back
        if g["segments"] is not None:
            seg = torch.full((b, t), -1, dtype=torch.long, device=dev)
            for i, segs in enumerate(g["segments"]):
                for k, (s0, s1) in enumerate(segs):
                    seg[i, s0:s1] = k
            has = (seg[:, :1] >= 0).unsqueeze(-1)
            w[..., col("other_sentences")] = ((seg.unsqueeze(2) != seg.unsqueeze(1)) & has).float()
        for name, pairs in g["pairs"].items():
            if pairs is not None:
                pb, pq, pk, _ = pairs
                w[pb, pq, pk, col(name)] = 1
        w *= g["row_w"].unsqueeze(2)                                 # [b, t, 1, metric]: row weights
        g["whole"] = w.view(b, t * t, LINEAR)
        g["sink_rows"] = g["row_w"][..., col("sink")].sum(1)        # [b]
        return g["whole"]

    def _bucket_weights(self, t: int, device: Any) -> Any:
        """``[t, t, 2]`` for ``_whole``'s argmax offset: key j of row i counts in column 0 when it lies left
        of the row's offset window, and with weight 2**-(j - i + max_offset) in column 1 inside it (a sum
        of distinct powers of two, exact in float32, whose leading bit names the first key)."""
        import torch

        cache = self.__dict__.setdefault("_bucket_cache", {})
        key = (t, str(device))
        if key not in cache:
            pos = torch.arange(t, device=device)
            k = pos.unsqueeze(0) - pos.unsqueeze(1) + self.max_offset   # [query, key]: j - i + max_offset
            inside = (k >= 0) & (k <= 2 * self.max_offset)
            cache[key] = torch.stack([(k < 0).float(), torch.where(inside, torch.exp2(-k.float()), 0.0)], -1)
        return cache[key]

    def _whole(self, view: LayerView, a: Any) -> None:
        """One layer's whole map: every linear measure's per-input sum from one product with the batch
        weights, and each row's argmax-offset bucket from where its largest weight first occurs."""
        import torch

        g = self._batch
        b, h, t, _ = a.shape
        facts = view.row_stats()
        lin = torch.bmm(a.reshape(b, h, t * t), g["whole"])          # [b, h, LINEAR]
        lin[..., NAMES.index("sink")] += g["sink_rows"].unsqueeze(1)
        # the first key of each row holding the row's largest weight: inside the offset window (the
        # leading bit of the powers of two it holds there) unless one left of the window holds it too
        top = torch.eq(a, facts.confidence.unsqueeze(-1), out=torch.empty_like(a))
        bits = torch.einsum("bhij,ijk->bhik", top, self._bucket_weights(t, a.device))
        first = 1 - torch.frexp(bits[..., 1]).exponent               # j - i + max_offset of the first
        further = (bits[..., 0] > 0) | (bits[..., 1] == 0)
        bucket = torch.where(further, torch.full_like(first, 2 * self.max_offset + 1), first).long()
        g.setdefault("layers", []).append(view.layer)
        g.setdefault("entropy_w", []).append(self._entropy_weights(view.batch.visible))
        g.setdefault("linear_sums", []).append(lin)
        g.setdefault("plogp", []).append(-facts.entropy)
        g.setdefault("conf", []).append(facts.confidence)
        g.setdefault("bucket", []).append(bucket)

    def _written(self, view: LayerView, a: Any) -> None:
        """Add this block's rows' written shares of the first token and of [SEP]/EOS (``first_written``,
        ``sep_written``) to its layer's sums: one product of the rows with the keys' value norms."""
        import torch

        g = self._batch
        r0, (n, w) = view.batch.row_start, a.shape[2:]
        norms = view.batch.value_norms[..., :w].float()             # [b, h, w]
        sep = g["keys"][:, :w, 0].unsqueeze(1)                       # [b, 1, w]
        parts = torch.matmul(a.float(), torch.stack([norms, norms * sep], -1))   # [b, h, n, 2]
        total, from_sep = parts.unbind(-1)
        from_first = a[..., 0].float() * norms[..., :1]
        shares = torch.stack([from_first, from_sep], -1) / torch.where(total > 0, total, 1.0).unsqueeze(-1)
        real = g["real"][:, r0:r0 + n]
        written = g.setdefault("written", {})
        got = torch.einsum("bhnk,bn->bhk", shares, real)
        written[view.layer] = written[view.layer] + got if view.layer in written else got

    def _rows(self, view: LayerView, a: Any) -> None:
        """Row statistics of one block (or whole map) of one layer, filed under its layer at the last block."""
        import torch

        g = self._batch
        b, h, q, _ = a.shape
        t = view.batch.token_mask.shape[1]
        r0 = view.batch.row_start
        if r0 == 0:
            dev = a.device
            g["rows"] = {"stats": torch.zeros((b, h, t, LINEAR), device=dev),
                         "plogp": torch.zeros((b, h, t), device=dev), "conf": torch.zeros((b, h, t), device=dev),
                         "bucket": torch.zeros((b, h, t), dtype=torch.long, device=dev),
                         "visible": None if view.batch.visible is None else torch.zeros((b, t), device=dev)}
        buf = g["rows"]
        facts = view.row_stats()
        rows = slice(r0, r0 + q)
        scanned = rowscan.usable(a)
        if scanned:    # the CPU: one kernel pass over the block
            buf["stats"][:, :, rows], buf["bucket"][:, :, rows] = self._scan(a, r0, facts.confidence)
        for c0 in range(0, q, self.ROWS) if not scanned else ():
            n = min(self.ROWS, q - c0)
            chunk = slice(r0 + c0, r0 + c0 + n)
            buf["stats"][:, :, chunk], buf["bucket"][:, :, chunk] = self._linear(
                a[:, :, c0:c0 + n], r0 + c0, facts.confidence[:, :, c0:c0 + n])
        buf["plogp"][:, :, rows] = -facts.entropy
        buf["conf"][:, :, rows] = facts.confidence
        if buf["visible"] is not None:
            buf["visible"][:, rows] = view.batch.visible.to(buf["visible"].dtype)
        if r0 + q < t:
            return  # more blocks of this layer to come
        # Everything is kept per layer and added to the totals in end_batch: row-level values are
        # reduced for all layers at once, and a batch cut short leaves the totals consistent.
        g.setdefault("layers", []).append(view.layer)
        g.setdefault("entropy_w", []).append(self._entropy_weights(buf["visible"]))
        g.setdefault("linear_sums", []).append(torch.einsum("bhtk,btk->bhk", buf["stats"], g["row_w"]))
        g.setdefault("plogp", []).append(buf["plogp"])
        g.setdefault("conf", []).append(buf["conf"])
        g.setdefault("bucket", []).append(buf["bucket"])
        del g["rows"]

    def _scan(self, a: Any, g0: int, confidence: Any) -> tuple[Any, Any]:
        """``_linear``'s statistics and buckets for a block on the CPU, from ``rowscan``'s one pass over it."""
        import torch

        g = self._batch
        if "scan_keys" not in g:
            g["scan_keys"] = rowscan.Keys(g["keys"], g["last"], g["segments"])
        got, bucket = rowscan.read(a, g0, g["scan_keys"], confidence, self.causal, self.window, self.max_offset, FAR)
        k = 9 + len(FAR) + 1                              # self .. other_sentences, as NAMES has them
        same, induction = self._pair_masses(a, g0).unbind(-1)
        stats = torch.cat([got[..., :k], torch.stack([same, induction, got[..., k], 1 - got[..., k + 1]], -1)], -1)
        return stats, bucket

    def _linear(self, a: Any, g0: int, confidence: Any) -> tuple[Any, Any]:
        """The linear metrics ``[b, h, n, LINEAR]`` of map rows ``g0..g0+n-1`` (``a``: their attention over
        keys ``0..w-1``; later keys get none), and each row's argmax-offset bucket (``offset + max_offset``,
        or ``2 * max_offset + 1`` further away). No ``[t, t]`` plane: the band of keys near the diagonal,
        one product with key columns, and triangles of at most ``n x n`` beside the diagonal."""
        import torch

        b, h, n, w = a.shape
        a = a.float()
        m = max(self.max_offset, self.window, 1)
        geo = self._geometry(g0, n, w, h, a.device)
        # band[..., r, m + k] = A[g0 + r, g0 + r + k] for |k| <= m, 0 outside the block's keys
        strip = a.new_zeros((b, h, n, n + 2 * m))
        lo, hi = max(0, g0 - m), min(w, g0 + n + m)
        if hi > lo:
            strip[..., lo - (g0 - m):hi - (g0 - m)] = a[..., lo:hi]
        sb, sh, sr, _ = strip.stride()
        band = strip.as_strided((b, h, n, 2 * m + 1), (sb, sh, sr + 1, 1))
        zeros = geo["zeros"]
        # one [b, h*n, w] x [b, w, columns] product
        sums = torch.matmul(a.reshape(b, h * n, w), geo["columns"]).view(b, h, n, -1)
        sep, punct, content, mass, rel_sum = (sums[..., k] for k in range(5))
        ri = geo["ri"]
        # distance: sum_j A (i - j) + 2 sum_{j > i} A (j - i); the second is 0 in a decoder
        distance = ri * mass - rel_sum
        if not self.causal:
            right_mass, right_rel = sums[..., 5], sums[..., 6]
            square = a[..., g0:min(w, g0 + n)]
            ahead = (square * geo["gap"]).sum(-1) + right_rel - ri * right_mass
            distance = distance + 2 * ahead
        far_mass = []
        for column, triangles in geo["far"]:
            if column is None:                 # no key of this block is more than d from any of its rows
                far_mass.append(zeros)
                continue
            beyond = sums[..., column]
            for lo, hi, keep in triangles:
                beyond = beyond + (a[..., lo:hi] * keep).sum(-1)
            far_mass.append(beyond)
        at_last = torch.gather(a, -1, geo["last"].expand(b, h, n, 1))[..., 0] * geo["last_ok"]
        local = band[..., m - self.window:m + self.window + 1].sum(-1)
        if geo["own"] is None:                 # one sentence per input: nothing outside it
            other = zeros
        else:                                  # mass outside the row's own sentence (the product's column)
            own_at, has = geo["own"]
            other = (mass - torch.gather(sums, -1, own_at.expand(b, h, n, 1))[..., 0]) * has
        same, induction = self._pair_masses(a, g0).unbind(-1)
        stats = torch.stack([band[..., m], band[..., m - 1], band[..., m + 1], a[..., 0], at_last, sep, punct, local,
                             distance, *far_mass, other, same, induction, content, 1 - mass], -1)
        return stats, self._offset_bucket(a, g0, band[..., m - self.max_offset:m + self.max_offset + 1], confidence)

    def _geometry(self, g0: int, n: int, w: int, h: int, device: Any) -> dict:
        """What the rows ``g0..g0+n-1`` over keys ``0..w-1`` need besides their weights, the same for every
        layer of a batch (a batch of whole maps makes it once): the key columns of the one product (sep,
        punct, content, ones, position relative to g0, then for encoders the keys right of the rows and
        their relative positions, then one column per long-range threshold that some key passes), the
        triangles beside the diagonal for each threshold, and the distance weights of the square."""
        import torch

        g = self._batch
        cache = g.setdefault("geometry", {})
        key = (g0, n, w, h)
        if key in cache:
            return cache[key]
        b = g["keys"].shape[0]
        pos = g["pos"][:w]
        rel = (pos - g0).float()
        ri = torch.arange(n, device=device, dtype=torch.float32)
        cols = [g["keys"][:, :w], rel.expand(b, w).unsqueeze(-1)]
        if not self.causal:
            right = (pos >= g0 + n).float()
            cols += [right.expand(b, w).unsqueeze(-1), (rel * right).expand(b, w).unsqueeze(-1)]
        rows = torch.arange(n, device=device).unsqueeze(1)

        def triangle(c0: int, below: bool) -> Any:  # keys c0 + c, 0 <= c < n, with c < row (below) or c >= row
            lo, hi = max(0, c0), min(w, c0 + n)
            if hi <= lo:
                return None
            c = torch.arange(lo - c0, hi - c0, device=device)
            return lo, hi, ((c < rows) if below else (c >= rows)).float()

        far = []
        for d in FAR:
            if w <= d + 1:
                far.append((None, ()))
                continue
            outside = pos < g0 - d            # keys that every row sees as further than d
            if not self.causal:
                outside = outside | (pos > g0 + n + d)
            cols.append(outside.float().expand(b, w).unsqueeze(-1))
            parts = [triangle(g0 - d, True)] + ([] if self.causal else [triangle(g0 + d + 1, False)])
            far.append((len(cols) + 2, tuple(p for p in parts if p is not None)))   # 4 key columns come first
        own = None
        if g["segments"] is not None:
            # one column per sentence that meets these rows (its keys), and each row's column; rows in no
            # sentence point at a column of zeros
            def meeting(segs: list) -> list:   # sentences are sorted: from the last one starting by g0
                lo = max(0, bisect.bisect_right(segs, g0, key=lambda x: x[0]) - 1)
                hi = bisect.bisect_left(segs, g0 + n, key=lambda x: x[0])
                return [(s0, s1) for s0, s1 in segs[lo:hi] if max(s0, g0) < min(s1, g0 + n) and s0 < w]

            meets = [meeting(segs) for segs in g["segments"]]
            k = max(map(len, meets))
            seg_cols = torch.zeros((b, w, k + 1), device=device)
            own_at = torch.full((b, 1, n, 1), k, dtype=torch.long)
            for i, segs in enumerate(meets):
                for c, (s0, s1) in enumerate(segs):
                    seg_cols[i, s0:min(s1, w), c] = 1
                    own_at[i, 0, max(s0, g0) - g0:min(s1, g0 + n) - g0] = c
            base = sum(c.shape[-1] for c in cols)
            cols.append(seg_cols)
            has = torch.tensor([bool(segs) for segs in g["segments"]], device=device).view(b, 1, 1).float()
            own = ((own_at + base).to(device), has)
        square = min(w, g0 + n) - g0
        last = g["last"].view(b, 1, 1, 1)
        geo = {"columns": torch.cat(cols, -1), "ri": ri, "far": far,
               "gap": (torch.arange(max(square, 0), device=device).unsqueeze(0) - ri.unsqueeze(1)).clamp_min(0),
               "last": last.clamp_max(w - 1), "last_ok": (last[..., 0] < w).float(),
               "zeros": torch.zeros((b, h, n), device=device), "own": own}
        # every layer walks the same blocks in order: keep the first blocks' geometry until the budget is
        # spent (a cache that forgot the oldest would forget each block just before the next layer needs it)
        size = sum(x.numel() * x.element_size() for x in (geo["columns"], geo["gap"], geo["zeros"]))
        if g.get("geometry_bytes", 0) + size <= self.GEOMETRY_BYTES:
            g["geometry_bytes"] = g.get("geometry_bytes", 0) + size
            cache[key] = geo
        return geo

    def _offset_bucket(self, a: Any, g0: int, band: Any, confidence: Any) -> Any:
        """Each row's argmax offset as a bucket: the first key holding the row's largest weight, when it is
        within max_offset of the query, else the "further away" bucket."""
        import torch

        b, h, n, w = a.shape
        mo = self.max_offset
        if g0 == 0 and n == w and n <= self.ROWS:   # a short whole map: one argmax pass costs less than the
            # band's parts; row blocks of long inputs take the band (argmax is ~4x amax on CPU)
            off = a.argmax(-1) - (g0 + torch.arange(n, device=a.device))   # first of equals
            return torch.where(off.abs() <= mo, off + mo, torch.full_like(off, 2 * mo + 1))
        best, at = band.max(-1)                                      # first of equals within the band
        # a key left of the band that holds the largest weight comes first: then the argmax is further away
        edge = g0 - mo                                               # keys < edge are left of every row's band
        left = a[..., :edge].amax(-1) if edge > 0 else a.new_zeros((b, h, n))
        lo, hi = max(0, edge), min(w, edge + n)
        if hi > lo:
            c = torch.arange(lo - edge, hi - edge, device=a.device)
            before = c < torch.arange(n, device=a.device).unsqueeze(1)
            left = torch.maximum(left, (a[..., lo:hi] * before).amax(-1))
        inside = (best == confidence) & (left < confidence)
        return torch.where(inside, at, torch.full_like(at, 2 * mo + 1))

    def _pair_masses(self, a: Any, g0: int) -> Any:
        """``[b, h, n, 2]``: mass on the keys that the batch's (query, key) pairs of each of PAIR_MEASURES
        give these rows."""
        import numpy as np

        b, h, n, w = a.shape
        pairs = self._batch["pairs_both"]
        if pairs is None:
            return a.new_zeros((b, h, n, 2))
        pb, pq, pk, which, host = pairs
        lo, hi = (int(x) for x in np.searchsorted(host, [g0, g0 + n]))
        pb, pq, pk, which = pb[lo:hi], pq[lo:hi] - g0, pk[lo:hi], which[lo:hi]
        # keys come before their queries (or anywhere in an encoder's full-width block): always inside
        # the block's keys; the guard keeps it so without a boolean selection (a device round trip)
        vals = a[pb, :, pq, pk.clamp_max(w - 1)] * (pk < w).unsqueeze(1)
        out = a.new_zeros((b * n * 2, h))
        out.index_add_(0, (pb * n + pq) * 2 + which, vals)
        return out.view(b, n, 2, h).permute(0, 3, 1, 2)

    def _entropy_weights(self, visible: Any) -> Any:
        """[b, t, 2] row weights for entropy and normalised entropy. ``visible``: this layer's visible keys
        per row from the model's mask (a sliding window sees fewer than the causal rule says), else the
        batch's rule (all real keys in an encoder, those up to the query in a decoder)."""
        import torch

        g = self._batch
        if visible is None:
            return g["entropy"]
        seen = g.get("entropy_of")
        if seen is not None and seen[0] is visible:    # the layers of one mask share their counts
            return seen[1]
        vis = visible.to(g["real"].device).float()
        # rows counted stay those of the batch's rule; only the log(number of visible keys) follows the mask
        weights = torch.stack([g["real"], g["informative"] / torch.log(vis.clamp_min(2))], -1)
        g["entropy_of"] = (visible, weights)
        return weights

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if not g.get("layers"):
            return
        layers = g.pop("layers")
        written = g.pop("written", None)
        if written is None or set(written) != set(layers):   # no value norms: these measures count no rows
            written = None
            g["counts"][WRITTEN:] = 0
            if g.get("unit") is not None:
                g["unit"][1][:, WRITTEN:] = 0
        self.counts += g["counts"]
        linear = torch.stack(g.pop("linear_sums"), 1)               # [b, layer, h, linear]
        plogp = torch.stack(g.pop("plogp"), 1)                       # [b, layer, h, t]
        conf = torch.stack(g.pop("conf"), 1)
        bucket = torch.stack(g.pop("bucket"), 1)                     # [b, layer, h, t]
        b, n_layers, h, t = bucket.shape
        entropy = -torch.einsum("blht,bltk->blhk", plogp, torch.stack(g.pop("entropy_w"), 1))  # [b, layer, h, 2]
        confidence = torch.einsum("blht,bt->blh", conf, g["real"])
        written = (torch.stack([written[layer] for layer in layers], 1) if written is not None    # [b, layer, h, 2]
                   else linear.new_zeros(linear.shape[:3] + (2,)))
        per = torch.cat([linear, entropy, confidence.unsqueeze(-1), written], -1)   # [b, layer, h, metric]
        self.sums[layers] += per.sum(0).double()
        m = self.max_offset
        # One histogram per sentence, layer and head (the per-sentence counts serve the intervals).
        bucket = bucket + (2 * m + 2) * torch.arange(b * n_layers * h, device=bucket.device).view(b, n_layers, h, 1)
        # Rows with a single visible key (a decoder's first token) say nothing about position.
        weights = g["informative"].view(b, 1, 1, t).expand_as(bucket)
        hist = torch.zeros(b * n_layers * h * (2 * m + 2), device=bucket.device)
        hist.scatter_add_(0, bucket.reshape(-1), weights.reshape(-1))
        hist = hist.view(b, n_layers, h, 2 * m + 2)
        self.offsets[layers] += hist.sum(0).double()
        unit = g.get("unit")
        if unit is not None and layers == list(range(self.num_layers)):
            index, unit_counts = unit
            per_np, counts_np = per.float().cpu().numpy(), unit_counts.float().cpu().numpy()
            # Offset counts without the "further away" bucket, which is never a head's modal offset. A
            # sentence has at most t rows at one offset: the narrowest dtype that holds t (the store
            # widens the field if a later batch needs more).
            small = torch.uint8 if t < 2 ** 8 else torch.int16 if t < 2 ** 15 else torch.int32
            self._units.put(index, sums=per_np, counts=counts_np,
                            offsets=hist[..., :-1].round().to(small).cpu().numpy(),
                            offset_rows=g["informative"].sum(1).round().to(torch.int32).cpu().numpy())
            self._ci = None

    def merge(self, other: "PositionalScorer") -> "PositionalScorer":
        out = PositionalScorer(self.num_layers, self.num_heads, self.window, self.causal, self.max_offset,
                               sinks=self.sinks)
        out.sums = self.sums.cpu() + other.sums.cpu()
        out.counts = self.counts.cpu() + other.counts.cpu()
        out.offsets = self.offsets.cpu() + other.offsets.cpu()
        out.keep_units = self.keep_units and other.keep_units
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sentences for every row-averaged metric (kept for ``result``)."""
        import numpy as np

        from .stats import bootstrap_weights, ratio_intervals

        if not len(self._units):
            return
        sums = self._units.get("sums")                                 # [U, layer, head, metric]
        counts = self._units.get("counts")                             # [U, metric]
        U = len(sums)
        metric_of = np.broadcast_to(np.arange(sums.shape[-1]), sums.shape[1:]).reshape(-1)
        w = bootstrap_weights(U, n_boot, seed)
        _, lo, hi = ratio_intervals(sums.reshape(U, -1), counts, den_index=metric_of, weights=w, level=level)
        # argmax_offset share: rows at the head's modal offset (known only now, from the totals).
        best = self.offsets.cpu().numpy()[..., :-1].argmax(-1)               # [layer, head]
        offs = self._units.get("offsets")                               # [U, layer, head, offset]
        at = np.take_along_axis(offs, np.broadcast_to(best[None, ..., None], (U,) + best.shape + (1,)), -1)[..., 0]
        _, slo, shi = ratio_intervals(at.reshape(U, -1), self._units.get("offset_rows"), weights=w, level=level)
        self._ci = (lo.reshape(sums.shape[1:]), hi.reshape(sums.shape[1:]),
                    slo.reshape(best.shape), shi.reshape(best.shape))

    def result(self):
        sums = self.sums.cpu().numpy()
        counts = self.counts.cpu().numpy()
        offsets = self.offsets.cpu().numpy()
        m = self.max_offset
        rows = []
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                base = {"task": self.task, "layer": layer, "head": head}
                for k, (name, unit, _) in enumerate(METRICS):
                    if counts[k] > 0:
                        ci = ({"ci_low": self._ci[0][layer, head, k], "ci_high": self._ci[1][layer, head, k]}
                              if self._ci is not None else {})
                        rows.append({**base, "relation": name, "metric": unit, "score": sums[layer, head, k] / counts[k],
                                     "n": int(counts[k]), **ci})
                hist = offsets[layer, head]
                total = hist.sum()
                if total > 0:
                    best = int(hist[:-1].argmax())
                    ci = ({"ci_low": self._ci[2][layer, head], "ci_high": self._ci[3][layer, head]}
                          if self._ci is not None else {})
                    rows.append({**base, "relation": "argmax_offset", "metric": "share",
                                 "score": hist[best] / total, "n": int(total), **ci})
                    rows.append({**base, "relation": "argmax_offset", "metric": "offset",
                                 "score": float(best - m), "n": int(total)})
        return frame(rows)
