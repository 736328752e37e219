"""The task registry: for each analysis task, the data it reads, how its scorer is built, the measures it
reports (figures, top-heads tables, comparisons), and its role rules. A new task is one scorer module plus
one entry in ``TASKS``; everything downstream reads the entry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from .errors import HeadscopeError
from .schema import OWN

# What each kind of data is, in the words an error message uses ("task syntax needs ...").
DATA_KINDS = {
    "treebank": "dependency trees (a .conllu treebank)",
    "sentences": "sentences (.conllu, .txt or .jsonl)",
    "documents": "coreference documents (CoNLL-2012 .conll, CorefUD .conllu, e2e jsonlines, or a folder of them)",
    "gap": "GAP rows (.tsv)",
    "pairs": "minimal pairs (.jsonl)",
    "generated": "nothing (its sequences are generated)",
}
# Kinds read sentence by sentence (a coreference corpus's sentences serve them one by one).
SENTENCE_KINDS = ("treebank", "sentences")

# Metrics whose values are fractions in [0, 1]; the others (nats, tokens, the GAP bias ratio) have their own
# scale, and rankings across measures ("largest changes") use only these.
BOUNDED_METRICS = frozenset({"accuracy", "uas", "mass", "ratio", "share", "max_weight"})


# Role thresholds (the criteria the reports print are made from these).
ALPHA = 0.05            # Benjamini–Hochberg false discovery rate for "beats the best baseline"
MIN_N = 30              # a relation / mention type needs this many instances before it can name a role
MARGIN = 0.05           # ... and the head must beat the best baseline by this much (of accuracy, 0–1)
MASS = 0.5              # positional roles: lower 95% bound of the mean attention mass on the target
LOCAL = 0.8             # local window: lower bound of the mass within +-window tokens
BROAD = 0.85            # broad: lower bound of the normalised entropy
PATTERN = 0.4           # induction / duplicate-token: lower bound of the mean attention to the target
MAX_SYNTAX = 2          # syntax roles a head keeps per dataset: those with the largest margins over their baselines
NOOP = 0.25             # a sink whose target gives less than this share of what the head writes is a no-op


@dataclass(frozen=True)
class Measure:
    """One measure of a task's score table, and where it is shown.

    ``relation`` None: every relation of the task (each is its own measure). ``heatmap``: drawn as a
    layer × head figure (file ``stem``); ``diff``: drawn as a difference heatmap by ``compare``; ``top``: a
    row of the report's top-heads table; ``detail``: its row in the task's own report section.
    ``decoder`` False: not shown for decoders (the causal mask hides it)."""

    task: str
    relation: str | None
    direction: str | None
    metric: str
    title: str = ""
    stem: str = ""
    heatmap: bool = False
    diff: bool = False
    top: bool = False
    detail: int = 0          # its row in the task's own report section (1 = first); 0: not there
    decoder: bool = True

    @property
    def bounded(self) -> bool:
        return self.metric in BOUNDED_METRICS


@dataclass(frozen=True)
class Rule:
    """A threshold role: a head has it when the lower bound of its interval (or its score) clears ``threshold``."""

    role: str
    family: str
    task: str
    relation: str
    metric: str
    threshold: float
    text: str
    encoder_only: bool = False   # the causal mask hides what it needs (next token, [SEP])
    unless: tuple[str, ...] = ()  # roles that, once the same head has one of them, keep it from this one

    def for_model(self, is_decoder: bool) -> "Rule":
        """The rule as a model of this kind reads it: ``{first}`` names its first token (BOS or [CLS])."""
        first = "BOS" if is_decoder else "[CLS]"
        return replace(self, role=self.role.format(first=first), text=self.text.format(first=first))


@dataclass(frozen=True)
class Tested:
    """A task whose heads get a role by beating its best baseline (BH-adjusted paired test), and how that role
    is named.

    ``role``: the role's name, where ``{relation}`` and ``{direction}`` stand for the head's row;
    ``summary``: a relation that sums up the others and names no role (syntax's ``all``); ``best_of``: a
    metric of which only each head's best row can name its role (one role a head, whatever the relation);
    ``criterion``: the role's criterion as the reports print it (tasks that share a role share one text, given
    by the first of them)."""

    family: str
    baseline: str
    role: str
    summary: str | None = None
    best_of: str | None = None
    criterion: str = ""
    own: str | None = None    # a baseline that each head has of its own, named on its rows (syntax: ``OWN``)

    def role_of(self, row: Any) -> str:
        """The role a head's score row names (``row``: a mapping with ``relation`` and ``direction``)."""
        return self.role.format(relation=row["relation"], direction=row["direction"])


