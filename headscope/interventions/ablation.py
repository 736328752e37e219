"""Head ablation: replace chosen heads' outputs inside headscope's attention function, and measure what the model
loses against ablating random heads."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import HeadscopeError

METHODS = ("zero", "mean", "uniform", "sink", "window:W")
MEASURES = ("loss", "hidden", "embedding", "induction-loss", "pronoun-loss", "syntax-loss")
LOSSES = ("loss", "induction-loss", "pronoun-loss", "syntax-loss")     # measures read from the LM head
MLM_SHARE = 0.15          # the share of tokens an encoder's masked-token loss masks (seeded)
# The columns of ablation.csv, in order.
COLUMNS = ("model", "dataset", "heads", "method", "measure", "base", "ablated", "effect", "ci_low", "ci_high",
           "random_median", "ratio_to_random", "n", "no_effect")


@dataclass(frozen=True)
class Method:
    """What an ablated head's output becomes.

    ``zero``: nothing; ``mean``: the head's mean output over the data; ``uniform``: the mean of the values
    of every key the row may see; ``sink``: the first token's value; ``window`` (``window:W``): attention
    over the first key and the keys less than ``W`` positions away (the last W keys of a decoder)."""

    kind: str
    window: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Method":
        text = str(text).strip()
        if text in ("zero", "mean", "uniform", "sink"):
            return cls(text)
        m = re.fullmatch(r"window:(\d+)", text)
        if m and int(m.group(1)) >= 1:
            return cls("window", int(m.group(1)))
        raise HeadscopeError(f"unknown ablation method {text!r}; use one of {', '.join(METHODS)} (W >= 1)")

    def __str__(self) -> str:
        return f"window:{self.window}" if self.kind == "window" else self.kind


def parse_heads(spec: str, num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """``"L3.H1,L4.H0"`` as ``[(3, 1), (4, 0)]``, checked against the model's layers and heads."""
    from ..schema import parse_head_label

    heads = []
    for part in str(spec).split(","):
        parsed = parse_head_label(part)
        if parsed is None:
            raise HeadscopeError(f"head {part.strip()!r} in {spec!r} is not of the form L<layer>.H<head> "
                                 f"(0-based, e.g. L3.H1); separate heads with commas")
        layer, head = parsed
        if layer >= num_layers or head >= num_heads:
            raise HeadscopeError(f"head L{layer}.H{head} is not in the model: it has layers 0-{num_layers - 1} "
                                 f"and heads 0-{num_heads - 1}")
        if (layer, head) not in heads:
            heads.append((layer, head))
    return heads


# A distance (hidden, embedding) is never below zero, so its interval cannot include zero: under this it is nothing.
NEGLIGIBLE_DISTANCE = 1e-3
SIGNED = LOSSES                           # measures whose change can go either way
NO_EFFECT_RULE = (f"a loss whose interval includes 0, or a hidden-state or embedding change under "
                  f"{NEGLIGIBLE_DISTANCE:g}")


def no_effect(effect: float, ci_low: float, ci_high: float, measure: str = "loss") -> bool:
    """Whether removing the heads changed nothing that the data tells apart from chance: for a loss, its
    interval includes zero (without one, the effect is not above zero); for a distance (1 - cosine), its upper
    bound (or the effect) is under ``NEGLIGIBLE_DISTANCE``."""
    import math

    if measure not in SIGNED:
        return (effect if math.isnan(ci_high) else ci_high) < NEGLIGIBLE_DISTANCE
    if math.isnan(ci_low) or math.isnan(ci_high):
        return not effect > 0
    return ci_low <= 0 <= ci_high


def head_name(group: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"L{layer}.H{head}" for layer, head in group)


def visible_keys(inputs: Any) -> Any:
    """``[batch, q, k]`` bool: the keys each row may see, from the call's mask (or the causal or full rule
    that transformers left implicit)."""
    import torch

    q_len, k_len = inputs.query.shape[2], inputs.key.shape[2]
    mask = inputs.attention_mask
    if mask is None:
        if inputs.causal:
            return torch.ones(q_len, k_len, dtype=torch.bool, device=inputs.query.device).tril(k_len - q_len)[None]
        return torch.ones(1, q_len, k_len, dtype=torch.bool, device=inputs.query.device)
    mask = mask[:, 0, :, :k_len]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


