"""Per-head dependency-relation accuracy in both directions, with fixed-offset baselines and each head's own
positional prediction (METRICS §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..capture.alignment import Batch, pool_words
from ..schema import OWN, frame
from .base import LayerView, Scorer
from .units import UnitStore

DIRECTIONS = ("dep_to_head", "head_to_dep")
OFFSETS = (-3, -2, -1, 1, 2, 3)
ALL = "all"
# A head's positional habit is kept as how often its most-attended word lies at each offset -NEAR..NEAR from
# the query, and further left or right (one bin each side).
NEAR = 32
BINS = 2 * NEAR + 3


def gold_tensors(batch: Batch, relations: dict[str, int]) -> tuple[Any, Any]:
    """Gold heads ``[batch, word]`` (-1 for root and padding) and relation ids (-1 when not scored)."""
    import numpy as np
    import torch

    b, w = batch.size, batch.max_words
    heads = np.full((b, w), -1, dtype=np.int64)
    rels = np.full((b, w), -1, dtype=np.int64)
    for i, s in enumerate(batch.sentences):
        if not s.has_tree:
            continue
        n = len(s.words)
        heads[i, :n] = s.heads
        rels[i, :n] = [relations.get(r, -1) for r in s.relations]
    rels[heads < 0] = -1
    dev = batch.word_mask.device
    return torch.from_numpy(heads).to(dev), torch.from_numpy(rels).to(dev)


def gold_is_first_max(lowered: Any, own: Any, at: Any, dim: int, where: Any) -> Any:
    """``(A.max(dim)[1] == at) & where``, read as ``own > max of the rest``: one ``amax`` instead of ``max``
    with indices, a third of its cost on CPU. ``lowered``: ``A`` ``[b, h, w, w]`` with the excluded
    candidates lowered by 2 and the gold entry by 4, below every other; ``own``: the gold entry of ``A``
    ``[b, h, w]``; ``at``: the gold index ``[b, w]`` (dim -1: the key of each row, dim -2: the query of
    each column). Lines where another candidate ties with the gold one take the first index of the
    maximum, as ``max`` does."""
    import torch

    rest = lowered.amax(dim)
    hit = (own > rest) & where
    tie = (own == rest) & where
    if bool(tie.any()):
        bi, hi, line = tie.nonzero(as_tuple=True)              # the rows (dim -1) or columns (-2) tied
        values = lowered[bi, hi, line] if dim == -1 else lowered[bi, hi, :, line]     # [n, w]
        first_other = (values == own[bi, hi, line].unsqueeze(-1)).to(torch.uint8).argmax(-1)
        hit[bi, hi, line] = first_other > at[bi, line]         # the gold index comes first
    return hit


def habit_shares(habit: Any) -> Any:
    """Each head's positional habit as shares: ``habit`` ``[layer, head, BINS, rel+1]`` (counts by the query
    word's relation, the last column for words of no scored relation) -> shares ``[layer, head, BINS, rel+all]``,
    where column r leaves out the rows of relation r (the habit that predicts r is learnt on the other words)
    and the last column (``all``) keeps every row."""
    import numpy as np

    habit = np.asarray(habit, dtype=np.float64)
    total = habit.sum(-1, keepdims=True)
    out = total - habit
    out[..., -1] = total[..., 0]
    norm = out.sum(2, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def own_probabilities(shares: Any, instances: Any) -> tuple[Any, Any]:
    """The chance that each head's habit alone lands on each instance's gold word, ``[dir, head, n]`` for the
    instance's relation (the habit without that relation's rows) and for ``all``.

    ``shares``: one layer's ``habit_shares`` ``[head, BINS, rel+all]``; ``instances``: int ``[n, 5]`` rows of
    (unit, relation, word d, its head h, words in the sentence). dep_to_head's query is d and its key h;
    head_to_dep's query is h and its key d. The habit's shares are renormalised over the offsets the query
    can reach in its sentence (the words other than itself), and a far bin's share is spread evenly over
    the offsets beyond ``NEAR`` that the query can reach."""
    import numpy as np

    rel, d, h, n = (instances[:, c].astype(np.int64) for c in (1, 2, 3, 4))
    last = shares.shape[-1] - 1
    cum = np.concatenate([np.zeros(shares.shape[:1] + (1,) + shares.shape[2:]), shares.cumsum(1)], 1)
    out = []
    for query, key in ((d, h), (h, d)):
        offset, lo, hi = key - query, -query, n - 1 - query
        width = np.where(offset < -NEAR, -NEAR - lo, np.where(offset > NEAR, hi - NEAR, 1)).clip(min=1)
        at, first, end = (np.clip(x, -NEAR - 1, NEAR + 1) + NEAR + 1 for x in (offset, lo, hi))
        per = []
        for col in (rel, np.full_like(rel, last)):
            z = cum[:, end + 1, col] - cum[:, first, col]                       # [head, n]
            p = shares[:, at, col] / width
            per.append(np.divide(p, z, out=np.zeros_like(p), where=z > 0))
        out.append(per)
    return (np.stack([out[0][0], out[1][0]]), np.stack([out[0][1], out[1][1]]))


@dataclass
class SyntaxScorer(Scorer):
    """Counts, per layer × head × direction × relation, how often the most-attended word is the gold head.

    ``dep_to_head``: pred(d) = argmax_{j≠d} A[d, j]; ``head_to_dep``: pred(d) = argmax_{j≠d} A[j, d].
    Only word columns compete (special tokens are cropped, not renormalised). In a decoder only
    visible positions compete and an instance counts as reachable only if its head is visible: by the
    causal rule, and in a layer whose own mask hides more (a sliding window) by that mask, so
    ``n_reachable`` is per layer.
    """

    ACCUMULATORS = ("correct", "total", "reachable", "offset_correct", "habit")

    num_layers: int
    num_heads: int
    relations: list[str]
    causal: bool = False
    task: str = "syntax"
    correct: Any = field(default=None, repr=False)    # [layer, dir, head, rel+all]
    total: Any = field(default=None, repr=False)      # [rel+all]
    reachable: Any = field(default=None, repr=False)  # [layer, dir, rel+all]
    offset_correct: Any = field(default=None, repr=False)  # [dir, offset, rel+all]
    # How often each head's most-attended word (dep_to_head's prediction) lies at each offset bin from the query
    # word, by the query word's relation (the last column: words with no scored relation)
    habit: Any = field(default=None, repr=False)           # [layer, head, BINS, rel+1]
    _instances: list = field(default_factory=list, repr=False)   # int32 [n, 5]: unit, rel, word, its head, words
    keep_units: bool = True      # per-sentence counts, for bootstrap intervals over sentences
    _units: Any = field(default=None, repr=False)   # UnitStore: per-sentence correct, total, offsets
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        self.relations = list(self.relations)
        if self._units is None:
            self._units = UnitStore()
        self._index = {r: i for i, r in enumerate(self.relations)}
        r = len(self.relations) + 1
        if self.correct is None:
            self.correct = torch.zeros((self.num_layers, 2, self.num_heads, r), dtype=torch.float64)
            self.total = torch.zeros(r, dtype=torch.float64)
            self.reachable = torch.zeros((self.num_layers, 2, r), dtype=torch.float64)
            self.offset_correct = torch.zeros((2, len(OFFSETS), r), dtype=torch.float64)
            self.habit = torch.zeros((self.num_layers, self.num_heads, BINS, r), dtype=torch.float64)

    def start_batch(self, batch: Batch) -> None:
        import torch

        dev = batch.word_mask.device
        for name in self.ACCUMULATORS:
            setattr(self, name, getattr(self, name).to(dev))
        heads, rels = gold_tensors(batch, self._index)
        w = batch.max_words
        valid = rels >= 0                                             # [b, w] scored dependents
        n_rel = len(self.relations)
        onehot = torch.zeros((batch.size, w, n_rel + 1), device=dev)
        onehot.scatter_(2, rels.clamp_min(0).unsqueeze(-1), 1.0)
        onehot *= valid.unsqueeze(-1)
        onehot[..., n_rel] = valid.float()                            # the "all" column
        pos = torch.arange(w, device=dev)
        eye = torch.eye(w, dtype=torch.bool, device=dev)
        key_ok = batch.word_mask.unsqueeze(1)                         # [b, 1, w]
        later = pos.unsqueeze(0) > pos.unsqueeze(1)                   # [w, w]: key j after query d
        # d2h ranks the keys j of row d, h2d the queries j of column d: both leave out filler words, the
        # word itself and, in a decoder, keys after their query. On the map A[query, key] that is one
        # mask for both (a filler row or column is never scored in the other direction).
        excluded = ~key_ok | ~key_ok.transpose(1, 2) | eye
        reach_d2h = valid.clone()
        reach_h2d = valid.clone()
        if self.causal:
            excluded = excluded | later             # A[d, j] with j > d, and A[j, d] with j < d: invisible
            reach_d2h &= heads < pos
            reach_h2d &= heads > pos
        # Attention is in [0, 1], so subtracting 2 where a candidate is excluded takes it out of the
        # maximum without a masked copy. dep_to_head takes each row's argmax (the habit counts its offsets);
        # head_to_dep also subtracts 4 at the gold entry A[head, d], which leaves the maximum of the others
        # (``gold_is_first_max``): an ``amax`` over queries costs a third of an ``argmax`` there.
        at = heads.clamp_min(0)
        gold = torch.zeros((batch.size, w, w), device=dev)
        gold.scatter_(2, at.unsqueeze(-1), 4.0)                       # [b, d, head(d)]
        lower = 2.0 * excluded.float()
        self._batch = {
            "heads": heads, "onehot": onehot, "reach": (reach_d2h, reach_h2d),
            "excluded": lower.unsqueeze(1), "lower": (lower + gold.transpose(1, 2)).unsqueeze(1),
        }
        # Batch totals are committed in end_batch with the heads' counts, so that a batch cut short
        # (Ctrl-C) leaves every accumulator consistent.
        offsets = torch.tensor(OFFSETS, device=dev)
        hit = ((heads.unsqueeze(-1) - pos.view(1, -1, 1)) == offsets) & valid.unsqueeze(-1)  # [b, w, offset]
        by_offset = torch.einsum("bwk,bwr->kr", hit.float(), onehot).double()
        reachable, offset_correct = torch.zeros_like(self.reachable[0]), torch.zeros_like(self.offset_correct)
        for k, reach in enumerate((reach_d2h, reach_h2d)):
            reachable[k] = torch.einsum("bw,bwr->r", reach.float(), onehot).double()
            # In a decoder dep_to_head can only look left (k < 0) and head_to_dep only right.
            allowed = torch.ones(len(OFFSETS), dtype=torch.bool, device=dev) if not self.causal else (
                offsets < 0 if k == 0 else offsets > 0)
            offset_correct[k] = by_offset * allowed.unsqueeze(-1)
        self._batch["pending"] = (onehot.sum((0, 1)).double(), reachable, offset_correct,
                                  self._batch_instances(batch, heads, rels))
        # The habit's rows: real words that have some other word to attend to (in a decoder, an earlier one)
        n_words = batch.n_words.to(dev).unsqueeze(1)
        rows = batch.word_mask & ((pos > 0) if self.causal else (n_words > 1))
        self._batch["habit_rows"] = (rows, torch.where(rels >= 0, rels, torch.full_like(rels, n_rel)))
        if self.keep_units:
            self._batch["unit"] = ([e.index for e in batch.encoded], onehot.sum(1),
                                   torch.einsum("bwk,bwr->bkr", hit.float(), onehot))

    @staticmethod
    def _batch_instances(batch: Batch, heads: Any, rels: Any) -> Any:
        """int32 ``[n, 5]``: each scored dependent of the batch as (unit, relation, word, its head, words in its
        sentence), what ``own_prediction`` applies each head's habit to."""
        import numpy as np

        heads, rels = heads.cpu().numpy(), rels.cpu().numpy()
        b, d = np.nonzero(rels >= 0)
        units = np.array([e.index for e in batch.encoded], dtype=np.int64)
        n = batch.n_words.cpu().numpy()
        return np.stack([units[b], rels[b, d], d, heads[b, d], n[b]], 1).astype(np.int32)

    def _count_habit(self, layers: list, pred: Any) -> None:
        """Add the batch's dep_to_head predictions ``pred`` ``[b, layer*h, w]`` (of ``layers``) to ``habit``."""
        import torch

        rows, rowrel = self._batch["habit_rows"]
        b, lh, w = pred.shape
        h = self.num_heads
        r = self.habit.shape[-1]
        pos = torch.arange(w, device=pred.device)
        offset_bin = (pred - pos).clamp(-NEAR - 1, NEAR + 1) + NEAR + 1                # [b, lh, w]
        head_of = torch.arange(lh, device=pred.device).view(1, lh, 1)
        index = (head_of * BINS + offset_bin) * r + rowrel.unsqueeze(1)
        index = index[rows.unsqueeze(1).expand(b, lh, w)]
        counts = torch.bincount(index, minlength=lh * BINS * r).view(len(layers), h, BINS, r)
        self.habit[layers] += counts.to(self.habit.dtype)

    row_blocks = True  # reads query-row blocks: dep_to_head per word row, head_to_dep as a running column max

    def update(self, view: LayerView) -> None:
        g = self._batch
        w = view.batch.max_words
        t = view.batch.token_mask.shape[1]
        if view.batch.row_start == 0 and view.tokens.shape[2] == t:
            # A whole map: keep only the small word block; all layers of the batch are scored at once in
            # end_batch, which costs a sixth of the tensor operations of scoring layer by layer.
            g.setdefault("layers", []).append(view.layer)
            g.setdefault("words", []).append(view.words[:, :, :w, :w])
            own = self._mask_reach(view.batch) if view.batch.key_mask is not None else None
            if own is not None:
                g.setdefault("own_reach", {})[view.layer] = own
            return
        self._update_block(view)

    def _mask_reach(self, batch: Batch) -> tuple[Any, Any] | None:
        """(dep_to_head, head_to_dep) reach ``[b, w]`` under the layer's own mask of a whole map: the head
        word is visible from the dependent (or the dependent from the head) through some pair of their
        pieces, on top of the batch's rule; None when that is the rule's (padding only). Layers that share
        a mask share the answer."""
        import torch

        g = self._batch
        seen = g.get("mask_of")
        if seen is not None and seen[0] is batch.key_mask:
            return seen[1]
        w = batch.max_words
        vis = pool_words(batch.key_mask.unsqueeze(1).float(), batch)[:, 0, :w, :w] > 0   # [b, query, key]
        at = g["heads"].clamp_min(0)
        d2h = torch.gather(vis, 2, at.unsqueeze(-1))[..., 0]          # vis[d, head(d)]
        h2d = torch.gather(vis, 1, at.unsqueeze(1))[:, 0]             # vis[head(d), d]
        out = (g["reach"][0] & d2h, g["reach"][1] & h2d)
        if all(torch.equal(a, r) for a, r in zip(out, g["reach"])):
            out = None                                                # the mask hides nothing the rule shows
        g["mask_of"] = (batch.key_mask, out)
        return out

    def _mask_reach_block(self, batch: Batch, state: dict) -> None:
        """The layer's own mask, block by block: complete word rows of it give dep_to_head's reach of those
        rows and head_to_dep's reach of the dependents whose head they are."""
        import torch

        from ..capture.alignment import WordRows

        g = self._batch
        b, w = g["heads"].shape
        if batch.row_start == 0:
            state["mask"] = {"rows": WordRows(batch), "d2h": torch.zeros((b, w + 1), dtype=torch.bool,
                                                                          device=g["heads"].device),
                             "h2d": torch.zeros((b, w), dtype=torch.bool, device=g["heads"].device)}
        own = state["mask"]
        got = own["rows"].feed(batch.key_mask.unsqueeze(1).float(), batch.row_start)
        if got is None:
            return
        rows, word, lo = got
        vis = rows[:, 0, :, :w] > 0                                   # [b, R, w]: rows of words lo..lo+R-1
        heads = g["heads"]
        of_row = torch.gather(heads.clamp_min(0), 1, word.clamp_min(0))  # each row word's own head
        seen = torch.gather(vis, 2, of_row.unsqueeze(-1))[..., 0] & (word >= 0)
        own["d2h"].scatter_(1, torch.where(word >= 0, word, torch.full_like(word, w)), seen)
        n = vis.shape[1]
        inside = (heads >= lo) & (heads < lo + n)                     # dependents whose head's row is here
        own["h2d"] |= torch.gather(vis, 1, (heads - lo).clamp(0, n - 1).unsqueeze(1))[:, 0] & inside

    def _update_block(self, view: LayerView) -> None:
        """One block of query rows: its complete word rows give their dep_to_head predictions, and every
        word column's best attending word so far (head_to_dep) is kept; the last block scores the layer."""
        import torch

        from ..capture.alignment import WordRows

        g = self._batch
        batch = view.batch
        b, h = view.tokens.shape[:2]
        w = batch.max_words
        t = batch.token_mask.shape[1]
        if batch.row_start == 0:
            dev = view.tokens.device
            g["block"] = {"rows": WordRows(batch),
                          "d2h": torch.full((b, h, w + 1), -1, dtype=torch.long, device=dev),
                          "best": torch.full((b, h, w), -float("inf"), device=dev),
                          "h2d": torch.full((b, h, w), -1, dtype=torch.long, device=dev)}
        state = g["block"]
        if batch.key_mask is not None:
            self._mask_reach_block(batch, state)
        got = state["rows"].feed(view.tokens, batch.row_start)
        if got is not None:
            rows, word, _ = got                                       # [b, h, R, col], [b, R]
            scores = rows[..., :w]
            col = torch.arange(w, device=scores.device)
            real = batch.word_mask.unsqueeze(1)                       # [b, 1, w]: real word columns
            excluded = (col == word.unsqueeze(-1)) | ~real             # [b, R, w]
            if self.causal:
                excluded_d2h = excluded | (col > word.unsqueeze(-1))   # a dependent sees earlier words only
                excluded_h2d = excluded | (word.unsqueeze(-1) < col)   # word j attends to d only when d <= j
            else:
                excluded_d2h = excluded_h2d = excluded
            pred = (scores - 2.0 * excluded_d2h.unsqueeze(1).float()).max(-1)[1]        # [b, h, R]: first of equals
            slot = torch.where(word >= 0, word, torch.full_like(word, w)).unsqueeze(1).expand_as(pred)
            state["d2h"].scatter_(2, slot, pred)
            masked = scores - 2.0 * excluded_h2d.unsqueeze(1).float()
            masked = masked.masked_fill((word < 0).view(b, 1, -1, 1), -float("inf"))   # filler rows never win
            top, at = masked.max(2)                                     # [b, h, w]: first of equals
            better = top > state["best"]                                # strict: earlier rows win ties
            state["best"] = torch.where(better, top, state["best"])
            state["h2d"] = torch.where(better, torch.gather(word.unsqueeze(1).expand(b, h, -1), 2, at), state["h2d"])
        if batch.row_start + view.tokens.shape[2] < t:
            return
        heads = g["heads"].unsqueeze(1)
        reach = g["reach"]
        if "mask" in state:
            reach = (reach[0] & state["mask"]["d2h"][:, :w], reach[1] & state["mask"]["h2d"])
            g.setdefault("own_reach", {})[view.layer] = reach
        reach_d2h, reach_h2d = (r.unsqueeze(1) for r in reach)
        self._count_habit([view.layer], state["d2h"][..., :w])
        hits = torch.stack([(state["d2h"][..., :w] == heads) & reach_d2h, (state["h2d"] == heads) & reach_h2d], 1)
        g.setdefault("layers", []).append(view.layer)
        g.setdefault("hits", []).append(hits)                         # [b, dir, h, w]
        del g["block"]

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if "pending" not in g:
            return
        total, reachable, offset_correct, instances = g.pop("pending")
        self.total += total
        self._instances.append(instances)
        own = g.pop("own_reach", {})
        if own:   # layers whose own mask hides heads that the rule would show
            reachable = reachable.expand(self.num_layers, -1, -1).clone()
            for layer, pair in own.items():
                for k, reach in enumerate(pair):
                    reachable[layer, k] = torch.einsum("bw,bwr->r", reach.float(), g["onehot"]).double()
        self.reachable += reachable
        self.offset_correct += offset_correct
        if not g.get("words") and not g.get("hits"):
            return
        layers = g.pop("layers")
        if g.get("words"):
            words = torch.stack(g.pop("words"), 1)                    # [b, layer, h, w, w]
            b, n_layers, h, w, _ = words.shape
            words = words.view(b, n_layers * h, w, w)
            hits = []
            # The words are this scorer's own copy: head_to_dep lowers it in place. A maximum over queries
            # (dim -2) costs what one over keys does, with no transposed copy.
            at = g["heads"].clamp_min(0)
            gold = words.gather(-2, at[:, None, None, :].expand(b, n_layers * h, 1, w))[:, :, 0]  # A[head, d]
            for k in range(2):
                reach = g["reach"][k].unsqueeze(1)
                if own:                                               # per layer: [b, layer*h, w]
                    reach = torch.stack([own[layer][k] if layer in own else g["reach"][k] for layer in layers],
                                        1).repeat_interleave(h, 1)
                if k == 0:   # dep_to_head's predictions themselves: the habit counts them
                    pred = (words - g["excluded"]).argmax(-1)         # the first of equals, as max gives
                    self._count_habit(layers, pred)
                    hits.append((pred == at.unsqueeze(1)) & reach)
                    continue
                hits.append(gold_is_first_max(words.sub_(g["lower"]), gold, at, -2, reach))   # [b, layer*h, w]
            both = torch.cat(hits, 1).float()                         # [b, 2*layer*h, w]
        else:                                                         # scored block by block, layer by layer
            stacked = torch.stack(g.pop("hits"), 2)                   # [b, dir, layer, h, w]
            b, _, n_layers, h, w = stacked.shape
            both = stacked.reshape(b, 2 * n_layers * h, w).float()
        per = torch.einsum("bhw,bwr->bhr", both, g["onehot"])        # [b, 2*layer*h, rel+all]
        counts = per.sum(0).double().view(2, n_layers, h, -1)
        self.correct[layers] += counts.transpose(0, 1)
        unit = g.pop("unit", None)
        if unit is not None and n_layers == self.num_layers and layers == list(range(self.num_layers)):
            index, totals, offs = unit
            per = per.view(b, 2, n_layers, h, -1).transpose(1, 2).to(torch.int16).cpu().numpy()
            totals, offs = totals.to(torch.int16).cpu().numpy(), offs.to(torch.int16).cpu().numpy()
            self._units.put(index, correct=per, total=totals, offsets=offs)
            self._ci = None

    def instances(self) -> Any:
        """int32 ``[n, 5]``: every scored dependent so far as (unit, relation, word, its head, sentence words)."""
        import numpy as np

        if len(self._instances) != 1:
            self._instances = [np.concatenate(self._instances) if self._instances
                               else np.zeros((0, 5), dtype=np.int32)]
        return self._instances[0]

    def state(self) -> dict:
        out = super().state()
        out["instances"] = self.instances().copy()
        return out

    def from_state(self, state: dict) -> "SyntaxScorer":
        import numpy as np

        out = super().from_state(state)
        out._instances = [np.asarray(state.get("instances", np.zeros((0, 5))), dtype=np.int32).reshape(-1, 5)]
        return out

    def own_prediction(self) -> Any:
        """``[layer, dir, head, rel+all]``: the accuracy each head's own positional habit predicts for each
        relation (``own_probabilities`` summed over the relation's instances, divided by their number)."""
        import numpy as np

        import scipy.sparse

        inst = self.instances()
        shares = habit_shares(self.habit.cpu().numpy())
        R = shares.shape[-1]
        n = len(inst)
        by_rel = scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), inst[:, 1])), shape=(n, R))   # one-hot
        out = np.zeros((self.num_layers, 2, self.num_heads, R))
        for layer in range(self.num_layers):
            own, every = own_probabilities(shares[layer], inst)               # [dir, head, n] each
            out[layer] = np.asarray((by_rel.T @ own.reshape(-1, n).T).T).reshape(2, self.num_heads, R)
            out[layer, ..., R - 1] = every.sum(-1)
        total = self.total.cpu().numpy()
        return np.divide(out, total, out=np.full_like(out, np.nan), where=total > 0)

    def merge(self, other: "SyntaxScorer") -> "SyntaxScorer":
        import numpy as np

        names = list(dict.fromkeys(self.relations + other.relations))
        out = SyntaxScorer(self.num_layers, self.num_heads, names, causal=self.causal)
        for src in (self, other):
            idx = [names.index(r) for r in src.relations] + [len(names)]
            out.correct[..., idx] += src.correct.cpu()
            out.total[idx] += src.total.cpu()
            out.reachable[..., idx] += src.reachable.cpu()
            out.offset_correct[..., idx] += src.offset_correct.cpu()
            out.habit[..., idx] += src.habit.cpu()
            inst = src.instances().copy()
            inst[:, 1] = np.asarray(idx, dtype=np.int32)[inst[:, 1]]
            out._instances.append(inst)
        # shards of one job share its relation list: their per-sentence counts join; other lists do not line up
        out.keep_units = self.keep_units and other.keep_units and self.relations == other.relations
        if out.keep_units:
            out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sentences for every head and baseline score (kept for ``result``)."""
        import numpy as np

        from .stats import bootstrap_weights, paired_pvalue, ratio_intervals

        if not len(self._units):
            return
        correct = self._units.get("correct")                           # [U, layer, dir, head, rel+all]
        totals = self._units.get("total")                              # [U, rel+all]
        offs = self._units.get("offsets")                              # [U, offset, rel+all]
        U, L, D, H, R = correct.shape
        w = bootstrap_weights(U, n_boot, seed)
        rel_of = np.broadcast_to(np.arange(R), (L, D, H, R)).reshape(-1)       # each column's relation
        _, lo, hi = ratio_intervals(correct.reshape(U, -1), totals, den_index=rel_of, weights=w, level=level)
        # Offset baselines: the same per-sentence hits for both directions (the mask only removes offsets).
        orel = np.broadcast_to(np.arange(R), offs.shape[1:]).reshape(-1)
        _, olo, ohi = ratio_intervals(offs.reshape(U, -1), totals, den_index=orel, weights=w, level=level)
        # Each head against the best offset baseline (point estimate) of its relation and direction,
        # paired over sentences; offsets the causal mask hides are not candidates.
        sums = offs.sum(0).astype(np.float64)                              # [offset, rel]
        best = np.empty((D, R), dtype=np.int64)
        for k in range(D):
            allowed = np.array([not self.causal or (off < 0 if k == 0 else off > 0) for off in OFFSETS])
            best[k] = np.where(allowed[:, None], sums, -np.inf).argmax(0)
        base = offs[:, best, np.arange(R)[None, :]]                         # [U, D, R]
        delta = np.subtract(correct, base[:, None, :, None, :], dtype=np.float32).reshape(U, -1)
        p = paired_pvalue(delta, None, totals, den_index=rel_of, weights=w).reshape(L, D, H, R)
        del delta
        own = self._own_intervals(correct, totals, w, level)
        # A head must beat both its best offset and its own positional prediction: the larger of the two
        # one-sided p-values tests that (an intersection-union test).
        self._ci = {"heads": (lo.reshape(L, D, H, R), hi.reshape(L, D, H, R)), "p": np.fmax(p, own[2]),
                    "offsets": (olo.reshape(offs.shape[1], R), ohi.reshape(offs.shape[1], R)), "units": U,
                    "own": own}

    def _own_intervals(self, correct: Any, totals: Any, weights: Any, level: float) -> tuple[Any, Any, Any]:
        """``(low, high, p)`` ``[layer, dir, head, rel+all]`` of each head's own positional prediction: its
        bootstrap interval over sentences, and the paired p-value that the head's accuracy is not above it."""
        import numpy as np
        import scipy.sparse

        from .stats import paired_pvalue, ratio_intervals

        U, L, D, H, R = correct.shape
        seen = self._units.seen
        inst = self.instances()
        inst = inst[seen[inst[:, 0]]] if len(inst) else inst
        row = (np.cumsum(seen) - 1)[inst[:, 0]]                           # each instance's unit, in unit order
        cols = np.concatenate([row * R + inst[:, 1], row * R + R - 1])   # its relation's column and all's
        n = len(cols)
        gather = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), (cols, np.arange(n))), shape=(U * R, n))
        shares = habit_shares(self.habit.cpu().numpy())
        rel_of = np.broadcast_to(np.arange(R), (D, H, R)).reshape(-1)
        out = np.full((3, L, D, H, R), np.nan)
        for layer in range(L):
            probs = np.concatenate(own_probabilities(shares[layer], inst), -1).reshape(D * H, n)
            per_unit = np.asarray(gather @ probs.T.astype(np.float32))          # [U * rel, dir * head]
            per_unit = per_unit.reshape(U, R, D * H).transpose(0, 2, 1).reshape(U, -1)
            _, olo, ohi = ratio_intervals(per_unit, totals, den_index=rel_of, weights=weights, level=level)
            delta = np.subtract(correct[:, layer].reshape(U, -1), per_unit, dtype=np.float32)
            p = paired_pvalue(delta, None, totals, den_index=rel_of, weights=weights)
            out[:, layer] = np.stack([olo, ohi, p]).reshape(3, D, H, R)
        return out[0], out[1], out[2]

    def result(self):
        correct = self.correct.cpu().numpy()
        total = self.total.cpu().numpy()
        reach = self.reachable.cpu().numpy()
        offs = self.offset_correct.cpu().numpy()
        own = self.own_prediction()
        names = self.relations + [ALL]
        ci = self._ci
        nan = float("nan")
        rows = []
        for r, rel in enumerate(names):
            n = int(total[r])
            if n == 0:
                continue
            for k, direction in enumerate(DIRECTIONS):
                # baselines are no layer's: they take the most any layer reaches (the rule's count)
                base = {"task": self.task, "relation": rel, "direction": direction, "metric": "accuracy",
                        "n": n, "n_reachable": int(reach[:, k, r].max())}
                for j, off in enumerate(OFFSETS):
                    if self.causal and not (off < 0 if k == 0 else off > 0):
                        continue
                    lo, hi = (ci["offsets"][0][j, r], ci["offsets"][1][j, r]) if ci else (nan, nan)
                    rows.append({**base, "baseline": f"offset:{off:+d}", "score": offs[k, j, r] / n,
                                 "ci_low": lo, "ci_high": hi})
                for layer in range(self.num_layers):
                    for head in range(self.num_heads):
                        lo, hi = ((ci["heads"][0][layer, k, head, r], ci["heads"][1][layer, k, head, r]) if ci
                                  else (nan, nan))
                        rows.append({**base, "layer": layer, "head": head, "n_reachable": int(reach[layer, k, r]),
                                     "score": correct[layer, k, head, r] / n,
                                     "ci_low": lo, "ci_high": hi,
                                     "p_value": ci["p"][layer, k, head, r] if ci else nan})
                        lo, hi = ((ci["own"][0][layer, k, head, r], ci["own"][1][layer, k, head, r]) if ci
                                  else (nan, nan))
                        rows.append({**base, "baseline": OWN, "layer": layer, "head": head,
                                     "n_reachable": int(reach[layer, k, r]), "score": own[layer, k, head, r],
                                     "ci_low": lo, "ci_high": hi})
        return frame(rows)