@dataclass(frozen=True)
class Build:
    """What a scorer is built from: the model's shape and facts, the run's options, and what the data kind
    prepared (``relations``: the treebank's; ``inputs``: coreference windows and statistics, GAP rows,
    minimal pairs or generated sequences)."""

    num_layers: int
    num_heads: int
    causal: bool = False
    sinks: bool = False
    window: int = 3
    keep_units: bool = True
    relations: tuple = ()
    inputs: Any = None


@dataclass(frozen=True)
class Task:
    """One analysis task. ``data``: the kind of data it reads (``DATA_KINDS``). ``build``: its scorer from a
    ``Build``. ``auto``: runs when data that supports it is given and no task list is; ``default``: runs
    with no data and no task list (on the bundled samples). ``section``: the function that builds the task's
    detail section of a report from its scores (``headscope.reports.sections``), named, not imported."""

    name: str
    data: str
    description: str
    build: Callable[[Build], Any]
    measures: tuple[Measure, ...] = ()
    rules: tuple[Rule, ...] = ()
    tested: Tested | None = None
    auto: bool = False
    default: bool = False
    section: str = ""        # "module:function" building its report section (reports.sections), or none

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise ValueError(f"task {self.name}: unknown data kind {self.data!r}")
        if any(m.task != self.name for m in self.measures) or any(r.task != self.name for r in self.rules):
            raise ValueError(f"task {self.name}: a measure or rule names another task")


def _syntax(b: Build) -> Any:
    from .analysis.syntax import SyntaxScorer

    return SyntaxScorer(b.num_layers, b.num_heads, list(b.relations), causal=b.causal, keep_units=b.keep_units)


def _positional(b: Build) -> Any:
    from .analysis.positional import PositionalScorer

    return PositionalScorer(b.num_layers, b.num_heads, window=b.window, causal=b.causal, keep_units=b.keep_units,
                            sinks=b.sinks)


def _tree(b: Build) -> Any:
    from .analysis.tree import TreeScorer

    return TreeScorer(b.num_layers, b.num_heads, keep_units=b.keep_units)


def _coref(b: Build) -> Any:
    from .analysis.coref import CorefScorer

    windows, stats = b.inputs
    return CorefScorer(b.num_layers, b.num_heads, windows, stats, keep_units=b.keep_units)


def _gap(b: Build) -> Any:
    from .analysis.gap import GapScorer

    return GapScorer(b.num_layers, b.num_heads, b.inputs, keep_units=b.keep_units)


def _pairs(b: Build) -> Any:
    from .analysis.pairs import PairScorer

    return PairScorer(b.num_layers, b.num_heads, b.inputs, keep_units=b.keep_units)


def _induction(b: Build) -> Any:
    from .analysis.induction import InductionScorer

    return InductionScorer(b.num_layers, b.num_heads, b.inputs)


def _final(b: Build) -> Any:
    from .analysis.final import FinalWordScorer

    return FinalWordScorer(b.num_layers, b.num_heads, keep_units=b.keep_units)


def _mass(relation: str, title: str, **shown: Any) -> Measure:
    return Measure("positional", relation, None, "mass", title, f"positional_{relation}", **shown)


