"""Head ablation: ablate groups of heads by a method of the registry, measure what the model loses, and set it
against ablating as many random heads (``ablate``, ``AblationResult``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import AblationConfig
from ..errors import HeadscopeError
from .batches import as_batches, input_groups
from .edits import HeadEdit, MeanRecorder
from .groups import Group, by_layer, head_groups, head_name, random_groups, role_task, top_heads
from .measures import NO_EFFECT_RULE, edited_forward, editable_model, has_lm_head, model_measures, no_effect, readings
from .methods import Method

# The columns of ablation.csv, in order.
COLUMNS = ("model", "dataset", "heads", "method", "measure", "base", "ablated", "effect", "ci_low", "ci_high",
           "random_median", "ratio_to_random", "n", "no_effect")


@dataclass
class AblationResult:
    """``table``: one row per group x measure x method (``COLUMNS``); ``meta``: what was run."""

    table: Any
    meta: dict
    importance: Any = None      # an ImportanceResult, when asked for: importance.csv, pruning.csv, pruning.png

    def save(self, out: Any, *, force: bool = False) -> Any:
        """ablation.csv, the figures, report.md and run.json into ``out``, written whole (see
        ``reports.interventions.save_ablation``)."""
        from ..reports.interventions import save_ablation

        return save_ablation(self, out, force=force)


def ablate(model: Any = "minilm", data: Any = None, *, config: AblationConfig | None = None,
           **options: Any) -> AblationResult:
    """Ablate heads of ``model`` and measure the change, against ablating random heads.

    The settings are those of :class:`headscope.config.AblationConfig`, given as keywords or as ``config=``:
    ``heads``: ``"L3.H1,L4.H0"`` (one group), a list of such groups, ``"each"`` (or ``"all"``: every head
    alone), ``"layer:N"`` (layer N's heads together), ``"top:TASK[/RELATION]:K"`` (the K best heads of a
    scoring pass) or ``"role:ROLE"`` (the heads a scoring pass gives that role, together; ``role:syntax:nsubj``
    takes both directions).
    ``method``: one of ``methods.METHODS``. ``measures``: ``loss`` (models with an LM head: a decoder's
    next-token loss; an encoder's masked-token loss, ``MLM_SHARE`` of the words' tokens masked, seeded),
    ``hidden`` (1 - cosine of the final hidden states, per token), ``embedding`` (1 - cosine of the mean-pooled
    hidden states, per sentence), ``induction-loss`` (a decoder's loss on the second copy of generated repeated
    sequences), ``pronoun-loss`` (the loss on pronouns' tokens, UPOS PRON; an encoder masks them),
    ``syntax-loss`` (on dependents whose syntactic head the model sees: before them, for a decoder);
    default: ``loss`` where the model has an LM head, else ``hidden`` and ``embedding``.
    Each group is compared with ``random_draws`` seeded groups of as many random heads (for ``each``:
    random other heads); ``ratio_to_random`` is the effect over their median. Under GQA only the query head
    is ablated; ``kv_group=True`` ablates every query head of each head's key/value group.
    """
    import numpy as np

    cfg = AblationConfig.given(config, options)
    loaded = editable_model(model, "ablation")
    method = Method.parse(cfg.method)
    measures = model_measures(loaded, cfg.measures)
    groups, each, selected = choose_groups(loaded, data, cfg)
    rng = np.random.default_rng(cfg.seed)
    draws = [] if each else random_groups(groups, loaded.info, cfg.random_draws, rng)
    collected = collect_readings(loaded, data, measures, groups + draws, method, cfg)
    rows = [row for measure in measures
            for row in effect_rows(loaded.info.name, measure, collected[measure], groups, each, str(method), cfg, rng)]
    return AblationResult(effect_table(rows), ablation_meta(loaded.info, method, measures, groups, selected, cfg))


def choose_groups(loaded: Any, data: Any, cfg: AblationConfig) -> tuple[list[Group], bool, dict]:
    """The head groups of ``cfg.heads``, whether each head is its own group, and ``{"selected_by": ...}`` where
    a scoring pass on ``data`` chose them (``top:`` and ``role:`` specs)."""
    from ..run.analyze import analyze
    from ..tasks import parse_tasks

    info = loaded.info
    scored: dict = {}

    def top(task: str, relation: str | None, k: int) -> list[tuple[int, int]]:
        parse_tasks([task])
        result = analyze(loaded, data, tasks=[task], max_sentences=cfg.max_sentences, seed=cfg.seed, bootstrap=0)
        scored["selected_by"] = f"top {k} of {task}" + (f"/{relation}" if relation else "")
        return top_heads(result.scores, task, k, relation)

    def with_role(name: str) -> list[tuple[int, int]]:
        task = role_task(name, info.is_decoder)
        result = analyze(loaded, data, tasks=[task], max_sentences=cfg.max_sentences, seed=cfg.seed,
                         bootstrap=cfg.bootstrap or 1000)
        roles = result.roles
        # "[CLS] sink" names the active and the no-op ones; "no-op [CLS] sink" only those
        found = roles[(roles["role"] == name) | roles["role"].str.startswith(name + " ")
                      | roles["role"].isin([f"active {name}", f"no-op {name}"])]
        picked = sorted({(int(r.layer), int(r.head)) for r in found.itertuples()})
        if not picked:
            raise HeadscopeError(f"role:{name}: no head of {info.name} has that role on this data (task {task}); "
                                 f"see a run's roles.csv for the roles it has")
        scored["selected_by"] = f"role {name} (task {task})"
        return picked

    groups, each = head_groups(cfg.heads, info, cfg.kv_group, top, with_role)
    return groups, each, scored


def collect_readings(loaded: Any, data: Any, measures: Sequence[str], todo: Sequence[Group], method: Method,
                     cfg: AblationConfig) -> dict:
    """``{measure: (dataset, base [units], ablated [units, groups], denominator [units])}``: each measure's
    per-unit readings with each group of ``todo`` ablated. Measures that read the same inputs share their
    forward passes: one unablated and one per group and batch."""
    import numpy as np

    collected: dict = {}
    masked_lm = has_lm_head(loaded) and not loaded.info.is_decoder
    for mine in input_groups(measures, masked_lm):
        name, batches = as_batches(loaded, data, mine, batch_size=cfg.batch_size, max_sentences=cfg.max_sentences,
                                   seed=cfg.seed, induction_count=cfg.induction_count,
                                   induction_length=cfg.induction_length)
        means = head_means(loaded, batches) if method.entry.needs_mean else None
        parts = read_batches(loaded, batches, mine, todo, method, means)
        for m, (base_num, abl_num, den) in parts.items():
            den_all = np.concatenate(den)
            if not den_all.sum() > 0:
                raise HeadscopeError(f"{name}: measure {m} found no token to read (no pronoun, no dependent "
                                     f"whose head it sees); give data that has them")
            collected[m] = (name, np.concatenate(base_num), np.stack([np.concatenate(a) for a in abl_num], 1),
                            den_all)                                         # abl: [units, groups + draws]
    return collected


def head_means(loaded: Any, batches: list[dict]) -> Any:
    """Every head's mean output over the real tokens of ``batches``, ``[layer, head, dim]``."""
    recorder = MeanRecorder(loaded.info.num_layers, loaded.info.num_heads)
    for b in batches:
        edited_forward(loaded, b, recorder, real=b["attention_mask"].bool())
    return recorder.means()


def read_batches(loaded: Any, batches: list[dict], measures: Sequence[str], todo: Sequence[Group], method: Method,
                 means: Any) -> dict:
    """``{measure: (base numerators, [ablated numerators per group], denominators)}``, one array per batch."""
    parts = {m: ([], [[] for _ in todo], []) for m in measures}        # base, per group, denominator
    for b in batches:
        base = edited_forward(loaded, b, None)
        for k, g in enumerate(todo):
            ablated = edited_forward(loaded, b, HeadEdit(by_layer(g), method, means))
            for m in measures:
                parts[m][1][k].append(readings(m, base, ablated, b["scored"][m])[1].double().cpu().numpy())
        for m in measures:
            nb, _, d = readings(m, base, base, b["scored"][m])
            parts[m][0].append(nb.double().cpu().numpy())
            parts[m][2].append(d.double().cpu().numpy())
    return parts


def effect_rows(model: str, measure: str, got: tuple, groups: Sequence[Group], each: bool, method: str,
                cfg: AblationConfig, rng: Any) -> list[dict]:
    """One row of ablation.csv per group for ``measure``: the effect with its interval, set against the random
    groups (after the groups in ``got``, a measure's entry of ``collect_readings``) or, for ``each``, against
    random other heads."""
    import numpy as np

    from ..analysis.stats import ratio_intervals

    name, base_u, abl_u, den_u = got
    delta = abl_u - base_u[:, None]
    if cfg.bootstrap:
        est, low, high = ratio_intervals(delta, den_u, n_boot=cfg.bootstrap, seed=cfg.seed)
    else:
        missing = np.full(delta.shape[1], np.nan)
        est, low, high = delta.sum(0) / den_u.sum(), missing, missing
    effect_all = delta.sum(0) / den_u.sum()
    base_value = base_u.sum() / den_u.sum()
    draws = cfg.random_draws
    rows = []
    for k, g in enumerate(groups):
        if each:
            others = np.delete(effect_all[:len(groups)], k)
            pick = rng.choice(len(others), size=min(draws, len(others)), replace=False) if len(others) else []
            random = others[pick] if len(others) else np.array([])
        else:
            random = effect_all[len(groups) + k * draws: len(groups) + (k + 1) * draws]
        median = float(np.median(random)) if len(random) else float("nan")
        rows.append({"model": model, "dataset": name, "heads": head_name(g), "method": method,
                     "measure": measure, "base": float(base_value), "ablated": float(base_value + est[k]),
                     "effect": float(est[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
                     "random_median": median,
                     "ratio_to_random": float(est[k] / median) if median > 0 else float("nan"),
                     "n": int(len(den_u)),
                     "no_effect": no_effect(float(est[k]), float(low[k]), float(high[k]), measure)})
    return rows


def effect_table(rows: list[dict]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS))


def ablation_meta(info: Any, method: Method, measures: list[str], groups: Sequence[Group], selected: dict,
                  cfg: AblationConfig) -> dict:
    """What run.json says was run."""
    heads = cfg.heads
    return {"model": dataclasses.asdict(info), "method": str(method), "measures": measures,
            "heads": heads if isinstance(heads, str) else [head_name(g) for g in groups],
            "random_draws": cfg.random_draws, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
            "kv_group": cfg.kv_group, **selected,
            "note": "under GQA an ablation hits the query head only, unless kv_group",
            "no_effect_rule": NO_EFFECT_RULE}
