"""Induction, duplicate-token and previous-token scores on repeated random tokens (METRICS §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..capture.alignment import Batch, EncodedSentence
from ..schema import frame
from ..types import Sentence
from .base import LayerView, Scorer, check_same_inputs
from .units import UnitStore

PATTERNS = ("induction", "duplicate", "previous")


@dataclass(frozen=True)
class RepeatedTokens:
    """The generated data of the induction task: how many sequences, how long, which seed."""

    name: str = "repeated_tokens"
    count: int = 64
    length: int = 32
    seed: int = 0


@dataclass(frozen=True)
class RepeatedSequence:
    """``[BOS] r r``: ``bos`` tokens, then ``length`` random tokens, then the same tokens again."""

    input_ids: tuple[int, ...]
    bos: int          # 1 when a BOS token leads, else 0
    length: int


def make_sequences(tokenizer: Any, *, count: int, length: int, seed: int, bos: bool,
                   vocab_size: int | None = None, first: int | None = None) -> list[RepeatedSequence]:
    """``count`` sequences of ``length`` distinct random non-special tokens, each repeated once.

    Tokens are distinct within a sequence so that every token of the second copy has exactly one
    earlier occurrence. ``bos`` puts the tokenizer's BOS token (or, lacking one, its CLS token) first,
    or ``first`` where given (an encoder-decoder's decoder start token).
    ``vocab_size`` (the model's embedding rows) caps the ids drawn when the tokenizer knows more.
    """
    import numpy as np

    if length < 2 or count < 1:
        raise ValueError(f"need length >= 2 and count >= 1, got length={length}, count={count}")
    special = set(tokenizer.all_special_ids)
    size = min(len(tokenizer), vocab_size) if vocab_size else len(tokenizer)
    vocab = np.array([i for i in range(size) if i not in special])
    if len(vocab) < length:
        raise ValueError(f"the vocabulary has only {len(vocab)} ordinary tokens for sequences of {length}")
    if first is None:
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    lead = (first,) if bos and first is not None else ()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        r = tuple(int(t) for t in rng.choice(vocab, size=length, replace=False))
        out.append(RepeatedSequence(lead + r + r, len(lead), length))
    return out


def encode_sequences(sequences: list[RepeatedSequence]) -> tuple[list[Sentence], list[EncodedSentence]]:
    """Model inputs for the capture: every token is its own "word"; a BOS is a special token."""
    sentences, encoded = [], []
    for i, seq in enumerate(sequences):
        n = len(seq.input_ids) - seq.bos
        words = tuple(str(t) for t in seq.input_ids[seq.bos:])
        sentences.append(Sentence(words=words, sent_id=f"repeat-{i}"))
        word_ids = (-1,) * seq.bos + tuple(range(n))
        encoded.append(EncodedSentence(i, seq.input_ids, word_ids, (False,) * len(seq.input_ids), n))
    return sentences, encoded


def in_context_loss(model: Any, sequences: list[RepeatedSequence], *, batch_size: int = 8) -> dict:
    """The in-context-learning check (METRICS §5): mean next-token loss on the second copy vs the first.

    Both copies are scored on the same positions (each copy's tokens 2..T, predicted from what
    precedes them); only the second copy can be predicted by looking back, so a model with
    induction heads has a much lower second-copy loss. Needs a language-model head; otherwise
    returns ``{"skipped": reason}``.
    """
    import torch

    get_head = getattr(model, "get_output_embeddings", None)
    if not callable(get_head) or get_head() is None:
        return {"skipped": "the model has no language-model head (loaded without one, e.g. an encoder)"}
    device = next(model.parameters()).device
    first, second = [], []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            ids = torch.tensor([s.input_ids for s in chunk], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            # nll[:, p - 1] is the loss of the token at position p.
            o, t = chunk[0].bos, chunk[0].length
            first.append(nll[:, o:o + t - 1].mean(1).cpu())           # positions o+1 .. o+t-1
            second.append(nll[:, o + t:o + 2 * t - 1].mean(1).cpu())  # positions o+t+1 .. o+2t-1
    f, s = torch.cat(first).double(), torch.cat(second).double()
    return {"loss_first_copy": round(float(f.mean()), 4), "loss_second_copy": round(float(s.mean()), 4),
            "difference": round(float((s - f).mean()), 4), "sequences": len(f),
            "tokens_per_copy": sequences[0].length - 1}


@dataclass
class InductionScorer(Scorer):
    """Per head, the mean attention from each row to its target, over rows that have one:
    induction (prefix matching) = the token after the earlier occurrence of the current token,
    duplicate = that earlier occurrence, previous = the previous position (every row but the first)."""

    ACCUMULATORS = ("sums", "rows")

    num_layers: int
    num_heads: int
    sequences: list[RepeatedSequence]
    task: str = "induction"
    sums: Any = field(default=None, repr=False)     # [layer, head, pattern]
    rows: Any = field(default=None, repr=False)     # [pattern]
    _units: Any = field(default=None, repr=False)   # UnitStore: per-sequence sums [layer, head, pattern], rows
    _ci: Any = field(default=None, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        if self.sums is None:
            self.sums = np.zeros((self.num_layers, self.num_heads, len(PATTERNS)))
            self.rows = np.zeros(len(PATTERNS))
        if self._units is None:
            self._units = UnitStore()

    def start_batch(self, batch: Batch) -> None:
        import torch

        b_idx, q_idx, k_idx, pattern = [], [], [], []
        for b, enc in enumerate(batch.encoded):
            seq = self.sequences[enc.index]
            o, t = seq.bos, seq.length
            for k in range(t):
                i = o + t + k                             # row in the second copy
                for p, target in enumerate((o + k + 1, o + k)):
                    b_idx.append(b), q_idx.append(i), k_idx.append(target), pattern.append(p)
            for i in range(1, len(seq.input_ids)):
                b_idx.append(b), q_idx.append(i), k_idx.append(i - 1), pattern.append(2)
        dev = batch.token_mask.device
        onehot = torch.nn.functional.one_hot(torch.tensor(pattern), len(PATTERNS)).float().to(dev)
        b_of = torch.tensor(b_idx, device=dev)
        unit_onehot = torch.zeros((batch.size, len(b_idx)), device=dev)
        unit_onehot[b_of, torch.arange(len(b_idx), device=dev)] = 1.0                     # [b, rows]
        self._batch = {"idx": (b_of, torch.tensor(q_idx, device=dev), torch.tensor(k_idx, device=dev)),
                       "onehot": onehot, "pending": onehot.sum(0).double().cpu().numpy(), "layers": [], "vals": [],
                       "unit": ([e.index for e in batch.encoded], unit_onehot)}

    row_blocks = True  # reads query-row blocks: each target is one (query, key) weight

    def update(self, view: LayerView) -> None:
        b, q, k = self._batch["idx"]
        a = view.tokens
        r0, t = view.batch.row_start, view.batch.token_mask.shape[1]
        if r0 == 0 and a.shape[2] == t:                               # a whole map
            self._batch["layers"].append(view.layer)
            self._batch["vals"].append(a[b, :, q, k])                 # [rows, head]
            return
        if r0 == 0:
            self._batch["block"] = a.new_zeros((len(q), a.shape[1]))
        vals = self._batch["block"]
        here = (q >= r0) & (q < r0 + a.shape[2]) & (k < a.shape[3])  # targets whose query row is in this block
        vals[here] = a[b[here], :, q[here] - r0, k[here]].to(vals.dtype)
        if r0 + a.shape[2] >= t:
            self._batch["layers"].append(view.layer)
            self._batch["vals"].append(self._batch.pop("block"))

    def end_batch(self) -> None:
        import torch

        g = self._batch
        if "pending" not in g:
            return
        self.rows += g.pop("pending")
        if g["vals"]:
            vals = torch.stack(g.pop("vals")).float()                  # [layer, rows, head]
            self.sums[g["layers"]] += torch.einsum("lrh,rp->lhp", vals, g["onehot"]).double().cpu().numpy()
            if g["layers"] == list(range(self.num_layers)):
                index, unit_onehot = g["unit"]
                per = torch.einsum("lrh,rp,br->blhp", vals, g["onehot"], unit_onehot).cpu().numpy()
                counts = (unit_onehot @ g["onehot"]).cpu().numpy()         # [b, pattern]
                self._units.put(index, sums=per, rows=counts)
                self._ci = None

    def merge(self, other: "InductionScorer") -> "InductionScorer":
        check_same_inputs(self.sequences, other.sequences, "sequences")
        out = InductionScorer(self.num_layers, self.num_heads, self.sequences)
        out.sums = self.sums + other.sums
        out.rows = self.rows + other.rows
        out._units = self._units.merge(other._units)
        return out

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over sequences for every head and pattern (kept for ``result``)."""
        # per-sequence sums [U, layer, head, pattern] over the rows of each pattern [U, pattern]
        self._ci = self.unit_intervals("sums", "rows", n_boot=n_boot, level=level, seed=seed)

    def result(self):
        rows = []
        for p, name in enumerate(PATTERNS):
            if self.rows[p] == 0:
                continue
            for layer in range(self.num_layers):
                for head in range(self.num_heads):
                    ci = ({"ci_low": self._ci[0][layer, head, p], "ci_high": self._ci[1][layer, head, p]}
                          if self._ci is not None else {})
                    rows.append({"task": self.task, "relation": name, "metric": "mass", "layer": layer, "head": head,
                                 "score": self.sums[layer, head, p] / self.rows[p], "n": int(self.rows[p]), **ci})
        return frame(rows)
