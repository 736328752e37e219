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

from ..errors import CaptureError, HeadscopeError
from ..types import Sentence
from . import scan

LEVELS = ("word", "token")
# Links and distances read long rows in segments of this many keys (a row's k strongest links lie in its k
# segments with the largest maxima; a row's mass left of a key is whole segments' sums and part of one).
SEGMENT = 64
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


class _Pieces:
    """Where each word's pieces are in one input (consecutive tokens): how a block of token rows and columns becomes
    word rows and columns."""

    def __init__(self, word_ids: Any) -> None:
        import numpy as np

        wid = np.asarray(word_ids, dtype=np.int64)
        tokens = np.flatnonzero(wid >= 0)
        words = wid[tokens]
        n = int(words.max()) + 1 if len(words) else 0
        self.word_of, self.count = wid, np.bincount(words, minlength=n)
        self.first = np.full(n, -1, dtype=np.int64)
        self.first[words[::-1]] = tokens[::-1]                      # each word's first piece
        if (self.first < 0).any() or ((tokens - self.first[words]) >= self.count[words]).any():
            raise CaptureError("a word's pieces are not consecutive tokens; word links need them to be")
        self.last = self.first + self.count - 1
        self.specials = np.flatnonzero(wid < 0)
        self._columns: dict[int, dict] = {}
        self._rows: dict[tuple, dict] = {}

    def columns(self, width: int) -> dict:
        """What a block whose keys end at ``width`` needs of the words it sees (the same for every layer, so made
        once): ``single``, a mask of the keys that are single-piece words; the multi-piece words (``words``, most
        pieces first) and ``index``, the keys that the gathered columns of their pieces read: every such word's
        first piece, then the second pieces of the first ``n`` of them, and so on (``ranks``: ``(column, n)``);
        ``col``, each word's column among them (-1: none)."""
        import numpy as np

        if width not in self._columns:
            first, count = self.first, self.count
            seen = first < width
            multi = np.flatnonzero(seen & (count > 1))
            pieces = np.minimum(count[multi], width - first[multi])     # the pieces this block sees
            order = np.argsort(-pieces, kind="stable")
            multi, pieces = multi[order], pieces[order]
            parts, ranks, at = [first[multi]], [], len(multi)
            for m in range(1, int(pieces.max(initial=1))):
                n = int((pieces > m).sum())
                parts.append(first[multi[:n]] + m)
                ranks.append((at, n))
                at += n
            col = np.full(len(first), -1, dtype=np.int64)
            col[multi] = np.arange(len(multi))
            single = np.zeros(width, dtype=bool)
            single[first[seen & (count == 1)]] = True
            self._columns[width] = {"index": np.concatenate(parts), "ranks": ranks, "words": multi, "col": col,
                                    "single": single, "pieces": pieces}
        return self._columns[width]

    def rows(self, r0: int, r1: int) -> dict:
        """How the token rows ``r0:r1`` become word rows, as rows of the block: ``rows`` are added to ``into``
        (every later piece to its word's first row here, its anchor), the ``words`` completed here and their
        ``anchors``, ``begun`` (the anchor of a word begun in an earlier block, or -1) and ``open`` (``(word,
        anchor)`` of a word that goes on into the next block, or None)."""
        import numpy as np

        if (r0, r1) not in self._rows:
            idx = np.flatnonzero(self.word_of[r0:r1] >= 0)
            wid = self.word_of[r0 + idx]
            anchor = np.maximum(self.first[wid], r0) - r0
            lead = idx == anchor
            words, anchors = wid[lead], idx[lead]
            done = self.last[words] < r1
            begun = anchors[self.first[words] < r0]
            still = np.flatnonzero(~done)
            self._rows[(r0, r1)] = {"into": anchor[~lead], "rows": idx[~lead], "words": words[done],
                                    "anchors": anchors[done], "begun": int(begun[0]) if len(begun) else -1,
                                    "open": (int(words[still[0]]), int(anchors[still[0]])) if len(still) else None}
        return self._rows[(r0, r1)]