class HeadEdit:
    """The edit of a capture session (``Session.edit``) that ablates ``heads`` (``{layer: [head, ...]}``) by
    ``method``; ``means`` (``[layer, head, dim]``) for the ``mean`` method."""

    def __init__(self, heads: dict, method: Method, means: Any = None) -> None:
        if method.kind == "mean" and means is None:
            raise ValueError("the mean method needs the heads' mean outputs (head_means)")
        self.heads, self.method, self.means = heads, method, means

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        import torch

        heads = self.heads.get(layer)
        if not heads:
            return out
        out = out.clone()
        n_rep = inputs.query.shape[1] // inputs.value.shape[1]
        kind = self.method.kind
        visible = visible_keys(inputs) if kind in ("uniform", "window") else None
        for h in heads:
            g = h // n_rep              # the key/value head of query head h (GQA): only h is ablated
            if kind == "zero":
                out[:, :, h] = 0
            elif kind == "mean":
                out[:, :, h] = self.means[layer, h].to(out.dtype)
            elif kind == "sink":
                out[:, :, h] = inputs.value[:, g, :1].to(out.dtype)
            elif kind == "uniform":
                weights = visible.float() / visible.sum(-1, keepdim=True).clamp_min(1)
                out[:, :, h] = torch.matmul(weights, inputs.value[:, g].float()).to(out.dtype)
            else:
                out[:, :, h] = _window_head(inputs, h, g, visible, self.method.window).to(out.dtype)
        return out


def _window_head(inputs: Any, h: int, g: int, visible: Any, window: int) -> Any:
    """Head ``h``'s output ``[batch, q, dim]`` with attention only on the first key and keys less than
    ``window`` positions away, computed as the model does (softcap, sinks, position bias)."""
    import torch

    from ..capture.attention import block_probabilities

    q_len, k_len = inputs.query.shape[2], inputs.key.shape[2]
    rows = torch.arange(q_len, device=visible.device).unsqueeze(1) + (k_len - q_len)
    cols = torch.arange(k_len, device=visible.device)
    near = ((rows - cols).abs() < window) | (cols == 0)
    mask = (visible & near).unsqueeze(1)
    bias = inputs.position_bias
    if bias is not None and bias.dim() == 4:
        bias = bias[:, h:h + 1] if bias.shape[1] > 1 else bias
    probs, _ = block_probabilities(inputs.query[:, h:h + 1].float() * inputs.scaling,
                      inputs.key[:, g:g + 1].float().transpose(-1, -2), mask, softcap=inputs.softcap,
                      sinks=inputs.sinks[h:h + 1] if inputs.sinks is not None else None, position_bias=bias)
    return torch.matmul(probs, inputs.value[:, g:g + 1].float())[:, 0]


class GateEdit:
    """A session edit that multiplies each head's output by its gate (``gates`` ``[layer, head]``, ones that
    require grad): the gradient of a loss at the gates is every head's importance at once (Michel et al. 2019)."""

    def __init__(self, gates: Any) -> None:
        self.gates = gates

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        return out * self.gates[layer].to(out.dtype).view(1, 1, -1, 1)


class MeanRecorder:
    """A session edit that leaves the outputs as they are and sums each head's output over the real rows
    (``Session.real``), for the ``mean`` method."""

    def __init__(self, num_layers: int, num_heads: int) -> None:
        self.sums: list = [None] * num_layers
        self.count = 0
        self.state: Any = None

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        real = self.state.real.to(out.dtype).unsqueeze(-1).unsqueeze(-1)
        total = (out.float() * real).sum((0, 1))
        self.sums[layer] = total if self.sums[layer] is None else self.sums[layer] + total
        if layer == 0:
            self.count += int(self.state.real.sum())
        return out

    def means(self) -> Any:
        import torch

        return torch.stack(self.sums) / max(self.count, 1)


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Unit:
    """One forward's readings (a unit: a sentence or a generated sequence)."""

    nll: Any = None        # [units, tok] the loss of each position's target (a decoder: the token there, from
    #                        the tokens before it; a masked LM: the original token at a masked position)
    hidden: Any = None     # [units, tok, dim] final hidden states
    mask: Any = None       # [units, tok] real tokens


