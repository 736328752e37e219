"""A run's settings, declared and validated once: ``RunConfig`` (what ``analyze`` and ``headscope run`` take),
written to run.json as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import HeadscopeError

CONTROLS = ("random-init",)          # what --control may name
ON_ERROR = ("fail", "skip")          # what to do with malformed input
PARTS = ("encoder", "decoder")       # the parts of an encoder-decoder that can be read


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run but the model, the data and where the output goes.

    ``tasks``: names or ``"syntax,positional"`` (None: chosen from the data, see ``headscope.tasks``);
    ``max_sentences`` caps sentences, documents, GAP rows or pairs per dataset; ``prepend_bos`` (None:
    for decoders); ``bootstrap``: replicates for the 95% intervals (0: none); ``control``:
    ``random-init`` also scores the re-initialised architecture; ``n_examples``: sentences kept for the
    report's example maps; ``attention_memory``: MiB one layer's attention may take before it is read in
    blocks of query rows; ``documents``: join sentences into documents of at most this many words;
    ``part``: an encoder-decoder's ``encoder`` (default) or ``decoder``. Invalid values are refused here,
    with one clear message, before anything runs."""

    tasks: tuple[str, ...] | None = None
    batch_size: int = 32
    device: str | None = None
    max_sentences: int | None = None
    keep_subtypes: bool = False
    on_error: str = "fail"
    fmt: str | None = None
    window: int = 3
    seed: int = 0
    induction_count: int = 64
    induction_length: int = 32
    prepend_bos: bool | None = None
    bootstrap: int = 1000
    control: str | None = None
    n_examples: int = 3
    trust_remote_code: bool = False
    attention_memory: float = 512
    documents: int | None = None
    part: str | None = None

    def __post_init__(self) -> None:
        from .tasks import parse_tasks

        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(parse_tasks(self.tasks)))
        checks = (
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_sentences is None or self.max_sentences >= 1,
             f"max sentences must be at least 1, got {self.max_sentences}"),
            (self.attention_memory > 0, f"attention memory must be more than 0 MiB, got {self.attention_memory}"),
            (self.documents is None or self.documents >= 1,
             f"documents need at least 1 word each, got {self.documents}"),
            (self.bootstrap >= 0, f"bootstrap replicates must be 0 (no intervals) or more, got {self.bootstrap}"),
            (self.control in (None, *CONTROLS), f"unknown control '{self.control}'; the only one is random-init"),
            (self.on_error in ON_ERROR, f"on_error must be fail or skip, got {self.on_error!r}"),
            (self.part in (None, *PARTS), f"part must be one of {', '.join(PARTS)}, got {self.part!r}"),
            (self.window >= 0, f"the local window must be 0 or more tokens, got {self.window}"),
            (self.induction_count >= 1 and self.induction_length >= 2,
             f"induction needs at least 1 sequence of 2 tokens, got {self.induction_count} of "
             f"{self.induction_length}"),
            (self.n_examples >= 0, f"example sentences must be 0 or more, got {self.n_examples}"),
        )
        for ok, message in checks:
            if not ok:
                raise HeadscopeError(message)

    @classmethod
    def of(cls, options: dict) -> "RunConfig":
        """A config from keyword options, with a clear error for a name that is not a setting."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise HeadscopeError(f"unknown setting '{unknown[0]}'; the settings are {', '.join(sorted(names))}")
        return cls(**options)

    def record(self, **facts: Any) -> dict:
        """What run.json's ``config`` says: every setting (induction's only when it ran) and ``facts`` of the
        run (the device it used, the model's length)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("tasks", "fmt", "n_examples")}
        if "induction" not in (facts.pop("tasks", None) or ()):
            out.pop("induction_count")
            out.pop("induction_length")
        return {**out, **facts}


DEFAULTS = RunConfig()