def _threshold(role: str, family: str, task: str, relation: str, metric: str, threshold: float, what: str,
               extra: str = "", encoder_only: bool = False, unless: tuple[str, ...] = ()) -> Rule:
    return Rule(role, family, task, relation, metric, threshold, f"{what}, 95% lower bound >= {threshold}{extra}",
                encoder_only, unless)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("syntax", "treebank", "per-head dependency accuracy by relation, both directions, offset baselines", _syntax,
         measures=(
             Measure("syntax", "all", "dep_to_head", "accuracy", "Syntax accuracy, all relations, dep→head",
                     "syntax_all_dep_to_head", heatmap=True, diff=True),
             Measure("syntax", "all", "head_to_dep", "accuracy", "Syntax accuracy, all relations, head→dep",
                     "syntax_all_head_to_dep", heatmap=True, diff=True),
             Measure("syntax", None, None, "accuracy", top=True),
         ),
         tested=Tested("syntax", "best fixed-offset baseline and its own positional prediction",
                       "syntax:{relation} {direction}", summary="all", own=OWN,
                       criterion=f"accuracy beats both the best fixed-offset baseline of that relation and "
                                 f"direction and the head's own positional prediction (how often its most-attended "
                                 f"word lies at each offset, learnt on the other relations' words, applied to this "
                                 f"relation's instances): one-sided paired bootstrap tests over sentences, the "
                                 f"larger p of the two, Benjamini–Hochberg q < {ALPHA} over every head x relation "
                                 f"x direction of the dataset, by at least {MARGIN:g} (accuracy, 0–1) over "
                                 f"the higher; relation with >= {MIN_N} instances; 'all' is a summary, not a role; a "
                                 f"head keeps its {MAX_SYNTAX} syntax roles with the largest margins"),
         auto=True, default=True,
         section="headscope.reports.sections:syntax"),
    Task("tree", "treebank", "per-head maximum-spanning-arborescence UAS (slower)", _tree,
         measures=(Measure("tree", "all", "dep_to_head", "uas", "Decoded-tree UAS, dep→head", "tree_uas_dep_to_head",
                           heatmap=True, top=True),),
         tested=Tested("syntax", "right/left-branching tree", "syntax:tree"),
         section="headscope.reports.sections:tree"),
    Task("positional", "sentences", "attention mass on self/prev/next/first/last/[SEP]/punctuation, distance, "
                                    "entropy, confidence, positional-head flag", _positional,
         measures=(
             _mass("prev", "Mass on the previous token", heatmap=True, diff=True, top=True, detail=2),
             _mass("next", "Mass on the next token", heatmap=True, top=True, detail=3, decoder=False),
             _mass("self", "Mass on the token itself", heatmap=True, top=True, detail=1),
             _mass("first", "Mass on the first token ([CLS]/BOS)", heatmap=True, diff=True, top=True, detail=4),
             _mass("last", "Mass on the last word", top=True, detail=5),
             _mass("sep", "Mass on [SEP]/EOS", heatmap=True, top=True, detail=6),
             _mass("punct", "Mass on punctuation", heatmap=True, top=True, detail=7),
             _mass("local", "Mass within the local window", top=True, detail=8),
             Measure("positional", "entropy_norm", None, "ratio", "Normalised entropy", "positional_entropy_norm",
                     heatmap=True, diff=True, top=True),
             Measure("positional", "confidence", None, "max_weight", top=True),
             Measure("positional", "argmax_offset", None, "share", top=True),
         ),
         rules=(
             _threshold("previous-token", "positional", "positional", "prev", "mass", MASS,
                        "mean attention mass on the previous token"),
             _threshold("next-token", "positional", "positional", "next", "mass", MASS,
                        "mean attention mass on the next token", encoder_only=True),
             _threshold("self", "positional", "positional", "self", "mass", MASS,
                        "mean attention mass on the token itself"),
             _threshold("{first} sink", "sink", "positional", "first", "mass", MASS,
                        "mean attention mass on the first token ({first})"),
             _threshold("[SEP] sink", "sink", "positional", "sep", "mass", MASS, "mean attention mass on [SEP]",
                        encoder_only=True),
             _threshold("punctuation", "positional", "positional", "punct", "mass", MASS,
                        "mean attention mass on punctuation"),
             _threshold("local window", "positional", "positional", "local", "mass", LOCAL,
                        "mean attention mass within the local window",
                        ", and no previous / next / self role (it spreads over the window)",
                        unless=("previous-token", "next-token", "self")),
             _threshold("broad", "broad", "positional", "entropy_norm", "ratio", BROAD,
                        "normalised attention entropy", " (close to uniform)"),
         ),
         auto=True, default=True, section="headscope.reports.sections:positional"),
    Task("coref", "documents", "antecedent selection accuracy by mention type, with nearest / head-match / rule "
                               "baselines (coreference documents)", _coref,
         measures=(
             Measure("coref", "all", None, "accuracy", "Antecedent selection accuracy, all mentions", "coref_all",
                     heatmap=True, diff=True),
             Measure("coref", "pronoun", None, "accuracy", "Antecedent selection accuracy, pronouns",
                     "coref_pronoun", heatmap=True),
             Measure("coref", None, None, "accuracy", top=True),
         ),
         tested=Tested("coreference", "best rule baseline (nearest, same head word, ...)", "coreference",
                       best_of="accuracy",
                       criterion=f"antecedent accuracy (coreference documents, resampled by document) beats the "
                                 f"best rule baseline, or GAP accuracy (rows) beats the nearest-name baseline, BH "
                                 f"q < {ALPHA}, by at least {MARGIN:g} (accuracy, 0–1); >= {MIN_N} instances"),
         auto=True,
         section="headscope.reports.sections:coref"),
    Task("gap", "gap", "GAP: pronoun-to-name accuracy by gender and the feminine/masculine bias ratio", _gap,
         measures=(
             Measure("gap", "all", None, "accuracy", "GAP accuracy (pronoun → name)", "gap_all", heatmap=True,
                     diff=True),
             Measure("gap", None, None, "accuracy", top=True),
         ),
         tested=Tested("coreference", "nearest-name baseline", "coreference", best_of="accuracy"), auto=True,
         section="headscope.reports.sections:gap"),
    Task("pairs", "pairs", "Winograd-style minimal pairs: right candidate in both sentences (chance 25%)", _pairs,
         measures=(Measure("pairs", "pair", None, "accuracy", "Minimal pairs: both sentences right (chance 0.25)",
                           "pairs", heatmap=True, diff=True, top=True),),
         auto=True, default=True, section="headscope.reports.sections:pairs"),
    Task("induction", "generated", "induction / duplicate-token / previous-token scores on generated [BOS] r r "
                                   "sequences of random tokens", _induction,
         measures=(
             Measure("induction", "induction", None, "mass", "Induction (prefix-matching) score", "induction",
                     heatmap=True, diff=True),
             Measure("induction", "previous", None, "mass", "Previous-token score on repeated tokens",
                     "induction_previous", heatmap=True),
             Measure("induction", None, None, "mass", top=True),
         ),
         rules=(
             _threshold("induction", "induction", "induction", "induction", "mass", PATTERN,
                        "mean attention from the second copy to the token after the earlier copy"),
             _threshold("duplicate-token", "induction", "induction", "duplicate", "mass", PATTERN,
                        "mean attention from the second copy to the same token's earlier copy"),
         ), section="headscope.reports.sections:induction"),
    Task("final", "sentences", "attention mass on the sentence's final word (usually its closing punctuation)",
         _final, measures=(Measure("final", "final_word", None, "mass", "Mass on the sentence's final word",
                                   "final_word", heatmap=True, diff=True, top=True),)),
)}


