"""The scorer interface (update, merge, state, intervals, result) and the per-layer view handed to scorers."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..capture.alignment import Batch, pool_words
from .units import UnitStore


@dataclass
class LayerView:
    """One layer's attention for one batch: token maps, and word maps pooled on first use."""

    layer: int
    tokens: Any                       # [batch, head, tok, tok]
    batch: Batch
    _words: Any = field(default=None, repr=False)

    def row_stats(self) -> Any:
        """This block's attention.RowStats (entropy and confidence per row, ``[batch, head, rows]``):
        from the capture when it computed them, else from the probabilities."""
        from ..capture.attention import row_stats

        rows = self.batch.row_stats
        if rows is not None and tuple(rows.confidence.shape) == tuple(self.tokens.shape[:3]):
            return rows
        return row_stats(self.tokens.float())

    @property
    def words(self) -> Any:
        """[batch, head, col, col]: words first, then special-token columns (see alignment.Batch)."""
        if self._words is None:
            self._words = pool_words(self.tokens, self.batch)
        return self._words


class Scorer(abc.ABC):
    """Accumulates sums and counts over batches, merges with the scorer of another shard, ends in a tidy table.

    A scorer is built for one job's inputs (``headscope.tasks``). Per batch: ``start_batch``, ``update``
    for every layer (or row block of a layer), ``end_batch``, which commits the batch, so that a run cut
    short leaves consistent sums. ``ACCUMULATORS`` names the attributes that hold the sums: ``state``
    gives them and the per-unit rows as plain arrays, and ``from_state`` puts them back into a scorer
    built for the same inputs (shards written to disk, a run resumed)."""

    task: str
    ACCUMULATORS: ClassVar[tuple[str, ...]] = ()
    row_blocks: ClassVar[bool] = False        # reads blocks of query rows (``batch.row_start``)
    wants_row_stats: ClassVar[bool] = False   # uses the capture's entropy and confidence per row
    wants_value_norms: ClassVar[bool] = False  # uses what each key's value writes (``batch.value_norms``)

    def start_batch(self, batch: Batch) -> None:
        """Get ready for a batch (its gold structure, masks); the default has nothing to prepare."""

    @abc.abstractmethod
    def update(self, view: LayerView) -> None:
        """Read one layer's attention (or a block of its query rows) for the current batch."""

    def end_batch(self) -> None:
        """Commit the batch to the sums; the default has nothing pending."""

    @abc.abstractmethod
    def merge(self, other: "Scorer") -> "Scorer":
        """The scorer of both shards (disjoint inputs of one job): sums added, per-unit rows joined."""

    def intervals(self, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Bootstrap intervals over units, kept for ``result``; the default computes none."""

    @abc.abstractmethod
    def result(self) -> Any:
        """The tidy score table (``schema.SCORE_COLUMNS``)."""

    def unit_intervals(self, num: str, den: str, *, n_boot: int, level: float, seed: int) -> tuple[Any, Any] | None:
        """``(low, high)`` of ``sum(num) / sum(den)`` over bootstrap resamples of the units, shaped like one
        unit's ``num`` row; ``num`` and ``den`` name fields of the unit store, the last axis of ``num``
        matching ``den``'s columns (a ``[U]`` ``den`` divides every column). None without units."""
        import numpy as np

        from .stats import ratio_intervals

        units = getattr(self, "_units", None)
        if units is None or not len(units):
            return None
        top, bottom = units.get(num), units.get(den)
        index = None if bottom.ndim == 1 else np.broadcast_to(np.arange(top.shape[-1]), top.shape[1:]).reshape(-1)
        _, lo, hi = ratio_intervals(top.reshape(len(top), -1), bottom, den_index=index, n_boot=n_boot, level=level,
                                    seed=seed)
        return lo.reshape(top.shape[1:]), hi.reshape(top.shape[1:])

    def state(self) -> dict:
        """The sums (``ACCUMULATORS``) and per-unit rows as numpy arrays and numbers, nothing else."""
        import numpy as np

        out: dict = {"task": self.task, "keep_units": bool(getattr(self, "keep_units", False))}
        for name in self.ACCUMULATORS:
            value = getattr(self, name)
            out[name] = value.detach().cpu().numpy().copy() if hasattr(value, "detach") else np.array(value)
        units = getattr(self, "_units", None)
        if units is not None:
            out["units"] = {"seen": units.seen.copy(), **{k: a.copy() for k, a in units.arrays.items()}}
        return out

    def from_state(self, state: dict) -> "Scorer":
        """A copy of this scorer (built for the same inputs, nothing scored yet) holding ``state``'s sums."""
        import copy

        import numpy as np

        from ..errors import HeadscopeError

        if state.get("task") != self.task:
            raise HeadscopeError(f"a {state.get('task')} state cannot go into a {self.task} scorer")
        out = copy.copy(self)
        for name in self.ACCUMULATORS:
            if name not in state:
                raise HeadscopeError(f"{self.task} state has no {name} (written by another version of headscope); "
                                     f"run it again without --resume")
            current, value = getattr(self, name), np.asarray(state[name])
            if np.shape(current) != value.shape:
                raise HeadscopeError(f"{self.task} state: {name} has shape {value.shape}, this scorer's "
                                     f"{tuple(np.shape(current))}; build the scorer for the same model and data")
            if hasattr(current, "detach"):
                import torch

                value = torch.from_numpy(value.copy()).to(dtype=current.dtype, device=current.device)
            elif np.ndim(current) == 0:
                value = type(current)(value)
            else:
                value = value.astype(np.asarray(current).dtype, copy=True)
            setattr(out, name, value)
        if hasattr(self, "keep_units"):
            out.keep_units = bool(state.get("keep_units", False))
        if hasattr(self, "_units"):
            units = UnitStore()
            rows = state.get("units") or {}
            if "seen" in rows:
                units.seen = np.asarray(rows["seen"], dtype=bool).copy()
                units.arrays = {k: np.asarray(v).copy() for k, v in rows.items() if k != "seen"}
            out._units = units
        for name, empty in (("_ci", None), ("_batch", {}), ("_pending", None)):
            if hasattr(out, name):
                setattr(out, name, copy.copy(empty))
        return out


def check_same_inputs(a: Any, b: Any, what: str) -> None:
    """Two scorers merge when they read parts of the same inputs (shards of one job): their ``what`` must be
    equal, else a clear error."""
    if a is not b and (len(a) != len(b) or list(a) != list(b)):
        from ..errors import HeadscopeError

        raise HeadscopeError(f"cannot merge scorers of different {what} ({len(a)} and {len(b)}); merge the shards "
                             f"of one dataset, built from the same {what}")
