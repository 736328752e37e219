"""Which heads need the whole context: the smallest window each head keeps the measure with (window ablation on
long documents and needle copies), retrieval scores, and the KV cache that windowed heads save
(``context_needs``, ``ContextResult``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import ContextConfig
from ..errors import HeadscopeError
from .groups import parse_heads
from .haystack import (long_documents, make_needles, needle_batches, retrieval_hits, strongest_keys, text_batches,
                       token_stream)
from .measures import editable_model, has_lm_head
from .windows import WindowTest, Windows, windowability

CONTEXTS = (8192, 32768)       # context lengths at which the KV cache is sized
# The columns of heads.csv (one row per head), in order.
HEAD_COLUMNS = ("model", "layer", "head", "kv_head", "tested", "smallest_window", "smallest_window_text",
                "smallest_window_needles", "retrieval", "hits", "copied", "rows")


def kv_cache(info: Any, head_dim: int, smallest: dict, *, contexts: Sequence[int] = CONTEXTS,
             bytes_per_value: int = 2) -> list[dict]:
    """The KV cache of one sequence at each context length: in full (``full_bytes``), as the model keeps it
    (``model_bytes``: its local layers keep only their sliding window, ``info.sliding_windows``) and with the
    windowed heads keeping only the first key and their window as well (``windowed_bytes``; ``smallest``:
    ``{(layer, head): W or None}``, a head missing counts as needing the whole context). ``saved_bytes`` and
    ``saved_share`` are what windowing adds to the model's own cache. Under GQA a key/value head shrinks only
    when every query head reading it can be windowed, to the largest window among them; ``kv_heads_windowed``
    counts those whose window is narrower than the model's own."""
    group = info.kv_group_size
    own = tuple(getattr(info, "sliding_windows", ()) or ()) or (None,) * info.num_layers
    keeps = []                                          # (the model's own keys or None, the windowed head's)
    for layer in range(info.num_layers):
        for g in range(info.num_kv_heads):
            ws = [smallest.get((layer, g * group + i)) for i in range(group)]
            keeps.append((own[layer], None if any(w is None for w in ws) else max(ws) + 1))
    per_key = 2 * head_dim * bytes_per_value                                     # a key and a value
    out = []
    for t in contexts:
        full = len(keeps) * t * per_key
        model = sum(min(t, m or t) for m, _ in keeps) * per_key
        kept = sum(min(t, m or t, k or t) for m, k in keeps) * per_key
        out.append({"context": t, "full_bytes": full, "model_bytes": model, "windowed_bytes": kept,
                    "saved_bytes": model - kept, "saved_share": (model - kept) / model,
                    "kv_heads_windowed": sum(k is not None and k < (m or t + 1) for m, k in keeps),
                    "kv_heads": len(keeps), "kv_heads_local": sum(m is not None for m, _ in keeps),
                    "bytes_per_value": bytes_per_value})
    return out


@dataclass
class ContextResult:
    """``windows``: one row per head and window tried (``windows.WINDOW_COLUMNS``); ``heads``: one row per head
    (``HEAD_COLUMNS``; ``smallest_window`` empty where no window tried kept the measure within the tolerance,
    ``retrieval`` empty where the model copied no needle token); ``kv``: the KV cache at ``CONTEXTS``;
    ``meta``: what was run."""

    windows: Any
    heads: Any
    kv: list
    meta: dict

    def save(self, out: Any, *, force: bool = False) -> Any:
        """windows.csv, heads.csv, report.md and run.json into ``out``, written whole (see
        ``reports.interventions.save_context``)."""
        from ..reports.interventions import save_context

        return save_context(self, out, force=force)


def head_dim_of(model: Any, num_heads: int) -> int:
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    dim = getattr(config, "head_dim", None)
    return int(dim) if dim else int(config.hidden_size) // num_heads


@dataclass
class Search:
    """What the window search found: ``table`` (windows.csv), each head's windows on the text and on the needles
    (``{(layer, head): W}``, passing heads only), the measures it read (``text``; ``copy``: the needle copies,
    None where not read) and the retrieval counts (``hits [layer, head]``, ``copied``, ``rows``; ``note`` where
    retrieval is undefined)."""

    table: Any
    on_text: dict
    on_needles: dict
    text: Any
    copy: Any
    hits: Any
    copied: int
    rows: int
    note: str | None