def measures(*, where: str | None = None, task: str | None = None) -> list[Measure]:
    """The registered measures, in task order; ``where``: only those shown there (``heatmap``, ``diff``,
    ``top``, ``detail``: in their row order); ``task``: only that task's."""
    out = [m for t in TASKS.values() for m in t.measures if task is None or m.task == task]
    out = [m for m in out if where is None or getattr(m, where)]
    return sorted(out, key=lambda m: m.detail) if where == "detail" else out


def parse_tasks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Task names from ``"syntax,positional"`` or a list, in order, each once; unknown names are an error."""
    names = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    if not names:
        raise HeadscopeError(f"no task given; choose from {', '.join(TASKS)}")
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise HeadscopeError(f"unknown task '{unknown[0]}'; choose from {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def default_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.default]


def auto_tasks(kinds: set[str]) -> list[str]:
    """The tasks that run on data of these kinds when no task list is given."""
    return [t.name for t in TASKS.values() if t.auto and t.data in kinds]


def build_scorers(tasks: list[str], build: Build) -> list[Any]:
    return [TASKS[name].build(build) for name in tasks]


def rules(is_decoder: bool) -> list[Rule]:
    """Every task's threshold rules that apply to a model of this kind, in task order."""
    return [r.for_model(is_decoder) for t in TASKS.values() for r in t.rules if not (r.encoder_only and is_decoder)]

