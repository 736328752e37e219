"""Settings, declared and validated once: ``RunConfig`` (what ``analyze`` and ``headscope run`` take) and
``ProbeConfig`` (``probe`` and ``headscope probe``) and the intervention and explain configs, written to run.json
and probe.json as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from .errors import HeadscopeError

CONTROLS = ("random-init",)          # what --control may name
ON_ERROR = ("fail", "skip")          # what to do with malformed input
PARTS = ("encoder", "decoder")       # the parts of an encoder-decoder that can be read
DTYPES = ("float32", "bfloat16", "float16")    # the weights' dtype (scores accumulate in float32 whatever it is)
DEVICE_MAPS = ("auto", "balanced", "sequential")
WEIGHTINGS = ("weight", "norm")      # attention weights, and value-weighted attention (what a head writes)   # accelerate's device maps for a model larger than one device
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


def parse_weighting(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"weight,norm"`` -> the weightings to score by, ``weight`` first (the roles and reports read it)."""
    items = list(dict.fromkeys(s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()))
    bad = [w for w in items if w not in WEIGHTINGS]
    if bad or "weight" not in items:
        raise HeadscopeError(f"unknown weighting '{bad[0]}'; choose from {', '.join(WEIGHTINGS)}" if bad else
                             "the weightings must include weight (the roles and reports read it): use weight,norm")
    return tuple(w for w in WEIGHTINGS if w in items)


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


class Settings:
    """What every config shares: built from keyword options (``of``), or taken as a call gives it (``given``)."""

    @classmethod
    def of(cls, options: dict) -> Any:
        """A config from keyword options, with a clear error for a name that is not a setting."""
        return _of(cls, options)

    @classmethod
    def given(cls, config: Any, options: dict) -> Any:
        """The settings of a library call: its ``config=`` or its keyword options (not both), checked."""
        if config is not None and options:
            raise HeadscopeError(f"give the settings as config= or as keywords, not both (got {', '.join(options)})")
        return config if config is not None else cls.of(options)


