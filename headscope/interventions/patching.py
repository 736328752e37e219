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
    are empty); ``meta``: what was run, with the pairs' mean logit differences (``ld_clean``, ``ld_corrupt``);
    ``positions``: with ``positions=True``, one row per pair x head x position x method x direction
    (``patch_positions.POSITION_COLUMNS``): the share of the mean logit difference that patching the head at
    that one position of that pair moves."""

    table: Any
    meta: dict
    positions: Any = None    # position-resolved patching, with ``positions=True``

    def save(self, out: Any, *, force: bool = False) -> Any:
        """patching.csv, a heatmap per method and direction, report.md and run.json into ``out``."""
        from ..reports.patching import save_patching

        return save_patching(self, out, force=force)

    def effects(self, method: str = "exact", direction: str = "noising") -> Any:
        """``[layer, head]`` effects of single heads, or ``[layer, kv_head]`` of KV groups for a run with
        ``kv`` (NaN where not run)."""
        import numpy as np

        t = self.table
        t = t[(t["method"] == method) & (t["direction"] == direction) & t["layer"].notna()]
        column = "kv_head" if self.meta.get("kv") else "head"
        out = np.full((self.meta["layers"], self.meta["kv_heads" if self.meta.get("kv") else "heads"]), np.nan)
        out[t["layer"].astype(int), t[column].astype(int)] = t["effect"]
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
    metric's gradient at each head's output (attribution patching). It also keeps the outputs themselves
    (``outputs``, as a Recorder does), so that the run it probes needs no second forward to record them."""

    def __init__(self) -> None:
        self.zeros: dict[int, Any] = {}
        self.outputs: dict[int, Any] = {}

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        import torch

        self.outputs[layer] = out.detach().clone()
        z = torch.zeros_like(out, requires_grad=True)
        self.zeros[layer] = z
        return out + z


def _logit_rows(model: Any, batch: PairBatch) -> tuple[dict, Any]:
    """The forward's extra keywords and, per pair, the row of the returned logits at its answer position: where
    the model's forward takes ``logits_to_keep`` (transformers' causal LMs), only the answer positions' logits
    are made (the output layer over a 49k vocabulary is a fifth of smollm2's forward), else all of them."""
    import inspect

    import torch

    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return {}, batch.position
    kept, row = torch.unique(batch.position, return_inverse=True)
    return {"logits_to_keep": kept}, row


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
    extra, at_row = _logit_rows(model, batch)
    with (torch.enable_grad() if grad else torch.inference_mode()), session(state):
        logits = model(input_ids=ids, attention_mask=batch.mask, **kwargs, **extra).logits
    rows = torch.arange(len(ids), device=ids.device)
    at = logits[rows, at_row].float()
    return at[rows, batch.answer] - at[rows, batch.foil]


def _gradients(loaded: Any, batch: PairBatch, ids: Any) -> tuple[Any, Probe, list]:
    """One forward of ``ids`` with grad and one backward: ``(logit differences, the probe with the run's head
    outputs, the gradient at each layer's head outputs)``."""
    import torch

    probe = Probe()
    ld = logit_difference(loaded, batch, ids, probe, grad=True)
    layers = sorted(probe.zeros)
    grads = torch.autograd.grad(ld.sum(), [probe.zeros[layer] for layer in layers])
    return ld.detach(), probe, list(grads)


def _attribution(batch: PairBatch, grads: list, here: Any, there: Any) -> Any:
    """``[pairs, layer, head, position]``: the gradient of the logit difference at each head's output in one run
    (``here``'s outputs) times the change of that output to the other run's (``there``), summed over the head's
    dimensions (0 at padding). Its sum over positions is the head's attribution."""
    import torch

    real = batch.mask[:, :, None].float()
    return torch.stack([((g * (there.outputs[layer] - here.outputs[layer])).float().sum(-1) * real).transpose(1, 2)
                        for layer, g in enumerate(grads)], 1).detach()


