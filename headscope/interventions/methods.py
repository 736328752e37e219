"""The ablation methods as a registry (``METHODS``): what each one makes of an ablated head's output, read by
``Method.parse``, the CLI's help and ``headscope run --ablate``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import HeadscopeError


@dataclass(frozen=True)
class HeadCall:
    """What a method reads to make one head's new output, in one call of the attention function.

    ``inputs``: the call's inputs (query, key, value ``[batch, heads, tok, dim]``, mask, scaling, softcap, sinks,
    position bias); ``head``: the query head; ``kv_head``: its key/value head (GQA); ``output``: the head's
    output as the model computed it, ``[batch, q, dim]``; ``mean``: its mean output over the data, ``[dim]``
    (methods that need it); ``param``: the method's parameter (``W`` of ``window:W``), else None."""

    inputs: Any
    head: int
    kv_head: int
    output: Any
    mean: Any = None
    param: Any = None

    def visible(self) -> Any:
        """``[batch, q, k]`` bool: the keys each row may see."""
        return visible_keys(self.inputs)


@dataclass(frozen=True)
class EditMethod:
    """One ablation method: ``name``; ``edit(call: HeadCall)``: the head's new output, ``[batch, q, dim]`` or
    anything that broadcasts to it; ``parameter``: the letter of its one parameter (``window:W``), None for
    none; ``convert``: the parameter's text to its value (a ValueError for a bad one), ``rule``: what a good
    value is, as the error says it; ``needs_mean``: the head's mean output is recorded over the data first;
    ``about``: one line on what the head's output becomes."""

    name: str
    edit: Callable[[HeadCall], Any]
    parameter: str | None = None
    convert: Callable[[str], Any] = int
    rule: str = ""
    needs_mean: bool = False
    about: str = ""

    @property
    def spec(self) -> str:
        """How the method is written: ``zero``, ``window:W``."""
        return f"{self.name}:{self.parameter}" if self.parameter else self.name


def zero(call: HeadCall) -> Any:
    import torch

    return torch.zeros_like(call.output)


def mean(call: HeadCall) -> Any:
    return call.mean


def uniform(call: HeadCall) -> Any:
    import torch

    visible = call.visible()
    weights = visible.float() / visible.sum(-1, keepdim=True).clamp_min(1)
    return torch.matmul(weights, call.inputs.value[:, call.kv_head].float())


def sink(call: HeadCall) -> Any:
    return call.inputs.value[:, call.kv_head, :1]


def window(call: HeadCall) -> Any:
    """Attention only on the first key and keys less than ``W`` positions away, computed as the model does
    (softcap, sinks, position bias)."""
    import torch

    from ..capture.attention import block_probabilities

    inputs, h, g = call.inputs, call.head, call.kv_head
    visible = call.visible()
    q_len, k_len = inputs.query.shape[2], inputs.key.shape[2]
    rows = torch.arange(q_len, device=visible.device).unsqueeze(1) + (k_len - q_len)
    cols = torch.arange(k_len, device=visible.device)
    near = ((rows - cols).abs() < call.param) | (cols == 0)
    mask = (visible & near).unsqueeze(1)
    bias = inputs.position_bias
    if bias is not None and bias.dim() == 4:
        bias = bias[:, h:h + 1] if bias.shape[1] > 1 else bias
    probs, _ = block_probabilities(inputs.query[:, h:h + 1].float() * inputs.scaling,
                      inputs.key[:, g:g + 1].float().transpose(-1, -2), mask, softcap=inputs.softcap,
                      sinks=inputs.sinks[h:h + 1] if inputs.sinks is not None else None, position_bias=bias)
    return torch.matmul(probs, inputs.value[:, g:g + 1].float())[:, 0]


def window_size(text: str) -> int:
    """``W`` of ``window:W``: a whole number of at least 1."""
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ValueError(text)
    return int(text)


# The methods, in the order the CLI's help and the errors list them. A new method is one entry and its function.
METHODS: dict[str, EditMethod] = {m.name: m for m in (
    EditMethod("zero", zero, about="nothing"),
    EditMethod("mean", mean, needs_mean=True, about="the head's mean output over the data"),
    EditMethod("uniform", uniform, about="the mean of the values of every key the row may see"),
    EditMethod("sink", sink, about="the first token's value"),
    EditMethod("window", window, parameter="W", convert=window_size, rule="W >= 1",
               about="attention over the first key and the keys less than W positions away (the last W keys of "
                     "a decoder)"),
)}


def method_names(last: str = ", ") -> str:
    """The methods as written (``zero, mean, ..., window:W``), the last one joined by ``last`` (e.g. `` or ``)."""
    specs = [m.spec for m in METHODS.values()]
    return ", ".join(specs[:-1]) + last + specs[-1] if len(specs) > 1 else "".join(specs)


@dataclass(frozen=True)
class Method:
    """One method of ``METHODS`` as given: its ``name`` and its parameter's value (``param``; None for none)."""

    name: str
    param: Any = None

    @classmethod
    def parse(cls, text: str) -> "Method":
        """``"zero"``, ``"window:16"``: checked against the registry, with the valid methods listed otherwise."""
        text = str(text).strip()
        name, colon, value = text.partition(":")
        entry = METHODS.get(name)
        if entry is not None and bool(colon) == bool(entry.parameter):
            if not colon:
                return cls(name)
            try:
                return cls(name, entry.convert(value))
            except ValueError:
                pass
        rules = "; ".join(m.rule for m in METHODS.values() if m.parameter and m.rule)
        raise HeadscopeError(f"unknown ablation method {text!r}; use one of {method_names()}"
                             + (f" ({rules})" if rules else ""))

    @property
    def entry(self) -> EditMethod:
        """The registry's entry of this method."""
        if self.name not in METHODS:
            raise HeadscopeError(f"unknown ablation method {self.name!r}; use one of {method_names()}")
        return METHODS[self.name]

    def __str__(self) -> str:
        return f"{self.name}:{self.param}" if self.entry.parameter else self.name


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