def edited_forward(loaded: Any, batch: dict, edit: Any, *, real: Any = None, grad: bool = False) -> Unit:
    """One forward of ``batch`` (its ``masked_ids`` where it has them: a masked LM's inputs) with ``edit`` in the
    attention function (None: the model as it is); ``grad``: with autograd (for gates), else in inference mode."""
    import torch

    from ..capture.attention import NAME, Session, session

    model = loaded.model
    if getattr(model.config, "_attn_implementation", None) != NAME:
        model.set_attn_implementation(NAME)
    state = Session(modules=list(loaded.attention_modules), edit=edit, real=real)
    if isinstance(edit, MeanRecorder):
        edit.state = state
    kwargs = {"use_cache": False} if loaded.info.is_decoder else {}
    ids = batch["input_ids"]
    with (torch.enable_grad() if grad else torch.inference_mode()), session(state):
        out = model(input_ids=batch.get("masked_ids", ids), attention_mask=batch["attention_mask"],
                    output_hidden_states=True, **kwargs)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
    unit = Unit(hidden=hidden.float(), mask=batch["attention_mask"].bool())
    logits = getattr(out, "logits", None)
    if logits is not None:
        logits = logits.float()
        if loaded.info.is_decoder:
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            unit.nll = torch.cat([torch.zeros_like(nll[:, :1]), nll], 1)
        else:
            unit.nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    return unit


def readings(measure: str, base: Unit, ablated: Unit, scored: Any) -> tuple[Any, Any, Any]:
    """Per-unit ``(base numerator, ablated numerator, denominator)`` of ``measure``; ``scored`` ``[units, tok]``:
    the positions it reads (a loss: the targets whose loss counts; hidden: the real tokens)."""
    import torch

    weight = scored.float()
    if measure in LOSSES:
        return (base.nll * weight).sum(1), (ablated.nll * weight).sum(1), weight.sum(1)
    if measure == "hidden":
        dist = 1 - torch.nn.functional.cosine_similarity(base.hidden, ablated.hidden, dim=-1)
        return torch.zeros_like(weight[:, 0]), (dist * weight).sum(1), weight.sum(1)
    mask = base.mask.float()
    pooled = [(u.hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True) for u in (base, ablated)]
    dist = 1 - torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=-1)
    return torch.zeros_like(dist), dist, torch.ones_like(dist)


@dataclass
class AblationResult:
    """``table``: one row per group x measure x method (``COLUMNS``); ``meta``: what was run."""

    table: Any
    meta: dict
    importance: Any = None      # an ImportanceResult, when asked for: importance.csv, pruning.csv, pruning.png

    def save(self, out: Any, *, force: bool = False) -> Any:
        """ablation.csv, report.md and run.json into ``out``, written whole (see ``reports.folder.staged_output``)."""
        import json
        from pathlib import Path

        from ..reports.folder import staged_output
        from ..reports.interventions import ablation_markdown
        from ..reports.writer import write_csv, write_text

        with staged_output(Path(out), "ablation", force=force) as folder:
            write_csv(self.table, folder / "ablation.csv")
            self.figures(folder)
            if self.importance is not None:
                self.importance.save(folder)
            write_text(folder / "report.md", ablation_markdown(self))
            write_text(folder / "run.json", json.dumps(self.meta, indent=2, default=str) + "\n")
        return Path(out)


    def figures(self, folder: Any) -> list[str]:
        """ablation_effects.png (the largest effects against random heads) and, when every head was ablated
        alone, ablation_<measure>.png (a layer x head grid of effects); the names written."""
        from pathlib import Path

        from ..reports.figures import ablation_effects_png, ablation_grids, file_part, heatmap_png

        if not len(self.table):
            return []
        folder = Path(folder)
        ablation_effects_png(self.table, folder / "ablation_effects.png")
        names = ["ablation_effects.png"]
        model = self.meta.get("model") if isinstance(self.meta.get("model"), dict) else {}
        if model.get("num_layers") and model.get("num_heads"):
            for measure, grid in ablation_grids(self.table, model["num_layers"], model["num_heads"]).items():
                name = f"ablation_{file_part(measure)}.png"
                low = float(min(0.0, grid.to_numpy().min()))
                heatmap_png(grid, f"Effect of removing each head alone on {measure} ({self.meta.get('method')})",
                            folder / name, vmax=None, vmin=low, label=measure)
                names.append(name)
        self.meta["figures"] = names
        return names


