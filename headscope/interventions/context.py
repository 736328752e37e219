"""Which heads need the whole context: the smallest window each head keeps the loss with (window ablation on
long documents), retrieval scores on needle-in-a-haystack inputs, and the KV cache that windowed heads save."""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import HeadscopeError

WINDOWS = (16, 64, 256)
CONTEXTS = (8192, 32768)       # context lengths at which the KV cache is sized
# The columns of windows.csv (one row per head and window tried) and heads.csv (one row per head), in order.
WINDOW_COLUMNS = ("model", "dataset", "inputs", "layer", "head", "window", "base", "ablated", "change", "within")
HEAD_COLUMNS = ("model", "layer", "head", "kv_head", "tested", "smallest_window", "smallest_window_text",
                "smallest_window_needles", "retrieval", "hits", "copied", "rows")


def parse_windows(text: Any) -> tuple[int, ...]:
    """``"16,64,256"`` (or a sequence of ints) as sorted distinct windows, each at least 1."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out = set()
    for p in parts:
        if not re.fullmatch(r"\d+", str(p)) or int(p) < 1:
            raise HeadscopeError(f"window {str(p)!r} in {text!r} is not a whole number of at least 1; give windows "
                                 f"as comma-separated numbers of keys, e.g. 16,64,256")
        out.add(int(p))
    if not out:
        raise HeadscopeError("no window given; give windows as comma-separated numbers of keys, e.g. 16,64,256")
    return tuple(sorted(out))


# ------------------------------------------------------------------------------------------- inputs


def token_stream(loaded: Any, data: Any) -> tuple[str, list[int]]:
    """The data's running text as one stream of token ids (no special tokens), and the dataset's name."""
    from ..capture.alignment import encode_sentences
    from ..datasets import join_sentences
    from ..datasets.loading import load_data, sample_path

    corpus = load_data(data if data is not None else sample_path())
    sentences = list(getattr(corpus, "sentences", []))
    if not sentences:
        raise HeadscopeError(f"{corpus.name}: long documents are made of sentences (CoNLL-U or text), and this data "
                             f"has none")
    (enc,) = encode_sentences(loaded.tokenizer, [join_sentences(sentences)])
    return corpus.name, [t for t, w in zip(enc.input_ids, enc.word_ids) if w != -1]


def _ends(loaded: Any) -> tuple[list[int], list[int]]:
    """The tokens an input starts and ends with: a decoder's BOS; an encoder's [CLS] and [SEP]."""
    from ..models.loading import leading_token

    tok = loaded.tokenizer
    if loaded.info.is_decoder:
        bos = leading_token(loaded, None)
        return ([bos] if bos is not None else []), []
    return ([tok.cls_token_id] if tok.cls_token_id is not None else []), \
        ([tok.sep_token_id] if tok.sep_token_id is not None else [])


def long_documents(loaded: Any, stream: Sequence[int], name: str, *, tokens: int, count: int) -> Any:
    """Up to ``count`` documents of exactly ``tokens`` tokens (``[docs, tokens]``): consecutive stretches of
    the stream between the model's own start and end tokens."""
    import torch

    if tokens > loaded.info.max_length:
        raise HeadscopeError(f"--tokens {tokens} is more than {loaded.info.name}'s {loaded.info.max_length} "
                             f"positions; use at most that")
    lead, tail = _ends(loaded)
    body = tokens - len(lead) - len(tail)
    n = min(count, len(stream) // body) if body > 0 else 0
    if n < 1:
        raise HeadscopeError(f"{name}: the data has {len(stream)} tokens of text, fewer than one document of "
                             f"{tokens}; give longer data with --data or fewer --tokens")
    docs = [lead + list(stream[i * body:(i + 1) * body]) + tail for i in range(n)]
    return torch.tensor(docs, device=loaded.device)


@dataclass(frozen=True)
class Needles:
    """Needle-in-a-haystack inputs ``[needles, tokens]``: each a stretch of text with ``length`` random
    tokens (the needle) at a depth of its own, and the needle again at the end. ``first[i]``: where the
    needle begins in input ``i``; ``second``: where its copy at the end begins (the same in every input)."""

    input_ids: Any
    first: tuple[int, ...]
    second: int
    length: int

    def rows(self) -> Any:
        """The query rows that read the copy (each predicts the needle's next token), ``[length - 1]``."""
        import torch

        return torch.arange(self.second, self.second + self.length - 1)

    def sources(self) -> Any:
        """``[needles, length - 1]``: for each row, where the token it should copy sits in the first needle."""
        import torch

        return torch.tensor([[f + k + 1 for k in range(self.length - 1)] for f in self.first])


def make_needles(loaded: Any, stream: Sequence[int], name: str, *, count: int, length: int, tokens: int,
                 seed: int) -> Needles:
    """``count`` inputs of ``tokens`` tokens: text from the stream (each input from its own offset), a needle
    of ``length`` distinct random ordinary tokens at depths spread evenly over the text, and the needle again
    at the end (teacher-forced: the model reads the copy, and each row's prediction is checked)."""
    import torch

    from ..analysis.induction import make_sequences

    lead, _ = _ends(loaded)
    hay = tokens - len(lead) - 2 * length
    if length < 2 or count < 1:
        raise HeadscopeError(f"needles need a length of at least 2 and a count of at least 1, got {length} and {count}")
    if hay < length:
        raise HeadscopeError(f"--tokens {tokens} leaves no room for text around two copies of a {length}-token "
                             f"needle; use more tokens or a shorter needle")
    if len(stream) < hay:
        raise HeadscopeError(f"{name}: the data has {len(stream)} tokens of text, fewer than the {hay} that one "
                             f"haystack needs; give longer data with --data or fewer --tokens")
    vocab = loaded.model.get_input_embeddings().num_embeddings
    needles = [s.input_ids[:length] for s in make_sequences(loaded.tokenizer, count=count, length=length, seed=seed,
                                                            bos=False, vocab_size=vocab)]
    rows, first = [], []
    step = max(1, (len(stream) - hay) // count)
    for i, needle in enumerate(needles):
        text = list(stream[i * step % (len(stream) - hay + 1):][:hay])
        at = int(round(hay * 0.9 * (i + 0.5) / count))                   # depths 0..90% of the text
        rows.append(lead + text[:at] + list(needle) + text[at:] + list(needle))
        first.append(len(lead) + at)
    return Needles(torch.tensor(rows, device=loaded.device), tuple(first), len(lead) + hay + length, length)


# --------------------------------------------------------------------------------------------- measures


def text_batches(docs: Any, measure: str) -> list[dict]:
    """One forward per long document; a loss reads every token but the first."""
    batches = []
    for d in docs:
        scored = d.new_ones((1, len(d)), dtype=bool)
        if measure == "loss":
            scored[:, 0] = False                                            # the first token has no target
        batches.append({"input_ids": d[None], "attention_mask": d.new_ones((1, len(d))), "scored": scored})
    return batches


def needle_batches(needles: "Needles", count: int) -> list[dict]:
    """One forward per needle input (the first ``count``); the loss reads the copy's predicted tokens."""
    ids = needles.input_ids[:count]
    targets = needles.rows() + 1                                            # the tokens the copy's rows predict
    batches = []
    for row in ids:
        scored = row.new_zeros((1, len(row)), dtype=bool)
        scored[0, targets.to(row.device)] = True
        batches.append({"input_ids": row[None], "attention_mask": row.new_ones((1, len(row))), "scored": scored})
    return batches


class WindowTest:
    """A measure on fixed inputs (``batches``), read unablated once, then with any edit: ``change(edit)`` is
    ``(ablated, change)``, the change being the loss's relative rise or the hidden states' 1 - cosine."""

    def __init__(self, loaded: Any, batches: list[dict], measure: str) -> None:
        from .ablation import edited_forward

        self.loaded, self.batches, self.measure = loaded, batches, measure
        self.refs = [edited_forward(loaded, b, None) for b in batches]
        self.base, _ = self._value(None)

    def _value(self, edit: Any) -> tuple[float, float]:
        from .ablation import edited_forward, readings

        base = num = den = 0.0
        for b, ref in zip(self.batches, self.refs):
            got = edited_forward(self.loaded, b, edit) if edit is not None else ref
            nb, na, d = readings(self.measure, ref, got, b["scored"])
            base, num, den = base + float(nb.sum()), num + float(na.sum()), den + float(d.sum())
        return base / den, num / den

    def change(self, edit: Any) -> tuple[float, float]:
        _, ablated = self._value(edit)
        return ablated, ((ablated - self.base) / self.base if self.measure == "loss" else ablated)


class Windows:
    """A session edit that windows each head at its own window (``{(layer, head): W}``)."""

    def __init__(self, windows: dict) -> None:
        from .ablation import HeadEdit, Method, by_layer

        groups: dict = {}
        for key, w in windows.items():
            groups.setdefault(w, []).append(key)
        self.edits = [HeadEdit(by_layer(keys), Method("window", w)) for w, keys in sorted(groups.items())]

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        for edit in self.edits:            # each sets only its own heads' outputs, from the layer's inputs
            out = edit(layer, out, inputs)
        return out


def windowability(test: WindowTest, name: str, inputs: str, *, windows: Sequence[int], tolerance: float,
                  heads: Sequence[tuple[int, int]], progress: Any = None) -> Any:
    """Each head alone, windows tried smallest first until one keeps ``test``'s measure within ``tolerance``:
    one row per head and window tried (``inputs`` names what the measure read: text or needles).
    ``progress()`` is called after each head."""
    import pandas as pd

    rows = []
    for layer, head in heads:
        if progress is not None:
            progress()
        for w in windows:
            ablated, change = test.change(Windows({(layer, head): w}))
            rows.append({"model": test.loaded.info.name, "dataset": name, "inputs": inputs, "layer": layer,
                         "head": head, "window": w, "base": test.base, "ablated": ablated, "change": change,
                         "within": bool(change <= tolerance)})
            if change <= tolerance:
                break
    return pd.DataFrame(rows, columns=list(WINDOW_COLUMNS))


def strongest_keys(loaded: Any, needles: Needles, *, attention_memory: int = 512 * 2**20) -> tuple[Any, Any]:
    """At each row of the needles' copies: every head's strongest key, ``[layer, needles, head, rows]``, and
    whether the model's top prediction is the needle's next token (it copies), ``[needles, rows]``. The
    attention is read in query-row blocks within ``attention_memory`` bytes: no input holds a whole map."""
    import torch

    from ..capture.session import attention_capture, forward_kwargs, start_forward

    info = loaded.info
    ids = needles.input_ids
    q = needles.rows().to(ids.device)                                              # [R]
    top = torch.full((info.num_layers, ids.shape[0], info.num_heads, len(q)), -1, dtype=torch.long,
                     device=ids.device)
    now: dict = {}                      # the capture session and the input being read

    def on_attention(layer: int, probs: Any) -> None:
        r0 = now["capturing"].row_start
        here = (q >= r0) & (q < r0 + probs.shape[2])
        if bool(here.any()):
            top[layer, now["input"]][..., here] = probs[0, :, q[here] - r0].argmax(-1)

    kwargs = forward_kwargs(loaded)
    keep = "logits_to_keep" in inspect.signature(loaded.model.forward).parameters
    copied_rows = []
    with attention_capture(loaded, on_attention) as capturing, torch.inference_mode():
        now["capturing"] = capturing
        capturing.block_rows = max(1, attention_memory // (2 * 4 * info.num_heads * ids.shape[1]))
        for i in range(ids.shape[0]):            # one input per forward: its logits stay small
            now["input"] = i
            start_forward(capturing)
            logits = loaded.model(input_ids=ids[i:i + 1], attention_mask=torch.ones_like(ids[i:i + 1]), **kwargs,
                                  **({"logits_to_keep": q} if keep else {})).logits
            logits = logits[0] if keep else logits[0, q]
            copied_rows.append(logits.argmax(-1) == ids[i, q + 1])
    return top, torch.stack(copied_rows)


def retrieval_hits(top: Any, sources: Any, copied: Any) -> tuple[Any, int, int]:
    """Wu et al. (2024)'s retrieval score, teacher-forced: of the needle tokens the model copies, the share at
    which a head's strongest key is that token in the first needle. From ``strongest_keys`` and the needles'
    ``sources()``: ``(hits [layer, head], copied, rows)``; a head's score is hits / copied."""
    src, copied = sources.to(top.device), copied.to(top.device)
    hit = (top == src[None, :, None, :]) & copied[None, :, None, :]               # [layer, needles, head, R]
    return hit.sum((1, 3)).cpu().numpy(), int(copied.sum()), int(copied.numel())


def kv_cache(info: Any, head_dim: int, smallest: dict, *, contexts: Sequence[int] = CONTEXTS,
             bytes_per_value: int = 2) -> list[dict]:
    """The KV cache of one sequence at each context length, in full and with windowed heads keeping only the
    first key and their window (``smallest``: ``{(layer, head): W or None}``; a head missing counts as needing
    the whole context). Under GQA a key/value head shrinks only when every query head reading it can be
    windowed, to the largest window among them."""
    group = info.kv_group_size
    keeps = []
    for layer in range(info.num_layers):
        for g in range(info.num_kv_heads):
            ws = [smallest.get((layer, g * group + i)) for i in range(group)]
            keeps.append(None if any(w is None for w in ws) else max(ws) + 1)
    per_key = 2 * head_dim * bytes_per_value                                     # a key and a value
    out = []
    for t in contexts:
        full = len(keeps) * t * per_key
        kept = sum(t if k is None else min(t, k) for k in keeps) * per_key
        out.append({"context": t, "full_bytes": full, "windowed_bytes": kept, "saved_bytes": full - kept,
                    "saved_share": (full - kept) / full, "kv_heads_windowed": sum(k is not None for k in keeps),
                    "kv_heads": len(keeps), "bytes_per_value": bytes_per_value})
    return out


# ------------------------------------------------------------------------------------------------ result


@dataclass
class ContextResult:
    """``windows``: one row per head and window tried (``WINDOW_COLUMNS``); ``heads``: one row per head
    (``HEAD_COLUMNS``; ``smallest_window`` empty where no window tried kept the measure within the tolerance,
    ``retrieval`` empty where the model copied no needle token); ``kv``: the KV cache at ``CONTEXTS``;
    ``meta``: what was run."""

    windows: Any
    heads: Any
    kv: list
    meta: dict

    def save(self, out: Any, *, force: bool = False) -> Any:
        """windows.csv, heads.csv, report.md and run.json into ``out``, written whole."""
        import json
        from pathlib import Path

        from ..reports.folder import staged_output
        from ..reports.interventions import context_markdown
        from ..reports.writer import write_csv, write_text

        with staged_output(Path(out), "context", force=force) as folder:
            write_csv(self.windows, folder / "windows.csv")
            write_csv(self.heads, folder / "heads.csv")
            write_text(folder / "report.md", context_markdown(self))
            write_text(folder / "run.json", json.dumps({**self.meta, "kv_cache": self.kv}, indent=2, default=str)
                       + "\n")
        return Path(out)


def head_dim_of(model: Any, num_heads: int) -> int:
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    dim = getattr(config, "head_dim", None)
    return int(dim) if dim else int(config.hidden_size) // num_heads


def context_needs(model: Any = "smollm2", data: Any = None, *, windows: Any = WINDOWS, tolerance: float = 0.01,
                  tokens: int = 512, documents: int = 1, heads: Any = "each", needles: int = 8,
                  needle_length: int = 16, window_needles: int = 2, measure: str | None = None,
                  seed: int = 0, progress: Any = None) -> ContextResult:
    """Which heads of ``model`` need the whole context.

    For each head alone (``heads``: ``each`` or ``"L3.H1,L4.H0"``), the smallest of ``windows`` whose
    ``window:W`` ablation keeps the measure on ``documents`` long documents of ``tokens`` tokens (the data's
    running text; default the bundled sample) within ``tolerance``: the loss's relative rise where the model
    is a causal LM, else the hidden states' 1 - cosine. Natural text rarely needs a far key, so a causal LM's
    heads must also keep the loss on the copies of ``window_needles`` needle inputs within ``tolerance`` (the
    passkey-style check of DuoAttention); a head's window is the larger of the two. Where the model is a
    causal LM, every head's retrieval score on ``needles`` needle-in-a-haystack inputs of the same length.
    Then all windowed heads at once (do the windows add up?), and the KV cache they would save at 8k and 32k
    tokens. ``progress(done, total)``: called as the heads are searched (one forward per head and window).
    """
    import numpy as np
    import pandas as pd

    from .ablation import editable_model, has_lm_head, parse_heads

    windows = parse_windows(windows)
    if not 0 <= tolerance < 1:
        raise HeadscopeError(f"tolerance {tolerance} is not in [0, 1); give the measure's allowed change, e.g. 0.01")
    loaded = editable_model(model, "the window search")
    info = loaded.info
    has_lm = has_lm_head(loaded)
    measure = measure or ("loss" if has_lm and info.is_decoder else "hidden")
    if measure not in ("loss", "hidden"):
        raise HeadscopeError(f"the measure must be loss or hidden, got {measure!r}")
    if measure == "loss" and not (has_lm and info.is_decoder):
        raise HeadscopeError(f"{info.name}: the loss of a long document needs a causal language model (a decoder "
                             f"with an LM head); use the hidden measure")
    name, stream = token_stream(loaded, data)
    docs = long_documents(loaded, stream, name, tokens=tokens, count=documents)
    tried = tuple(w for w in windows if w < tokens)
    if not tried:
        raise HeadscopeError(f"every window ({', '.join(map(str, windows))}) is at least --tokens {tokens}: such a "
                             f"window sees the whole input; give windows shorter than the documents")
    chosen = ([(layer, head) for layer in range(info.num_layers) for head in range(info.num_heads)]
              if str(heads).strip() == "each" else parse_heads(heads, info.num_layers, info.num_heads))
    L, H = info.num_layers, info.num_heads
    causal_lm = info.is_decoder and has_lm
    searches = 2 if causal_lm and window_needles else 1
    count = {"done": 0}

    def step() -> None:
        if progress is not None:
            progress(count["done"], searches * len(chosen))
        count["done"] += 1

    text = WindowTest(loaded, text_batches(docs, measure), measure)
    tables = [windowability(text, name, "text", windows=tried, tolerance=tolerance, heads=chosen, progress=step)]
    hits, copied, rows = np.full((L, H), np.nan), 0, 0
    retrieval_note, copy_test = None, None
    if causal_lm:
        found = make_needles(loaded, stream, name, count=needles, length=needle_length, tokens=tokens, seed=seed)
        top, copies = strongest_keys(loaded, found)
        hits, copied, rows = retrieval_hits(top, found.sources(), copies)
        if window_needles:
            copy_test = WindowTest(loaded, needle_batches(found, window_needles), "loss")
            tables.append(windowability(copy_test, name, "needles", windows=tried, tolerance=tolerance,
                                        heads=chosen, progress=step))
    else:
        retrieval_note = "not a causal language model: retrieval (copying a needle) is undefined"
    table = pd.concat(tables, ignore_index=True)

    def smallest_on(inputs: str) -> dict:
        passed = table[(table["inputs"] == inputs) & table["within"]]
        return {(int(r.layer), int(r.head)): int(r.window) for r in passed.itertuples()}

    on_text, on_needles = smallest_on("text"), smallest_on("needles")
    smallest = {}
    for key in chosen:                      # windowed where every criterion measured passes: the larger window
        need = [on_text.get(key)] + ([on_needles.get(key)] if copy_test is not None else [])
        smallest[key] = None if any(w is None for w in need) else max(need)
    joint: dict = {}
    windowed = {k: w for k, w in smallest.items() if w is not None}
    if windowed:                            # every windowed head at its window at once: do the windows add up?
        edit = Windows(windowed)
        joint = {"heads": len(windowed), "text": text.change(edit)[1]}
        if copy_test is not None:
            joint["needles"] = copy_test.change(edit)[1]
    heads_rows = []
    for layer in range(L):
        for head in range(H):
            heads_rows.append({
                "model": info.name, "layer": layer, "head": head, "kv_head": info.kv_head(head),
                "tested": (layer, head) in smallest, "smallest_window": smallest.get((layer, head)),
                "smallest_window_text": on_text.get((layer, head)),
                "smallest_window_needles": on_needles.get((layer, head)),
                "retrieval": float(hits[layer, head]) / copied if copied else np.nan,
                "hits": hits[layer, head], "copied": copied, "rows": rows})
    heads_table = pd.DataFrame(heads_rows, columns=list(HEAD_COLUMNS))
    for c in ("smallest_window", "smallest_window_text", "smallest_window_needles"):
        heads_table[c] = heads_table[c].astype("Int64")
    kv = kv_cache(info, head_dim_of(loaded.model, H), smallest) if info.is_decoder else []  # encoders cache none
    meta = {"model": dataclasses.asdict(info), "dataset": name, "documents": int(docs.shape[0]), "tokens": tokens,
            "windows": list(tried), "tolerance": tolerance, "measure": measure,
            "heads": heads if isinstance(heads, str) else list(heads), "needles": needles,
            "needle_length": needle_length, "window_needles": window_needles if copy_test is not None else 0,
            "seed": seed, "base": text.base, "base_needles": copy_test.base if copy_test is not None else None,
            "joint": joint, **({"retrieval": retrieval_note} if retrieval_note else {})}
    return ContextResult(table, heads_table, kv, meta)
