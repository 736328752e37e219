"""Mention head words, mention types and agreement features, by explicit, documented rules."""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Document

PRONOUNS: dict[str, tuple[str, str, str]] = {}  # word -> (number, gender, person); "" = unknown
for words, feats in (
    ("he him his himself", ("sg", "masc", "3")),
    ("she her hers herself", ("sg", "fem", "3")),
    ("it its itself", ("sg", "neut", "3")),
    ("they them their theirs themselves", ("pl", "", "3")),
    ("i me my mine myself", ("sg", "", "1")),
    ("we us our ours ourselves", ("pl", "", "1")),
    ("you your yours yourself yourselves thee thou thy thine", ("", "", "2")),
    ("this that these those", ("", "", "3")),
    ("who whom whose which", ("", "", "3")),
):
    for w in words.split():
        PRONOUNS[w] = feats
PRONOUNS["these"] = PRONOUNS["those"] = ("pl", "", "3")
PRONOUNS["this"] = PRONOUNS["that"] = ("sg", "", "3")

# Gendered common nouns (head words); everything else has unknown gender and agrees with anything.
MASCULINE = set("man men boy boys father fathers son sons brother brothers husband husbands king kings uncle "
                "gentleman gentlemen lord lords sir mr mr. prince duke nephew grandfather master monk priest".split())
FEMININE = set("woman women girl girls mother mothers daughter daughters sister sisters wife wives queen queens "
               "aunt lady ladies madam mrs mrs. miss ms ms. princess duchess niece grandmother mistress nun".split())

PRONOUN_TAGS = {"PRON", "PRP", "PRP$", "WP", "WP$"}
PROPER_TAGS = {"PROPN", "NNP", "NNPS"}
PLURAL_TAGS = {"NNS", "NNPS"}
TYPES = ("pronoun", "proper", "nominal")


@dataclass(frozen=True)
class MentionInfo:
    """What the analyses need of one mention: its head word, type and agreement features."""

    start: int
    end: int
    cluster: str
    head: int              # document word offset of the head word
    head_rule: str         # "tree" (the span's word whose head lies outside it) or "last" (last word)
    type: str              # pronoun | proper | nominal
    text: tuple[str, ...]  # lowercased words of the span
    number: str
    gender: str
    person: str


def mention_infos(doc: Document) -> list[MentionInfo]:
    """Heads and types for every mention of ``doc``.

    Head word: from the dependency tree when the sentence has one (the span's first word whose
    head is outside the span), otherwise the last word of the span (METRICS §3).
    Type: pronoun if the head is tagged PRON/PRP/WP or, without tags, is in the pronoun list;
    proper if tagged PROPN/NNP(S) or, without tags, capitalised and not sentence-initial (or the
    whole span is capitalised); otherwise nominal.
    """
    words = doc.words
    starts = doc.sentence_starts()
    sent_of = []
    for k, s in enumerate(doc.sentences):
        sent_of += [k] * len(s.words)
    out = []
    for m in doc.mentions:
        k = sent_of[m.start]
        sent = doc.sentences[k]
        base = starts[k]
        head, rule = m.end, "last"
        if sent.has_tree and sent_of[m.end] == k:
            inside = range(m.start - base, m.end - base + 1)
            outside = [i for i in inside if not (m.start - base <= sent.heads[i] <= m.end - base)]
            if outside:
                head, rule = base + outside[0], "tree"
        tag = sent.upos[head - base] if sent.upos is not None and sent_of[head] == k else None
        tag = None if tag in (None, "_", "-") else tag
        word = words[head]
        low = word.lower()
        if tag is not None:
            kind = "pronoun" if tag in PRONOUN_TAGS else "proper" if tag in PROPER_TAGS else "nominal"
        elif low in PRONOUNS and m.start == m.end:
            kind = "pronoun"
        elif word[:1].isupper() and (head != base or all(w[:1].isupper() for w in words[m.start:m.end + 1])):
            kind = "proper"
        else:
            kind = "nominal"
        if kind == "pronoun" and low in PRONOUNS:
            number, gender, person = PRONOUNS[low]
        else:
            plural = tag in PLURAL_TAGS if tag is not None else (low.endswith("s") and not low.endswith("ss")
                                                                 and kind == "nominal")
            number = "pl" if plural else "sg" if tag is not None or kind == "proper" else ""
            gender = "masc" if low in MASCULINE else "fem" if low in FEMININE else ""
            person = "3"
        out.append(MentionInfo(m.start, m.end, m.cluster, head, rule, kind,
                               tuple(w.lower() for w in words[m.start:m.end + 1]), number, gender, person))
    return out


def agree(a: MentionInfo, b: MentionInfo) -> bool:
    """Number, gender and person agree wherever both are known."""
    return all(x == y or not x or not y for x, y in ((a.number, b.number), (a.gender, b.gender),
                                                        (a.person, b.person)))