def top_heads(scores: Any, task: str, k: int, relation: str | None = None) -> list[tuple[int, int]]:
    """The ``k`` best heads of ``task`` in a score table: by its first measure of the report's top-heads table
    (its relation ``all`` where the task has one, else the task's own, else its first), or by ``relation``."""
    from ..tasks import measures

    rows = scores[(scores["task"] == task) & scores["layer"].notna() & scores["baseline"].isna()]
    shown = measures(where="top", task=task)
    if shown:
        rows = rows[rows["metric"] == shown[0].metric]
        if shown[0].direction is not None:
            rows = rows[rows["direction"] == shown[0].direction]
    relations = list(dict.fromkeys(rows["relation"]))
    if relation is None:
        relation = next((r for r in ("all", task) if r in relations), relations[0] if relations else None)
    rows = rows[rows["relation"] == relation]
    if rows.empty:
        raise HeadscopeError(f"top:{task}: the scoring pass gave no head scores for relation {relation!r}; "
                             f"its relations are {', '.join(map(str, relations)) or 'none'}")
    best = rows.groupby(["layer", "head"])["score"].mean().nlargest(k)
    return [(int(layer), int(head)) for layer, head in best.index]


def role_task(role: str, is_decoder: bool) -> str:
    """The scoring task whose roles include ``role`` (a role name or its start, e.g. ``syntax:nsubj``)."""
    from ..tasks import rules

    if role.startswith("syntax:"):
        return "tree" if role == "syntax:tree" else "syntax"
    if role == "coreference":
        return "coref"
    for rule in rules(is_decoder):
        if rule.role == role:
            return rule.task
    known = sorted({r.role for r in rules(is_decoder)} | {"coreference", "syntax:<relation>"})
    raise HeadscopeError(f"role:{role}: no task gives that role to a {'decoder' if is_decoder else 'encoder'}; "
                         f"roles are {', '.join(known)}")