class LinkCollector:
    """The links of one input (a batch of one), fed row block by row block for every layer.

    Word rows are pooled in the block itself: with ``scratch`` the blocks handed over may be overwritten (nothing
    reads them after ``update``), otherwise a block is copied first."""

    def __init__(self, batch: Any, *, num_layers: int, num_heads: int, k: int, levels: Sequence[str],
                 keep_rows: Any = None, scratch: bool = False) -> None:
        import numpy as np

        enc = batch.encoded[0]
        self.batch, self.k, self.levels, self.scratch = batch, k, tuple(levels), scratch
        self.n_words = int(enc.n_words)
        self.word_ids = np.asarray(enc.word_ids)
        self.pieces = _Pieces(self.word_ids)
        self.units = np.flatnonzero(self.word_ids >= 0)              # token positions of the token-level units
        self.unit_of = np.full(len(enc), -1, dtype=np.int64)
        self.unit_of[self.units] = np.arange(len(self.units))
        self.n_specials = int((self.word_ids < 0).sum())
        self.keep = keep_rows                                       # None, "all" or a set of word indices
        self.rows: dict[int, Any] = {}                              # layer -> {word: [head, col]}
        self.pending: Any = None                                    # a word cut by a block: its rows so far
        self.kept: dict[int, Any] = {}                              # kept words' rows summed so far
        self.layer = -1
        sizes = {"word": self.n_words, "token": len(self.units)}
        self.out = {level: (np.full((num_layers, num_heads, sizes[level], k), -1, dtype=np.int32),
                            np.zeros((num_layers, num_heads, sizes[level], k), dtype=np.float32),
                            np.zeros((num_layers, num_heads, sizes[level]), dtype=np.float32),
                            np.zeros((num_layers, num_heads, sizes[level]), dtype=np.float32))
                    for level in self.levels}
        self._dev: dict[Any, Any] = {}
        self.causal = bool(batch.causal)
        self.edges = distance_edges(len(enc))
        self.profile = np.zeros((num_layers, num_heads, len(self.edges) - 1), dtype=np.float64)
        self.profile_rows = 0

    def _on(self, name: Any, device: Any, source: Any = None) -> Any:
        """A per-input index array on the model's device (made once)."""
        import numpy as np
        import torch

        if name not in self._dev:
            if source is None:
                column = np.where(self.word_ids >= 0, self.word_ids, self.n_words + np.cumsum(self.word_ids < 0) - 1)
                source = {"unit_of": self.unit_of, "special": self.word_ids < 0, "specials": self.pieces.specials,
                          "column": column, "word_of": self.word_ids}[name]
            self._dev[name] = torch.as_tensor(source, device=device)
        return self._dev[name]

    def update(self, layer: int, weights: Any, batch: Any) -> None:
        """One block of query rows (``batch.row_start`` the first) of one layer: ``weights [1, head, rows, keys]``."""
        import torch

        r0 = batch.row_start
        if layer != self.layer or r0 == 0:
            self.layer, self.pending, self.kept = layer, None, {}
        w = weights[0]
        owned = w.dtype != torch.float32
        w = w.float()                                             # [head, rows, keys]
        fast = w.device.type == "cpu" and scan.available()   # one pass of a kernel, not one per torch operation
        if self.levels and fast:
            self._scan(layer, w, r0)
        elif self.levels:
            self._distance(layer, w, r0)
        if "token" in self.levels:
            width = w.shape[-1]
            special = self._on("special", w.device)[:width]
            mass = w[..., special].sum(-1)
            cols = self._on("unit_of", w.device)[:width]
            own = torch.arange(r0, r0 + w.shape[1], device=w.device).clamp_max(width - 1)
            self._store("token", layer, w.masked_fill(special, -1.0), cols, mass,
                        self.unit_of[r0:r0 + w.shape[1]], own)
        if self.keep is not None:
            self._keep_rows(layer, w, r0)
        if "word" in self.levels and not fast:
            if not (self.scratch or owned) or not w.is_contiguous():
                w = w.clone(memory_format=torch.contiguous_format)
            self._word_level(layer, w, r0)

    def _scan(self, layer: int, w: Any, r0: int) -> None:
        """The distance profile and the word level (``_distance``, ``_word_level``) in one pass of the CPU kernel
        (``scan.read_block``): every word with rows in the block adds them to the profile; the words completed
        here get their links; a word that goes on into the next block keeps its rows so far."""
        import numpy as np

        x = w.contiguous().numpy()
        r1 = r0 + x.shape[1]
        if "keys" not in self._dev:
            self._dev["keys"] = scan.Keys(self.word_ids, self.edges)
        keys = self._dev["keys"]
        wid = self.word_ids[r0:r1]
        words = np.unique(wid[wid >= 0])
        done = keys.last[words] < r1
        pending, pending_word = (None, -1) if self.pending is None else self.pending
        got = scan.read_block(x, r0, keys, words, done, pending, pending_word, self.causal,
                              self.k if "word" in self.levels else 1)
        self.profile[layer] += got["distance"]
        if layer == 0:
            self.profile_rows += int((wid >= 0).sum())
        self.pending = None
        if not done.all():                            # a word cut by the block's end: its rows so far
            word = int(words[~done][0])
            rows = x[:, keys.first[word] - r0 if keys.first[word] >= r0 else 0:].sum(1)
            if pending_word == word:
                rows[:, : pending.shape[1]] += pending
            self.pending = (rows, word)
        if "word" not in self.levels:
            return
        words = words[done]
        count = self.pieces.count[words].astype(np.float64)
        out_index, out_weight, masses, selves = self.out["word"]
        out_index[layer][:, words] = got["index"][:, done]
        out_weight[layer][:, words] = got["weight"][:, done] / count[None, :, None]
        masses[layer][:, words] = got["special"][:, done] / count
        selves[layer][:, words] = got["own"][:, done] / count

    def _pool_rows(self, x: Any, mass: Any, r0: int) -> dict:
        """Sum each word's pieces' rows of the block ``x [head, rows, keys]`` (and of ``mass [head, rows]``) into its
        first row here (in place), with those of earlier blocks; returns the rows' plan (``_Pieces.rows``)."""
        plan = self.pieces.rows(r0, r0 + x.shape[1])
        dev = x.device
        if plan["begun"] >= 0 and self.pending is not None:
            row, m = self.pending
            x[:, plan["begun"], : row.shape[-1]] += row
            mass[:, plan["begun"]] += m
        if len(plan["rows"]):
            key = (r0, x.shape[1])
            into, rows = self._on(("into",) + key, dev, plan["into"]), self._on(("rows",) + key, dev, plan["rows"])
            # one scatter, not index_add_: along rows it adds one row at a time, a parallel region each
            x.scatter_add_(1, into.view(1, -1, 1).expand(x.shape[0], -1, x.shape[-1]), x[:, rows])
            mass.scatter_add_(1, into.view(1, -1).expand(x.shape[0], -1), mass[:, rows])
        if plan["open"] is not None:
            a = plan["open"][1]
            self.pending = (x[:, a].clone(), mass[:, a].clone())
        return plan

    def _word_level(self, layer: int, x: Any, r0: int) -> None:
        """Each completed word's strongest links to other words, its mass on special tokens and on itself, from the
        block ``x [head, rows, keys]`` (overwritten): a word's row is the mean of its pieces' rows, a column the sum
        of its pieces' columns, as the scorers see them."""
        import torch

        h, r, width = x.shape
        dev = x.device
        specials = self._on("specials", dev)
        specials = specials[: int((specials < width).sum())]
        mass = x[..., specials].sum(-1) if len(specials) else x.new_zeros((h, r))     # [head, rows]
        plan = self._pool_rows(x, mass, r0)
        words = plan["words"]
        if not len(words):
            return
        if len(specials):
            x.index_fill_(-1, specials, 0.0)                     # no links to special tokens
        cols = self.pieces.columns(width)
        multi = None
        if len(cols["words"]):                                    # multi-piece words' columns: their pieces summed
            multi = torch.gather(x, -1, self._on(("multi", width), dev, cols["index"]).expand(h, r, -1))
            for at, n in cols["ranks"]:
                multi[..., :n] += multi[..., at:at + n]
        anchors = self._on(("anchors", r0, r), dev, plan["anchors"])
        count = torch.as_tensor(self.pieces.count[words], dtype=x.dtype, device=dev)
        itself = self._own(x, multi, cols, plan)
        weight, word = _top_words(x, multi, anchors, self.k, self._on(("single", width), dev, cols["single"]),
                                  self._on("word_of", dev), self._on(("words", width), dev, cols["words"]),
                                  len(cols["words"]))
        index, weights, masses, selves = self.out["word"]
        k = weight.shape[-1]
        index[layer][:, words, :k] = torch.where(weight > 0, word, torch.full_like(word, -1)).cpu().numpy()
        weights[layer][:, words, :k] = (weight.clamp_min(0) / count.view(1, -1, 1)).cpu().numpy()
        masses[layer][:, words] = (mass[:, anchors] / count).cpu().numpy()
        selves[layer][:, words] = (itself.clamp_min(0) / count).cpu().numpy()

    def _own(self, x: Any, multi: Any, cols: dict, plan: dict) -> Any:
        """Each completed word's (summed) weight on itself, ``[head, words]``; then its own columns are set below 0,
        so that its links go to other words."""
        import numpy as np
        import torch

        dev, width = x.device, x.shape[-1]
        words, anchors = plan["words"], plan["anchors"]
        first, count = self.pieces.first[words], self.pieces.count[words]
        is_multi = cols["col"][words] >= 0
        itself = x.new_empty((x.shape[0], len(words)))
        one = np.flatnonzero(~is_multi)
        if len(one):
            at = torch.as_tensor(one, device=dev)
            itself[:, at] = x[:, torch.as_tensor(anchors[one], device=dev), torch.as_tensor(first[one], device=dev)]
        many = np.flatnonzero(is_multi)
        if len(many):
            a, c = torch.as_tensor(anchors[many], device=dev), torch.as_tensor(cols["col"][words[many]], device=dev)
            itself[:, torch.as_tensor(many, device=dev)] = multi[:, a, c]
            multi[:, a, c] = -1.0
        seen = np.minimum(count, width - first)                  # every own piece the block sees
        rows = np.repeat(anchors, seen)
        keys = np.repeat(first, seen) + np.arange(int(seen.sum())) - np.repeat(np.cumsum(seen) - seen, seen)
        x[:, torch.as_tensor(rows, device=dev), torch.as_tensor(keys, device=dev)] = -1.0
        return itself

    def _keep_rows(self, layer: int, x: Any, r0: int) -> None:
        """Whole word rows (words, then special tokens) of the words asked for: their pieces' rows, columns summed
        per word, added up until the word's last piece and then averaged. With ``"all"``, the special tokens' rows
        too (each one token), under ``n_words + i`` for the ``i``-th special token."""
        import numpy as np
        import torch

        h, r, width = x.shape
        wid = self.word_ids[r0:r0 + r]
        keep = np.ones(r, dtype=bool) if self.keep == "all" else (wid >= 0) & np.isin(wid, list(self.keep))
        pos = np.flatnonzero(keep)
        if not len(pos):
            return
        dev = x.device
        rows = x[:, torch.as_tensor(pos, device=dev)]                              # [head, pieces, keys]
        column = self._on("column", dev)[:width].expand(h, len(pos), -1)
        pooled = rows.new_zeros((h, len(pos), self.n_words + self.n_specials)).scatter_add_(-1, column, rows)
        store = self.rows.setdefault(layer, {})
        special = np.flatnonzero(wid[pos] < 0)
        if len(special):
            nth = np.cumsum(self.word_ids < 0) - 1                               # each token's rank among specials
            for at, row in zip(special.tolist(), pooled[:, torch.as_tensor(special, device=dev)].unbind(1)):
                store[self.n_words + int(nth[r0 + pos[at]])] = row.cpu().numpy()
        for j in np.unique(wid[pos][wid[pos] >= 0]).tolist():
            at = np.flatnonzero(wid[pos] == j)
            total = pooled[:, at[0]:at[-1] + 1].sum(1) + self.kept.pop(j, 0)
            if self.pieces.last[j] < r0 + r:
                store[j] = (total / int(self.pieces.count[j])).cpu().numpy()
            else:
                self.kept[j] = total

    def _distance(self, layer: int, w: Any, r0: int) -> None:
        """Add the block's attention mass per token-offset bin (``self.edges``; special-token keys left out,
        |offset| for an encoder) summed over its rows of units, from sums over segments of its keys."""
        import torch

        h, n, width = w.shape
        geo = self._geometry(r0, n, width, w.device)
        g = width // SEGMENT
        got = w.new_zeros((h, n, geo["full"].shape[1]))                          # [head, rows, position]
        if g:
            whole = w[..., : g * SEGMENT].unflatten(-1, (g, SEGMENT))            # [head, rows, segment, SEGMENT]
            got += (whole[:, geo["row"], geo["seg"]] * geo["part"]).sum(-1)     # part of the position's segment
            got += whole.sum(-1).cumsum(-1).gather(-1, geo["full"].expand(h, -1, -1)) * geo["has_full"]
        if width > g * SEGMENT:                                                  # keys after the last segment
            tail = w[..., g * SEGMENT:].cumsum(-1)
            got += tail.gather(-1, geo["tail"].expand(h, -1, -1)) * geo["has_tail"]
        got = torch.einsum("hrm,r->hm", got, geo["units"])
        for sp, before in geo["specials"]:
            got -= w[:, :, sp] @ before                                          # special keys left out
        self.profile[layer] += (got @ geo["bins"]).double().cpu().numpy()
        if layer == 0:
            self.profile_rows += int(geo["units"].sum())

    def _geometry(self, r0: int, n: int, width: int, device: Any) -> dict:
        """What ``_distance`` reads of the block of rows ``r0:r0+n`` with keys up to ``width`` (the same in every
        layer, so made once): each row's positions whose mass left of them makes the bins, in segments."""
        import numpy as np
        import torch

        key = ("geometry", r0, n, width)
        if key not in self._dev:
            pos, edges = np.arange(r0, r0 + n)[:, None], np.asarray(self.edges)
            at = [pos - edges + 1]                                    # keys left of the row (and it)
            if not self.causal:
                at += [pos + edges[1:], pos + np.maximum(edges[:-1], 1)]   # keys right of it
            at = np.clip(np.concatenate(at, 1), 0, width)             # [rows, position]
            e, g = len(edges), width // SEGMENT
            seg, lim = at // SEGMENT, at % SEGMENT
            b = np.arange(e - 1)                                      # bin b: the mass left of one position
            bins = np.zeros((at.shape[1], e - 1), dtype=np.float32)    # less that left of another
            bins[b, b], bins[b + 1, b] = 1, -1
            if not self.causal:
                bins[e + b, b], bins[2 * e - 1 + b, b] = 1, -1
            units = (self.unit_of[r0:r0 + n] >= 0).astype(np.float32)
            tail = (seg == g) & (lim > 0)
            got = {"row": np.arange(n)[:, None], "seg": np.minimum(seg, max(g - 1, 0)),
                   "part": np.arange(SEGMENT) < np.where(seg < g, lim, 0)[..., None],
                   "full": np.maximum(np.minimum(seg, g) - 1, 0), "has_full": (seg > 0).astype(np.float32),
                   "tail": np.maximum(lim - 1, 0) * tail, "has_tail": tail.astype(np.float32), "units": units,
                   "bins": bins}
            got = {name: torch.as_tensor(v, device=device) for name, v in got.items()}
            got["specials"] = [(int(sp), torch.as_tensor(units[:, None] * (at > sp), dtype=torch.float32,
                                                         device=device)) for sp in self.pieces.specials if sp < width]
            self._dev[key] = got
        return self._dev[key]

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