@dataclass(frozen=True)
class RunConfig(Settings):
    """Every setting of a run but the model, the data and where the output goes.

    ``tasks``: names or ``"syntax,positional"`` (None: chosen from the data, see ``headscope.tasks``);
    ``max_sentences`` caps sentences (coreference: the documents of the first N), GAP rows or pairs per
    dataset; ``prepend_bos`` (None: for decoders); ``bootstrap``: replicates for the 95% intervals (0: none);
    ``control``:
    ``random-init`` also scores the re-initialised architecture; ``n_examples``: sentences kept for the
    report's example maps; ``attention_memory``: MiB one layer's attention may take before it is read in
    blocks of query rows; ``documents``: join sentences into documents of at most this many words;
    ``part``: an encoder-decoder's ``encoder`` (default) or ``decoder``; ``dtype``: the weights' dtype
    (``bfloat16``, ``float16``; attention statistics stay float32); ``device_map``: accelerate's placement
    of a model larger than one device (``auto``); ``weighting``: ``weight`` (attention weights), or
    ``weight,norm`` to score every measure on value-weighted attention too (``capture.norms``). Invalid
    values are refused here, with one clear message, before anything runs."""

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
    weighting: tuple[str, ...] = ("weight",)

    def __post_init__(self) -> None:
        from .tasks import parse_tasks

        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(parse_tasks(self.tasks)))
        object.__setattr__(self, "weighting", parse_weighting(self.weighting))
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


    def record(self, **facts: Any) -> dict:
        """What run.json's ``config`` says: every setting (induction's only when it ran) and ``facts`` of the
        run (the device it used, the model's length)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("tasks", "fmt", "n_examples")}
        if self.weighting == ("weight",):
            out.pop("weighting")           # run.json names the weighting only where norm was scored too
        if "induction" not in (facts.pop("tasks", None) or ()):
            out.pop("induction_count")
            out.pop("induction_length")
        return {**out, **facts}


@dataclass(frozen=True)
class ProbeConfig(Settings):
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



@dataclass(frozen=True)
class ExplainConfig(Settings):
    """Every setting of ``explain`` but the text, the word and the model.

    ``links``: each word's strongest links that the viewer (explain.html) carries; ``attention_memory``: MiB
    one layer's attention may take before the input is read in blocks of query rows; ``prepend_bos`` (None:
    for decoders)."""

    links: int = 5
    attention_memory: float = 512
    prepend_bos: bool | None = None
    device: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _refuse((
            (1 <= self.links <= 64, f"links per word must be 1 to 64, got {self.links}"),
            (self.attention_memory > 0, f"attention memory must be more than 0 MiB, got {self.attention_memory}"),
        ))



DEFAULTS = RunConfig()


@dataclass(frozen=True)
class AblationConfig(Settings):
    """Every setting of an ablation (``ablate`` and ``headscope ablate``) but the model and the data.

    ``heads``: a head-group spec (``"L3.H1,L4.H0"``, ``each``, ``layer:N``, ``top:TASK:K``, ``role:ROLE``) or a
    list of groups; ``method``: one of the registry ``interventions.methods.METHODS`` (``window:W``);
    ``measures``: names of ``interventions.measures.MEASURES`` or ``"loss,hidden"`` (None: chosen from the
    model); ``random_draws``: random groups each group is set against; ``bootstrap``: replicates of the 95%
    intervals (0: none); ``kv_group``: ablate every query head of each head's key/value group;
    ``induction_count`` / ``induction_length``: the generated sequences of ``induction-loss``."""

    heads: Any = "each"
    method: str = "zero"
    measures: tuple[str, ...] | None = None
    random_draws: int = 5
    seed: int = 0
    batch_size: int = 16
    max_sentences: int | None = None
    bootstrap: int = 1000
    kv_group: bool = False
    induction_count: int = 16
    induction_length: int = 32

    def __post_init__(self) -> None:
        from .interventions.measures import check_measure_names
        from .interventions.methods import Method

        object.__setattr__(self, "method", str(Method.parse(self.method)))
        if self.measures is not None:
            given = self.measures.split(",") if isinstance(self.measures, str) else self.measures
            object.__setattr__(self, "measures", tuple(m.strip() for m in given if m.strip()))
            check_measure_names(self.measures)
        _refuse((
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_sentences is None or self.max_sentences >= 1,
             f"max sentences must be at least 1, got {self.max_sentences}"),
            (self.random_draws >= 1, f"random draws must be at least 1, got {self.random_draws}"),
            (self.bootstrap >= 0, f"bootstrap replicates must be 0 (no intervals) or more, got {self.bootstrap}"),
            (self.induction_count >= 1 and self.induction_length >= 2,
             f"induction needs at least 1 sequence of 2 tokens, got {self.induction_count} of "
             f"{self.induction_length}"),
        ))



@dataclass(frozen=True)
class ImportanceConfig(Settings):
    """Every setting of head importance and the pruning curve (``importance``; ``headscope ablate
    --importance``) but the model and the data.

    ``measure``: ``loss`` (gate gradients; needs an LM head) or ``hidden`` (zeroing each head alone; None:
    ``loss`` where the model has an LM head); ``steps``: points of the pruning curve after none removed;
    ``tolerance``: the cost at which heads count as prunable (the loss's relative rise, or 1 - cosine)."""

    measure: str | None = None
    steps: int = 12
    tolerance: float = 0.01
    batch_size: int = 16
    max_sentences: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _refuse((
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_sentences is None or self.max_sentences >= 1,
             f"max sentences must be at least 1, got {self.max_sentences}"),
            (self.measure in (None, "loss", "hidden"),
             f"importance measure must be loss or hidden, got {self.measure!r}"),
            (self.steps >= 0, f"the pruning curve needs 0 or more steps, got {self.steps}"),
            (self.tolerance >= 0, f"tolerance must be 0 or more, got {self.tolerance}"),
        ))



PATCH_METHODS = ("exact", "attribution")
PATCH_DIRECTIONS = ("noising", "denoising")


