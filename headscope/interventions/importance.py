"""Head importance and pruning: every head's importance (gate gradients, or zeroing each head alone) and the curve
of the measure as heads are removed least important first (``importance``, ``ImportanceResult``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ImportanceConfig
from ..errors import HeadscopeError
from .ablate import ablate
from .batches import as_batches
from .edits import GateEdit, HeadEdit
from .groups import by_layer
from .measures import edited_forward, editable_model, has_lm_head, readings
from .methods import Method


@dataclass
class ImportanceResult:
    """``table``: every head's importance and rank (``model, dataset, layer, head, importance, rank, how``);
    ``curve``: the measure as heads are removed in order of importance, least important first
    (``removed, share, measure, value, base``); ``prunable``: how many heads can go with the measure's cost
    under ``tolerance`` (1 - cosine of the hidden states, or the relative rise of the loss)."""

    table: Any
    curve: Any
    prunable: int
    tolerance: float
    measure: str

    def save(self, folder: Any) -> None:
        """importance.csv, pruning.csv and pruning.png into ``folder`` (see ``reports.interventions``)."""
        from ..reports.interventions import save_importance

        save_importance(self, folder)


def importance(model: Any = "minilm", data: Any = None, *, config: ImportanceConfig | None = None,
               **options: Any) -> ImportanceResult:
    """Every head's importance and a pruning curve.

    The settings are those of :class:`headscope.config.ImportanceConfig`, given as keywords or as ``config=``.
    With an LM head (``measure="loss"``): the mean absolute gradient of the next-token loss at a per-head gate
    of 1, one forward and one backward per batch (Michel et al. 2019). Without one (``"hidden"``): a gradient
    at the unablated model is zero for a distance, so each head's importance is the hidden-state change of
    zeroing it alone (one forward per head and batch). The curve removes (zeroes) heads least important
    first in ``steps`` steps; ``prunable`` is the most heads removed at a cost under ``tolerance``."""
    import numpy as np
    import pandas as pd

    cfg = ImportanceConfig.given(config, options)
    loaded = editable_model(model, "importance")
    info = loaded.info
    has_lm = has_lm_head(loaded)
    measure = cfg.measure or ("loss" if has_lm else "hidden")
    if measure == "loss" and not has_lm:
        raise HeadscopeError(f"{info.name}: the loss needs a language-model head, which this model has not; "
                             f"use the hidden measure")
    name, batches = as_batches(loaded, data, [measure], batch_size=cfg.batch_size, max_sentences=cfg.max_sentences,
                               seed=cfg.seed, induction_count=0, induction_length=0)
    L, H = info.num_layers, info.num_heads
    if measure == "loss":
        scores, how = gate_importance(loaded, batches), "mean |d loss / d gate| (Michel et al. 2019)"
    else:
        each = ablate(loaded, data, heads="each", measures=["hidden"], random_draws=1, bootstrap=0,
                      batch_size=cfg.batch_size, max_sentences=cfg.max_sentences, seed=cfg.seed).table
        scores = each["effect"].to_numpy().reshape(L, H)
        how = "hidden-state change (1 - cosine) of zeroing the head alone"
    order = np.argsort(scores.reshape(-1), kind="stable")                    # least important first
    rank = np.empty(L * H, dtype=int)
    rank[order[::-1]] = np.arange(1, L * H + 1)
    table = pd.DataFrame({"model": info.name, "dataset": name, "layer": np.repeat(np.arange(L), H),
                          "head": np.tile(np.arange(H), L), "importance": scores.reshape(-1), "rank": rank,
                          "how": how})
    curve = pruning_curve(loaded, batches, measure, order, cfg.steps)
    return ImportanceResult(table, curve, prunable(curve, measure, cfg.tolerance), cfg.tolerance, measure)


def gate_importance(loaded: Any, batches: list[dict]) -> Any:
    """``[layer, head]``: the mean over batches of |d loss / d gate| at gates of 1 (the weights frozen meanwhile)."""
    import torch

    info = loaded.info
    gates = torch.ones(info.num_layers, info.num_heads, device=loaded.device, requires_grad=True)
    total = torch.zeros(info.num_layers, info.num_heads, device=loaded.device)
    frozen = [p for p in loaded.model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for b in batches:
            unit = edited_forward(loaded, b, GateEdit(gates), grad=True)
            weight = b["scored"]["loss"].float()
            loss = (unit.nll * weight).sum() / weight.sum().clamp_min(1)
            (grad,) = torch.autograd.grad(loss, gates)
            total += grad.abs()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return (total / max(1, len(batches))).cpu().numpy()


def pruning_curve(loaded: Any, batches: list[dict], measure: str, order: Any, steps: int) -> Any:
    """The measure with the first heads of ``order`` (flat ``layer * H + head`` indices) zeroed, at ``steps + 1``
    counts from none to all: ``removed, share, measure, value, base``."""
    import numpy as np
    import pandas as pd

    H = loaded.info.num_heads
    total = loaded.info.num_layers * H
    counts = sorted({int(round(x)) for x in np.linspace(0, total, steps + 1)})
    rows = []
    base = None
    refs = [edited_forward(loaded, b, None) for b in batches]                  # the model unablated
    for k in counts:
        removed = [(int(i // H), int(i % H)) for i in order[:k]]
        edit = HeadEdit(by_layer(removed), Method("zero")) if removed else None
        num = den = base_num = 0.0
        for b, ref in zip(batches, refs):
            got = edited_forward(loaded, b, edit) if edit else ref
            nb, na, d = readings(measure, ref, got, b["scored"][measure])
            num, den, base_num = num + float(na.sum()), den + float(d.sum()), base_num + float(nb.sum())
        value = num / den
        base = base_num / den if base is None else base
        rows.append({"removed": k, "share": k / total, "measure": measure, "value": value, "base": base})
    return pd.DataFrame(rows)


def prunable(curve: Any, measure: str, tolerance: float) -> int:
    """The most heads removed at a cost under ``tolerance``: the loss's relative rise, or the distance itself."""
    cost = (curve["value"] - curve["base"]) / curve["base"] if measure == "loss" else curve["value"]
    return int(curve["removed"][cost < tolerance].max()) if (cost < tolerance).any() else 0