def _top_words(x: Any, multi: Any, rows: Any, k: int, single: Any, word_of: Any, multi_words: Any,
               n_multi: int) -> tuple[Any, Any]:
    """``(weight, word)`` ``[head, len(rows), k]``: the ``k`` strongest words of the rows ``rows`` of the block ``x
    [head, R, keys]`` (rows and multi-piece words' columns pooled; ``single`` marks the keys that are single-piece
    words) and of ``multi [head, R, >= n_multi]`` (the multi-piece words' columns), strongest first.

    The single-piece words are read from the ``k`` + 1 segments with the largest maxima (``_segments``; the other
    keys of a segment only raise its maximum); a row whose ``k``-th link is weaker than the largest maximum left
    out is read whole."""
    import torch

    width = x.shape[-1]
    values, seg, left = _segments(x, rows, k + 1, width, single)
    n = values.shape[-1]
    if n_multi:
        mv, mseg, _ = _segments(multi, rows, k, n_multi)
        values = torch.cat([values, mv], -1)
    weight, pick = torch.topk(values, min(k, values.shape[-1]), dim=-1)
    word = word_of[_columns(pick.clamp_max(n - 1), seg, width)]
    if n_multi:
        word = torch.where(pick < n, word, multi_words[_columns((pick - n).clamp_min(0), mseg, n_multi)])
    if left is not None:
        redo = torch.nonzero(weight[..., -1] < left)                                     # [(head, row)]
        if len(redo):
            more = (values[..., n:], mseg, multi_words, n_multi) if n_multi else None
            _reread(x, rows, redo, single, word_of, more, weight, word)
    return weight, word


