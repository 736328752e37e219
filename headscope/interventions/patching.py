"""Activation patching of heads on contrast pairs (``patch``, ``PatchResult``): exact patching of each head and of
head groups in both directions, attribution patching of every head from one backward pass, with intervals over
pairs (METRICS.md §10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import PatchConfig
from ..errors import DataError, HeadscopeError
from .groups import by_layer, head_name, parse_heads
from .measures import editable_model, has_lm_head

# The columns of patching.csv, in order.
COLUMNS = ("model", "dataset", "heads", "layer", "head", "kv_head", "method", "direction", "effect", "ci_low",
           "ci_high", "n")


@dataclass
class PatchResult:
    """``table``: one row per head (or group) x method x direction (``COLUMNS``; a group's ``layer`` and ``head``
    are empty); ``meta``: what was run, with the pairs' mean logit differences (``ld_clean``, ``ld_corrupt``)."""

    table: Any
    meta: dict

    def save(self, out: Any, *, force: bool = False) -> Any:
        """patching.csv, a heatmap per method and direction, report.md and run.json into ``out``."""
        from ..reports.patching import save_patching

        return save_patching(self, out, force=force)

    def effects(self, method: str = "exact", direction: str = "noising") -> Any:
        """``[layer, head]`` effects of single heads (NaN where not run)."""
        import numpy as np

        t = self.table
        t = t[(t["method"] == method) & (t["direction"] == direction) & t["layer"].notna()]
        out = np.full((self.meta["layers"], self.meta["heads"]), np.nan)
        out[t["layer"].astype(int), t["head"].astype(int)] = t["effect"]
        return out


@dataclass
class PairBatch:
    """Pairs of one forward: ``clean`` and ``corrupt`` ids ``[pairs, tok]`` (right-padded), ``mask``, the answer
    position, ``answer`` and ``foil`` token ids per pair."""

    clean: Any
    corrupt: Any
    mask: Any
    position: Any
    answer: Any
    foil: Any


