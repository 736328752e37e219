"""Which heads an intervention hits: head-group specs (``L3.H1,L4.H0``, ``each``, ``layer:N``, ``top:TASK:K``,
``role:ROLE``), the groups of random heads they are set against, and how groups are named and laid out."""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from ..errors import HeadscopeError

Group = list[tuple[int, int]]       # (layer, head) pairs, ablated together


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


def head_name(group: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"L{layer}.H{head}" for layer, head in group)


def by_layer(group: Sequence[tuple[int, int]]) -> dict:
    """``{layer: [head, ...]}`` of a group, as ``HeadEdit`` takes it."""
    out: dict = {}
    for layer, head in group:
        out.setdefault(layer, []).append(head)
    return out


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
    role = role.removeprefix("no-op ").removeprefix("active ")     # the two kinds of sink
    for rule in rules(is_decoder):
        if rule.role == role:
            return rule.task
    known = sorted({r.role for r in rules(is_decoder)} | {"coreference", "syntax:<relation>"})
    raise HeadscopeError(f"role:{role}: no task gives that role to a {'decoder' if is_decoder else 'encoder'}; "
                         f"roles are {', '.join(known)}")


def _check_spec(spec: Any, text: str | None, num_layers: int) -> tuple[Any, Any]:
    """The ``top:`` and ``layer:`` matches of a spec's text (None where it is neither), refusing malformed ones."""
    m = re.fullmatch(r"top:([\w-]+)(?:/([^:]+))?:(\d+)", text) if text else None
    if text and text.startswith("top:") and (m is None or int(m.group(3)) < 1):
        raise HeadscopeError(f"head spec {spec!r} is not of the form top:TASK:K or top:TASK/RELATION:K "
                             f"(e.g. top:induction:3)")
    layer = re.fullmatch(r"layer:(\d+)", text) if text else None
    if text and text.startswith("layer:") and (layer is None or int(layer.group(1)) >= num_layers):
        raise HeadscopeError(f"head spec {spec!r}: give layer:N with N a layer of the model (0-{num_layers - 1})")
    return m, layer


def head_groups(spec: Any, info: Any, kv_group: bool, top: Callable | None = None, role: Callable | None = None
                ) -> tuple[list[Group], bool]:
    """The head groups of ``spec`` and whether each head is its own group (``each``); ``top(task, relation, k)``
    gives the heads of a ``top:TASK[/RELATION]:K`` spec, ``role(name)`` those of ``role:NAME``."""
    L, H = info.num_layers, info.num_heads
    text = spec.strip() if isinstance(spec, str) else None
    m, layer = _check_spec(spec, text, L)
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


def random_groups(groups: Sequence[Group], info: Any, draws: int, rng: Any) -> list[Group]:
    """``draws`` groups of as many random other heads for each group, in order (drawn from ``rng``)."""
    all_heads = [(layer, head) for layer in range(info.num_layers) for head in range(info.num_heads)]
    out: list[Group] = []
    for g in groups:
        others = [x for x in all_heads if x not in g]
        for _ in range(draws):
            pick = rng.choice(len(others), size=min(len(g), len(others)), replace=False)
            out.append([others[i] for i in sorted(pick)])
    return out
