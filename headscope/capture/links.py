"""Each query row's strongest attention links, taken block by block during the capture: what the attention viewer
carries instead of whole maps, so that an 8k-token input stays a few megabytes.

``read_links`` runs one input per forward through ``capture.capture`` in query-row blocks sized from a memory
budget. For every layer, head and row it keeps the ``k`` strongest links to other units (words or tokens)
and, apart, the row's mass on special tokens and on itself. It can also keep whole word-level rows: all of them
for short sentences (the example maps of a report), or one word's (``headscope explain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import HeadscopeError
from ..types import Sentence

LEVELS = ("word", "token")
DEFAULT_K = 5
# Above this many tokens an input's links are kept at word level only (the token level doubles the page).
TOKEN_LEVEL_MAX = 2048


@dataclass
class Links:
    """One input's strongest links at one level (``"word"``: rows averaged over a word's pieces, columns summed,
    as the scorers see them; ``"token"``: the model's own rows and columns).

    ``labels`` are the units (the words, or the non-special tokens as the tokenizer writes them) and ``specials``
    the special tokens. ``index [layer, head, unit, k]`` holds the columns of each row's ``k`` strongest links
    to other units, strongest first (-1 where the row sees fewer), ``weight`` their attention, and
    ``special_mass [layer, head, unit]`` and ``self_mass`` the row's attention on special tokens and on itself,
    which the links leave out.
    """

    level: str
    labels: list
    specials: list
    index: Any
    weight: Any
    special_mass: Any
    self_mass: Any
    space_after: list = field(default_factory=list)   # word level: a space follows the word (for running text)
    word_of: list = field(default_factory=list)       # token level: each unit's word

    @property
    def k(self) -> int:
        return int(self.index.shape[-1])

    def top(self, layer: int, head: int, row: int) -> list[tuple[int, float]]:
        """``[(column, weight), ...]``: the row's links in one head, strongest first."""
        return [(int(c), float(w)) for c, w in zip(self.index[layer, head, row], self.weight[layer, head, row])
                if c >= 0]