def _reread(x: Any, rows: Any, redo: Any, single: Any, word_of: Any, multi: Any, weight: Any, word: Any) -> None:
    """The links of the ``redo`` ``[(head, row)]`` of ``_top_words`` read from their whole rows (into ``weight``
    and ``word``); ``multi``: the multi-piece words' candidates ``(values, segments, words, n)`` or None."""
    import torch

    width = x.shape[-1]
    hh, rr = redo[:, 0], redo[:, 1]
    whole = x[hh, rows[rr]]                                                              # [redo, keys]
    values = torch.where(single, whole, torch.full_like(whole, -2.0))
    if multi is not None:
        values = torch.cat([values, multi[0][hh, rr]], -1)
    w, pick = torch.topk(values, weight.shape[-1], dim=-1)
    weight[hh, rr] = w
    found = word_of[pick.clamp_max(width - 1)]
    if multi is not None:
        segments = None if multi[1] is None else multi[1][hh, rr]
        found = torch.where(pick < width, found, multi[2][_columns((pick - width).clamp_min(0), segments, multi[3])])
    word[hh, rr] = found


def _segments(x: Any, rows: Any, take: int, width: int, valid: Any = None) -> tuple[Any, Any, Any]:
    """The entries of the rows ``rows`` of ``x [head, R, >= width]`` (its first ``width`` columns) that may be among
    the largest: ``values [head, len(rows), m]``, those of the ``take`` segments of SEGMENT columns with the largest
    maxima (``segments [head, len(rows), take]``) and of the columns after the last whole segment, or of all columns
    for a short row (segments None), entries that ``valid`` (a mask of columns) leaves out set to -2; and the largest
    maximum left out ``[head, len(rows)]`` (None where none is). Every entry larger than that is among them."""
    import torch

    h, dev = x.shape[0], x.device
    g = width // SEGMENT
    if g <= take:
        values = x[:, rows, :width]
        return (values if valid is None else values.masked_fill(~valid[:width], -2.0)), None, None
    whole = x[..., : g * SEGMENT].unflatten(-1, (g, SEGMENT))                    # [head, R, segment, SEGMENT]
    top = torch.topk(whole.amax(-1)[:, rows], take + 1, dim=-1)
    seg = top.indices[..., :take]                                                 # [head, rows, take]
    values = whole[torch.arange(h, device=dev).view(-1, 1, 1), rows.view(1, -1, 1), seg]   # [.., take, SEGMENT]
    if valid is not None:
        values = values.masked_fill(~valid[: g * SEGMENT].view(g, SEGMENT)[seg], -2.0)
    values = values.flatten(-2)
    if width > g * SEGMENT:
        tail = x[:, rows, g * SEGMENT: width]
        values = torch.cat([values, tail if valid is None else tail.masked_fill(~valid[g * SEGMENT: width], -2.0)], -1)
    return values, seg, top.values[..., take]