def context_needs(model: Any = "smollm2", data: Any = None, *, config: ContextConfig | None = None,
                  progress: Any = None, **options: Any) -> ContextResult:
    """Which heads of ``model`` need the whole context.

    The settings are those of :class:`headscope.config.ContextConfig`, given as keywords or as ``config=``.
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
    cfg = ContextConfig.given(config, options)
    loaded = editable_model(model, "the window search")
    info = loaded.info
    measure = context_measure(loaded, cfg.measure)
    name, stream = token_stream(loaded, data)
    docs = long_documents(loaded, stream, name, tokens=cfg.tokens, count=cfg.documents)
    tried = tuple(w for w in cfg.windows if w < cfg.tokens)
    if not tried:
        raise HeadscopeError(f"every window ({', '.join(map(str, cfg.windows))}) is at least --tokens {cfg.tokens}: "
                             f"such a window sees the whole input; give windows shorter than the documents")
    chosen = ([(layer, head) for layer in range(info.num_layers) for head in range(info.num_heads)]
              if str(cfg.heads).strip() == "each" else parse_heads(cfg.heads, info.num_layers, info.num_heads))
    found = search(loaded, name, stream, docs, measure, tried, chosen, cfg, progress)
    smallest = smallest_windows(found, chosen)
    heads_table = head_rows(info, found, smallest)
    # an encoder keeps no KV cache
    kv = kv_cache(info, head_dim_of(loaded.model, info.num_heads), smallest) if info.is_decoder else []
    meta = {"model": dataclasses.asdict(info), "dataset": name, "documents": int(docs.shape[0]), "tokens": cfg.tokens,
            "windows": list(tried), "tolerance": cfg.tolerance, "measure": measure,
            "heads": cfg.heads if isinstance(cfg.heads, str) else list(cfg.heads), "needles": cfg.needles,
            "needle_length": cfg.needle_length, "window_needles": cfg.window_needles if found.copy is not None else 0,
            "seed": cfg.seed, "base": found.text.base,
            "base_needles": found.copy.base if found.copy is not None else None,
            "joint": joint_change(found, smallest), **({"retrieval": found.note} if found.note else {})}
    return ContextResult(found.table, heads_table, kv, meta)


def context_measure(loaded: Any, measure: str | None) -> str:
    """The measure the search reads: ``loss`` (a causal LM's; the default there) or ``hidden``."""
    info = loaded.info
    has_lm = has_lm_head(loaded)
    measure = measure or ("loss" if has_lm and info.is_decoder else "hidden")
    if measure == "loss" and not (has_lm and info.is_decoder):
        raise HeadscopeError(f"{info.name}: the loss of a long document needs a causal language model (a decoder "
                             f"with an LM head); use the hidden measure")
    return measure


def search(loaded: Any, name: str, stream: Sequence[int], docs: Any, measure: str, tried: Sequence[int],
           chosen: Sequence[tuple[int, int]], cfg: ContextConfig, progress: Any) -> Search:
    """Each chosen head's windows on the text and (a causal LM's) on the needle copies, and retrieval scores;
    ``progress(done, total)`` before each head's search."""
    import numpy as np
    import pandas as pd

    info = loaded.info
    causal_lm = info.is_decoder and has_lm_head(loaded)
    searches = 2 if causal_lm and cfg.window_needles else 1
    count = {"done": 0}

    def step() -> None:
        if progress is not None:
            progress(count["done"], searches * len(chosen))
        count["done"] += 1

    text = WindowTest(loaded, text_batches(docs, measure), measure)
    tables = [windowability(text, name, "text", windows=tried, tolerance=cfg.tolerance, heads=chosen, progress=step)]
    hits, copied, rows = np.full((info.num_layers, info.num_heads), np.nan), 0, 0
    note, copy_test = None, None
    if causal_lm:
        found = make_needles(loaded, stream, name, count=cfg.needles, length=cfg.needle_length, tokens=cfg.tokens,
                             seed=cfg.seed)
        top, copies = strongest_keys(loaded, found)
        hits, copied, rows = retrieval_hits(top, found.sources(), copies)
        if cfg.window_needles:
            copy_test = WindowTest(loaded, needle_batches(found, cfg.window_needles), "loss")
            tables.append(windowability(copy_test, name, "needles", windows=tried, tolerance=cfg.tolerance,
                                        heads=chosen, progress=step))
    else:
        note = "not a causal language model: retrieval (copying a needle) is undefined"
    table = pd.concat(tables, ignore_index=True)

    def smallest_on(inputs: str) -> dict:
        passed = table[(table["inputs"] == inputs) & table["within"]]
        return {(int(r.layer), int(r.head)): int(r.window) for r in passed.itertuples()}

    return Search(table, smallest_on("text"), smallest_on("needles"), text, copy_test, hits, copied, rows, note)


def smallest_windows(found: Search, chosen: Sequence[tuple[int, int]]) -> dict:
    """``{(layer, head): W or None}`` of the chosen heads: windowed where every criterion measured passes, at the
    larger window."""
    smallest = {}
    for key in chosen:
        need = [found.on_text.get(key)] + ([found.on_needles.get(key)] if found.copy is not None else [])
        smallest[key] = None if any(w is None for w in need) else max(need)
    return smallest


def joint_change(found: Search, smallest: dict) -> dict:
    """Every windowed head at its window at once (do the windows add up?): the change of each measure."""
    windowed = {k: w for k, w in smallest.items() if w is not None}
    if not windowed:
        return {}
    edit = Windows(windowed)
    joint = {"heads": len(windowed), "text": found.text.change(edit)[1]}
    if found.copy is not None:
        joint["needles"] = found.copy.change(edit)[1]
    return joint


def head_rows(info: Any, found: Search, smallest: dict) -> Any:
    """heads.csv: one row per head of the model (``HEAD_COLUMNS``)."""
    import numpy as np
    import pandas as pd

    rows = []
    for layer in range(info.num_layers):
        for head in range(info.num_heads):
            rows.append({
                "model": info.name, "layer": layer, "head": head, "kv_head": info.kv_head(head),
                "tested": (layer, head) in smallest, "smallest_window": smallest.get((layer, head)),
                "smallest_window_text": found.on_text.get((layer, head)),
                "smallest_window_needles": found.on_needles.get((layer, head)),
                "retrieval": float(found.hits[layer, head]) / found.copied if found.copied else np.nan,
                "hits": found.hits[layer, head], "copied": found.copied, "rows": found.rows})
    table = pd.DataFrame(rows, columns=list(HEAD_COLUMNS))
    for c in ("smallest_window", "smallest_window_text", "smallest_window_needles"):
        table[c] = table[c].astype("Int64")
    return table
