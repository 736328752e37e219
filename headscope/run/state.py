"""How one run stands among others and in time: its shard, the shards' states it restores, its checkpoint,
its progress, and where a Ctrl-C stopped it (finished work is kept when partial results are wanted)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass
class RunState:
    """What ``run_analysis`` needs beyond the model, the data and the settings.

    ``shard`` ``(i, n)``: read only the inputs whose index is i modulo n and keep the scorers' states;
    ``restored`` (``{model: {"k|name": ([[state per shard] per scorer], inputs scored)}}``, from
    ``shards.merge_shards``): each job's scorers are rebuilt from its shards' states instead of read from the
    model; ``checkpoint`` (``checkpoints.Checkpoint``): the states are saved every few batches, and a job it holds
    goes on from there; ``partial_on_interrupt``: a Ctrl-C ends the run with what is finished instead of
    raising; ``progress(done, total)`` is called after each batch."""

    shard: tuple[int, int] | None = None
    restored: dict | None = None
    checkpoint: Any = None
    partial_on_interrupt: bool = False
    progress: Callable[[int, int], None] | None = None
    done: int = 0                   # inputs scored so far, over every model
    total: int = 0
    interrupted: str | None = None  # where a Ctrl-C stopped the run (None: it has not been stopped)
    states: dict = field(default_factory=dict)   # a shard's scorer states: {model: {job: [state, ...]}}

    def restored_for(self, model: str) -> dict | None:
        """The shards' states of one model's jobs, or None when the run reads the model."""
        return (self.restored or {}).get(model) if self.restored is not None else None

    def collect_for(self, model: str) -> dict | None:
        """Where a shard keeps one model's scorer states (None: not a shard)."""
        return self.states.setdefault(model, {}) if self.shard else None

    def advance(self, inputs: int) -> None:
        """``inputs`` more were scored."""
        self.done += inputs
        if self.progress is not None:
            self.progress(self.done, self.total)

    @contextlib.contextmanager
    def stop_point(self, where: str | Callable[[], str]) -> Iterator[None]:
        """A Ctrl-C inside ends the run here (when partial results are wanted; else it is raised), noting
        ``where`` (a callable is asked at the time of the stop)."""
        try:
            yield
        except KeyboardInterrupt:
            if not self.partial_on_interrupt:
                raise
            self.interrupted = where() if callable(where) else where
