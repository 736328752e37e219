"""Position-resolved patching (``patch(..., positions=True)``): the heads with the largest effect, and each group,
patched at one position of the input at a time, and every head's attribution per position, as one tidy table."""

from __future__ import annotations

from typing import Any

from .groups import by_layer, head_name

# The columns of patching_positions.csv (``positions=True``): ``pair`` is the pair's id, ``position`` the token's
# index in the clean input, ``token`` its text there, ``answer_at`` the pair's answer position.
POSITION_COLUMNS = ("model", "dataset", "pair", "heads", "layer", "head", "method", "direction", "position", "token",
                    "answer_at", "effect")


class PositionPatch:
    """A session edit that puts the outputs of ``heads`` from ``source`` in place of the run's own at one position."""

    def __init__(self, source: dict, heads: dict, position: int) -> None:
        self.source, self.heads, self.position = source, heads, position

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        heads = self.heads.get(layer)
        if not heads:
            return out
        out = out.clone()
        out[:, self.position, heads] = self.source[layer][:, self.position, heads].to(out.dtype)
        return out


def chosen_heads(table: Any, count: int, groups: list) -> list[list[tuple[int, int]]]:
    """The ``count`` single heads with the largest |effect| (exact noising where it ran, else attribution's, else
    the first direction's), then each group."""
    single = table[table["head"].notna()]
    method = "exact" if (single["method"] == "exact").any() else "attribution"
    rows = single[single["method"] == method]
    direction = "noising" if (rows["direction"] == "noising").any() else rows["direction"].iloc[0]
    rows = rows[rows["direction"] == direction]
    top = rows.reindex(rows["effect"].abs().sort_values(ascending=False, kind="stable").index).head(count)
    return [[(int(r.layer), int(r.head))] for r in top.itertuples()] + list(groups)


def position_table(loaded: Any, contrast: Any, cfg: Any, batches: list, recorded: list, table: Any,
                   attributed: dict, ld: dict, groups: list, logit_difference: Any) -> Any:
    """``POSITION_COLUMNS`` rows (``logit_difference``: ``patching.logit_difference``, which runs a batch with an
    edit): per pair, position of its clean input (padding left out), direction and
    head: exact patching of the chosen heads (``chosen_heads``) at that one position, one forward per head and
    position, and attribution of the same heads there (the gradient times the change at that position only).
    An effect is that pair's change of logit difference as a share of the mean clean - corrupt difference."""
    import pandas as pd
    import torch

    clean = torch.cat(ld["clean"]).double()
    corrupt = torch.cat(ld["corrupt"]).double()
    diff = float(clean.mean() - corrupt.mean())
    chosen = chosen_heads(table, cfg.position_heads, groups)
    tok, info = loaded.tokenizer, loaded.info
    rows: list[dict] = []
    start = 0
    for k, (batch, rec) in enumerate(zip(batches, recorded)):
        n, width = batch.clean.shape
        lengths = batch.mask.sum(1).tolist()
        ids = [contrast.pairs[start + i].pair_id for i in range(n)]
        tokens = [[tok.decode([t]) for t in batch.clean[i, :lengths[i]].tolist()] for i in range(n)]
        base = clean[start:start + n], corrupt[start:start + n]
        for d in cfg.directions:
            run, other = ("clean", "corrupt") if d == "noising" else ("corrupt", "clean")
            before = base[0] if d == "noising" else base[1]
            for heads in chosen:
                name = head_name(heads)
                one = heads[0] if len(heads) == 1 else (None, None)
                per: dict = {}
                if "exact" in cfg.methods:
                    for pos in range(width):
                        got = logit_difference(loaded, batch, getattr(batch, run),
                                               PositionPatch(rec[other].outputs, by_layer(heads), pos)).double()
                        per.setdefault("exact", []).append(got - before)
                if d in attributed and attributed[d]:
                    a = attributed[d][k]                                   # [pairs, layer, head, position]
                    per["attribution"] = [sum(a[:, la, h, pos] for la, h in heads).double() for pos in range(width)]
                for method, changes in per.items():
                    sign = -1.0 if d == "noising" else 1.0
                    for pos, change in enumerate(changes):
                        for i in range(n):
                            if pos < lengths[i]:
                                rows.append({"model": info.name, "dataset": contrast.name, "pair": ids[i],
                                             "heads": name, "layer": one[0], "head": one[1], "method": method,
                                             "direction": d, "position": pos, "token": tokens[i][pos],
                                             "answer_at": int(batch.position[i]),
                                             "effect": sign * float(change[i]) / diff})
        start += n
    out = pd.DataFrame(rows, columns=list(POSITION_COLUMNS))
    for c in ("layer", "head"):
        out[c] = out[c].astype("Int64")
    return out