class LinkCollector:
    """The links of one input (a batch of one), fed row block by row block for every layer."""

    def __init__(self, batch: Any, *, num_layers: int, num_heads: int, k: int, levels: Sequence[str],
                 keep_rows: Any = None) -> None:
        import numpy as np

        enc = batch.encoded[0]
        self.batch, self.k, self.levels = batch, k, tuple(levels)
        self.n_words = int(enc.n_words)
        self.word_ids = np.asarray(enc.word_ids)
        self.units = np.flatnonzero(self.word_ids >= 0)              # token positions of the token-level units
        self.unit_of = np.full(len(enc), -1, dtype=np.int64)
        self.unit_of[self.units] = np.arange(len(self.units))
        self.n_specials = int((self.word_ids < 0).sum())
        self.keep = keep_rows                                       # None, "all" or a set of word indices
        self.rows: dict[int, Any] = {}                              # layer -> [head, kept word, col]
        self.word_rows: Any = None
        self.layer = -1
        sizes = {"word": self.n_words, "token": len(self.units)}
        self.out = {level: (np.full((num_layers, num_heads, sizes[level], k), -1, dtype=np.int32),
                            np.zeros((num_layers, num_heads, sizes[level], k), dtype=np.float32),
                            np.zeros((num_layers, num_heads, sizes[level]), dtype=np.float32),
                            np.zeros((num_layers, num_heads, sizes[level]), dtype=np.float32))
                    for level in self.levels}
        self._unit_of_dev = None
        self._special_dev = None
        self.causal = bool(batch.causal)
        self.edges = distance_edges(len(enc))
        self.profile = np.zeros((num_layers, num_heads, len(self.edges) - 1), dtype=np.float64)
        self.profile_rows = 0

    def update(self, layer: int, weights: Any, batch: Any) -> None:
        """One block of query rows (``batch.row_start`` the first) of one layer: ``weights [1, head, rows, keys]``."""
        import torch

        from .alignment import WordRows

        r0 = batch.row_start
        if layer != self.layer or r0 == 0:
            self.layer, self.word_rows = layer, (WordRows(batch) if self._wants_words() else None)
        w = weights[0].float()                                    # [head, rows, keys]
        if self._unit_of_dev is None:
            self._unit_of_dev = torch.as_tensor(self.unit_of, device=w.device)
            self._special_dev = torch.as_tensor(self.word_ids < 0, device=w.device)
        self._distance(layer, w, r0)
        if "token" in self.levels:
            width = w.shape[-1]
            special = self._special_dev[:width]
            mass = w[..., special].sum(-1)
            cols = self._unit_of_dev[:width]
            own = torch.arange(r0, r0 + w.shape[1], device=w.device).clamp_max(width - 1)
            self._store("token", layer, w.masked_fill(special, -1.0), cols, mass,
                        self.unit_of[r0:r0 + w.shape[1]], own)
        if self.word_rows is not None:
            got = self.word_rows.feed(weights.float(), r0)
            if got is None:
                return
            rows, word, _ = got                                   # [1, head, R, col], [1, R]
            rows, word = rows[0], word[0].cpu().numpy()
            n = self.n_words
            self._keep_rows(layer, rows, word)
            if "word" in self.levels:
                mass = rows[..., self.batch.max_words:].sum(-1)
                own = torch.as_tensor(word, device=rows.device).clamp(0, n - 1)
                self._store("word", layer, rows[..., :n], None, mass, word, own)   # rows are not read after this

    def _distance(self, layer: int, w: Any, r0: int) -> None:
        """Add the block's attention mass per token-offset bin (``self.edges``; special-token keys left out,
        |offset| for an encoder) summed over its rows of units, from one cumulative sum over its keys."""
        import torch

        h, n, width = w.shape
        dev = w.device
        cs = w.cumsum(-1)                                         # cs[..., j]: mass on keys 0..j
        specials = [int(s) for s in torch.nonzero(self._special_dev[:width]).flatten().tolist()]
        pos = torch.arange(r0, r0 + n, device=dev).unsqueeze(1)   # [rows, 1]
        edges = torch.as_tensor(self.edges, device=dev)

        def before(j: Any) -> Any:                                # mass on the non-special keys < j: [h, rows, bins]
            j = j.clamp(0, width)
            got = torch.gather(cs, -1, (j - 1).clamp_min(0).unsqueeze(0).expand(h, -1, -1)) * (j > 0)
            for sp in specials:
                got = got - w[:, :, sp:sp + 1] * (j > sp)
            return got

        mass = before(pos - edges[:-1] + 1) - before(pos - edges[1:] + 1)          # keys left of the row (and it)
        if not self.causal:
            start = edges[:-1].clamp_min(1)
            mass = mass + before(pos + edges[1:]) - before(pos + start)             # keys right of it
        rows = self._unit_of_dev[r0:r0 + n] >= 0
        self.profile[layer] += (mass * rows.view(1, -1, 1)).sum(1).double().cpu().numpy()
        if layer == 0:
            self.profile_rows += int(rows.sum())

    def _keep_rows(self, layer: int, rows: Any, word: Any) -> None:
        """Whole word rows (words, then special tokens) of the words asked for."""
        import torch

        if self.keep is None:
            return
        keep = [(i, int(j)) for i, j in enumerate(word) if j >= 0 and (self.keep == "all" or j in self.keep)]
        if not keep:
            return
        n, first = self.n_words, self.batch.max_words
        picked = rows[:, [i for i, _ in keep]]                    # [head, kept, col]: only these rows are copied
        picked = torch.cat([picked[..., :n], picked[..., first:first + self.n_specials]], -1).cpu().numpy()
        store = self.rows.setdefault(layer, {})
        for m, (_, j) in enumerate(keep):
            store[j] = picked[:, m]

    def _wants_words(self) -> bool:
        return "word" in self.levels or self.keep is not None

    def _store(self, level: str, layer: int, scores: Any, cols: Any, mass: Any, unit_rows: Any, own: Any) -> None:
        """Top-k of ``scores [head, rows, cols]`` (special columns already below 0; changed in place) into the rows
        ``unit_rows`` (-1: not a unit; skipped), leaving out each row's own column ``own [rows]`` (its mass is kept
        apart); ``cols`` maps a column to its unit (None: columns are units)."""
        import numpy as np
        import torch

        unit_rows = np.asarray(unit_rows)
        take = np.flatnonzero(unit_rows >= 0)
        if not len(take):
            return
        own = own.view(1, -1, 1).expand(scores.shape[0], -1, 1)
        itself = scores.gather(-1, own)[..., 0].clamp_min(0)
        scores.scatter_(-1, own, -1.0)
        k = min(self.k, scores.shape[-1])
        weight, col = torch.topk(scores, k, dim=-1)               # [head, rows, k]
        if cols is not None:
            col = cols[col]
        col = torch.where(weight > 0, col, torch.full_like(col, -1))
        index, weights, specials, selves = self.out[level]
        rows = unit_rows[take]
        sel = torch.as_tensor(take, device=col.device)
        index[layer][:, rows, :k] = col.index_select(1, sel).cpu().numpy()
        weights[layer][:, rows, :k] = weight.clamp_min(0).index_select(1, sel).cpu().numpy()
        specials[layer][:, rows] = mass.index_select(1, sel).cpu().numpy()
        selves[layer][:, rows] = itself.index_select(1, sel).cpu().numpy()

    def links(self, sentence: Sentence, tokens: list[str], specials: list[str]) -> dict[str, Links]:
        out = {}
        for level, (index, weight, mass, selves) in self.out.items():
            if level == "word":
                labels = list(sentence.words)
                extra = {"space_after": list(sentence.space_after) if sentence.space_after else [True] * len(labels)}
            else:
                labels = [tokens[p] for p in self.units]
                extra = {"word_of": [int(self.word_ids[p]) for p in self.units]}
            out[level] = Links(level=level, labels=labels, specials=specials, index=index, weight=weight,
                               special_mass=mass, self_mass=selves, **extra)
        return out