def _groups(spec: Any, info: Any, kv_group: bool, top: Any = None, role: Any = None
            ) -> tuple[list[list[tuple[int, int]]], bool]:
    """The head groups of ``spec`` and whether each head is its own group (``each``); ``top(task, relation, k)``
    gives the heads of a ``top:TASK[/RELATION]:K`` spec, ``role(name)`` those of ``role:NAME``."""
    L, H = info.num_layers, info.num_heads
    text = spec.strip() if isinstance(spec, str) else None
    m = re.fullmatch(r"top:([\w-]+)(?:/([^:]+))?:(\d+)", text) if text else None
    if text and text.startswith("top:") and (m is None or int(m.group(3)) < 1):
        raise HeadscopeError(f"head spec {spec!r} is not of the form top:TASK:K or top:TASK/RELATION:K "
                             f"(e.g. top:induction:3)")
    layer = re.fullmatch(r"layer:(\d+)", text) if text else None
    if text and text.startswith("layer:") and (layer is None or int(layer.group(1)) >= L):
        raise HeadscopeError(f"head spec {spec!r}: give layer:N with N a layer of the model (0-{L - 1})")
    if m:
        groups, each = [top(m.group(1), m.group(2), int(m.group(3)))], False
    elif layer:
        groups, each = [[(int(layer.group(1)), head) for head in range(H)]], False
    elif text and text.startswith("role:"):
        groups, each = [role(text[len("role:"):].strip())], False
    elif text in ("each", "all"):
        groups, each = [[(la, head)] for la in range(L) for head in range(H)], True
    elif text:
        groups, each = [parse_heads(spec, L, H)], False
    else:
        groups, each = [parse_heads(s, L, H) if isinstance(s, str) else [tuple(map(int, x)) for x in s]
                        for s in spec], False
    if kv_group:
        size = info.kv_group_size
        groups = [sorted({(la, (head // size) * size + i) for la, head in g for i in range(size)})
                  for g in groups]
    return groups, each


def input_groups(measures: Sequence[str], masked_lm: bool) -> list[list[str]]:
    """The measures that read the same inputs, grouped (each group shares its forward passes): a decoder's
    sentence measures together, the generated induction sequences apart; a masked LM's losses each on inputs
    masked for it."""
    groups: dict = {}
    for m in measures:
        key = "generated" if m == "induction-loss" else (m if masked_lm and m in LOSSES else "data")
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def _role_words(sentence: Any, measure: str, causal: bool) -> list[bool]:
    """The words whose tokens a role's loss reads: pronouns (UPOS PRON); dependents whose syntactic head is in
    the context the model sees (before them, for a decoder)."""
    n = len(sentence.words)
    if measure == "pronoun-loss":
        return [sentence.upos[i] == "PRON" for i in range(n)]
    return [0 <= sentence.heads[i] and (sentence.heads[i] < i or not causal) for i in range(n)]


def _as_batches(loaded: Any, data: Any, measures: Sequence[str], *, batch_size: int, max_sentences: int | None,
                seed: int, induction_count: int, induction_length: int) -> tuple[str, list[dict]]:
    """The dataset's name and its batches for ``measures`` (one group of ``input_groups``): ``input_ids``,
    ``attention_mask``, ``scored`` (each measure's positions) and, for a masked LM's loss, ``masked_ids``."""
    import numpy as np
    import torch

    from ..models.loading import leading_token

    pad = loaded.tokenizer.pad_token_id
    pad = pad if pad is not None else (loaded.tokenizer.eos_token_id or 0)
    dev = loaded.device
    if "induction-loss" in measures:
        from ..analysis.induction import make_sequences

        vocab = loaded.model.get_input_embeddings().num_embeddings
        seqs = make_sequences(loaded.tokenizer, count=induction_count, length=induction_length, seed=seed,
                              bos=leading_token(loaded, None) is not None, vocab_size=vocab)
        batches = []
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i:i + batch_size]
            ids = torch.tensor([s.input_ids for s in chunk], device=dev)
            second = torch.zeros_like(ids, dtype=torch.bool)
            for j, s in enumerate(chunk):
                second[j, s.bos + s.length + 1:] = True         # predicted tokens of the second copy
            batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                            "scored": {"induction-loss": second}})
        return "repeated_tokens", batches
    from ..capture.alignment import encode_sentences
    from ..datasets.loading import sample_path
    from ..run.jobs import as_sources

    # a path, a Corpus, Sentences or strings, as analyze takes them; the first source with sentences is read
    sources = as_sources(data if data is not None else sample_path(), keep_subtypes=False, on_error="fail",
                         max_sentences=max_sentences, fmt=None)
    corpus = next((s for s in sources if getattr(s, "sentences", None)), sources[0])
    sentences = list(getattr(corpus, "sentences", []))[:max_sentences]
    if not sentences:
        raise HeadscopeError(f"{corpus.name}: ablation reads sentences (CoNLL-U or text), and this data has none")
    for m, needs, what in (("pronoun-loss", "upos", "part-of-speech tags (UPOS)"),
                           ("syntax-loss", "heads", "dependency trees")):
        if m in measures and any(getattr(s, needs) is None for s in sentences):
            bad = next(s for s in sentences if getattr(s, needs) is None)
            raise HeadscopeError(f"{bad.source or corpus.name}: measure {m} needs {what}, and sentence "
                                 f"{bad.sent_id or '?'} has none; give CoNLL-U data with them")
    causal = loaded.info.is_decoder
    masked_lm = not causal and any(m in LOSSES for m in measures)
    if masked_lm and loaded.tokenizer.mask_token_id is None:
        raise HeadscopeError(f"{loaded.info.name}: a masked-token loss needs the tokenizer's mask token, which it "
                             f"has not; use hidden or embedding")
    encoded = encode_sentences(loaded.tokenizer, sentences, bos_id=leading_token(loaded, None),
                               max_length=loaded.info.max_length)
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        t = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), t), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), t), dtype=torch.long)
        scored = {m: torch.zeros((len(chunk), t), dtype=torch.bool) for m in measures}
        for j, e in enumerate(chunk):
            ids[j, :len(e)] = torch.tensor(e.input_ids)
            mask[j, :len(e)] = 1
            words = np.array(e.word_ids)
            for m in measures:
                if m in ("pronoun-loss", "syntax-loss"):
                    chosen = np.array(_role_words(sentences[e.index], m, causal) + [False])   # index -1: specials
                    scored[m][j, :len(e)] = torch.from_numpy(chosen[words])
                elif m == "loss" and masked_lm:
                    real = np.flatnonzero(words >= 0)
                    pick = rng.choice(real, size=max(1, int(round(MLM_SHARE * len(real)))), replace=False)
                    scored[m][j, torch.from_numpy(pick)] = True
                elif m == "loss":
                    scored[m][j, 1:len(e)] = True                     # every token predicted from what precedes
                else:
                    scored[m][j, :len(e)] = True
                if causal and m in LOSSES:
                    scored[m][j, 0] = False                           # the first token has no context
        batch = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev),
                 "scored": {m: v.to(dev) for m, v in scored.items()}}
        if masked_lm:
            (m,) = [m for m in measures if m in LOSSES]
            batch["masked_ids"] = batch["input_ids"].masked_fill(batch["scored"][m], loaded.tokenizer.mask_token_id)
        batches.append(batch)
    return corpus.name, batches