def _batch(loaded: Any, batch: PairBatch, cfg: PatchConfig, runs: list) -> tuple[dict, dict, dict, dict]:
    """One batch of pairs: ``(logit differences of the clean and corrupt runs, exact patching's [pairs, run] per
    direction, attribution's [pairs, layer, head, position] per direction, the runs' recorded head outputs)``. A
    run probed for gradients records its head outputs too; only the runs no direction probes are recorded by a
    forward of their own."""
    import torch

    rec: dict = {}
    ld: dict = {}
    grads: dict = {}
    if "attribution" in cfg.methods:
        for d in cfg.directions:
            run = "clean" if d == "noising" else "corrupt"
            ld[run], rec[run], grads[d] = _gradients(loaded, batch, getattr(batch, run))
    for name in ("clean", "corrupt"):
        if name not in rec:
            rec[name] = Recorder()
            ld[name] = logit_difference(loaded, batch, getattr(batch, name), rec[name])
    patched, attributed = {}, {}
    for d in cfg.directions:
        run, other = ("clean", "corrupt") if d == "noising" else ("corrupt", "clean")
        if runs:
            patched[d] = torch.stack([logit_difference(loaded, batch, getattr(batch, run),
                                                       Patch(rec[other].outputs, by_layer(g))) for g in runs], 1)
        if d in grads:
            attributed[d] = _attribution(batch, grads[d], rec[run], rec[other])
    return ld, patched, attributed, rec


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
    units = _units(info, cfg.kv)
    runs = (units if "exact" in cfg.methods else []) + groups
    ld = {"clean": [], "corrupt": []}
    patched = {d: [] for d in cfg.directions}                       # [pairs, run]
    attributed = {d: [] for d in cfg.directions}                    # [pairs, layer, head]
    recorded = []
    for batch in batches:
        *got, rec = _batch(loaded, batch, cfg, runs)
        recorded.append(rec if cfg.positions else None)
        for store, part in zip((ld, patched, attributed), got):
            for key, value in part.items():
                store[key].append(value)
    clean, corrupt = (torch.cat(ld[k]).cpu().numpy().astype(np.float64) for k in ("clean", "corrupt"))
    if abs(clean.mean() - corrupt.mean()) < 1e-6:
        raise HeadscopeError(f"the clean and corrupt inputs give the same mean logit difference ({clean.mean():.4g}): "
                             f"there is no difference for a head to carry; check the pairs")
    rng = np.random.default_rng(cfg.seed)
    resample = rng.integers(0, len(clean), size=(cfg.bootstrap, len(clean))) if cfg.bootstrap else None
    base = {"model": info.name, "dataset": contrast.name, "n": len(clean)}
    rows = _rows(cfg, info, units, groups, patched, attributed, clean, corrupt, resample, base)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in ("layer", "head", "kv_head"):
        table[c] = table[c].astype("Int64")
    meta = {"model": info.name, "dataset": contrast.name, "pairs": len(clean), "layers": L, "heads": H,
            "ld_clean": float(clean.mean()), "ld_corrupt": float(corrupt.mean()), "methods": list(cfg.methods),
            "directions": list(cfg.directions), "groups": [head_name(g) for g in groups], "bootstrap": cfg.bootstrap,
            "seed": cfg.seed, "kv": cfg.kv, "kv_heads": info.num_kv_heads}
    positions = None
    if cfg.positions:
        from .patch_positions import position_table

        positions = position_table(loaded, contrast, cfg, batches, recorded, table, attributed, ld, groups,
                                   logit_difference)
        meta["position_heads"] = sorted(set(positions["heads"])) if len(positions) else []
    return PatchResult(table=table, meta=meta, positions=positions)


def _units(info: Any, kv: bool) -> list[list[tuple[int, int]]]:
    """What each exact run patches and each attribution row sums: every query head alone, or with ``kv`` every
    KV group (the query heads that read one key and value head)."""
    L, H = info.num_layers, info.num_heads
    if not kv:
        return [[(layer, head)] for layer in range(L) for head in range(H)]
    per = H // info.num_kv_heads
    return [[(layer, k * per + j) for j in range(per)] for layer in range(L) for k in range(info.num_kv_heads)]


def _rows(cfg: PatchConfig, info: Any, units: list, groups: list, patched: dict, attributed: dict, clean: Any,
          corrupt: Any, resample: Any, base: dict) -> list[dict]:
    """patching.csv's rows: each run's (head's, KV group's or group's) effect and interval, per direction and
    method. Attribution is linear in the heads' changes, so a KV group's is the sum of its heads'."""
    import numpy as np
    import torch

    per = info.num_heads // info.num_kv_heads
    rows = []
    for d in cfg.directions:
        tables = []
        if "exact" in cfg.methods:
            tables.append(("exact", units + groups, torch.cat(patched[d]).cpu().numpy().astype(np.float64)))
        elif groups:
            tables.append(("exact", groups, torch.cat(patched[d]).cpu().numpy().astype(np.float64)))
        if "attribution" in cfg.methods:
            a = torch.cat([x.sum(-1) for x in attributed[d]]).cpu().numpy().astype(np.float64)  # [pairs, L, H]
            start = clean if d == "noising" else corrupt
            summed = np.stack([sum(a[:, la, h] for la, h in g) for g in units], 1)
            tables.append(("attribution", units, start[:, None] + summed))
        for method, heads, values in tables:
            effect, low, high = _effects(d, clean, corrupt, values, resample)
            for g, e, lo, hi in zip(heads, effect, low, high):
                unit = any(g is u for u in units)
                name = f"L{g[0][0]}.KV{g[0][1] // per}" if unit and len(g) > 1 else head_name(g)
                rows.append({**base, "heads": name, "layer": g[0][0] if unit else None,
                             "head": g[0][1] if unit and len(g) == 1 else None,
                             "kv_head": g[0][1] // per if unit else None,
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
