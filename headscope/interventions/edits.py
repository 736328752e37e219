"""The edits a capture session applies to the heads' outputs (``Session.edit``): ablating heads by a method of the
registry, gating every head, and recording each head's mean output."""

from __future__ import annotations

from typing import Any

from .methods import HeadCall, Method


class HeadEdit:
    """The edit of a capture session (``Session.edit``) that ablates ``heads`` (``{layer: [head, ...]}``) by
    ``method`` (a ``Method``); ``means`` (``[layer, head, dim]``) for a method that needs them (``mean``)."""

    def __init__(self, heads: dict, method: Method, means: Any = None) -> None:
        if method.entry.needs_mean and means is None:
            raise ValueError(f"the {method.name} method needs the heads' mean outputs (head_means)")
        self.heads, self.method, self.means = heads, method, means

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        heads = self.heads.get(layer)
        if not heads:
            return out
        out = out.clone()                   # [batch, q, head, dim]
        n_rep = inputs.query.shape[1] // inputs.value.shape[1]
        edit = self.method.entry.edit
        for h in heads:
            # the key/value head of query head h (GQA): only h is ablated
            call = HeadCall(inputs, h, h // n_rep, out[:, :, h], param=self.method.param,
                            mean=self.means[layer, h] if self.means is not None else None)
            out[:, :, h] = edit(call).to(out.dtype)
        return out


class GateEdit:
    """A session edit that multiplies each head's output by its gate (``gates`` ``[layer, head]``, ones that
    require grad): the gradient of a loss at the gates is every head's importance at once (Michel et al. 2019)."""

    def __init__(self, gates: Any) -> None:
        self.gates = gates

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        return out * self.gates[layer].to(out.dtype).view(1, 1, -1, 1)


class MeanRecorder:
    """A session edit that leaves the outputs as they are and sums each head's output over the real rows
    (``Session.real``), for the methods that need the mean."""

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