def _one_token(tokenizer: Any, text: str, what: str, source: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        path, _, line = source.rpartition(":")
        raise DataError(f"{what} {text!r} is {len(ids)} tokens for this tokenizer; the metric compares one next "
                        f"token", path=path or source, line=int(line) if line.isdigit() else None,
                        hint="use a word the tokenizer keeps whole (often with a leading space)")
    return ids[0]


def encode_pairs(loaded: Any, pairs: Any, batch_size: int) -> list[PairBatch]:
    """The pairs as batches of token ids, checked: the same length for clean and corrupt, one answer and one
    foil token, and for a masked LM one mask token in each text (the answer position; else the last token)."""
    import torch

    from ..models.loading import leading_token

    tok, decoder = loaded.tokenizer, loaded.info.is_decoder
    bos = leading_token(loaded, None) if decoder else None
    rows = []
    for p in pairs.pairs:
        path, _, line = p.source.rpartition(":")
        where = {"path": path or p.source, "line": int(line) if line.isdigit() else None, "sent_id": p.pair_id}
        ids = []
        for text in (p.clean, p.corrupt):
            got = tok(text, add_special_tokens=not decoder)["input_ids"]
            ids.append(([bos] if bos is not None and (not got or got[0] != bos) else []) + list(got))
        if len(ids[0]) != len(ids[1]):
            d = len(ids[0]) - len(ids[1])
            raise DataError(f"clean has {len(ids[0])} tokens and corrupt {len(ids[1])} ({'+' if d > 0 else ''}{d}); "
                            f"patching puts a head's output at the same positions", **where,
                            hint="change the corrupted words for ones of as many tokens")
        if decoder:
            position = len(ids[0]) - 1
        else:
            masks = [[i for i, t in enumerate(x) if t == tok.mask_token_id] for x in ids]
            if tok.mask_token_id is None or any(len(m) != 1 for m in masks) or masks[0] != masks[1]:
                raise DataError(f"a masked LM's pair needs one {tok.mask_token or 'mask'} token in each text, at the "
                                f"same position, where the answer goes", **where)
            position = masks[0][0]
        rows.append((ids, position, _one_token(tok, p.answer, "answer", p.source),
                     _one_token(tok, p.foil, "foil", p.source)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r[0][0]) for r in chunk)

        def padded(k: int) -> Any:
            return torch.tensor([r[0][k] + [pad] * (width - len(r[0][k])) for r in chunk])

        mask = torch.tensor([[1] * len(r[0][0]) + [0] * (width - len(r[0][0])) for r in chunk])
        out.append(PairBatch(padded(0).to(loaded.device), padded(1).to(loaded.device), mask.to(loaded.device),
                             torch.tensor([r[1] for r in chunk], device=loaded.device),
                             torch.tensor([r[2] for r in chunk], device=loaded.device),
                             torch.tensor([r[3] for r in chunk], device=loaded.device)))
    return out


class Recorder:
    """A session edit that keeps every layer's head outputs ``[batch, q, head, dim]`` and changes nothing."""

    def __init__(self) -> None:
        self.outputs: dict[int, Any] = {}

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        self.outputs[layer] = out.detach().clone()
        return out


class Patch:
    """A session edit that puts the outputs of ``heads`` (``{layer: [head, ...]}``) from ``source`` (a Recorder's
    outputs) in place of the run's own, at every position."""

    def __init__(self, source: dict, heads: dict) -> None:
        self.source, self.heads = source, heads

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        heads = self.heads.get(layer)
        if not heads:
            return out
        out = out.clone()
        out[:, :, heads] = self.source[layer][:, :, heads].to(out.dtype)
        return out


class Probe:
    """A session edit that adds a zero that requires grad to every layer's head outputs: the gradient there is the
    metric's gradient at each head's output (attribution patching)."""

    def __init__(self) -> None:
        self.zeros: dict[int, Any] = {}

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        import torch

        z = torch.zeros_like(out, requires_grad=True)
        self.zeros[layer] = z
        return out + z


def logit_difference(loaded: Any, batch: PairBatch, ids: Any, edit: Any, *, grad: bool = False) -> Any:
    """``[pairs]``: logit(answer) - logit(foil) at each pair's answer position, with ``edit`` in the attention
    function."""
    import torch

    from ..capture.attention import NAME, Session, session

    model = loaded.model
    if getattr(model.config, "_attn_implementation", None) != NAME:
        model.set_attn_implementation(NAME)
    state = Session(modules=list(loaded.attention_modules), edit=edit)
    kwargs = {"use_cache": False} if loaded.info.is_decoder else {}
    with (torch.enable_grad() if grad else torch.inference_mode()), session(state):
        logits = model(input_ids=ids, attention_mask=batch.mask, **kwargs).logits
    rows = torch.arange(len(ids), device=ids.device)
    at = logits[rows, batch.position].float()
    return at[rows, batch.answer] - at[rows, batch.foil]


def _attribution(loaded: Any, batch: PairBatch, ids: Any, here: Recorder, there: Recorder) -> Any:
    """``[pairs, layer, head]``: the gradient of the logit difference at each head's output in the run of ``ids``
    times the change of that output to the other run's (summed over positions and dimensions)."""
    import torch

    probe = Probe()
    ld = logit_difference(loaded, batch, ids, probe, grad=True)
    layers = sorted(probe.zeros)
    grads = torch.autograd.grad(ld.sum(), [probe.zeros[layer] for layer in layers])
    real = batch.mask[:, :, None, None].float()
    return torch.stack([((g * (there.outputs[layer] - here.outputs[layer])).float() * real).sum((1, 3))
                        for layer, g in zip(layers, grads)], 1).detach()


def _groups(spec: Any, info: Any) -> list[list[tuple[int, int]]]:
    groups = [spec] if isinstance(spec, str) else list(spec or ())
    return [parse_heads(g, info.num_layers, info.num_heads) for g in groups if str(g).strip()]


def patch(model: Any = "smollm2", pairs: Any = "induction", *, config: PatchConfig | None = None,
          **options: Any) -> PatchResult:
    """Activation patching of every head of ``model`` on contrast ``pairs`` (a ContrastSet, a .jsonl file, or a
    bundled set: ``induction``, ``ioi``, ``coref``).

    The metric is the logit difference answer - foil at the answer position. ``exact``: one head's output (its
    slice of the output projection's input, at every position) from the other input, in both directions:
    ``noising`` (corrupt into the clean run) gives (LD_clean - LD_patched) / (LD_clean - LD_corrupt),
    ``denoising`` (clean into the corrupt run) (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt), each LD the
    mean over pairs. ``attribution``: the same from the gradient at each head's output times the change of
    that output, every head from one forward and backward per input. ``groups``: head groups patched together
    (``"L18.H6,L17.H3"``). Intervals: the bootstrap over pairs. The settings are those of
    :class:`headscope.config.PatchConfig`, as keywords or ``config=``."""
    import numpy as np
    import pandas as pd
    import torch

    from ..datasets.contrast import GENERATED, load_contrast
    from ..types import ContrastSet

    cfg = PatchConfig.given(config, options)
    contrast = pairs if isinstance(pairs, ContrastSet) else None
    if contrast is None and str(pairs) not in GENERATED:      # a bad file fails before the model loads
        contrast = load_contrast(pairs, limit=cfg.max_pairs)
    loaded = editable_model(model, "patching")
    info = loaded.info
    if not has_lm_head(loaded):
        raise HeadscopeError(f"{info.name}: patching compares the logits of an answer and a foil, and this model "
                             f"has no language-model head; use a causal or masked language model")
    if contrast is None:
        contrast = load_contrast(pairs, tokenizer=loaded.tokenizer, limit=cfg.max_pairs, seed=cfg.seed)
    groups = _groups(cfg.groups, info)
    batches = encode_pairs(loaded, contrast, cfg.batch_size)
    L, H = info.num_layers, info.num_heads
    singles = [[(layer, head)] for layer in range(L) for head in range(H)] if "exact" in cfg.methods else []
    runs = singles + groups
    ld = {"clean": [], "corrupt": []}
    patched = {d: [] for d in cfg.directions}                       # [pairs, run]
    attributed = {d: [] for d in cfg.directions}                    # [pairs, layer, head]
    for batch in batches:
        rec = {"clean": Recorder(), "corrupt": Recorder()}
        for name in rec:
            ld[name].append(logit_difference(loaded, batch, getattr(batch, name), rec[name]))
        for d in cfg.directions:
            run, other = ("clean", "corrupt") if d == "noising" else ("corrupt", "clean")
            ids = getattr(batch, run)
            if runs:
                patched[d].append(torch.stack([logit_difference(loaded, batch, ids,
                                                                Patch(rec[other].outputs, by_layer(g)))
                                               for g in runs], 1))
            if "attribution" in cfg.methods:
                attributed[d].append(_attribution(loaded, batch, ids, rec[run], rec[other]))
    clean, corrupt = (torch.cat(ld[k]).cpu().numpy().astype(np.float64) for k in ("clean", "corrupt"))
    if abs(clean.mean() - corrupt.mean()) < 1e-6:
        raise HeadscopeError(f"the clean and corrupt inputs give the same mean logit difference ({clean.mean():.4g}): "
                             f"there is no difference for a head to carry; check the pairs")
    rng = np.random.default_rng(cfg.seed)
    resample = rng.integers(0, len(clean), size=(cfg.bootstrap, len(clean))) if cfg.bootstrap else None
    base = {"model": info.name, "dataset": contrast.name, "n": len(clean)}
    rows = _rows(cfg, info, runs, singles, patched, attributed, clean, corrupt, resample, base)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in ("layer", "head", "kv_head"):
        table[c] = table[c].astype("Int64")
    meta = {"model": info.name, "dataset": contrast.name, "pairs": len(clean), "layers": L, "heads": H,
            "ld_clean": float(clean.mean()), "ld_corrupt": float(corrupt.mean()), "methods": list(cfg.methods),
            "directions": list(cfg.directions), "groups": [head_name(g) for g in groups], "bootstrap": cfg.bootstrap,
            "seed": cfg.seed}
    return PatchResult(table=table, meta=meta)


def _rows(cfg: PatchConfig, info: Any, runs: list, singles: list, patched: dict, attributed: dict, clean: Any,
          corrupt: Any, resample: Any, base: dict) -> list[dict]:
    """patching.csv's rows: each run's (head's or group's) effect and interval, per direction and method."""
    import numpy as np
    import torch

    L, H = info.num_layers, info.num_heads
    rows = []
    for d in cfg.directions:
        tables = []
        if runs:
            tables.append(("exact", runs, torch.cat(patched[d]).cpu().numpy().astype(np.float64)))
        if "attribution" in cfg.methods:
            a = torch.cat(attributed[d]).cpu().numpy().astype(np.float64).reshape(len(clean), L * H)
            start = clean if d == "noising" else corrupt
            tables.append(("attribution", singles or [[(la, h)] for la in range(L) for h in range(H)],
                           start[:, None] + a))
        for method, heads, values in tables:
            effect, low, high = _effects(d, clean, corrupt, values, resample)
            for g, e, lo, hi in zip(heads, effect, low, high):
                one = len(g) == 1
                rows.append({**base, "heads": head_name(g), "layer": g[0][0] if one else None,
                             "head": g[0][1] if one else None,
                             "kv_head": g[0][1] // (H // info.num_kv_heads) if one else None,
                             "method": method, "direction": d, "effect": e, "ci_low": lo, "ci_high": hi})
    return rows


def _effects(direction: str, clean: Any, corrupt: Any, patched: Any, resample: Any) -> tuple[Any, Any, Any]:
    """Each run's effect (a ratio of means over pairs) and its bootstrap interval over pairs (NaN without one)."""
    import numpy as np

    def ratio(c: Any, k: Any, p: Any) -> Any:
        diff = (c.mean(-1) - k.mean(-1))[..., None]
        return ((c.mean(-1)[..., None] - p.mean(-2)) if direction == "noising"
                else (p.mean(-2) - k.mean(-1)[..., None])) / diff

    effect = ratio(clean, corrupt, patched)
    if resample is None:
        nan = np.full_like(effect, np.nan)
        return effect, nan, nan
    boot = ratio(clean[resample], corrupt[resample], patched[resample])          # [draws, runs]
    return effect, np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)