def ablate(model: Any = "minilm", data: Any = None, *, heads: Any = "each", method: str = "zero",
           measures: Sequence[str] | None = None, random_draws: int = 5, seed: int = 0, batch_size: int = 16,
           max_sentences: int | None = None, bootstrap: int = 1000, kv_group: bool = False,
           induction_count: int = 16, induction_length: int = 32) -> AblationResult:
    """Ablate heads of ``model`` and measure the change, against ablating random heads.

    ``heads``: ``"L3.H1,L4.H0"`` (one group), a list of such groups, ``"each"`` (or ``"all"``: every head
    alone), ``"layer:N"`` (layer N's heads together), ``"top:TASK[/RELATION]:K"`` (the K best heads of a
    scoring pass) or ``"role:ROLE"`` (the heads a scoring pass gives that role, together; ``role:syntax:nsubj``
    takes both directions).
    ``method``: one of ``METHODS``. ``measures``: ``loss`` (models with an LM head: a decoder's next-token
    loss; an encoder's masked-token loss, ``MLM_SHARE`` of the words' tokens masked, seeded), ``hidden``
    (1 - cosine of the final hidden states, per token), ``embedding`` (1 - cosine of the mean-pooled hidden
    states, per sentence), ``induction-loss`` (a decoder's loss on the second copy of generated repeated
    sequences), ``pronoun-loss`` (the loss on pronouns' tokens, UPOS PRON; an encoder masks them),
    ``syntax-loss`` (on dependents whose syntactic head the model sees: before them, for a decoder);
    default: ``loss`` where the model has an LM head, else ``hidden`` and ``embedding``.
    Each group is compared with ``random_draws`` seeded groups of as many random heads (for ``each``:
    random other heads); ``ratio_to_random`` is the effect over their median. Under GQA only the query head
    is ablated; ``kv_group=True`` ablates every query head of each head's key/value group.
    """
    import numpy as np
    import pandas as pd

    from ..analysis.stats import ratio_intervals

    loaded = editable_model(model, "ablation")
    info = loaded.info
    parsed = Method.parse(method)
    has_lm = has_lm_head(loaded)
    measures = list(measures) if measures else (["loss"] if has_lm else ["hidden", "embedding"])
    for m in measures:
        if m not in MEASURES:
            raise HeadscopeError(f"unknown measure {m!r}; use one of {', '.join(MEASURES)}")
        if m in LOSSES and not has_lm:
            raise HeadscopeError(f"{info.name}: measure {m!r} needs a language-model head, which this model has "
                                 f"not; use hidden or embedding")
        if m == "induction-loss" and not info.is_decoder:
            raise HeadscopeError(f"{info.name}: measure induction-loss needs a causal language model (an encoder "
                                 f"sees the second copy's own tokens); use loss, hidden or embedding")
    scored: dict = {}

    def top(task: str, relation: str | None, k: int) -> list[tuple[int, int]]:
        from ..run.analyze import analyze
        from ..tasks import parse_tasks

        parse_tasks([task])
        result = analyze(loaded, data, tasks=[task], max_sentences=max_sentences, seed=seed, bootstrap=0)
        scored["selected_by"] = f"top {k} of {task}" + (f"/{relation}" if relation else "")
        return top_heads(result.scores, task, k, relation)

    def with_role(name: str) -> list[tuple[int, int]]:
        from ..run.analyze import analyze

        task = role_task(name, info.is_decoder)
        result = analyze(loaded, data, tasks=[task], max_sentences=max_sentences, seed=seed,
                         bootstrap=bootstrap or 1000)
        roles = result.roles
        found = roles[(roles["role"] == name) | roles["role"].str.startswith(name + " ")]
        picked = sorted({(int(r.layer), int(r.head)) for r in found.itertuples()})
        if not picked:
            raise HeadscopeError(f"role:{name}: no head of {info.name} has that role on this data (task {task}); "
                                 f"see a run's roles.csv for the roles it has")
        scored["selected_by"] = f"role {name} (task {task})"
        return picked

    groups, each = _groups(heads, info, kv_group, top, with_role)
    rng = np.random.default_rng(seed)
    all_heads = [(layer, head) for layer in range(info.num_layers) for head in range(info.num_heads)]
    draws: list[list[tuple[int, int]]] = []
    if not each:
        for g in groups:
            others = [x for x in all_heads if x not in g]
            for _ in range(random_draws):
                pick = rng.choice(len(others), size=min(len(g), len(others)), replace=False)
                draws.append([others[i] for i in sorted(pick)])
    # Measures that read the same inputs share their forward passes: one unablated and one per group and batch.
    collected: dict = {}
    todo = groups + draws
    masked_lm = has_lm and not info.is_decoder
    for mine in input_groups(measures, masked_lm):
        name, batches = _as_batches(loaded, data, mine, batch_size=batch_size, max_sentences=max_sentences,
                                    seed=seed, induction_count=induction_count,
                                    induction_length=induction_length)
        means = None
        if parsed.kind == "mean":
            recorder = MeanRecorder(info.num_layers, info.num_heads)
            for b in batches:
                edited_forward(loaded, b, recorder, real=b["attention_mask"].bool())
            means = recorder.means()
        parts = {m: ([], [[] for _ in todo], []) for m in mine}        # base, per group, denominator
        for b in batches:
            base = edited_forward(loaded, b, None)
            for k, g in enumerate(todo):
                ablated = edited_forward(loaded, b, HeadEdit(by_layer(g), parsed, means))
                for m in mine:
                    parts[m][1][k].append(readings(m, base, ablated, b["scored"][m])[1].double().cpu().numpy())
            for m in mine:
                nb, _, d = readings(m, base, base, b["scored"][m])
                parts[m][0].append(nb.double().cpu().numpy())
                parts[m][2].append(d.double().cpu().numpy())
        for m, (base_num, abl_num, den) in parts.items():
            den_all = np.concatenate(den)
            if not den_all.sum() > 0:
                raise HeadscopeError(f"{name}: measure {m} found no token to read (no pronoun, no dependent "
                                     f"whose head it sees); give data that has them")
            collected[m] = (name, np.concatenate(base_num), np.stack([np.concatenate(a) for a in abl_num], 1),
                            den_all)                                         # abl: [units, groups + draws]
    rows = []
    for measure in measures:
        name, base_u, abl_u, den_u = collected[measure]
        delta = abl_u - base_u[:, None]
        if bootstrap:
            est, low, high = ratio_intervals(delta, den_u, n_boot=bootstrap, seed=seed)
        else:
            missing = np.full(delta.shape[1], np.nan)
            est, low, high = delta.sum(0) / den_u.sum(), missing, missing
        effect_all = delta.sum(0) / den_u.sum()
        base_value = base_u.sum() / den_u.sum()
        for k, g in enumerate(groups):
            if each:
                others = np.delete(effect_all[:len(groups)], k)
                pick = rng.choice(len(others), size=min(random_draws, len(others)), replace=False) \
                    if len(others) else []
                random = others[pick] if len(others) else np.array([])
            else:
                random = effect_all[len(groups) + k * random_draws: len(groups) + (k + 1) * random_draws]
            median = float(np.median(random)) if len(random) else float("nan")
            rows.append({"model": info.name, "dataset": name, "heads": head_name(g), "method": str(parsed),
                         "measure": measure, "base": float(base_value), "ablated": float(base_value + est[k]),
                         "effect": float(est[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
                         "random_median": median,
                         "ratio_to_random": float(est[k] / median) if median > 0 else float("nan"),
                         "n": int(len(den_u)),
                         "no_effect": no_effect(float(est[k]), float(low[k]), float(high[k]), measure)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = {"model": dataclasses.asdict(info), "method": str(parsed), "measures": measures,
            "heads": heads if isinstance(heads, str) else [head_name(g) for g in groups],
            "random_draws": random_draws, "seed": seed, "bootstrap": bootstrap,
            "kv_group": kv_group, **scored, "note": "under GQA an ablation hits the query head only, unless kv_group",
            "no_effect_rule": NO_EFFECT_RULE}
    return AblationResult(table, meta)


def has_lm_head(loaded: Any) -> bool:
    """Whether the loaded model has a language-model head (its losses can be read)."""
    return getattr(loaded.model, "get_output_embeddings", lambda: None)() is not None


def editable_model(model: Any, what: str) -> Any:
    """``model`` loaded, checked to run on headscope's attention function (where edits happen) and to be an
    encoder or a decoder; ``what`` names the caller in the errors."""
    from ..capture.attention import VIA_INTERFACE
    from ..models.loading import load_model

    loaded = load_model(model)
    info = loaded.info
    if info.attention != VIA_INTERFACE:
        raise HeadscopeError(f"{info.name}: {what} runs inside headscope's attention function, and this model is "
                             f"read through {info.attention}; use a model that supports transformers' "
                             f"AttentionInterface")
    if getattr(loaded.model.config, "is_encoder_decoder", False):
        raise HeadscopeError(f"{info.name}: {what} of encoder-decoders (T5, BART) is not supported yet; use an "
                             f"encoder or a decoder")
    return loaded


def by_layer(group: Sequence[tuple[int, int]]) -> dict:
    out: dict = {}
    for layer, head in group:
        out.setdefault(layer, []).append(head)
    return out


# ------------------------------------------------------------------------------------ importance, pruning


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
        from pathlib import Path

        from ..reports.figures import pruning_curve_png
        from ..reports.writer import write_csv

        folder = Path(folder)
        write_csv(self.table, folder / "importance.csv")
        write_csv(self.curve, folder / "pruning.csv")
        pruning_curve_png(self.curve, self.tolerance, folder / "pruning.png")


def importance(model: Any = "minilm", data: Any = None, *, measure: str | None = None, steps: int = 12,
               tolerance: float = 0.01, batch_size: int = 16, max_sentences: int | None = None,
               seed: int = 0) -> ImportanceResult:
    """Every head's importance and a pruning curve.

    With an LM head (``measure="loss"``): the mean absolute gradient of the next-token loss at a per-head gate
    of 1, one forward and one backward per batch (Michel et al. 2019). Without one (``"hidden"``): a gradient
    at the unablated model is zero for a distance, so each head's importance is the hidden-state change of
    zeroing it alone (one forward per head and batch). The curve removes (zeroes) heads least important
    first in ``steps`` steps; ``prunable`` is the most heads removed at a cost under ``tolerance``."""
    import numpy as np
    import pandas as pd
    import torch

    loaded = editable_model(model, "importance")
    info = loaded.info
    has_lm = has_lm_head(loaded)
    measure = measure or ("loss" if has_lm else "hidden")
    if measure not in ("loss", "hidden"):
        raise HeadscopeError(f"importance measure must be loss or hidden, got {measure!r}")
    if measure == "loss" and not has_lm:
        raise HeadscopeError(f"{info.name}: the loss needs a language-model head, which this model has not; "
                             f"use the hidden measure")
    name, batches = _as_batches(loaded, data, [measure], batch_size=batch_size, max_sentences=max_sentences,
                                seed=seed, induction_count=0, induction_length=0)
    L, H = info.num_layers, info.num_heads
    if measure == "loss":
        gates = torch.ones(L, H, device=loaded.device, requires_grad=True)
        total = torch.zeros(L, H, device=loaded.device)
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
        scores = (total / max(1, len(batches))).cpu().numpy()
        how = "mean |d loss / d gate| (Michel et al. 2019)"
    else:
        each = ablate(loaded, data, heads="each", measures=["hidden"], random_draws=1, bootstrap=0,
                      batch_size=batch_size, max_sentences=max_sentences, seed=seed).table
        scores = each["effect"].to_numpy().reshape(L, H)
        how = "hidden-state change (1 - cosine) of zeroing the head alone"
    order = np.argsort(scores.reshape(-1), kind="stable")                    # least important first
    rank = np.empty(L * H, dtype=int)
    rank[order[::-1]] = np.arange(1, L * H + 1)
    table = pd.DataFrame({"model": info.name, "dataset": name, "layer": np.repeat(np.arange(L), H),
                          "head": np.tile(np.arange(H), L), "importance": scores.reshape(-1), "rank": rank,
                          "how": how})
    counts = sorted({int(round(x)) for x in np.linspace(0, L * H, steps + 1)})
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
        rows.append({"removed": k, "share": k / (L * H), "measure": measure, "value": value, "base": base})
    curve = pd.DataFrame(rows)
    cost = (curve["value"] - curve["base"]) / curve["base"] if measure == "loss" else curve["value"]
    prunable = int(curve["removed"][cost < tolerance].max()) if (cost < tolerance).any() else 0
    return ImportanceResult(table, curve, prunable, tolerance, measure)
