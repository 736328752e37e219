"""Settings, declared and validated once: ``RunConfig`` (what ``analyze`` and ``headscope run`` take) and
``ProbeConfig`` (``probe`` and ``headscope probe``), written to run.json and probe.json as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from .errors import HeadscopeError

CONTROLS = ("random-init",)          # what --control may name
ON_ERROR = ("fail", "skip")          # what to do with malformed input
PARTS = ("encoder", "decoder")       # the parts of an encoder-decoder that can be read
DTYPES = ("float32", "bfloat16", "float16")    # the weights' dtype (scores accumulate in float32 whatever it is)
DEVICE_MAPS = ("auto", "balanced", "sequential")   # accelerate's device maps for a model larger than one device
PROBES = ("parent", "relation")      # what a probe predicts: each word's head, or each dependency's relation
COMPONENTS = ("attention", "words", "distance")        # feature parts, joined with "+" into feature sets
DEFAULT_FEATURES = ("attention", "attention+words", "distance")


def parse_features(spec: str | Sequence[str]) -> list[str]:
    """``"attention,attention+words"`` -> validated feature-set names (components joined by ``+``)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise HeadscopeError(f"no feature set given; use e.g. {','.join(DEFAULT_FEATURES)}")
    for item in items:
        parts = item.split("+")
        bad = [p for p in parts if p not in COMPONENTS]
        if bad or len(set(parts)) != len(parts):
            raise HeadscopeError(f"unknown feature set '{item}': combine {', '.join(COMPONENTS)} with '+', "
                                 f"e.g. {','.join(DEFAULT_FEATURES)}")
    return list(dict.fromkeys(items))


def parse_probes(spec: str | Sequence[str]) -> list[str]:
    """``"parent,relation"`` -> validated probe names, in order, each once."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [p for p in items if p not in PROBES]
    if not items or bad:
        raise HeadscopeError(f"unknown probe '{(bad or [''])[0]}'; choose from {', '.join(PROBES)}")
    return list(dict.fromkeys(items))


def _refuse(checks: tuple) -> None:
    for ok, message in checks:
        if not ok:
            raise HeadscopeError(message)


def _shared_checks(cfg: Any) -> tuple:
    """What every kind of run checks the same way."""
    return ((cfg.batch_size >= 1, f"batch size must be at least 1, got {cfg.batch_size}"),
            (cfg.control in (None, *CONTROLS), f"unknown control '{cfg.control}'; the only one is random-init"),
            (cfg.on_error in ON_ERROR, f"on_error must be fail or skip, got {cfg.on_error!r}"))


def _of(cls: Any, options: dict) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise HeadscopeError(f"unknown setting '{unknown[0]}'; the settings are {', '.join(sorted(names))}")
    return cls(**options)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run but the model, the data and where the output goes.

    ``tasks``: names or ``"syntax,positional"`` (None: chosen from the data, see ``headscope.tasks``);
    ``max_sentences`` caps sentences, documents, GAP rows or pairs per dataset; ``prepend_bos`` (None:
    for decoders); ``bootstrap``: replicates for the 95% intervals (0: none); ``control``:
    ``random-init`` also scores the re-initialised architecture; ``n_examples``: sentences kept for the
    report's example maps; ``attention_memory``: MiB one layer's attention may take before it is read in
    blocks of query rows; ``documents``: join sentences into documents of at most this many words;
    ``part``: an encoder-decoder's ``encoder`` (default) or ``decoder``; ``dtype``: the weights' dtype
    (``bfloat16``, ``float16``; attention statistics stay float32); ``device_map``: accelerate's placement
    of a model larger than one device (``auto``). Invalid values are refused here,
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
    dtype: str | None = None
    device_map: str | None = None

    def __post_init__(self) -> None:
        from .tasks import parse_tasks

        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(parse_tasks(self.tasks)))
        _refuse(_shared_checks(self) + (
            (self.max_sentences is None or self.max_sentences >= 1,
             f"max sentences must be at least 1, got {self.max_sentences}"),
            (self.attention_memory > 0, f"attention memory must be more than 0 MiB, got {self.attention_memory}"),
            (self.documents is None or self.documents >= 1,
             f"documents need at least 1 word each, got {self.documents}"),
            (self.bootstrap >= 0, f"bootstrap replicates must be 0 (no intervals) or more, got {self.bootstrap}"),
            (self.part in (None, *PARTS), f"part must be one of {', '.join(PARTS)}, got {self.part!r}"),
            (self.dtype in (None, *DTYPES), f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.device_map in (None, *DEVICE_MAPS),
             f"device map must be one of {', '.join(DEVICE_MAPS)}, got {self.device_map!r}"),
            (self.device_map is None or self.device is None,
             "give --device or --device-map, not both (a device map places the model itself)"),
            (self.window >= 0, f"the local window must be 0 or more tokens, got {self.window}"),
            (self.induction_count >= 1 and self.induction_length >= 2,
             f"induction needs at least 1 sequence of 2 tokens, got {self.induction_count} of "
             f"{self.induction_length}"),
            (self.n_examples >= 0, f"example sentences must be 0 or more, got {self.n_examples}"),
        ))

    @classmethod
    def of(cls, options: dict) -> "RunConfig":
        """A config from keyword options, with a clear error for a name that is not a setting."""
        return _of(cls, options)

    def record(self, **facts: Any) -> dict:
        """What run.json's ``config`` says: every setting (induction's only when it ran) and ``facts`` of the
        run (the device it used, the model's length)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("tasks", "fmt", "n_examples")}
        if "induction" not in (facts.pop("tasks", None) or ()):
            out.pop("induction_count")
            out.pop("induction_length")
        return {**out, **facts}


@dataclass(frozen=True)
class ProbeConfig:
    """Every setting of a probe experiment but the model and the two treebanks.

    ``probes``: ``parent`` and/or ``relation``; ``features``: feature sets of ``attention``, ``words``
    and ``distance`` joined with ``+``; ``max_train_sentences`` / ``max_test_sentences`` cap the two
    treebanks; ``control``: ``random-init`` repeats everything on the re-initialised architecture;
    ``alpha``: the probes' L2 penalty; ``pca_dim``: dimensions kept of the word vectors;
    ``drop_heads``: also the parent probe's UAS with each head left out."""

    probes: tuple[str, ...] = PROBES
    features: tuple[str, ...] = DEFAULT_FEATURES
    max_train_sentences: int | None = None
    max_test_sentences: int | None = None
    control: str | None = None
    seed: int = 0
    batch_size: int = 32
    alpha: float = 1e-3
    pca_dim: int = 32
    drop_heads: bool = False
    on_error: str = "fail"
    device: str | None = None
    prepend_bos: bool | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "probes", tuple(parse_probes(self.probes)))
        object.__setattr__(self, "features", tuple(parse_features(self.features)))
        _refuse(_shared_checks(self) + (
            (all(n is None or n >= 1 for n in (self.max_train_sentences, self.max_test_sentences)),
             f"max sentences must be at least 1, got {self.max_train_sentences} / {self.max_test_sentences}"),
            (self.alpha > 0, f"the probes' L2 penalty must be more than 0, got {self.alpha}"),
            (self.pca_dim >= 1, f"word vectors need at least 1 PCA dimension, got {self.pca_dim}"),
        ))

    @classmethod
    def of(cls, options: dict) -> "ProbeConfig":
        """A config from keyword options, with a clear error for a name that is not a setting."""
        return _of(cls, options)


DEFAULTS = RunConfig()