def _names(spec: Any, allowed: tuple, what: str) -> tuple[str, ...]:
    """``"a,b"`` or a list as a tuple of names in ``allowed`` (their order), else a one-line error."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise HeadscopeError(f"unknown {what} '{(bad or [''])[0]}'; choose from {', '.join(allowed)}")
    return tuple(a for a in allowed if a in items)


@dataclass(frozen=True)
class PatchConfig(Settings):
    """Every setting of activation patching (``patch``; ``headscope patch``) but the model and the pairs.

    ``methods``: ``exact`` (each head patched alone, one forward per head and direction) and ``attribution``
    (every head from one forward and backward per input); ``directions``: ``noising`` (corrupt outputs into the
    clean run) and ``denoising`` (clean into corrupt); ``groups``: head groups patched together, as
    ``"L18.H6,L17.H3"`` or a list of such; ``max_pairs``: pairs read (and the induction pairs made);
    ``bootstrap``: replicates over pairs for the 95% intervals (0: none); ``seed``: of the bootstrap and of
    the induction pairs; ``kv``: the unit is a KV group (the query heads that share one key and value head under
    GQA/MQA, patched together) instead of a query head; ``positions``: also position-resolved patching, each of
    the ``position_heads`` heads with the largest exact effect (and each group) patched at one position of the
    input at a time, and every head's attribution per position."""

    methods: Any = PATCH_METHODS
    directions: Any = PATCH_DIRECTIONS
    groups: Any = ()
    kv: bool = False
    positions: bool = False
    position_heads: int = 5
    batch_size: int = 16
    max_pairs: int | None = None
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _names(self.methods, PATCH_METHODS, "patching method"))
        object.__setattr__(self, "directions", _names(self.directions, PATCH_DIRECTIONS, "patching direction"))
        groups = [self.groups] if isinstance(self.groups, str) else list(self.groups or ())
        object.__setattr__(self, "groups", tuple(g for g in groups if str(g).strip()))
        _refuse((
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_pairs is None or self.max_pairs >= 1, f"max pairs must be at least 1, got {self.max_pairs}"),
            (self.bootstrap >= 0, f"bootstrap must be 0 or more, got {self.bootstrap}"),
            (self.position_heads >= 1, f"position heads must be at least 1, got {self.position_heads}"),
        ))


@dataclass(frozen=True)
class ContextConfig(Settings):
    """Every setting of the context-window search (``context_needs`` and ``headscope context``) but the model
    and the data.

    ``windows``: windows to try, in keys (``"16,64,256"`` or ints; kept sorted and distinct); ``tolerance``:
    the change a window may cause, in [0, 1) (the loss's relative rise, or 1 - cosine); ``tokens``: tokens per
    long document and per haystack; ``documents``: long documents to measure on; ``heads``: ``each`` or
    ``"L3.H1,L4.H0"``; ``needles`` / ``needle_length``: the needle-in-a-haystack inputs and their needles'
    tokens; ``window_needles``: needle inputs on which a window must also keep the copy's loss (0: the text
    only); ``measure``: ``loss`` or ``hidden`` (None: ``loss`` for a causal LM)."""

    windows: tuple[int, ...] = (16, 64, 256)
    tolerance: float = 0.01
    tokens: int = 512
    documents: int = 1
    heads: Any = "each"
    needles: int = 8
    needle_length: int = 16
    window_needles: int = 2
    measure: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from .interventions.windows import parse_windows

        object.__setattr__(self, "windows", parse_windows(self.windows))
        _refuse((
            (0 <= self.tolerance < 1,
             f"tolerance {self.tolerance} is not in [0, 1); give the measure's allowed change, e.g. 0.01"),
            (self.measure in (None, "loss", "hidden"), f"the measure must be loss or hidden, got {self.measure!r}"),
            (self.tokens >= 1, f"documents need at least 1 token, got {self.tokens}"),
            (self.documents >= 1, f"give at least 1 long document, got {self.documents}"),
            (self.needles >= 1 and self.needle_length >= 2,
             f"needles need a length of at least 2 and a count of at least 1, got {self.needle_length} and "
             f"{self.needles}"),
            (self.window_needles >= 0, f"window needles must be 0 (the text only) or more, got {self.window_needles}"),
        ))