def distance_edges(tokens: int) -> list[int]:
    """Token-offset bins of the distance profile: 0, 1, 2–3, 4–7, ... up to the input's length."""
    edges = [0, 1]
    while edges[-1] < tokens:
        edges.append(2 * edges[-1])
    return edges


def distance_labels(edges: Sequence[int]) -> list[str]:
    return [str(lo) if hi - lo == 1 else f"{lo}–{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]


def read_links(loaded: Any, sentences: Sequence[Sentence], *, k: int = DEFAULT_K, levels: Sequence[str] | None = None,
               keep_rows: Any = None, bos_id: int | None = None, attention_memory: float = 512,
               norm_rows: bool = False) -> list[dict]:
    """Every head's strongest links for each input, one input per forward, in query-row blocks.

    ``levels``: ``("word", "token")`` (default: both, word only above TOKEN_LEVEL_MAX tokens). ``keep_rows``:
    also keep whole word-level rows, ``"all"`` or a list per input of word-index sets. Returns one dict per
    input: ``sent_id``, ``words``, ``labels`` (words, then the special tokens, as the columns of kept rows),
    ``links`` ({level: Links}), ``distance`` (the distance profile: ``edges`` of token-offset bins and ``mass``
    ``[layer, head, bin]``, each row's attention on the non-special tokens at those offsets, averaged over
    rows; ``absolute``: an encoder's offsets count both ways), and ``rows`` ({word: float32 [layer, head,
    col]}) when rows were kept; with ``norm_rows``, ``norm_rows`` too: the same rows of the value-weighted
    view (``capture.norms``).
    """
    import numpy as np

    from .alignment import encode_sentences
    from .session import capture

    if k < 1:
        raise HeadscopeError(f"links per row must be 1 or more, got {k}")
    if norm_rows and keep_rows is None:
        raise HeadscopeError("norm_rows keeps the norm view of the rows asked for: give keep_rows too")
    info, tokenizer = loaded.info, loaded.tokenizer
    sentences = list(sentences)
    encoded = encode_sentences(tokenizer, sentences, bos_id=bos_id)
    for sent, enc in zip(sentences, encoded):
        if len(enc) > info.max_length:
            raise HeadscopeError(f"input {sent.sent_id or ''} has {len(enc)} tokens; the model reads at most "
                                 f"{info.max_length}")
    if levels is not None and (not levels or set(levels) - set(LEVELS)):
        raise HeadscopeError(f"levels must be among {', '.join(LEVELS)}, got {', '.join(levels) or 'none'}")
    collectors: dict[int, LinkCollector] = {}
    norm_collectors: dict[int, LinkCollector] = {}     # the same rows of the norm view (``norm_rows``)
    budget = attention_memory * 2 ** 20

    def start(batch: Any) -> None:
        enc = batch.encoded[0]
        want = levels or (LEVELS if len(enc) <= TOKEN_LEVEL_MAX else ("word",))
        keep = keep_rows if keep_rows is None or keep_rows == "all" else set(keep_rows[enc.index])
        collectors[enc.index] = LinkCollector(batch, num_layers=info.num_layers, num_heads=info.num_heads, k=k,
                                              levels=want, keep_rows=keep)
        if norm_rows:
            norm_collectors[enc.index] = LinkCollector(batch, num_layers=info.num_layers, num_heads=info.num_heads,
                                                       k=1, levels=(), keep_rows=keep)

    def rows(batch: Any) -> int | None:
        t = batch.input_ids.shape[1]
        n = max(1, int(budget // (4 * info.num_heads * t * 4)))     # scores, probabilities and the top-k's copies
        return None if n >= t else n

    def on_layer(layer: int, weights: Any, batch: Any) -> None:
        collectors[batch.encoded[0].index].update(layer, weights, batch)

    def on_norm(layer: int, shares: Any, batch: Any) -> None:
        norm_collectors[batch.encoded[0].index].update(layer, shares, batch)

    capture(loaded, sentences, encoded, on_layer, batch_size=1, on_batch_start=start, block_rows=rows,
            on_norm_layer=on_norm if norm_rows else None)
    out = []
    for i, (sent, enc) in enumerate(zip(sentences, encoded)):
        pieces = tokenizer.convert_ids_to_tokens(list(enc.input_ids))
        specials = [str(p) for p, w in zip(pieces, enc.word_ids) if w < 0]
        c = collectors[i]
        item = {"sent_id": sent.sent_id, "words": list(sent.words), "labels": list(sent.words) + specials,
                "links": c.links(sent, [str(p) for p in pieces], specials),
                "distance": {"edges": c.edges, "mass": (c.profile / max(1, c.profile_rows)).astype(np.float32),
                             "absolute": not c.causal}}
        if keep_rows is not None:
            item["rows"] = _kept(c, info.num_layers)
            if norm_rows:
                item["norm_rows"] = _kept(norm_collectors[i], info.num_layers)
        out.append(item)
    return out


def _kept(collector: LinkCollector, num_layers: int) -> dict:
    """``{word: float32 [layer, head, col]}``: the rows a collector kept."""
    import numpy as np

    return {j: np.stack([collector.rows[layer][j] for layer in range(num_layers)]).astype(np.float32)
            for j in sorted(collector.rows.get(0, {}))}


def word_maps(loaded: Any, sentences: Sequence[Sentence], *, bos_id: int | None = None) -> list[dict]:
    """Every head's word-level attention for each sentence, one sentence per forward.

    Returns dicts with ``sent_id``, ``words``, ``labels`` (the words, then the special tokens in
    input order, as the columns of the maps), ``attention`` (float32 ``[layer, head, col, col]``:
    rows averaged over a word's pieces, columns summed, as every scorer sees them) and ``links``
    (``links.read_links``: what the attention viewer shows).
    """
    import numpy as np

    out = []
    for item in read_links(loaded, sentences, keep_rows="all", bos_id=bos_id):
        rows = item.pop("rows")
        item["attention"] = np.stack([rows[j] for j in range(len(item["words"]))], axis=2)
        out.append(item)
    return out