def _columns(pick: Any, segments: Any, width: int) -> Any:
    """The columns of entries ``pick`` of ``_segments``' values (``segments`` None: they are the columns)."""
    import torch

    if segments is None:
        return pick
    n = segments.shape[-1] * SEGMENT
    at = segments.gather(-1, (pick // SEGMENT).clamp_max(segments.shape[-1] - 1)) * SEGMENT + pick % SEGMENT
    return torch.where(pick < n, at, width // SEGMENT * SEGMENT + pick - n)


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
    ``positions`` (each label's token position: a word's first piece), ``links`` ({level: Links}),
    ``distance`` (the distance profile: ``edges`` of token-offset bins and ``mass`` ``[layer, head, bin]``,
    each row's attention on the non-special tokens at those offsets, averaged over rows; ``absolute``: an
    encoder's offsets count both ways), and ``rows`` ({word: float32 [layer, head, col]}; with ``"all"``, the
    special tokens' rows too, after the words') when rows were kept; with ``norm_rows``, ``norm_rows`` too: the
    same rows of the value-weighted view (``capture.norms``).
    """
    import numpy as np

    from .alignment import encode_sentences
    from .session import capture, rows_per_block

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
                                 f"{info.max_length}: give a shorter text, or a model with a longer context "
                                 f"(model=, e.g. 'gemma3': 32768 tokens)")
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
                                              levels=want, keep_rows=keep, scratch=not norm_rows)
        if norm_rows:
            norm_collectors[enc.index] = LinkCollector(batch, num_layers=info.num_layers, num_heads=info.num_heads,
                                                       k=1, levels=(), keep_rows=keep)

    def rows(batch: Any) -> int | None:
        t = batch.input_ids.shape[1]
        # the block's probabilities (softmax in place), its word columns, and the norm view's shares if asked for
        return rows_per_block(t, info.num_heads * t * 4, budget, copies=3 if norm_rows else 2)

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
                "positions": [int(t) for t in c.pieces.first] + [int(t) for t in c.pieces.specials],
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
    input order, as the rows and columns of the maps), ``attention`` (float32 ``[layer, head, col, col]``:
    rows averaged over a word's pieces, columns summed, as every scorer sees them; a special token's row is
    its own), ``order`` (the labels' indices in input order: ``[CLS]`` first, ``[SEP]`` last) and ``links``
    (``links.read_links``: what the attention viewer shows).
    """
    import numpy as np

    out = []
    for item in read_links(loaded, sentences, keep_rows="all", bos_id=bos_id):
        rows = item.pop("rows")
        item["attention"] = np.stack([rows[j] for j in range(len(item["labels"]))], axis=2)
        item["order"] = [int(i) for i in np.argsort(item["positions"], kind="stable")]
        out.append(item)
    return out
